//! The decoder's settings: its properties' values, and the decode options they make.

use gst::glib;
use gst::prelude::*;

use super::NpuWhisperTask;
use crate::model_property;
use npuwhisper_core::cues::Layout;
use npuwhisper_core::decoding::{DecodeOptions, FALLBACK_TEMPERATURES};

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub model: model_property::ModelSettings,
    pub language: String,
    pub task: NpuWhisperTask,
    pub condition_on_previous_text: bool,
    pub initial_prompt: Option<String>,
    pub beam_size: u32,
    pub best_of: u32,
    pub temperature_fallback: bool,
    pub compression_ratio_threshold: f32,
    pub logprob_threshold: f32,
    pub no_speech_threshold: f32,
    pub word_timestamps: bool,
    pub post_messages: bool,
    pub batch_size: u32,
    pub live_hold_ms: u32,
    /// How phrases are laid out as cues.
    pub layout: Layout,
}

impl Default for Settings {
    fn default() -> Self {
        let d = DecodeOptions::default();
        Settings {
            model: model_property::ModelSettings::default(),
            language: super::DEFAULT_LANGUAGE.to_string(),
            task: NpuWhisperTask::default(),
            condition_on_previous_text: d.condition_on_previous_text,
            initial_prompt: None,
            beam_size: d.beam_size as u32,
            best_of: d.best_of as u32,
            temperature_fallback: true,
            compression_ratio_threshold: d.compression_ratio_threshold,
            logprob_threshold: d.logprob_threshold,
            no_speech_threshold: d.no_speech_threshold,
            word_timestamps: false,
            post_messages: true,
            batch_size: 0,
            live_hold_ms: super::DEFAULT_LIVE_HOLD_MS,
            layout: Layout::default(),
        }
    }
}

impl Settings {
    /// Sets the property `name`; false if it is not one of the decoder's.
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        let settings = self;
        let string = || value.get::<Option<String>>().ok().flatten();
        if settings.model.set(name, value) {
            return true;
        }
        match name {
            "language" => settings.language = string().unwrap_or_else(|| super::DEFAULT_LANGUAGE.to_string()),
            "language-code" => settings.language = super::language_from_code(&string().unwrap_or_default()),
            "task" => settings.task = value.get().expect("type checked upstream"),
            "condition-on-previous-text" => {
                settings.condition_on_previous_text = value.get().expect("type checked upstream")
            }
            "initial-prompt" => settings.initial_prompt = string(),
            "beam-size" => settings.beam_size = value.get().expect("type checked upstream"),
            "best-of" => settings.best_of = value.get().expect("type checked upstream"),
            "temperature-fallback" => settings.temperature_fallback = value.get().expect("type checked upstream"),
            "compression-ratio-threshold" => {
                settings.compression_ratio_threshold = value.get().expect("type checked upstream")
            }
            "logprob-threshold" => settings.logprob_threshold = value.get().expect("type checked upstream"),
            "no-speech-threshold" => settings.no_speech_threshold = value.get().expect("type checked upstream"),
            "word-timestamps" => settings.word_timestamps = value.get().expect("type checked upstream"),
            "post-messages" => settings.post_messages = value.get().expect("type checked upstream"),
            "batch-size" => settings.batch_size = value.get().expect("type checked upstream"),
            "live-hold" => settings.live_hold_ms = value.get().expect("type checked upstream"),
            "max-line-chars" => {
                settings.layout.max_line_chars = value.get::<u32>().expect("type checked upstream") as usize
            }
            "max-lines" => settings.layout.max_lines = value.get::<u32>().expect("type checked upstream") as usize,
            "min-cue-duration" => {
                settings.layout.min_duration = value.get::<u32>().expect("type checked upstream") as f64 / 1000.0
            }
            "max-cue-duration" => {
                settings.layout.max_duration = value.get::<u32>().expect("type checked upstream") as f64 / 1000.0
            }
            "max-reading-speed" => settings.layout.max_cps = value.get::<f32>().expect("type checked upstream") as f64,
            _ => return false,
        }
        true
    }

    /// The value of the property `name`, if it is one of the decoder's.
    pub fn get(&self, name: &str) -> Option<glib::Value> {
        let s = self;
        if let Some(v) = s.model.get(name) {
            return Some(v);
        }
        Some(match name {
            "language" | "language-code" => s.language.to_value(),
            "task" => s.task.to_value(),
            "condition-on-previous-text" => s.condition_on_previous_text.to_value(),
            "initial-prompt" => s.initial_prompt.to_value(),
            "beam-size" => s.beam_size.to_value(),
            "best-of" => s.best_of.to_value(),
            "temperature-fallback" => s.temperature_fallback.to_value(),
            "compression-ratio-threshold" => s.compression_ratio_threshold.to_value(),
            "logprob-threshold" => s.logprob_threshold.to_value(),
            "no-speech-threshold" => s.no_speech_threshold.to_value(),
            "word-timestamps" => s.word_timestamps.to_value(),
            "post-messages" => s.post_messages.to_value(),
            "batch-size" => s.batch_size.to_value(),
            "live-hold" => s.live_hold_ms.to_value(),
            "max-line-chars" => (s.layout.max_line_chars as u32).to_value(),
            "max-lines" => (s.layout.max_lines as u32).to_value(),
            "min-cue-duration" => ((s.layout.min_duration * 1000.0).round() as u32).to_value(),
            "max-cue-duration" => ((s.layout.max_duration * 1000.0).round() as u32).to_value(),
            "max-reading-speed" => (s.layout.max_cps as f32).to_value(),
            _ => return None,
        })
    }

    /// The decode options of these settings, in `language` (checked against the model).
    pub fn decode_options(&self, language: Option<String>) -> DecodeOptions {
        DecodeOptions {
            language,
            task: self.task.into(),
            condition_on_previous_text: self.condition_on_previous_text,
            initial_prompt: self.initial_prompt.clone(),
            beam_size: self.beam_size as usize,
            best_of: self.best_of as usize,
            temperatures: if self.temperature_fallback {
                FALLBACK_TEMPERATURES.to_vec()
            } else {
                vec![0.0]
            },
            compression_ratio_threshold: self.compression_ratio_threshold,
            logprob_threshold: self.logprob_threshold,
            no_speech_threshold: self.no_speech_threshold,
            // Words are always aligned: phrases are cut by them.
            word_timestamps: true,
        }
    }
}
