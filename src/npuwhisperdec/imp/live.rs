//! Live streams: the batch size when upstream is live, and provisional passes over live
//! windows (the words two passes agree on go out early).

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::super::output::{content_seconds, stream_pieces, stream_time};
use super::{NpuWhisperDec, Window, CAT};
use crate::passes;
use npuwhisper_core::decoding::stream::{LocalAgreement, Pass, StreamWord};

/// After a provisional pass, no text is expected before the words it left unconfirmed, nor
/// before this long before its end (a word being spoken there may not be decoded yet).
const LIVE_GAP_MARGIN: gst::ClockTime = gst::ClockTime::from_seconds(1);

/// Windows decoded together when `batch-size` is 0 (auto) and upstream is not live: each token
/// step streams the vocabulary projection once for the whole batch (README, Benchmarks).
const AUTO_BATCH: usize = 8;

impl NpuWhisperDec {
    /// Windows decoded together: `batch-size`, or when 0, 8 for recordings and 1 when upstream
    /// is live (where waiting for more windows would only add latency); and whether it is live.
    pub(super) fn choose_batch_size(&self) -> (usize, bool) {
        let mut q = gst::query::Latency::new();
        let live = self.sinkpad.peer_query(&mut q) && q.result().0;
        let asked = self.settings().batch_size as usize;
        let size = if asked > 0 {
            asked
        } else if live {
            1
        } else {
            AUTO_BATCH
        };
        (size, live)
    }

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
                self.agree(&mut state.agreement, Pass::Reset);
            }
            state.streaming = true;
            let words = StreamWord::of_window(&result, window.pts.seconds_f64());
            let emit_before = window_end.saturating_sub(self.hold(settings.live_hold_ms, window_end));
            let pass = Pass::Provisional {
                emit_before: emit_before.seconds_f64(),
                words,
            };
            let released = self.agree(&mut state.agreement, pass);
            let unconfirmed = state.agreement.unconfirmed().first().map(|w| stream_time(w.start));
            let gap_until = window_end
                .saturating_sub(LIVE_GAP_MARGIN)
                .min(unconfirmed.unwrap_or(window_end));
            (stream_pieces(&released, settings.word_timestamps), gap_until)
        };
        self.push_text(&result, window.pts, window.duration, pieces, gap_until, false)
    }

    /// A complete live window npumel did not send because its passes released all its text.
    /// Its text does not go into the prompt: prompted with the words just before a window cut
    /// inside a phrase, Whisper skipped the words after the cut (silence_gaps.wav lost "you can
    /// do for your" that way); the prompt stays that of the last window decoded whole.
    pub(super) fn window_released(&self, start: gst::ClockTime, end: gst::ClockTime) {
        gst::debug!(CAT, imp = self, "Window {start} - {end} released by its passes");
    }

    /// Feeds a pass to the stream's agreement, logging it (LOG level) as JSON for offline replay.
    pub(super) fn agree(&self, agreement: &mut LocalAgreement, pass: Pass) -> Vec<StreamWord> {
        if CAT.above_threshold(gst::DebugLevel::Log) {
            gst::log!(CAT, imp = self, "agreement pass {}", pass.to_json());
        }
        pass.apply(agreement)
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
