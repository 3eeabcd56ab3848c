//! Live streams: asking upstream whether it is live, and when a provisional pass over the
//! window so far is sent.

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::super::timing::{self, sample_time};
use super::{NpuMel, State, CAT};
use crate::passes;
use npuwhisper_core::audio::{vad, AudioWindow};

impl NpuMel {
    /// Asks upstream whether it is live (once per stream, before the first window can be cut)
    /// and, if so, makes the windower cut windows of at most `live-max-window`, at the best
    /// pause it finds: the text of a window only comes out once the window is complete.
    pub(super) fn detect_live(&self) {
        if self.state().live.is_some() {
            return;
        }
        // Not under the state lock: the query travels upstream and may take a while.
        let mut q = gst::query::Latency::new();
        let live = self.sinkpad.peer_query(&mut q) && q.result().0;
        let settings = *self.settings();
        let mut state = self.state();
        state.live = Some(live);
        if live {
            let windower = settings.live_windower();
            gst::info!(
                CAT,
                imp = self,
                "Upstream is live: windows of at most {} ms, passes every {} ms",
                windower.max_window_ms,
                settings.live_step_ms
            );
            state.windower.set_settings(windower);
        } else {
            // Nothing waits for a file's windows: the VAD runs its chunks in batches, cheaper.
            state.windower.set_detection_batch(vad::FILE_BATCH);
        }
    }

    /// Live: the window so far, once `live-step` more audio came since the last pass over it
    /// and it is at least [`passes::MIN_PASS`] long (`closed`: a window was just cut, the
    /// pending audio starts a new one).
    pub(super) fn next_pass(&self, state: &mut State, closed: bool) -> Option<AudioWindow> {
        if state.live != Some(true) {
            return None;
        }
        if closed {
            state.pass_sent = 0;
        }
        let step = timing::ms_samples(self.settings().live_step_ms as u64);
        let shortest = timing::ms_samples(passes::MIN_PASS.mseconds());
        let pending = state.windower.pending();
        if !timing::pass_due(pending, state.pass_sent, step, shortest) || state.pass_in_flight() {
            return None;
        }
        let pass = state.windower.pending_window()?;
        state.pass_sent = pending;
        state.pass_sent_end = sample_time(
            state.base_pts.unwrap_or(gst::ClockTime::ZERO),
            pass.start_sample + pass.samples.len() as u64,
        );
        Some(pass)
    }
}
