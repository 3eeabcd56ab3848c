//! Provisional passes on live streams: npumel sends a growing window again every `live-step`
//! so the decoder can emit words before the window is complete (see
//! [`crate::decoding::stream`]). Such a buffer is flagged DROPPABLE: a later pass or the
//! complete window covers the same audio, so an element that has fallen behind skips it.

use gst::prelude::*;

/// Flag of a provisional pass.
pub const PROVISIONAL: gst::BufferFlags = gst::BufferFlags::DROPPABLE;

/// A provisional pass whose audio ended longer ago than this is not worth its work: the next
/// pass (every second or so) is already on its way.
const STALE_AFTER: gst::ClockTime = gst::ClockTime::from_mseconds(2000);

pub fn is_provisional(buffer: &gst::BufferRef) -> bool {
    buffer.flags().contains(PROVISIONAL)
}

/// Whether `buffer`, arriving on `pad` of `element`, is a provisional pass the clock has left
/// behind. Without a clock (not playing, tests) nothing is stale.
pub fn is_stale(element: &impl IsA<gst::Element>, pad: &gst::Pad, buffer: &gst::BufferRef) -> bool {
    if !is_provisional(buffer) {
        return false;
    }
    let (Some(clock), Some(base)) = (element.clock(), element.base_time()) else { return false };
    let Some(end) = buffer.pts().zip(buffer.duration()).map(|(p, d)| p + d) else { return false };
    let Some(segment) = pad.sticky_event::<gst::event::Segment>(0) else { return false };
    let Some(running) = segment.segment().downcast_ref::<gst::ClockTime>().and_then(|s| s.to_running_time(end)) else { return false };
    clock.time().saturating_sub(base).saturating_sub(running) > STALE_AFTER
}
