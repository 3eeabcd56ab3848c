//! Decoding policy: greedy search with Whisper's timestamp rules, language detection,
//! splitting the tokens into timed segments. Knows nothing of GStreamer.

use std::sync::Arc;

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
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { language: None, task: Task::Transcribe, condition_on_previous_text: true }
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
}

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

    /// Decodes one window's encoder states (`ENCODER_FRAMES × d_model`), whose audio
    /// lasts `content_seconds` (≤ 30). Segment times are clipped to the content.
    pub fn transcribe(&mut self, states: &[f32], content_seconds: f64) -> WindowResult {
        todo!()
    }

    /// Forgets the prompt (after a flush or discontinuity).
    pub fn reset(&mut self) {
        self.prompt.clear();
    }
}
