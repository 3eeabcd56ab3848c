//! What a caller chooses about decoding, and the checks of a language and task against a model.

use crate::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    #[default]
    Transcribe,
    Translate,
}

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Language code ("en", "de", ...); `None` detects it per window (multilingual models only).
    pub language: Option<String>,
    pub task: Task,
    /// Feed the previous window's text as prompt.
    pub condition_on_previous_text: bool,
    /// Text given as if it had been said before the first window: names, spelling, style.
    pub initial_prompt: Option<String>,
    /// Hypotheses kept by beam search at temperature 0; 1 is greedy.
    pub beam_size: usize,
    /// Samples drawn at each temperature above 0; the likeliest is kept.
    pub best_of: usize,
    /// Temperatures tried in turn while a window's text looks wrong (Whisper: 0.0, 0.2, … 1.0).
    /// Only the first is tried when empty or of length one.
    pub temperatures: Vec<f32>,
    /// Text that gzip compresses better than this is a loop of repeats: decode again hotter.
    pub compression_ratio_threshold: f32,
    /// A window whose no-speech probability is above this and whose average log-probability is
    /// below `logprob_threshold` is taken as silence.
    pub no_speech_threshold: f32,
    /// Text whose average log-probability is below this is decoded again hotter.
    pub logprob_threshold: f32,
    /// Time every word by cross-attention alignment, and cut segments into phrases at
    /// punctuation and pauses, so that each piece of text starts where it is spoken.
    pub word_timestamps: bool,
}

/// Whisper's fallback temperatures.
pub const FALLBACK_TEMPERATURES: [f32; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];

impl DecodeOptions {
    /// Whisper's silence rule: likely no speech, and the text decoded is unlikely too.
    pub(super) fn is_silence(&self, no_speech_prob: f32, avg_logprob: f32) -> bool {
        no_speech_prob > self.no_speech_threshold && avg_logprob < self.logprob_threshold
    }
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            language: None,
            task: Task::Transcribe,
            condition_on_previous_text: true,
            initial_prompt: None,
            beam_size: 1,
            best_of: 5,
            temperatures: FALLBACK_TEMPERATURES.to_vec(),
            compression_ratio_threshold: 2.4,
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
            word_timestamps: true,
        }
    }
}

/// The language and task a caller asked for, checked against a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageChoice {
    /// `None`: detected per window (multilingual models) or English (English-only ones).
    pub language: Option<String>,
    /// What was asked for that the model cannot do, and is ignored.
    pub ignored: Vec<IgnoredRequest>,
}

/// A request an English-only model cannot honour: decoding goes on without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoredRequest {
    /// A language other than English.
    Language(String),
    /// `task=translate` (the text is English already).
    Translate,
}

/// A language the model does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLanguage {
    pub requested: String,
    /// The model's language codes.
    pub known: Vec<String>,
}

impl std::fmt::Display for UnknownLanguage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Unknown language {:?}; use \"auto\" or one of: {}",
            self.requested,
            self.known.join(", ")
        )
    }
}

impl std::error::Error for UnknownLanguage {}

/// Checks a requested language (a code, "auto" or empty) and task against `model`: an unknown
/// language is an error; on English-only models another language or translation is ignored
/// and said so.
pub fn choose_language(model: &Model, requested: &str, task: Task) -> Result<LanguageChoice, UnknownLanguage> {
    let requested = requested.trim().to_lowercase();
    let auto = requested.is_empty() || requested == "auto";
    let mut ignored = Vec::new();
    if !model.is_multilingual() {
        // English-only models have no language token to choose.
        if !auto && requested != "en" {
            ignored.push(IgnoredRequest::Language(requested));
        }
        if task == Task::Translate {
            ignored.push(IgnoredRequest::Translate);
        }
        return Ok(LanguageChoice {
            language: None,
            ignored,
        });
    }
    if auto {
        return Ok(LanguageChoice {
            language: None,
            ignored,
        });
    }
    if model.tokenizer.language_token(&requested).is_some() {
        return Ok(LanguageChoice {
            language: Some(requested),
            ignored,
        });
    }
    Err(UnknownLanguage {
        requested,
        known: model.tokenizer.languages.iter().map(|(c, _)| c.clone()).collect(),
    })
}
