//! npumel's settings: the windower's and VAD's, the live ones, and the property table.

use gst::glib;
use gst::prelude::*;

use npuwhisper_core::audio::vad::{self, SileroVad, VadError, VadSettings};
use npuwhisper_core::audio::{Detector, SileroFrames, Windower, WindowerSettings};

/// Audio held back before a window can be emitted (not live).
const WINDOW_LATENCY: gst::ClockTime = gst::ClockTime::from_seconds(30);

/// Default longest window when upstream is live: passes over it are re-decoded every step.
pub(super) const DEFAULT_LIVE_MAX_WINDOW_MS: u32 = 10_000;
/// Default time between two passes over a growing live window.
pub(super) const DEFAULT_LIVE_STEP_MS: u32 = 1000;

/// How speech is told from the rest.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstNpuMelVad")]
pub enum VadMode {
    /// Silero VAD v6 through ONNX Runtime.
    #[default]
    #[enum_value(
        name = "Silero VAD: a trained voice activity detector, independent of the recording level",
        nick = "silero"
    )]
    Silero,
    /// Frames louder than `silence-threshold` are speech.
    #[enum_value(
        name = "Energy gate: frames louder than silence-threshold are speech",
        nick = "energy"
    )]
    Energy,
}

/// The windower's settings; those without a property keep the audio module's defaults.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) windower: WindowerSettings,
    pub(super) vad: VadMode,
    pub(super) vad_settings: VadSettings,
    /// `max_window_ms` used instead of the windower's when upstream is live.
    pub(super) live_max_window_ms: u32,
    /// Audio (ms) added to a live window before it is sent again as a provisional pass.
    pub(super) live_step_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            windower: WindowerSettings::default(),
            vad: VadMode::default(),
            vad_settings: VadSettings::default(),
            live_max_window_ms: DEFAULT_LIVE_MAX_WINDOW_MS,
            live_step_ms: DEFAULT_LIVE_STEP_MS,
        }
    }
}

impl Settings {
    /// A windower with the chosen detector (loading the VAD model).
    pub(super) fn windower(&self) -> Result<Windower, VadError> {
        let detector = match self.vad {
            VadMode::Energy => Detector::default(),
            VadMode::Silero => {
                let vad = SileroVad::load(&vad::default_model_path())?;
                Detector::Silero(Box::new(SileroFrames::new(vad, self.vad_settings)))
            }
        };
        Ok(Windower::with_detector(self.windower, detector))
    }

    /// The windower's settings when upstream is live.
    pub(super) fn live_windower(&self) -> WindowerSettings {
        WindowerSettings {
            max_window_ms: self.live_max_window_ms,
            max_silence_ms: self.live_step_ms,
            ..self.windower
        }
    }

    /// Audio held back before a window (or, live, a pass over it) is emitted.
    pub(super) fn window_latency(&self, live: bool) -> gst::ClockTime {
        if live {
            gst::ClockTime::from_mseconds(self.live_step_ms as u64)
        } else {
            WINDOW_LATENCY
        }
    }
}

pub(super) fn param_specs() -> Vec<glib::ParamSpec> {
    let d = WindowerSettings::default();
    vec![
        glib::ParamSpecEnum::builder_with_default("vad", VadMode::default())
            .nick("Voice activity detection")
            .blurb("How speech is told from silence, noise and music: windows are cut at pauses in speech and windows without speech are not decoded. silero needs the model and ONNX Runtime that scripts/fetch-models.sh installs")
            .mutable_ready()
            .build(),
        glib::ParamSpecDouble::builder("silence-threshold")
            .nick("Silence threshold")
            .blurb("With vad=energy: level (dBFS) below which a 10 ms frame is silence")
            .minimum(-120.0)
            .maximum(0.0)
            .default_value(d.silence_threshold_db as f64)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("min-pause")
            .nick("Minimum pause")
            .blurb("Shortest silence (ms) that counts as a pause, where a window may end")
            .minimum(10)
            .maximum(30_000)
            .default_value(d.min_pause_ms)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("live-max-window")
            .nick("Longest live window")
            .blurb("Longest window (ms) when upstream is live, cut at the best pause before it; until then the growing window is sent again every live-step as a provisional pass")
            .minimum(1000)
            .maximum(30_000)
            .default_value(DEFAULT_LIVE_MAX_WINDOW_MS)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("live-step")
            .nick("Live step")
            .blurb("When upstream is live: audio (ms) added to a window before it is sent again as a provisional pass (flagged DROPPABLE), and the longest silence before a gap goes out; the latency this element adds")
            .minimum(100)
            .maximum(30_000)
            .default_value(DEFAULT_LIVE_STEP_MS)
            .mutable_playing()
            .build(),
    ]
}
