//! Decoding policy: greedy search with Whisper's timestamp rules, language detection,
//! splitting the tokens into timed segments. Knows nothing of GStreamer.

pub mod alignment;
mod rules;

use std::sync::Arc;

use npuwhisper_kernels::ops::{log_softmax, softmax};

use crate::model::{DecoderSession, Model, SECONDS_PER_TIMESTAMP};
pub use alignment::WordTiming;

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
    /// Time every word by cross-attention alignment, and cut segments into phrases at
    /// punctuation and pauses, so that each piece of text starts where it is spoken.
    pub word_timestamps: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            language: None,
            task: Task::Transcribe,
            condition_on_previous_text: true,
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
            word_timestamps: true,
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
    /// The segment's words with their times, when word timestamps are on.
    pub words: Vec<WordTiming>,
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
/// Text ending this long before the window does is taken to have left speech out.
const UNCOVERED_TAIL_SECONDS: f64 = 1.5;
const MAX_TAIL_PASSES: usize = 2;

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
        let prompt = if self.options.condition_on_previous_text { self.prompt.clone() } else { Vec::new() };
        let mut decoded = match self.decode(&model, &mut session, language.as_deref(), &prompt, &[]) {
            Ok(d) => d,
            Err(_) => return WindowResult { language, ..Default::default() },
        };
        let avg_logprob = decoded.sum_logprob / (decoded.tokens.len() + 1) as f32;
        let silent = decoded.no_speech_prob > self.options.no_speech_threshold && avg_logprob < self.options.logprob_threshold;
        if silent {
            return WindowResult { language, segments: Vec::new(), no_speech_prob: decoded.no_speech_prob, avg_logprob };
        }
        self.decode_uncovered_tail(&model, &mut session, language.as_deref(), &prompt, &mut decoded, content_seconds);
        let mut segments = split_segments(&model, &decoded.tokens, content_seconds, avg_logprob);
        if self.options.word_timestamps {
            let text_tokens: Vec<u32> = segments.iter().flat_map(|s| s.words[0].tokens.clone()).collect();
            if let Ok(words) = alignment::align_words(&model, &mut session, &decoded.sot_sequence, &text_tokens, content_seconds) {
                segments = phrases(attach_words(segments, words));
            }
        }
        for s in &mut segments {
            if !self.options.word_timestamps {
                s.words.clear();
            }
        }
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

    /// Whisper now and then stops before the end of the speech in its window (a habit learnt from
    /// 30 s training windows whose last sentence was cut). Windows here end at pauses, so text
    /// that ends well before the window does has left speech out: decode again from the last
    /// timestamp, with what was decoded as prompt, and keep what comes with confidence.
    fn decode_uncovered_tail(
        &self,
        model: &Model,
        session: &mut DecoderSession<'_>,
        language: Option<&str>,
        prompt: &[u32],
        decoded: &mut Decoded,
        content_seconds: f64,
    ) {
        let tok = &model.tokenizer;
        let keep = model.dims.max_text_positions / 2 - 1;
        for _ in 0..MAX_TAIL_PASSES {
            let Some(&last) = decoded.tokens.last().filter(|&&t| tok.is_timestamp(t)) else { return };
            let covered = (last - tok.timestamp_begin) as f64 * SECONDS_PER_TIMESTAMP;
            if content_seconds - covered < UNCOVERED_TAIL_SECONDS {
                return;
            }
            let mut context: Vec<u32> = prompt.iter().chain(&decoded.tokens).copied().collect();
            context.drain(..context.len().saturating_sub(keep));
            let Ok(more) = self.decode(model, session, language, &context, &[last]) else { return };
            let texts = more.tokens.iter().filter(|&&t| t < tok.eot).count();
            let avg_logprob = more.sum_logprob / (more.tokens.len() + 1) as f32;
            if texts == 0 || avg_logprob < self.options.logprob_threshold {
                return;
            }
            decoded.tokens.extend_from_slice(&more.tokens);
            decoded.sum_logprob += more.sum_logprob;
        }
    }

    /// Greedy decoding after `prompt` (previous text), with `prefix` forced as the first tokens.
    fn decode(
        &self,
        model: &Model,
        session: &mut DecoderSession<'_>,
        language: Option<&str>,
        prompt: &[u32],
        prefix: &[u32],
    ) -> Result<Decoded, String> {
        let tok = &model.tokenizer;
        let mut sot_sequence = vec![tok.sot];
        if let Some(code) = language {
            sot_sequence.push(tok.language_token(code).ok_or("unknown language")?);
            sot_sequence.push(if self.options.task == Task::Translate { tok.translate } else { tok.transcribe });
        }
        let mut initial = Vec::new();
        if !prompt.is_empty() {
            initial.push(tok.sot_prev);
            initial.extend_from_slice(prompt);
        }
        let sot_index = initial.len();
        initial.extend_from_slice(&sot_sequence);
        initial.extend_from_slice(prefix);

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
        let (mut tokens, mut sum_logprob, mut logprobs) = (prefix.to_vec(), 0f32, Vec::new());
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
        Ok(Decoded { tokens, sum_logprob, no_speech_prob, sot_sequence })
    }
}

struct Decoded {
    sot_sequence: Vec<u32>,
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
        let tokens = std::mem::take(text);
        let start = start.min(content_seconds);
        if !s.trim().is_empty() && start < content_seconds {
            let end = end.clamp(start, content_seconds);
            // Until words are aligned, the segment is one "word" holding all its tokens.
            let words = vec![WordTiming { text: s.clone(), tokens, start, end }];
            segments.push(Segment { start, end, text: s, avg_logprob, words });
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

/// Replaces each segment's placeholder word by its aligned words (taken in order, by token count),
/// and its start and end by theirs.
fn attach_words(segments: Vec<Segment>, words: Vec<WordTiming>) -> Vec<Segment> {
    let mut words = words.into_iter().peekable();
    segments
        .into_iter()
        .map(|mut seg| {
            let mut need = seg.words[0].tokens.len();
            let mut mine = Vec::new();
            while need > 0 {
                let Some(w) = words.next() else { break };
                need = need.saturating_sub(w.tokens.len());
                mine.push(w);
            }
            if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
                seg.start = first.start;
                seg.end = last.end.max(first.start);
                seg.words = mine;
            }
            seg
        })
        .collect()
}

/// A word lasting longer than this has swallowed a pause.
const PAUSE_WORD_SECONDS: f64 = 1.0;

/// Cuts segments into phrases after words that end a clause (punctuation) or hold a pause, so
/// every phrase starts where it is spoken.
fn phrases(segments: Vec<Segment>) -> Vec<Segment> {
    let mut out = Vec::new();
    for seg in segments {
        let mut current: Vec<WordTiming> = Vec::new();
        let flush = |current: &mut Vec<WordTiming>, out: &mut Vec<Segment>| {
            if let (Some(first), Some(last)) = (current.first(), current.last()) {
                let text: String = current.iter().map(|w| w.text.as_str()).collect();
                out.push(Segment { start: first.start, end: last.end.max(first.start), text, avg_logprob: seg.avg_logprob, words: std::mem::take(current) });
            }
        };
        for w in &seg.words {
            current.push(w.clone());
            let ends_clause = w.text.trim_end().ends_with(['.', ',', ';', ':', '?', '!']);
            if ends_clause || w.end - w.start > PAUSE_WORD_SECONDS {
                flush(&mut current, &mut out);
            }
        }
        flush(&mut current, &mut out);
    }
    out
}
