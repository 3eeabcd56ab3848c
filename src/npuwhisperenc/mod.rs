//! `npuwhisperenc`: runs the Whisper encoder on log-mel windows.
//!
//! Each input buffer is one window of log-mel spectrogram as produced by `npumel`; each
//! output buffer holds the encoder states of that window, with the same timestamps and
//! flags. Buffer lists are encoded as one batch.
//!
//! The model is loaded when going from NULL to READY (a missing or damaged model fails the
//! state change with an error naming the file); elements naming the same model share it.
//!
//! ## Backends
//!
//! `backend=cpu` (default) runs npuwhisper's kernels. `backend=onnxruntime` runs the encoder
//! as an ONNX graph built from the same weights on ONNX Runtime's `execution-provider`
//! (`precision=f32`: float32 graph; `int8`: int8 QDQ weights);
//! `onnxruntime-stages=encoder-decoder` puts the decoder step there too (on npuwhisperdec,
//! which loads the model with the same properties). A missing ONNX Runtime library,
//! an unknown provider, or one not compiled into npuwhisper or the library, fails going to
//! READY with an error saying which and how to get it.
//!
//! ## Encoder context
//!
//! `context=full` (default) encodes every window over Whisper's 30 s (1500 frames, the padding
//! past the audio included). `context=auto` encodes a window of up to 14.5 s over its audio (the
//! buffer's duration) plus 6 s, rounded up to 2.56 s (whisper.cpp's `audio_ctx`, chosen per
//! window), and a longer one over 30 s; `context=fit` every window over its audio plus 4 s. A
//! short window then costs a fraction of the encoder time. Both are opt-in: on clean speech WER
//! held within a word, on speech turned down 50 dB or under noise it lost up to 4 words of 395
//! (README, Encoder context). A fitted window's buffer carries its log-mel as a second
//! memory: when its text fails Whisper's checks (repeats itself or is unlikely, as a context
//! cut too close makes it: a loop, README, Encoder context), npuwhisperdec encodes it again
//! over the full context and decodes it from there. `backend=onnxruntime` encodes 1500 frames
//! whatever the setting.
//!
//! ## Caps
//!
//! - sink: `audio/x-npuwhisper-mel, n-mels=(int)[1,256], frames=(int)3000, format=F32LE`
//!   (see `npumel`); once the model is loaded, `n-mels` is fixed to the model's.
//! - src: `application/x-npuwhisper-states, width=(int)[1,4096], frames=(int)1500, format=F32LE`:
//!   one buffer is `n × width` F32LE values, position-major, where `width` is the model's
//!   `d_model` and `n` is 1500 (fewer with `context=auto` or `fit`, and then the window's
//!   log-mel follows as a second memory). A media type of this project, consumed by
//!   `npuwhisperdec`.
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

pub use imp::{context_param_spec, NpuWhisperContext};

glib::wrapper! {
    pub struct NpuWhisperEnc(ObjectSubclass<imp::NpuWhisperEnc>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    crate::model_property::NpuWhisperBackend::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    crate::model_property::NpuWhisperOrtStages::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    NpuWhisperContext::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "npuwhisperenc",
        gst::Rank::NONE,
        NpuWhisperEnc::static_type(),
    )
}
