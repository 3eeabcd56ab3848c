//! `npuwhisper`: speech-to-text bin, raw audio in, timed UTF-8 text out.
//!
//! Internally `audioconvert ! audioresample ! npumel ! queue ! npuwhisperenc ! queue !
//! npuwhisperdec`. The queues hold at most two windows each and let the spectrogram, encoder
//! and decoder of different windows run on different cores.
//!
//! The `model`, `language`, `task` and `condition-on-previous-text` properties are those of
//! `npuwhisperdec` (and `model` also of `npuwhisperenc`). The children's other properties
//! are reachable by name, e.g. `npuwhisper mel::min-pause=300`.
//!
//! ## Caps
//!
//! - sink: `audio/x-raw` (any format, rate and channel count: converted to 16 kHz mono)
//! - src: `text/x-raw, format=utf8`, one buffer per segment of text
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 filesrc location=talk.ogg ! decodebin ! npuwhisper model=small.en ! \
//!     srtenc ! filesink location=talk.srt
//! ```
use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct NpuWhisperBin(ObjectSubclass<imp::NpuWhisperBin>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "npuwhisper",
        gst::Rank::NONE,
        NpuWhisperBin::static_type(),
    )
}
