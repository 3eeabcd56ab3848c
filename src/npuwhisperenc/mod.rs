//! `npuwhisperenc`: runs the Whisper encoder on log-mel windows.
//!
//! Each input buffer is one window of log-mel spectrogram as produced by `npumel`; each
//! output buffer holds the encoder states of that window, with the same timestamps and
//! flags. Buffer lists are encoded as one batch.
//!
//! The model is loaded when going from NULL to READY (a missing or damaged model fails the
//! state change with an error naming the file); elements naming the same model share it.
//!
//! ## Caps
//!
//! - sink: `audio/x-npuwhisper-mel, n-mels=(int)[1,256], frames=(int)3000, format=F32LE`
//!   (see `npumel`); once the model is loaded, `n-mels` is fixed to the model's.
//! - src: `application/x-npuwhisper-states, width=(int)[1,4096], frames=(int)1500, format=F32LE`:
//!   one buffer is `1500 × width` F32LE values, position-major, where `width` is the
//!   model's `d_model`. A media type of this project, consumed by `npuwhisperdec`.
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 autoaudiosrc ! audioconvert ! audioresample ! npumel ! \
//!     npuwhisperenc model=base ! npuwhisperdec model=base ! fakesink dump=true
//! ```
use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct NpuWhisperEnc(ObjectSubclass<imp::NpuWhisperEnc>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "npuwhisperenc",
        gst::Rank::NONE,
        NpuWhisperEnc::static_type(),
    )
}
