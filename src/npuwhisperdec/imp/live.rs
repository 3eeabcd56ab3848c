//! Provisional passes over live windows: the words two passes agree on go out early.

use gst::subclass::prelude::*;

use super::super::output::{content_seconds, stream_pieces, stream_time};
use super::{NpuWhisperDec, Window, CAT};
use crate::passes;
use npuwhisper_core::decoding::stream::StreamWord;

/// After a provisional pass, no text is expected before the words it left unconfirmed, nor
/// before this long before its end (a word being spoken there may not be decoded yet).
const LIVE_GAP_MARGIN: gst::ClockTime = gst::ClockTime::from_seconds(1);

impl NpuWhisperDec {
    /// A provisional pass over a live window: pushes the words it and the previous pass agree
    /// on, and those too old to wait for the next pass.
    pub(super) fn decode_pass(&self, window: Window) -> Result<gst::FlowSuccess, gst::FlowError> {
        let result = {
            let mut transcriber = self.transcriber();
            let Some(transcriber) = transcriber.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            if window.discont {
                transcriber.reset();
            }
            let start = std::time::Instant::now();
            let result = transcriber.transcribe_provisional(&window.states, content_seconds(window.duration));
            gst::debug!(
                CAT,
                imp = self,
                "Decoded a pass at {} ({:.2} s) in {:?}",
                window.pts,
                content_seconds(window.duration),
                start.elapsed()
            );
            result
        };
        self.report_failure(&result, window.pts);
        let settings = self.settings().clone();
        let window_end = window.pts.saturating_add(window.duration);
        let (pieces, gap_until) = {
            let mut state = self.state();
            if window.discont {
                state.agreement.reset();
            }
            state.streaming = true;
            let words = StreamWord::of_window(&result, window.pts.seconds_f64());
            let emit_before = window_end.saturating_sub(self.hold(settings.live_hold_ms, window_end));
            let released = state.agreement.provisional(words, emit_before.seconds_f64());
            let unconfirmed = state.agreement.unconfirmed().first().map(|w| stream_time(w.start));
            let gap_until = window_end
                .saturating_sub(LIVE_GAP_MARGIN)
                .min(unconfirmed.unwrap_or(window_end));
            (stream_pieces(&released, settings.word_timestamps), gap_until)
        };
        self.push_text(&result, window.pts, window.duration, pieces, gap_until, false)
    }

    /// How long a word at the end of the pass ending at `end` may wait for the next pass: the
    /// `live-hold`, less what this pass came late (on a loaded machine), down to
    /// [`passes::MIN_HOLD`]. The next pass will be as late: words that waited for it would miss
    /// the latency.
    fn hold(&self, hold_ms: u32, end: gst::ClockTime) -> gst::ClockTime {
        let hold = gst::ClockTime::from_mseconds(hold_ms as u64);
        let late = passes::clock_lag(&*self.obj(), &self.sinkpad, end)
            .map_or(gst::ClockTime::ZERO, |lag| lag.saturating_sub(passes::ON_TIME));
        hold.saturating_sub(late).max(passes::MIN_HOLD.min(hold))
    }
}
