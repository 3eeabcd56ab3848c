//! Decoding policy: greedy search with Whisper's timestamp rules, language detection,
//! splitting the tokens into timed segments. Knows nothing of GStreamer.

mod rules;

use std::sync::Arc;

use npuwhisper_kernels::ops::{log_softmax, softmax};

use crate::model::{DecoderSession, Model, SECONDS_PER_TIMESTAMP};

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
    /// A window whose no-speech probability is above this and whose average log-probability is
    /// below `logprob_threshold` is taken as silence.
    pub no_speech_threshold: f32,
    pub logprob_threshold: f32,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            language: None,
            task: Task::Transcribe,
            condition_on_previous_text: true,
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
        }
    }
}

/// One timed piece of text; times are seconds from the start of its window.
#[derive(Debug, Clone)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub avg_logprob: f32,
}

#[derive(Debug, Clone, Default)]
pub struct WindowResult {
    /// Language the window was decoded in, if the model is multilingual.
    pub language: Option<String>,
    pub segments: Vec<Segment>,
    pub no_speech_prob: f32,
    pub avg_logprob: f32,
}

/// Most tokens sampled per window (Whisper: half the text context).
const SAMPLE_LEN: usize = 224;

/// Decodes windows one after another, keeping the previous text as prompt.
pub struct Transcriber {
    model: Arc<Model>,
    options: DecodeOptions,
    prompt: Vec<u32>,
}

impl Transcriber {
    pub fn new(model: Arc<Model>, options: DecodeOptions) -> Self {
        Transcriber { model, options, prompt: Vec::new() }
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Decodes one window's encoder states (`ENCODER_FRAMES × d_model`), whose audio
    /// lasts `content_seconds` (≤ 30). Segment times are clipped to the content.
    pub fn transcribe(&mut self, states: &[f32], content_seconds: f64) -> WindowResult {
        let model = Arc::clone(&self.model);
        let mut session = model.decoder_session(states);
        let language = if model.is_multilingual() {
            Some(match &self.options.language {
                Some(code) if model.tokenizer.language_token(code).is_some() => code.clone(),
                _ => detect_language(&model, &mut session).unwrap_or_else(|| "en".into()),
            })
        } else {
            None
        };
        let decoded = match self.decode(&model, &mut session, language.as_deref()) {
            Ok(d) => d,
            Err(_) => return WindowResult { language, ..Default::default() },
        };
        let avg_logprob = decoded.sum_logprob / (decoded.tokens.len() + 1) as f32;
        let silent = decoded.no_speech_prob > self.options.no_speech_threshold && avg_logprob < self.options.logprob_threshold;
        if silent {
            return WindowResult { language, segments: Vec::new(), no_speech_prob: decoded.no_speech_prob, avg_logprob };
        }
        let segments = split_segments(&model, &decoded.tokens, content_seconds, avg_logprob);
        if self.options.condition_on_previous_text {
            self.prompt.extend(decoded.tokens.iter().filter(|&&t| t != model.tokenizer.eot));
            let keep = model.dims.max_text_positions / 2 - 1;
            if self.prompt.len() > keep {
                self.prompt.drain(..self.prompt.len() - keep);
            }
        }
        WindowResult { language, segments, no_speech_prob: decoded.no_speech_prob, avg_logprob }
    }

    /// Forgets the prompt (after a flush or discontinuity).
    pub fn reset(&mut self) {
        self.prompt.clear();
    }

    fn decode(&self, model: &Model, session: &mut DecoderSession<'_>, language: Option<&str>) -> Result<Decoded, String> {
        let tok = &model.tokenizer;
        let mut sot_sequence = vec![tok.sot];
        if let Some(code) = language {
            sot_sequence.push(tok.language_token(code).ok_or("unknown language")?);
            sot_sequence.push(if self.options.task == Task::Translate { tok.translate } else { tok.transcribe });
        }
        let mut initial = Vec::new();
        if self.options.condition_on_previous_text && !self.prompt.is_empty() {
            initial.push(tok.sot_prev);
            initial.extend_from_slice(&self.prompt);
        }
        let sot_index = initial.len();
        initial.extend_from_slice(&sot_sequence);

        session.reset();
        let hidden = session.forward(&initial)?;
        let d = model.dims.d_model;
        let no_speech_prob = match tok.no_speech {
            Some(ns) => {
                let mut p = session.logits(&hidden[sot_index * d..(sot_index + 1) * d]);
                softmax(&mut p);
                p[ns as usize]
            }
            None => 0.0,
        };
        let mut logits = session.logits(&hidden[hidden.len() - d..]);
        let rules = rules::Rules::new(model);
        let (mut tokens, mut sum_logprob, mut logprobs) = (Vec::new(), 0f32, Vec::new());
        for _ in 0..SAMPLE_LEN {
            rules.apply(&tokens, &mut logits);
            log_softmax(&logits, &mut logprobs);
            let next = argmax(&logits);
            sum_logprob += logprobs[next as usize];
            if next == tok.eot || session.remaining() == 0 {
                break;
            }
            tokens.push(next);
            let h = session.forward(&[next])?;
            logits = session.logits(&h);
        }
        Ok(Decoded { tokens, sum_logprob, no_speech_prob })
    }
}

struct Decoded {
    tokens: Vec<u32>,
    sum_logprob: f32,
    no_speech_prob: f32,
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The most likely language token after `<|startoftranscript|>`.
fn detect_language(model: &Model, session: &mut DecoderSession<'_>) -> Option<String> {
    let tok = &model.tokenizer;
    session.reset();
    let hidden = session.forward(&[tok.sot]).ok()?;
    let logits = session.logits(&hidden);
    let &(ref code, _) = tok.languages.iter().max_by(|a, b| logits[a.1 as usize].total_cmp(&logits[b.1 as usize]))?;
    Some(code.clone())
}

/// Cuts sampled tokens into segments at timestamp tokens; text after the last timestamp runs to
/// the end of the content. Segments that start after the content ends are dropped (they are
/// invented over the padding).
fn split_segments(model: &Model, tokens: &[u32], content_seconds: f64, avg_logprob: f32) -> Vec<Segment> {
    let tok = &model.tokenizer;
    let mut segments = Vec::new();
    let mut start = 0.0;
    let mut text: Vec<u32> = Vec::new();
    let mut push = |start: f64, end: f64, text: &mut Vec<u32>| {
        let s = tok.decode(text);
        text.clear();
        let start = start.min(content_seconds);
        if !s.trim().is_empty() && start < content_seconds {
            segments.push(Segment { start, end: end.clamp(start, content_seconds), text: s, avg_logprob });
        }
    };
    for &t in tokens {
        if tok.is_timestamp(t) {
            let time = (t - tok.timestamp_begin) as f64 * SECONDS_PER_TIMESTAMP;
            if text.is_empty() {
                start = time;
            } else {
                push(start, time, &mut text);
                start = time;
            }
        } else if t < tok.eot {
            text.push(t);
        }
    }
    if !text.is_empty() {
        push(start, content_seconds, &mut text);
    }
    segments
}
