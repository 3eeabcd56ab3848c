//! Progress of the bin on a stream with a known duration, posted on the bus (see the bin's docs).
//!
//! Two pad probes on the decoder watch what has been fully decoded: a window entering
//! `npuwhisperdec` is done when the next item (window, gap or EOS) enters it, since the
//! decoder's sink pad handles one item at a time; text buffers and gaps leaving it are done
//! as they leave. The furthest end so far, in stream time, over the duration upstream answers,
//! is the percentage.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::prelude::*;

/// Code of the `GST_MESSAGE_PROGRESS` messages.
pub const PROGRESS_CODE: &str = "transcribe";
/// Name of the structure of the element messages.
pub const MESSAGE_NAME: &str = "npuwhisper-progress";
/// Least wall time between two posts (but the final one).
const MIN_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Default)]
struct State {
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    /// End (buffer time) of the window inside the decoder.
    in_decoder: Option<gst::ClockTime>,
    /// Furthest end (buffer time) of what has been decoded.
    done: Option<gst::ClockTime>,
    /// Stream time last posted and when.
    posted: Option<(gst::ClockTime, Instant)>,
    /// A Start was posted and no Complete or Canceled since.
    running: bool,
}

impl State {
    fn advance(&mut self, end: gst::ClockTime) {
        self.done = Some(self.done.map_or(end, |d| d.max(end)));
    }

    /// The window inside the decoder has been decoded.
    fn finish_window(&mut self) {
        if let Some(end) = self.in_decoder.take() {
            self.advance(end);
        }
    }

    fn stream_time(&self, t: gst::ClockTime) -> gst::ClockTime {
        self.segment.as_ref().and_then(|s| s.to_stream_time(t)).unwrap_or(t)
    }
}

#[derive(Default)]
pub(super) struct Progress {
    state: Mutex<State>,
}

fn end_of(pts: Option<gst::ClockTime>, duration: Option<gst::ClockTime>) -> Option<gst::ClockTime> {
    pts.map(|p| p.saturating_add(duration.unwrap_or(gst::ClockTime::ZERO)))
}

fn hms(t: gst::ClockTime) -> String {
    let s = t.seconds();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl Progress {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches the decoder `dec` inside `bin`.
    pub(super) fn install(self: &Arc<Self>, bin: &gst::Bin, dec: &gst::Element) -> Result<(), String> {
        let mask = gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM;
        for (name, input) in [("sink", true), ("src", false)] {
            let pad = dec
                .static_pad(name)
                .ok_or_else(|| format!("npuwhisperdec has no {name} pad"))?;
            let progress = self.clone();
            let bin = bin.downgrade();
            pad.add_probe(mask, move |_pad, info| {
                if let (Some(bin), Some(data)) = (bin.upgrade(), info.data.as_ref()) {
                    progress.observe(&bin, data, input);
                }
                gst::PadProbeReturn::Ok
            })
            .ok_or_else(|| format!("Could not watch the decoder's {name} pad"))?;
        }
        Ok(())
    }

    fn observe(&self, bin: &gst::Bin, data: &gst::PadProbeData, input: bool) {
        {
            let mut st = self.state();
            match data {
                gst::PadProbeData::Buffer(b) => {
                    if input {
                        st.finish_window();
                        st.in_decoder = end_of(b.pts(), b.duration());
                    } else if let Some(end) = end_of(b.pts(), b.duration()) {
                        st.advance(end);
                    }
                }
                gst::PadProbeData::Event(e) => match e.view() {
                    gst::EventView::Segment(s) if input => {
                        st.segment = s.segment().downcast_ref::<gst::ClockTime>().cloned();
                    }
                    gst::EventView::Gap(g) => {
                        if input {
                            st.finish_window();
                        }
                        let (pts, duration) = g.get();
                        if let Some(end) = end_of(Some(pts), duration) {
                            st.advance(end);
                        }
                    }
                    gst::EventView::Eos(_) if input => st.finish_window(),
                    gst::EventView::Eos(_) => {
                        drop(st);
                        self.complete(bin);
                        return;
                    }
                    // A flushing seek: progress starts again from where the stream resumes.
                    gst::EventView::FlushStop(_) if input => {
                        st.in_decoder = None;
                        st.done = None;
                        st.posted = None;
                        return;
                    }
                    _ => return,
                },
                _ => return,
            }
        }
        self.update(bin);
    }

    /// Posts the progress if it moved and the last post is old enough.
    fn update(&self, bin: &gst::Bin) {
        // Only in PLAYING: gst-launch-1.0 takes a Start or Continue progress message seen
        // before the pipeline prerolled for an operation to wait for before PLAYING, and the
        // sink holding the preroll buffer would then stop the decoder for ever.
        if bin.current_state() != gst::State::Playing {
            return;
        }
        let position = {
            let st = self.state();
            let Some(done) = st.done else { return };
            let position = st.stream_time(done);
            match st.posted {
                Some((p, t)) if position <= p || t.elapsed() < MIN_INTERVAL => return,
                _ => position,
            }
        };
        let Some(duration) = query_duration(bin) else {
            return;
        };
        let position = position.min(duration);
        let type_ = {
            let mut st = self.state();
            st.posted = Some((position, Instant::now()));
            if std::mem::replace(&mut st.running, true) {
                gst::ProgressType::Continue
            } else {
                gst::ProgressType::Start
            }
        };
        let percent = 100.0 * position.nseconds() as f64 / duration.nseconds() as f64;
        post(bin, type_, percent, position, duration);
    }

    /// At EOS: everything received has been decoded.
    fn complete(&self, bin: &gst::Bin) {
        let duration = query_duration(bin);
        let (running, done) = {
            let mut st = self.state();
            st.finish_window();
            let done = st.done.map(|d| st.stream_time(d));
            st.posted = done.map(|d| (d, Instant::now()));
            (std::mem::take(&mut st.running), done)
        };
        // Nothing to complete on a stream without duration that never reported progress.
        let Some(duration) = duration.or(running.then_some(done).flatten()) else {
            return;
        };
        post(bin, gst::ProgressType::Complete, 100.0, duration, duration);
    }

    /// Going to READY: forgets the stream, cancelling a progress report not completed.
    pub(super) fn reset(&self, bin: &gst::Bin) {
        let running = std::mem::take(&mut *self.state()).running;
        if running {
            let msg = gst::message::Progress::builder(gst::ProgressType::Canceled, PROGRESS_CODE, "stopped")
                .src(bin)
                .build();
            let _ = bin.post_message(msg);
        }
    }
}

/// Duration of the stream upstream of the bin, if known (not for live sources).
fn query_duration(bin: &gst::Bin) -> Option<gst::ClockTime> {
    bin.static_pad("sink")?
        .peer_query_duration::<gst::ClockTime>()
        .filter(|d| !d.is_zero())
}

fn post(bin: &gst::Bin, type_: gst::ProgressType, percent: f64, position: gst::ClockTime, duration: gst::ClockTime) {
    let percent = percent.clamp(0.0, 100.0);
    // Whole percents, rounded down: the progress message says 100 only once complete.
    let whole = match type_ {
        gst::ProgressType::Complete => 100,
        _ => (percent.floor() as i32).min(99),
    };
    let text = format!("{whole} % ({} of {})", hms(position), hms(duration));
    let progress = gst::message::Progress::builder(type_, PROGRESS_CODE, &text)
        .src(bin)
        .other_field("percent", whole)
        .build();
    let element = gst::message::Element::builder(
        gst::Structure::builder(MESSAGE_NAME)
            .field("percent", percent)
            .field("position", position)
            .field("duration", duration)
            .build(),
    )
    .src(bin)
    .build();
    for msg in [progress, element] {
        // Fails only without a bus, i.e. outside a pipeline: nobody to tell.
        let _ = bin.post_message(msg);
    }
}
