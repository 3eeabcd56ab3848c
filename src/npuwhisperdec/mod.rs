//! `npuwhisperdec`: decodes Whisper encoder states into timed text.
//!
//! Each input buffer holds the encoder states of one window (from `npuwhisperenc`); its PTS
//! and duration place the window in time. The decoder emits one `text/x-raw` buffer per phrase
//! (segments cut at punctuation and pauses), or per word with `word-timestamps=true`, each
//! timed by the cross-attention of the model's alignment heads, and a GAP event for windows
//! without speech so that downstream (`srtenc`, subtitle overlays) keeps going. Output buffers
//! never overlap and their PTS never goes backwards.
//!
//! ## Decoding
//!
//! Greedy (`beam-size=1`, the default) or beam search, with Whisper's timestamp rules and token
//! suppression. Whisper's quality machinery is on by default: a window whose text repeats
//! itself (zlib `compression-ratio-threshold` 2.4) or is unlikely (`logprob-threshold` −1) is
//! decoded again at temperatures 0.2 … 1.0 (`best-of` samples each, `temperature-fallback`); a
//! window with no-speech probability above `no-speech-threshold` (0.6) and low log-probability
//! gives no text; segments whose every word is suspect (improbable, squeezed to nothing, or
//! stretched over music) are dropped. The previous window's text is the prompt unless
//! `condition-on-previous-text` is off (forgotten on flushes and discontinuities), after
//! `initial-prompt` if one is set. When upstream is not live, `batch-size` windows (auto: 4)
//! are decoded together, one pass over the weights per token step for all of them.
//!
//! ## Live streams
//!
//! When upstream is live, npumel sends each growing window again every `live-step` as a
//! provisional pass (flagged DROPPABLE). A word goes out once two consecutive passes agree on
//! it, or once it ends more than `live-hold` before the pass does (less what the pass came
//! late, down to 0.5 s); the complete window then releases the rest. Words are never taken back nor repeated, and fall-back decoding is
//! limited to two temperatures so that no window takes unbounded time.
//!
//! ## Messages
//!
//! With `post-messages` (default on), each text buffer is also posted on the bus as an element
//! message `npuwhisper-phrase` (or `npuwhisper-word`) with `text`, `start` and `end` (running
//! PTS, `guint64` ns), `avg-logprob` (double) and `language`. Multilingual models also post
//! `npuwhisper-language` per window (`language`, `start`, `duration`); the language is sent
//! downstream as a `language-code` tag whenever it changes.
//!
//! ## Caps
//!
//! - sink: `application/x-npuwhisper-states, width=(int)[1,4096], frames=(int)1500, format=F32LE`
//!   (see `npuwhisperenc`); `width` must be the model's `d_model`.
//! - src: `text/x-raw, format=utf8`
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 filesrc location=talk.ogg ! decodebin ! audioconvert ! audioresample ! \
//!     npumel ! npuwhisperenc model=small ! npuwhisperdec model=small language=auto ! \
//!     srtenc ! filesink location=talk.srt
//! ```
use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;

mod imp;
mod output;
mod settings;

/// What the decoder produces.
#[derive(Debug, Default, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstNpuWhisperTask")]
pub enum NpuWhisperTask {
    #[default]
    #[enum_value(name = "Transcribe: text in the spoken language", nick = "transcribe")]
    Transcribe = 0,
    #[enum_value(
        name = "Translate: text translated to English (multilingual models)",
        nick = "translate"
    )]
    Translate = 1,
}

impl From<NpuWhisperTask> for npuwhisper_core::decoding::Task {
    fn from(task: NpuWhisperTask) -> Self {
        match task {
            NpuWhisperTask::Transcribe => npuwhisper_core::decoding::Task::Transcribe,
            NpuWhisperTask::Translate => npuwhisper_core::decoding::Task::Translate,
        }
    }
}

glib::wrapper! {
    pub struct NpuWhisperDec(ObjectSubclass<imp::NpuWhisperDec>) @extends gst::Element, gst::Object;
}

/// Default `language` property value: detect per window.
pub(crate) const DEFAULT_LANGUAGE: &str = "auto";

/// The Whisper language of a BCP 47 tag: its primary subtag, lowercase ("en-US" → "en");
/// empty means "auto".
pub(crate) fn language_from_code(code: &str) -> String {
    let primary = code.trim().split(['-', '_']).next().unwrap_or("").to_lowercase();
    if primary.is_empty() {
        DEFAULT_LANGUAGE.to_string()
    } else {
        primary
    }
}
static DEFAULTS: LazyLock<npuwhisper_core::decoding::DecodeOptions> = LazyLock::new(Default::default);

/// The decoding properties, shared by the decoder and the `npuwhisper` bin (which forwards them).
pub(crate) fn param_specs() -> Vec<glib::ParamSpec> {
    let d = &*DEFAULTS;
    let layout = npuwhisper_core::cues::Layout::default();
    let mut specs = crate::model_property::param_specs();
    specs.extend([
        glib::ParamSpecString::builder("language")
            .nick("Language")
            .blurb("Spoken language as a code (\"en\", \"de\", ...), or \"auto\" to detect it per window (multilingual models). English-only models (*.en) always use \"en\"")
            .default_value(Some(DEFAULT_LANGUAGE))
            .mutable_ready()
            .build(),
        // What transcriberbin (gst-plugins-rs) sets on its transcriber, without checking.
        glib::ParamSpecString::builder("language-code")
            .nick("Language code")
            .blurb("The language as a BCP 47 tag (\"en-US\", \"de-DE\"): sets language to its primary subtag; empty or \"auto\" detects it")
            .default_value(Some(DEFAULT_LANGUAGE))
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("task", NpuWhisperTask::default())
            .nick("Task")
            .blurb("Transcribe in the spoken language, or translate to English (multilingual models)")
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("condition-on-previous-text")
            .nick("Condition on previous text")
            .blurb("Give the previous window's text to the decoder as prompt: more consistent text, but a mistake can repeat")
            .default_value(d.condition_on_previous_text)
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("initial-prompt")
            .nick("Initial prompt")
            .blurb("Text taken as said before the first window: names, terms and the punctuation style to use")
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("beam-size")
            .nick("Beam size")
            .blurb("Hypotheses kept by beam search; 1 decodes greedily (fastest)")
            .minimum(1)
            .maximum(16)
            .default_value(d.beam_size as u32)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("best-of")
            .nick("Best of")
            .blurb("Samples drawn at each fallback temperature above 0; the likeliest is kept")
            .minimum(1)
            .maximum(16)
            .default_value(d.best_of as u32)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("temperature-fallback")
            .nick("Temperature fallback")
            .blurb("Decode a window again at temperatures 0.2, 0.4 ... 1.0 while its text repeats itself (compression-ratio-threshold) or is unlikely (logprob-threshold)")
            .default_value(true)
            .mutable_ready()
            .build(),
        glib::ParamSpecFloat::builder("compression-ratio-threshold")
            .nick("Compression ratio threshold")
            .blurb("Text that compresses better than this (zlib ratio) is a loop of repeats and is decoded again")
            .minimum(1.0)
            .maximum(f32::MAX)
            .default_value(d.compression_ratio_threshold)
            .mutable_ready()
            .build(),
        glib::ParamSpecFloat::builder("logprob-threshold")
            .nick("Log-probability threshold")
            .blurb("Text whose average token log-probability is below this is decoded again; with no-speech-threshold it marks silence")
            .minimum(f32::MIN)
            .maximum(0.0)
            .default_value(d.logprob_threshold)
            .mutable_ready()
            .build(),
        glib::ParamSpecFloat::builder("no-speech-threshold")
            .nick("No-speech threshold")
            .blurb("A window whose no-speech probability is above this, with text below logprob-threshold, is taken as silence and gives no text")
            .minimum(0.0)
            .maximum(1.0)
            .default_value(d.no_speech_threshold)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("word-timestamps")
            .nick("Word timestamps")
            .blurb("One text buffer per word, timed by cross-attention alignment; otherwise one per phrase")
            .default_value(false)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("max-line-chars")
            .nick("Max line characters")
            .blurb("Characters per line of a phrase cue: lines break at phrase boundaries (after punctuation, before conjunctions), never inside a word; lines are separated by \"\\n\" (not with word-timestamps)")
            .minimum(10)
            .maximum(1000)
            .default_value(layout.max_line_chars as u32)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("max-lines")
            .nick("Max lines")
            .blurb("Lines per phrase cue")
            .minimum(1)
            .maximum(20)
            .default_value(layout.max_lines as u32)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("min-cue-duration")
            .nick("Min cue duration")
            .blurb("Shortest phrase cue (ms), where the speech allows: shorter fragments merge with their neighbours or stay on screen into the pause after them")
            .maximum(60_000)
            .default_value((layout.min_duration * 1000.0) as u32)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("max-cue-duration")
            .nick("Max cue duration")
            .blurb("Longest phrase cue (ms)")
            .minimum(500)
            .maximum(60_000)
            .default_value((layout.max_duration * 1000.0) as u32)
            .mutable_ready()
            .build(),
        glib::ParamSpecFloat::builder("max-reading-speed")
            .nick("Max reading speed")
            .blurb("Characters per second a phrase cue asks the viewer to read, where the speech allows: faster cues stay on screen into the pause after them or merge; 0 = no limit")
            .minimum(0.0)
            .maximum(1000.0)
            .default_value(layout.max_cps as f32)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("post-messages")
            .nick("Post messages")
            .blurb("Post every phrase and word (text, start, end, avg-logprob, language) as element messages on the bus")
            .default_value(true)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("live-hold")
            .nick("Live hold")
            .blurb("When upstream is live: longest time (ms) a word at the end of a provisional pass waits for the next pass to confirm it; words ending earlier are emitted unconfirmed, so text keeps to the latency (the npuwhisper bin derives it from its latency)")
            .maximum(30_000)
            .default_value(DEFAULT_LIVE_HOLD_MS)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("batch-size")
            .nick("Batch size")
            .blurb("Windows decoded together, one pass over the weights per token for all of them; each is prompted with the text before its batch. 0 = 8 for recordings, 1 when upstream is live")
            .maximum(16)
            .default_value(0)
            .mutable_ready()
            .build(),
    ]);
    specs
}

/// Default `live-hold`: what a 3 s latency leaves after a 1 s step and 1 s of processing.
pub const DEFAULT_LIVE_HOLD_MS: u32 = 1000;

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    NpuWhisperTask::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    crate::model_property::NpuWhisperPrecision::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "npuwhisperdec",
        gst::Rank::NONE,
        NpuWhisperDec::static_type(),
    )
}
