//! Reading closed captions back: the CEA-608 characters of caption data, as a decoder would
//! type them. Used by the tests that put captions into video and extract them again
//! (`ccextractor`): interop/tests/transcriberbin.rs and interop/tests/pipelines.rs.

use gst::prelude::*;

/// The characters of raw CEA-608 byte pairs, as a roll-up decoder types them; control codes
/// (first byte 0x10 to 0x1f, once parity is dropped) become spaces, padding is dropped.
pub fn cea608_text(data: &[u8]) -> String {
    let mut text = String::new();
    for pair in data.chunks_exact(2) {
        let (a, b) = (pair[0] & 0x7f, pair[1] & 0x7f);
        if (0x10..0x20).contains(&a) {
            text.push(' ');
            continue;
        }
        text.extend([a, b].into_iter().filter(|c| (0x20..0x7f).contains(c)).map(char::from));
    }
    text
}

/// The CEA-608 byte pairs of field 1 in CEA-708 `cc_data` triplets (what H.264 SEI carries and
/// `ccextractor` gives as `closedcaption/x-cea-708,format=cc_data`): those marked valid with
/// `cc_type` 0.
pub fn cc_data_field1(cc_data: &[u8]) -> Vec<u8> {
    cc_data
        .chunks_exact(3)
        .filter(|t| t[0] & 0x04 != 0 && t[0] & 0x03 == 0)
        .flat_map(|t| [t[1], t[2]])
        .collect()
}

/// Links the `caption` pad that `ccextractor` (in `pipeline`) adds with its first caption meta to
/// a queue and an appsink, and hands each caption buffer to `f`.
pub fn on_extracted_captions(
    pipeline: &gst::Pipeline,
    extractor: &gst::Element,
    f: impl Fn(&gst::BufferRef) + Send + Sync + 'static,
) {
    let f = std::sync::Arc::new(f);
    let pipeline_weak = pipeline.downgrade();
    extractor.connect_pad_added(move |_, pad| {
        if pad.name() != "caption" {
            return;
        }
        let Some(pipeline) = pipeline_weak.upgrade() else {
            return;
        };
        let queue = gst::ElementFactory::make("queue").build().unwrap();
        let sink = gst_app::AppSink::builder().sync(false).build();
        let f = f.clone();
        super::on_buffers(&sink, move |buffer| f(buffer));
        pipeline.add_many([&queue, sink.upcast_ref()]).unwrap();
        queue.link(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        queue.sync_state_with_parent().unwrap();
        pad.link(&queue.static_pad("sink").unwrap()).unwrap();
    });
}
