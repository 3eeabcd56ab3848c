//! The bin on live streams: the latency it promises, the `lateness` offset, and a warning when
//! text comes out later than promised.
//!
//! When upstream is live the bin answers the LATENCY query with upstream's latency plus its
//! `latency` property. To keep that promise, `npumel` sends the growing window again every
//! `live-step` and the decoder emits a word once two passes agree on it, or unconfirmed once
//! it ends `live-hold` before a pass does: step + hold + processing stays within `latency`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;

pub const DEFAULT_LATENCY_MS: u32 = 3000;
/// Part of `latency` kept for spectrogram, encoder and decoder of a window (tiny.en on two
/// shared cores: 0.3 to 0.8 s per window); the rest bounds the window length.
const PROCESSING_ALLOWANCE_MS: u32 = 1000;
/// Shortest and longest step between passes: shorter costs more passes than two cores can
/// run; longer only adds latency.
const MIN_STEP_MS: u32 = 500;
const MAX_STEP_MS: u32 = 1000;
/// Smallest `latency`: one shortest step, processing, and no hold.
const MIN_LATENCY_MS: u32 = MIN_STEP_MS + PROCESSING_ALLOWANCE_MS;

/// `live-step` of npumel for a `latency` (ms) of the bin: half of what processing leaves,
/// so that a word can wait for one more pass.
pub fn step_ms(latency_ms: u32) -> u32 {
    (latency_ms.saturating_sub(PROCESSING_ALLOWANCE_MS) / 2).clamp(MIN_STEP_MS, MAX_STEP_MS)
}

/// `live-hold` of npuwhisperdec for a `latency` (ms): the rest after a step and processing.
pub fn hold_ms(latency_ms: u32) -> u32 {
    latency_ms.saturating_sub(PROCESSING_ALLOWANCE_MS + step_ms(latency_ms))
}

pub fn param_specs() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecUInt::builder("latency")
            .nick("Latency")
            .blurb("Latency (ms) the bin adds when upstream is live: growing windows are decoded again every 0.5-1 s and a word waits for two passes to agree on it as long as this allows; shorter means less accurate text")
            .minimum(MIN_LATENCY_MS)
            .maximum(31_000)
            .default_value(DEFAULT_LATENCY_MS)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("lateness")
            .nick("Lateness")
            .blurb("Milliseconds added to the timestamps of the text (and gaps): text that comes out later than latency is then still in time downstream, shown that much after the speech")
            .default_value(0)
            .mutable_playing()
            .build(),
    ]
}

#[derive(Default)]
pub(super) struct Live {
    latency_ms: AtomicU32,
    lateness_ms: AtomicU32,
    /// Upstream said it is live in the last LATENCY query.
    live: AtomicBool,
    /// Latency (ns) of the pipeline up to the bin's src pad, as last answered when live.
    promised_ns: AtomicU64,
    /// A late-text warning was posted for this stream.
    warned: AtomicBool,
}

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new("npuwhisper-live", gst::DebugColorFlags::empty(), Some("npuwhisper live latency"))
});

impl Live {
    pub(super) fn new() -> Self {
        let live = Live::default();
        live.latency_ms.store(DEFAULT_LATENCY_MS, Ordering::Relaxed);
        live
    }

    pub(super) fn latency_ms(&self) -> u32 {
        self.latency_ms.load(Ordering::Relaxed)
    }

    pub(super) fn set_latency_ms(&self, ms: u32) {
        self.latency_ms.store(ms, Ordering::Relaxed);
    }

    pub(super) fn lateness_ms(&self) -> u32 {
        self.lateness_ms.load(Ordering::Relaxed)
    }

    pub(super) fn set_lateness_ms(&self, ms: u32) {
        self.lateness_ms.store(ms, Ordering::Relaxed);
    }

    pub(super) fn reset(&self) {
        self.warned.store(false, Ordering::Relaxed);
    }

    fn lateness(&self) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(self.lateness_ms() as u64)
    }

    /// Answers a LATENCY query on the bin's src pad; `inside` is the answer of the chain
    /// inside the bin, `upstream` that of the bin's upstream peer.
    pub(super) fn answer_latency(&self, q: &mut gst::query::Latency, inside: (bool, gst::ClockTime, Option<gst::ClockTime>), upstream: Option<(bool, gst::ClockTime, Option<gst::ClockTime>)>) {
        let (live, min, max) = inside;
        self.live.store(live, Ordering::Relaxed);
        match upstream {
            Some((true, up_min, up_max)) => {
                // What the bin adds is what it promised, whatever the children say.
                let ours = gst::ClockTime::from_mseconds(self.latency_ms() as u64);
                let min = up_min.saturating_add(ours);
                let max = up_max.map(|m| m.saturating_add(ours).max(min));
                gst::debug!(CAT, "Live: latency {min} (upstream {up_min} + {ours})");
                self.promised_ns.store(min.nseconds(), Ordering::Relaxed);
                q.set(true, min, max);
            }
            _ => q.set(live, min, max),
        }
    }

    /// Watches the text leaving the bin: shifts it by `lateness` and warns once when it comes
    /// out later than the latency allows.
    pub(super) fn install(self: &std::sync::Arc<Self>, bin: &gst::Bin, srcpad: &gst::Pad) {
        let live = self.clone();
        let bin = bin.downgrade();
        srcpad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
            let lateness = live.lateness();
            match &mut info.data {
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    if let (Some(bin), Some(pts)) = (bin.upgrade(), buffer.pts()) {
                        live.check_delay(&bin, pad, pts);
                    }
                    if lateness > gst::ClockTime::ZERO {
                        let b = buffer.make_mut();
                        b.set_pts(b.pts().map(|p| p + lateness));
                    }
                }
                Some(gst::PadProbeData::Event(event)) if lateness > gst::ClockTime::ZERO => {
                    if let gst::EventView::Gap(g) = event.view() {
                        let (pts, duration) = g.get();
                        *event = gst::event::Gap::builder(pts + lateness).duration(duration).seqnum(event.seqnum()).build();
                    }
                }
                _ => (),
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// How long after its audio (running time of `pts` against the clock) a text buffer leaves.
    fn check_delay(&self, bin: &gst::Bin, pad: &gst::Pad, pts: gst::ClockTime) {
        if !self.live.load(Ordering::Relaxed) {
            return;
        }
        let Some(delay) = crate::passes::clock_lag(bin, pad, pts) else { return };
        let allowed = gst::ClockTime::from_nseconds(self.promised_ns.load(Ordering::Relaxed)) + self.lateness();
        gst::debug!(CAT, obj = bin, "Text at {pts} out {delay} after its audio");
        if delay > allowed && !self.warned.swap(true, Ordering::Relaxed) {
            gst::element_warning!(
                bin,
                gst::CoreError::Clock,
                ("Text comes out {} ms after its audio, more than latency + lateness ({} ms): raise latency or lateness", delay.mseconds(), allowed.mseconds())
            );
        }
    }
}
