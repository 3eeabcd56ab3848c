//! `npumel`: cuts 16 kHz mono audio into Whisper windows and computes their log-mel spectrogram.
//!
//! The audio is cut into windows of at most 30 s, preferably at pauses (see
//! [`npuwhisper_core::audio::Windower`]); each window becomes one output buffer.
//!
//! ## Caps
//!
//! - sink: `audio/x-raw, format={F32LE,S16LE}, rate=16000, channels=1, layout=interleaved`
//! - src: `audio/x-npuwhisper-mel, n-mels=(int)[1,256], frames=(int)3000, format=F32LE`
//!
//! `audio/x-npuwhisper-mel` is a media type of this project: one buffer is one window of
//! `n-mels × 3000` F32LE values, mel-major (row `m` holds the 3000 10 ms frames of mel bin `m`).
//! Its PTS is the start of the audio the window covers and its duration the length of that
//! audio (≤ 30 s); the frames past that length are Whisper's zero-padding. `n-mels` is
//! chosen by downstream (the encoder asks for its model's), 80 if downstream leaves it open.
//!
//! Windows are timestamped from the first buffer's PTS; a DISCONT buffer, or a timestamp
//! jumping by more than 40 ms, ends the current window early and restarts the count.
//! Several windows produced by one input buffer are pushed as one buffer list, so the
//! encoder can batch them. A window without speech (nothing above `silence-threshold`) is
//! not spectrogrammed: a GAP event covers its time instead, so nothing downstream decodes it.
//!
//! ## Live streams
//!
//! When upstream is live, windows last at most `live-max-window` (10 s), and until a window is
//! complete it is sent again every `live-step` (1 s) of new audio, from the same start, as a
//! provisional pass flagged `DROPPABLE`: the decoder emits the words two passes agree on, long
//! before the window ends. Silence is closed as a gap after one step. The latency npumel
//! answers is one step.
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 filesrc location=talk.ogg ! decodebin ! audioconvert ! audioresample ! \
//!     npumel ! npuwhisperenc ! npuwhisperdec ! fakesink dump=true
//! ```
use gst::glib;
use gst::prelude::*;

mod imp;
mod settings;
mod timing;

pub use settings::VadMode;

glib::wrapper! {
    pub struct NpuMel(ObjectSubclass<imp::NpuMel>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "npumel", gst::Rank::NONE, NpuMel::static_type())
}
