//! The bin on live streams: the latency it promises, the `lateness` offset, and a warning when
//! text comes out later than promised.
//!
//! When upstream is live the bin answers the LATENCY query with upstream's latency plus its
//! `latency` property. To keep that promise, `npumel` sends the growing window again every
//! `live-step` and the decoder emits a word once two passes agree on it, or unconfirmed once
//! it ends `live-hold` before a pass does: step + hold + processing stays within `latency`.
//! The processing time of a pass depends on the model, so each model has a lowest latency
//! (`min-latency`); a `latency` below it is raised to it, with a warning.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;
use npuwhisper_kernels::isa::Isa;

pub const DEFAULT_LATENCY_MS: u32 = 3000;
const MAX_LATENCY_MS: u32 = 31_000;
/// Shortest and longest step between passes: shorter costs more passes than two cores can
/// run; longer only adds latency.
const MIN_STEP_MS: u32 = 500;
const MAX_STEP_MS: u32 = 1000;
const MIN_HOLD_MS: u32 = crate::passes::MIN_HOLD.mseconds() as u32;
/// Hold a latency gives before the step grows past its shortest.
const HOLD_FIRST_MS: u32 = 1000;
/// Processing time kept per pass (spectrogram, encoder, decoder, a pass in flight) once the
/// latency leaves room for it: slack for a loaded machine.
const SLACK_PROCESSING_MS: u32 = 1000;
/// Processing time of a pass of base on two cores (what base needs to keep 2 s on an idle
/// machine); other models scale it by their work per pass.
const BASE_PROCESSING_MS: u32 = 1000;
const BASE_WORK: f64 = 512.0 * 512.0 * 12.0;
/// Floor of the processing time: tiny.en, a third of base's work, needs half a second.
const MIN_PROCESSING_MS: u32 = 500;

/// How much longer a pass takes on a SIMD path than on AMX, where the figures above were
/// measured: on a Zen 3 AVX2 CPU tiny.en's text came 0.8 s and base's 2 s later than those
/// figures allow (tests/live.rs), and Intel CPUs held to AVX2 took twice AMX's CPU time.
pub fn path_factor(isa: Isa) -> f64 {
    match isa {
        Isa::Amx => 1.0,
        Isa::Avx512Vnni => 1.5,
        Isa::Avx2 => 3.0,
        Isa::Portable => 10.0,
    }
}

/// Processing time (ms) a pass of a model of these dimensions needs on this machine: base's,
/// scaled by the work of the layers (d_model² × layers), by the kernels' SIMD path, and by the
/// missing core on one core.
pub fn processing_ms(dims: &npuwhisper_core::model::Dims, cores: usize) -> u32 {
    processing_ms_on(dims, cores, Isa::detect())
}

/// [`processing_ms`] on the SIMD path `isa`.
pub fn processing_ms_on(dims: &npuwhisper_core::model::Dims, cores: usize, isa: Isa) -> u32 {
    let work = (dims.d_model * dims.d_model * (dims.encoder_layers + dims.decoder_layers)) as f64;
    let ms = (BASE_PROCESSING_MS as f64 * work / BASE_WORK).max(MIN_PROCESSING_MS as f64)
        * path_factor(isa)
        * if cores < 2 { 2.0 } else { 1.0 };
    // Whole tenths of a second, as the latency is stated.
    ((ms / 100.0).ceil() * 100.0).min((MAX_LATENCY_MS - MIN_STEP_MS - MIN_HOLD_MS) as f64) as u32
}

/// The lowest latency (ms) the bin keeps with passes that take `processing_ms`: the shortest
/// step, the shortest hold and the processing.
pub fn min_latency_ms(processing_ms: u32) -> u32 {
    MIN_STEP_MS + MIN_HOLD_MS + processing_ms
}

/// How a `latency` (ms, at least [`min_latency_ms`]) is spent: the processing time of a pass
/// plus up to a second of slack, then the hold, the longest a word waits for a second pass (up
/// to a second first: it is what keeps a stream's first words right), then the step between
/// passes (0.5-1 s), and the hold again (the rest). Returns (step, hold).
pub fn step_and_hold_ms(latency_ms: u32, processing_ms: u32) -> (u32, u32) {
    let latency_ms = latency_ms.max(min_latency_ms(processing_ms));
    let processing = processing_ms.max(SLACK_PROCESSING_MS.min(latency_ms - MIN_STEP_MS - MIN_HOLD_MS));
    let rest = latency_ms - processing;
    let hold = (rest - MIN_STEP_MS).clamp(MIN_HOLD_MS, HOLD_FIRST_MS);
    let step = (rest - hold).clamp(MIN_STEP_MS, MAX_STEP_MS);
    (step, rest - step)
}

pub fn param_specs() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecUInt::builder("latency")
            .nick("Latency")
            .blurb("Latency (ms) the bin adds when upstream is live: growing windows are decoded again every 0.5-1 s and a word waits for two passes to agree on it as long as this allows; shorter means less accurate text. Below min-latency it is raised to it, with a warning")
            .maximum(MAX_LATENCY_MS)
            .default_value(DEFAULT_LATENCY_MS)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("min-latency")
            .nick("Minimum latency")
            .blurb("Lowest latency (ms) the bin keeps with its model on this machine (0 until the model is loaded, in READY): a pass's processing time, the shortest step between passes (500 ms) and the shortest wait for a second pass (500 ms)")
            .maximum(MAX_LATENCY_MS)
            .read_only()
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
    /// [`processing_ms`] of the loaded model; 0 until it is loaded.
    processing_ms: AtomicU32,
    lateness_ms: AtomicU32,
    /// Upstream said it is live in the last LATENCY query.
    live: AtomicBool,
    /// Latency (ns) of the pipeline up to the bin's src pad, as last answered when live.
    promised_ns: AtomicU64,
    /// A late-text warning was posted for this stream.
    warned: AtomicBool,
}

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "npuwhisper-live",
        gst::DebugColorFlags::empty(),
        Some("npuwhisper live latency"),
    )
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

    /// Takes the processing time of the model just loaded.
    pub(super) fn set_model(&self, model: &npuwhisper_core::model::Model) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.processing_ms
            .store(processing_ms(&model.dims, cores), Ordering::Relaxed);
    }

    /// The `min-latency` property: 0 while no model is loaded.
    pub(super) fn min_latency_ms(&self) -> u32 {
        match self.processing_ms.load(Ordering::Relaxed) {
            0 => 0,
            p => min_latency_ms(p),
        }
    }

    /// The latency kept: `latency`, raised to `min-latency`.
    pub(super) fn effective_latency_ms(&self) -> u32 {
        self.latency_ms().max(self.min_latency_ms())
    }

    /// npumel's step and the decoder's hold (ms) for the latency kept; before the model is
    /// known, as for base.
    pub(super) fn step_and_hold_ms(&self) -> (u32, u32) {
        let processing = match self.processing_ms.load(Ordering::Relaxed) {
            0 => BASE_PROCESSING_MS,
            p => p,
        };
        step_and_hold_ms(self.latency_ms(), processing)
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
    pub(super) fn answer_latency(
        &self,
        q: &mut gst::query::Latency,
        inside: (bool, gst::ClockTime, Option<gst::ClockTime>),
        upstream: Option<(bool, gst::ClockTime, Option<gst::ClockTime>)>,
    ) {
        let (live, min, max) = inside;
        self.live.store(live, Ordering::Relaxed);
        match upstream {
            Some((true, up_min, up_max)) => {
                // What the bin adds is what it promised, whatever the children say.
                let ours = gst::ClockTime::from_mseconds(self.effective_latency_ms() as u64);
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
        srcpad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |pad, info| {
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
                            *event = gst::event::Gap::builder(pts + lateness)
                                .duration(duration)
                                .seqnum(event.seqnum())
                                .build();
                        }
                    }
                    _ => (),
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    /// How long after its audio (running time of `pts` against the clock) a text buffer leaves.
    fn check_delay(&self, bin: &gst::Bin, pad: &gst::Pad, pts: gst::ClockTime) {
        if !self.live.load(Ordering::Relaxed) {
            return;
        }
        let Some(delay) = crate::passes::clock_lag(bin, pad, pts) else {
            return;
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use npuwhisper_core::model::Dims;

    fn dims(d_model: usize, layers: usize) -> Dims {
        Dims {
            n_mels: 80,
            d_model,
            n_heads: d_model / 64,
            encoder_layers: layers,
            decoder_layers: layers,
            vocab_size: 51864,
            max_text_positions: 448,
        }
    }

    #[test]
    fn lowest_latency_per_model() {
        let floors = |isa| {
            (
                min_latency_ms(processing_ms_on(&dims(384, 4), 2, isa)),
                min_latency_ms(processing_ms_on(&dims(512, 6), 2, isa)),
            )
        };
        assert_eq!(floors(Isa::Amx), (1500, 2000));
        assert_eq!(floors(Isa::Avx512Vnni), (1800, 2500));
        assert_eq!(floors(Isa::Avx2), (2500, 4000));
        // One core does the work of two.
        assert_eq!(min_latency_ms(processing_ms_on(&dims(384, 4), 1, Isa::Amx)), 2000);
        // Larger models need more, within the property's range.
        assert!(min_latency_ms(processing_ms_on(&dims(768, 12), 2, Isa::Amx)) > 2000);
        assert!(min_latency_ms(processing_ms_on(&dims(1280, 32), 1, Isa::Portable)) <= MAX_LATENCY_MS);
    }

    #[test]
    fn step_hold_and_processing_fit_the_latency() {
        for processing in [500, 1000, 4500, processing_ms(&dims(1280, 32), 1)] {
            for latency in (0..=MAX_LATENCY_MS).step_by(100) {
                let (step, hold) = step_and_hold_ms(latency, processing);
                let kept = latency.max(min_latency_ms(processing));
                assert!((MIN_STEP_MS..=MAX_STEP_MS).contains(&step), "{latency} ms: step {step}");
                assert!(hold >= MIN_HOLD_MS, "{latency} ms: hold {hold}");
                assert!(
                    step + hold + processing <= kept,
                    "{latency} ms: {step} + {hold} + {processing}"
                );
            }
        }
        // At 3000 ms as before: passes every second, words held a second.
        assert_eq!(step_and_hold_ms(3000, 500), (1000, 1000));
        // With slower passes (AVX2) the hold keeps its second before the step grows.
        assert_eq!(step_and_hold_ms(3000, 1500), (500, 1000));
        assert_eq!(step_and_hold_ms(2500, 1500), (500, 500));
    }
}
