//! npuwhisper: Whisper speech recognition as GStreamer elements.
//!
//! The crate is layered so that each layer is usable without the ones above it:
//! - [`model`]: Whisper weights and forward passes (encoder, decoder with KV cache), on `npuwhisper_kernels`;
//! - [`decoding`]: decoding policy (greedy search, timestamp rules, language detection, segments);
//! - [`audio`]: cutting a sample stream into Whisper windows at pauses;
//! - the element folders: GStreamer glue only.
//!
//! Elements: `npumel` (audio → log-mel windows), `npuwhisperenc` (mel → encoder states),
//! `npuwhisperdec` (encoder states → timed text) and the `npuwhisper` bin chaining them.
//!
//! `plugin_register_static()` registers the plugin in-process (tests, static linking).

use gst::glib;

pub mod audio;
pub mod caps;
pub mod cues;
pub mod decoding;
pub mod model;
mod model_property;
pub mod onnx;
pub mod runtime;

mod f32buf;
mod npumel;
mod npuwhisperbin;
mod npuwhisperdec;
mod npuwhisperenc;
mod passes;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    npumel::register(plugin)?;
    npuwhisperenc::register(plugin)?;
    npuwhisperdec::register(plugin)?;
    npuwhisperbin::register(plugin)?;
    Ok(())
}

// Also generates `pub fn plugin_register_static() -> Result<(), glib::BoolError>`,
// re-exported at the crate root.
gst::plugin_define!(
    npuwhisper,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
