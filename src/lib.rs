//! npuwhisper: Whisper speech recognition as GStreamer elements.
//!
//! GStreamer glue only: the model, its backends, decoding and audio windowing are in the
//! GStreamer-free crate `npuwhisper_core` (see ARCHITECTURE.md).
//!
//! Elements: `npumel` (audio → log-mel windows), `npuwhisperenc` (mel → encoder states),
//! `npuwhisperdec` (encoder states → timed text) and the `npuwhisper` bin chaining them.
//!
//! `plugin_register_static()` registers the plugin in-process (tests, static linking).

use gst::glib;

pub mod caps;
mod model_element;
mod model_property;

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
