//! `libgstnpuwhisper_closedcaption.so`: the GStreamer plugin `rsclosedcaption` of gst-plugins-rs
//! (gst-plugin-closedcaption 0.13.7, the newest line that builds against GStreamer 1.22:
//! `tttocea608`, `tttocea708`, `cea608tott`, `cea608overlay`, `transcriberbin`, ...), built from
//! this workspace's Cargo.lock for the gst-launch pipelines in `pipelines/`, which add the
//! directory holding it to `GST_PLUGIN_PATH`.
//!
//! Cargo builds a registry dependency's cdylib only under a hashed name in `deps/`, and Debian
//! does not package the plugin, so this crate's cdylib hands out its plugin descriptor under the
//! symbol GStreamer looks up for this file name (`gst_plugin_<name>_get_desc`).

use std::ffi::c_void;

/// # Safety
///
/// Called by GStreamer when it loads the plugin file; returns a pointer to a static.
#[no_mangle]
pub unsafe extern "C" fn gst_plugin_npuwhisper_closedcaption_get_desc() -> *const c_void {
    // SAFETY: `gst_plugin_define!`'s descriptor getter has no precondition: it only returns the
    // address of the plugin's static descriptor, which lives as long as the library.
    unsafe { gstrsclosedcaption::plugin_desc::gst_plugin_rsclosedcaption_get_desc() }.cast()
}
