//! What the model-bound elements (npuwhisperenc, npuwhisperdec) share: the model they hold,
//! loading it, the caps answer with the model's dimension fixed, and the dimension check.

use std::sync::Arc;

use gst::prelude::*;

use crate::model_property::{self, ModelSettings};
use npuwhisper_core::model::Model;

/// The model an element holds, and the property values it was loaded with.
#[derive(Default)]
pub struct HeldModel {
    pub model: Option<Arc<Model>>,
    loaded_with: Option<ModelSettings>,
}

impl HeldModel {
    /// The model, if it was loaded with `wanted`.
    pub fn loaded(&self, wanted: &ModelSettings) -> Option<Arc<Model>> {
        self.model.clone().filter(|_| self.loaded_with.as_ref() == Some(wanted))
    }

    pub fn set(&mut self, model: Arc<Model>, wanted: ModelSettings) {
        self.model = Some(model);
        self.loaded_with = Some(wanted);
    }
}

/// Loads the model `wanted` names (shared with the other elements), logging it; on failure
/// posts the error on `element`'s bus.
pub fn load(
    element: &impl IsA<gst::Element>,
    cat: gst::DebugCategory,
    wanted: &ModelSettings,
) -> Result<Arc<Model>, gst::StateChangeError> {
    gst::debug!(cat, obj = element, "Loading model {wanted:?}");
    match model_property::load(wanted) {
        Ok(m) => {
            gst::info!(
                cat,
                obj = element,
                "Loaded {}: {} mel bins, width {}",
                m.dir.display(),
                m.n_mels(),
                m.d_model()
            );
            Ok(m)
        }
        Err(msg) => {
            element.post_error_message(msg);
            Err(gst::StateChangeError)
        }
    }
}

/// Answers a caps query with `pad`'s template caps with `field` fixed to the model's `value`.
pub fn answer_caps_query(
    cat: gst::DebugCategory,
    pad: &gst::Pad,
    query: &mut gst::query::Caps,
    field: &str,
    value: usize,
) {
    let mut caps = pad.pad_template_caps();
    caps.make_mut().set(field, value as i32);
    let caps = match query.filter() {
        Some(filter) => filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
        None => caps,
    };
    gst::log!(cat, obj = pad, "Answering caps query with {caps}");
    query.set_result(&caps);
}

/// The caps' `field` if it equals the model's `expected`, else what they carry (-1 if nothing).
pub fn check_dimension(caps: &gst::CapsRef, field: &str, expected: usize) -> Result<usize, i32> {
    let value = caps.structure(0).and_then(|s| s.get::<i32>(field).ok()).unwrap_or(-1);
    match usize::try_from(value) {
        Ok(v) if v == expected => Ok(v),
        _ => Err(value),
    }
}
