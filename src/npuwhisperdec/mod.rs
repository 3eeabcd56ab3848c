//! `npuwhisperdec`: decodes Whisper encoder states into timed text.
//!
//! Each input buffer holds the encoder states of one window (from `npuwhisperenc`); its PTS
//! and duration place the window in time. The decoder emits one `text/x-raw` buffer per
//! segment of text, timestamped inside its window, and a GAP event for windows without
//! speech so that downstream (`srtenc`, subtitle overlays) keeps going. The previous
//! window's text conditions the next one unless `condition-on-previous-text` is off; it is
//! forgotten on flushes and discontinuities. The language decoded (given, or detected per
//! window with multilingual models) is posted downstream as a language-code tag.
//!
//! Output buffers never overlap and their PTS never goes backwards.
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
use gst::glib;
use gst::prelude::*;

mod imp;

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

impl From<NpuWhisperTask> for crate::decoding::Task {
    fn from(task: NpuWhisperTask) -> Self {
        match task {
            NpuWhisperTask::Transcribe => crate::decoding::Task::Transcribe,
            NpuWhisperTask::Translate => crate::decoding::Task::Translate,
        }
    }
}

glib::wrapper! {
    pub struct NpuWhisperDec(ObjectSubclass<imp::NpuWhisperDec>) @extends gst::Element, gst::Object;
}

/// Default `language` property value: detect per window.
pub(crate) const DEFAULT_LANGUAGE: &str = "auto";
/// Blurb of the `language` property, shared with the bin.
pub(crate) const LANGUAGE_BLURB: &str = "Spoken language as a code (\"en\", \"de\", ...), or \"auto\" to detect it per window (multilingual models). English-only models (*.en) always use \"en\"";
/// Blurb of the `task` property, shared with the bin.
pub(crate) const TASK_BLURB: &str =
    "Transcribe in the spoken language, or translate to English (multilingual models)";
/// Blurb of the `condition-on-previous-text` property, shared with the bin.
pub(crate) const CONDITION_BLURB: &str = "Give the previous window's text to the decoder as prompt: more consistent text, but a mistake can repeat";

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    NpuWhisperTask::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "npuwhisperdec",
        gst::Rank::NONE,
        NpuWhisperDec::static_type(),
    )
}
