//! The `model` property that the encoder, the decoder and the bin share: its spec, and loading
//! the model it names as an element error ready to post.

use std::sync::Arc;

use gst::glib;
use gst::prelude::*;

use crate::model::{self, Model};

pub const BLURB: &str = "Whisper model: a CTranslate2 model directory, or a model name in the models \
directory (NPUWHISPER_MODELS_DIR, default ~/.local/share/npuwhisper/models)";

pub fn param_spec() -> glib::ParamSpec {
    glib::ParamSpecString::builder("model")
        .nick("Model")
        .blurb(BLURB)
        .default_value(Some(model::DEFAULT_MODEL))
        .mutable_ready()
        .build()
}

/// Resolves `name` and loads it, shared with every element that names the same directory.
pub fn load(name: &str) -> Result<Arc<Model>, gst::ErrorMessage> {
    model::load_shared(&model::resolve_model_path(name)).map_err(|err| {
        gst::error_msg!(
            gst::ResourceError::OpenRead,
            ("Could not load Whisper model: {}", err),
            ["model property: {:?}", name]
        )
    })
}
