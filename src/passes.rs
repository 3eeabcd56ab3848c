//! Provisional passes on live streams: npumel sends a growing window again every `live-step`
//! so the decoder can emit words before the window is complete (see
//! [`npuwhisper_core::decoding::stream`]). Such a buffer is flagged DROPPABLE: a later pass or the
//! complete window covers the same audio, so the encoder skips one that waited too long for
//! it; the decoder decodes every pass that reaches it (the encoder's work is spent, and the
//! next pass only comes once this one is done).
//!
//! Flow control: whoever finishes (or skips) a pass sends a custom upstream event saying so,
//! and npumel keeps at most one pass in flight once it hears of one. A slow model then gets
//! passes as often as it can decode them, each over all the audio so far, instead of a queue
//! of passes that are stale by the time their turn comes.

use gst::prelude::*;

/// Flag of a provisional pass.
pub const PROVISIONAL: gst::BufferFlags = gst::BufferFlags::DROPPABLE;

/// A provisional pass whose audio ended longer ago than this is not worth its work: the next
/// pass (every second or so) is already on its way.
const STALE_AFTER: gst::ClockTime = gst::ClockTime::from_mseconds(2000);

/// Shortest provisional pass: on less audio Whisper guesses ("And...", "So..."), and the
/// guess would count as one of the two passes that confirm a word.
pub const MIN_PASS: gst::ClockTime = gst::ClockTime::from_mseconds(1000);

/// Shortest wait for a second pass on the words at the end of a pass: the last half second
/// of a pass is where Whisper cuts words in two or guesses.
pub const MIN_HOLD: gst::ClockTime = gst::ClockTime::from_mseconds(500);

/// A pass decoded within this of its audio's end is on time; later, the machine is loaded.
pub const ON_TIME: gst::ClockTime = gst::ClockTime::from_mseconds(500);

pub fn is_provisional(buffer: &gst::BufferRef) -> bool {
    buffer.flags().contains(PROVISIONAL)
}

/// How long ago, on `element`'s clock, stream time `time` of `pad`'s segment was; `None`
/// without a clock (not playing, tests) or a time segment.
pub fn clock_lag(element: &impl IsA<gst::Element>, pad: &gst::Pad, time: gst::ClockTime) -> Option<gst::ClockTime> {
    let (clock, base) = (element.clock()?, element.base_time()?);
    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
    let running = segment
        .segment()
        .downcast_ref::<gst::ClockTime>()?
        .to_running_time(time)?;
    Some(clock.time().saturating_sub(base).saturating_sub(running))
}

/// Whether `buffer`, arriving on `sinkpad` of `element`, is a provisional pass the clock has
/// left behind; if so it is reported done upstream, and the caller drops it.
pub fn skip_if_stale(element: &impl IsA<gst::Element>, sinkpad: &gst::Pad, buffer: &gst::BufferRef) -> bool {
    let end = buffer.pts().zip(buffer.duration()).map(|(p, d)| p + d);
    let stale = is_provisional(buffer)
        && end
            .and_then(|end| clock_lag(element, sinkpad, end))
            .is_some_and(|lag| lag > STALE_AFTER);
    if stale {
        send_done(sinkpad, buffer, None);
    }
    stale
}

/// Name of the upstream event that says a pass has been decoded or skipped.
const DONE: &str = "npuwhisper-pass-done";

/// Event telling npumel that the pass ending at `end` (stream time) is done; from the
/// decoder, also how far the text it has pushed goes (`released`, stream time).
pub fn done_event(end: gst::ClockTime, released: Option<gst::ClockTime>) -> gst::Event {
    let mut s = gst::Structure::builder(DONE).field("end", end);
    if let Some(released) = released {
        s = s.field("released", released);
    }
    gst::event::CustomUpstream::builder(s.build()).build()
}

fn done_field(event: &gst::EventRef, field: &str) -> Option<gst::ClockTime> {
    match event.view() {
        gst::EventView::CustomUpstream(e) => e
            .structure()
            .filter(|s| s.name() == DONE)
            .and_then(|s| s.get(field).ok()),
        _ => None,
    }
}

/// End of the pass a done event is about.
pub fn done_end(event: &gst::EventRef) -> Option<gst::ClockTime> {
    done_field(event, "end")
}

/// End of the text the decoder had pushed when it sent a done event.
pub fn done_released(event: &gst::EventRef) -> Option<gst::ClockTime> {
    done_field(event, "released")
}

/// Tells upstream a pass buffer is done with (decoded or skipped), and how far the text
/// released so far goes, when the sender knows.
pub fn send_done(sinkpad: &gst::Pad, buffer: &gst::BufferRef, released: Option<gst::ClockTime>) {
    if let Some(end) = buffer.pts().zip(buffer.duration()).map(|(p, d)| p + d) {
        sinkpad.push_event(done_event(end, released));
    }
}

/// Name of the downstream event npumel sends instead of a complete live window whose text
/// the passes over it have all released.
const RELEASED_WINDOW: &str = "npuwhisper-window-released";

/// Stands for the complete live window `start`..`end` (stream time): decoding it again
/// would only delay the next pass. The decoder carries the text released for it into the
/// prompt, as decoding it would have.
pub fn released_window_event(start: gst::ClockTime, end: gst::ClockTime) -> gst::Event {
    gst::event::CustomDownstream::builder(
        gst::Structure::builder(RELEASED_WINDOW)
            .field("start", start)
            .field("end", end)
            .build(),
    )
    .build()
}

/// Start and end of the window a released-window event stands for.
pub fn released_window(event: &gst::EventRef) -> Option<(gst::ClockTime, gst::ClockTime)> {
    match event.view() {
        gst::EventView::CustomDownstream(e) => {
            let s = e.structure().filter(|s| s.name() == RELEASED_WINDOW)?;
            Some((s.get("start").ok()?, s.get("end").ok()?))
        }
        _ => None,
    }
}
