use std::sync::{LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use npuwhisper_kernels::mel::LogMel;

use super::settings::{Settings, VadMode};
use super::timing;
use crate::{caps, f32buf, passes};
use npuwhisper_core::audio::vad::VadError;
use npuwhisper_core::audio::{level_speech, AudioWindow, Windower, SAMPLE_RATE, WINDOW_SAMPLES};
use npuwhisper_core::model::{MAX_N_MELS, MEL_FRAMES};

mod live;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "npumel",
        gst::DebugColorFlags::empty(),
        Some("Whisper log-mel spectrogram"),
    )
});

/// Used when downstream accepts any `n-mels` (Whisper v1/v2 models).
const DEFAULT_N_MELS: i32 = 80;
/// A window as pushed downstream: a spectrogram, or a gap for a window without speech.
enum Output {
    Buffer(gst::Buffer),
    /// A gap, or a released-window event.
    Event(gst::Event),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleFormat {
    F32,
    S16,
}

struct Negotiated {
    format: SampleFormat,
    n_mels: usize,
    mel: LogMel,
}

#[derive(Default)]
struct State {
    negotiated: Option<Negotiated>,
    windower: Windower,
    /// PTS of sample 0 of the windower's count; `None` until the first buffer.
    base_pts: Option<gst::ClockTime>,
    /// Samples given to the windower since its last reset.
    samples_seen: u64,
    /// Mark the next output buffer DISCONT.
    discont: bool,
    /// Time-format segment start: the base when the first buffer has no PTS.
    segment_start: Option<gst::ClockTime>,
    /// NaN or infinite samples were seen (and warned about).
    saw_non_finite: bool,
    /// A window beyond full scale was scaled down (and warned about).
    saw_over_range: bool,
    /// Whether upstream is live, asked at the first buffer: live streams get provisional passes.
    live: Option<bool>,
    /// Samples pending in the windower when the last provisional pass was sent.
    pass_sent: usize,
    /// End of the last provisional pass sent, and of the last one downstream said is done
    /// (`None` until downstream says so: then passes are not held back).
    pass_sent_end: Option<gst::ClockTime>,
    pass_done_end: Option<gst::ClockTime>,
    /// How far the text the decoder has pushed goes (stream time), as it last said.
    released_end: Option<gst::ClockTime>,
}

impl State {
    /// Restarts the sample count; timestamps rebase on the next buffer.
    fn reset_stream(&mut self) {
        self.windower.reset();
        self.base_pts = None;
        self.samples_seen = 0;
        self.discont = true;
        self.pass_sent = 0;
        self.pass_sent_end = None;
        self.pass_done_end = None;
        self.released_end = None;
    }

    /// A complete live window ending at `end` whose text the passes have all released.
    fn released(&self, end: Option<gst::ClockTime>) -> bool {
        self.live == Some(true)
            && end
                .zip(self.released_end)
                .is_some_and(|(end, released)| end <= released)
    }

    /// Downstream is still decoding the last pass sent.
    fn pass_in_flight(&self) -> bool {
        timing::pass_in_flight(self.pass_sent_end, self.pass_done_end)
    }
}

pub struct NpuMel {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

impl NpuMel {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic was already reported; keep the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spectrogram buffers for `windows`, timestamped from the current base; windows without
    /// speech become gaps, so nothing downstream decodes them. `provisional` windows are
    /// passes over audio that will be sent again with more (flagged as such).
    fn window_outputs(
        &self,
        state: &mut State,
        windows: Vec<AudioWindow>,
        provisional: bool,
    ) -> Result<Vec<Output>, gst::FlowError> {
        let Some(neg) = state.negotiated.as_ref() else {
            return Err(gst::FlowError::NotNegotiated);
        };
        let base = state.base_pts.unwrap_or(gst::ClockTime::ZERO);
        let mut out = Vec::with_capacity(windows.len());

        for w in windows {
            let len = w.samples.len();
            if len > WINDOW_SAMPLES {
                gst::warning!(CAT, imp = self, "Window of {len} samples exceeds 30 s, cut");
            }
            let (start, duration) = timing::window_span(base, w.start_sample, len);
            gst::debug!(
                CAT,
                imp = self,
                "Window of {:.2} s at {}{}",
                len as f64 / SAMPLE_RATE as f64,
                start.display(),
                if w.has_speech { "" } else { ", no speech" }
            );

            if !w.has_speech {
                if let Some(start) = start {
                    out.push(Output::Event(
                        gst::event::Gap::builder(start).duration(duration).build(),
                    ));
                }
                continue;
            }
            // Decoding it again would hold up the next pass by a pass's work, for no new text.
            let end = start.zip(duration).map(|(s, d)| s + d);
            if !provisional && state.released(end) {
                if let (Some(start), Some(end)) = (start, end) {
                    gst::debug!(CAT, imp = self, "Window {start} - {end} already released by its passes");
                    out.push(Output::Event(passes::released_window_event(start, end)));
                    continue;
                }
            }

            // Float input beyond full scale would leave the model's range.
            let mut samples = w.samples;
            if let Some(peak) = timing::scale_to_full(&mut samples) {
                if !std::mem::replace(&mut state.saw_over_range, true) {
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Format,
                        (
                            "Input beyond full scale (peak {:.1}): windows over full scale are scaled down to it",
                            peak
                        )
                    );
                }
            }
            level_speech(&mut samples, &w.speech);
            let mel = neg.mel.compute(&samples, WINDOW_SAMPLES);
            if mel.len() != neg.n_mels * MEL_FRAMES {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Failed,
                    (
                        "Log-mel kernel returned {} values, expected {}",
                        mel.len(),
                        neg.n_mels * MEL_FRAMES
                    )
                );
                return Err(gst::FlowError::Error);
            }

            let mut buffer = f32buf::buffer_from_f32(&mel);
            {
                let buffer = buffer.get_mut().ok_or(gst::FlowError::Error)?;
                buffer.set_pts(start);
                buffer.set_duration(duration);
                buffer.set_offset(w.start_sample);
                buffer.set_offset_end(w.start_sample + len as u64);
                if std::mem::take(&mut state.discont) {
                    buffer.set_flags(gst::BufferFlags::DISCONT);
                }
                if provisional {
                    buffer.set_flags(passes::PROVISIONAL);
                }
            }
            out.push(Output::Buffer(buffer));
        }
        Ok(out)
    }

    /// Pushes in order: consecutive buffers as one list (the encoder batches them), gaps as events.
    fn push_outputs(&self, outputs: Vec<Output>) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut buffers = Vec::new();
        for output in outputs {
            match output {
                Output::Buffer(b) => buffers.push(b),
                Output::Event(event) => {
                    self.push_buffers(std::mem::take(&mut buffers))?;
                    if !self.srcpad.push_event(event) {
                        gst::debug!(CAT, imp = self, "Event not handled downstream");
                    }
                }
            }
        }
        self.push_buffers(buffers)
    }

    /// Pushes one buffer alone, several as a list.
    fn push_buffers(&self, mut buffers: Vec<gst::Buffer>) -> Result<gst::FlowSuccess, gst::FlowError> {
        match buffers.len() {
            0 => Ok(gst::FlowSuccess::Ok),
            1 => self.srcpad.push(buffers.pop().unwrap()),
            _ => {
                let mut list = gst::BufferList::new_sized(buffers.len());
                {
                    let list = list.get_mut().unwrap();
                    for b in buffers {
                        list.add(b);
                    }
                }
                self.srcpad.push_list(list)
            }
        }
    }

    /// End of a stream (EOS, discontinuity, new caps): the windows still pending.
    fn flush_windows(&self, state: &mut State) -> Result<Vec<Output>, gst::FlowError> {
        let windows = state.windower.flush().map_err(|e| self.vad_failed(e))?;
        if state.negotiated.is_none() {
            return Ok(Vec::new());
        }
        self.window_outputs(state, windows, false)
    }

    fn vad_failed(&self, err: VadError) -> gst::FlowError {
        gst::element_imp_error!(
            self,
            gst::LibraryError::Failed,
            ("Voice activity detection failed: {}", err)
        );
        gst::FlowError::Error
    }

    fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One input buffer: its samples, the timeline it continues (or breaks), then the windows
    /// and live pass it completes, pushed once the state is released.
    fn sink_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.detect_live();
        let mut state = self.state();
        let mut samples = self.input_samples(&state, &buffer)?;
        // Taken as silence, the rest of the window is still transcribed.
        let non_finite = timing::silence_non_finite(&mut samples);
        let warn_non_finite = non_finite > 0 && !std::mem::replace(&mut state.saw_non_finite, true);
        let mut out = self.follow_timeline(&mut state, &buffer)?;
        out.extend(self.cut_windows(&mut state, &samples)?);
        drop(state);

        if warn_non_finite {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Format,
                (
                    "Input has NaN or infinite samples ({} in the first such buffer): taken as silence",
                    non_finite
                )
            );
        }
        self.push_outputs(out)
    }

    /// The buffer's samples as f32, in the negotiated format.
    fn input_samples(&self, state: &State, buffer: &gst::Buffer) -> Result<Vec<f32>, gst::FlowError> {
        let Some(format) = state.negotiated.as_ref().map(|n| n.format) else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("Received a buffer before the caps"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let map = buffer.map_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("Could not map input buffer"));
            gst::FlowError::Error
        })?;
        let samples = match format {
            SampleFormat::F32 => f32buf::f32_from_bytes(&map),
            SampleFormat::S16 => f32buf::f32_from_s16le(&map),
        };
        samples.ok_or_else(|| {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "Input buffer of {} bytes is not a whole number of samples",
                    buffer.size()
                )
            );
            gst::FlowError::Error
        })
    }

    /// Sets the base at the first buffer; at a DISCONT buffer or a timestamp jump, closes the
    /// pending window on the old timeline (returned) and restarts the count at the buffer.
    fn follow_timeline(&self, state: &mut State, buffer: &gst::Buffer) -> Result<Vec<Output>, gst::FlowError> {
        let pts = buffer.pts();
        let Some(base) = state.base_pts else {
            state.base_pts = pts.or(state.segment_start).or(Some(gst::ClockTime::ZERO));
            state.samples_seen = 0;
            state.discont = true;
            return Ok(Vec::new());
        };
        let expected = timing::sample_time(base, state.samples_seen);
        if !timing::jumped(pts, expected) && !buffer.flags().contains(gst::BufferFlags::DISCONT) {
            return Ok(Vec::new());
        }
        gst::debug!(
            CAT,
            imp = self,
            "Discontinuity: expected {}, got {}; ending the window early",
            expected.display(),
            pts.display()
        );
        let out = self.flush_windows(state)?;
        state.reset_stream();
        state.base_pts = pts.or(expected);
        Ok(out)
    }

    /// Gives `samples` to the windower: the windows they complete, then a live pass if due.
    fn cut_windows(&self, state: &mut State, samples: &[f32]) -> Result<Vec<Output>, gst::FlowError> {
        let windows = state.windower.push(samples).map_err(|e| self.vad_failed(e))?;
        state.samples_seen += samples.len() as u64;
        let closed = !windows.is_empty();
        let mut out = self.window_outputs(state, windows, false)?;
        if let Some(pass) = self.next_pass(state, closed) {
            out.extend(self.window_outputs(state, vec![pass], true)?);
        }
        Ok(out)
    }

    fn set_caps(&self, caps: &gst::CapsRef) -> bool {
        let format = match gst_audio::AudioInfo::from_caps(caps) {
            Ok(info) if info.rate() == SAMPLE_RATE && info.channels() == 1 => match info.format() {
                gst_audio::AudioFormat::F32le => SampleFormat::F32,
                gst_audio::AudioFormat::S16le => SampleFormat::S16,
                _ => {
                    gst::error!(CAT, imp = self, "Unsupported format in caps {caps}");
                    return false;
                }
            },
            _ => {
                gst::error!(CAT, imp = self, "Unsupported caps {caps}");
                return false;
            }
        };

        // Downstream (the encoder) decides n-mels from its model.
        let templ = self.srcpad.pad_template_caps();
        let mut src_caps = self.srcpad.peer_query_caps(Some(&templ));
        if src_caps.is_any() {
            src_caps = templ;
        }
        if src_caps.is_empty() {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Downstream accepts no audio/x-npuwhisper-mel caps")
            );
            return false;
        }
        src_caps.truncate();
        if let Some(s) = src_caps.make_mut().structure_mut(0) {
            s.fixate_field_nearest_int("n-mels", DEFAULT_N_MELS);
        }
        src_caps.fixate();
        let n_mels = src_caps
            .structure(0)
            .and_then(|s| s.get::<i32>("n-mels").ok())
            .filter(|&n| (1..=MAX_N_MELS as i32).contains(&n));
        let Some(n_mels) = n_mels.map(|n| n as usize) else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Invalid n-mels in negotiated caps {}", src_caps)
            );
            return false;
        };
        gst::info!(CAT, imp = self, "Input {format:?}, output {src_caps}");

        let mut state = self.state();
        let mel_changed = state.negotiated.as_ref().is_some_and(|n| n.n_mels != n_mels);
        // Audio pending for the old n-mels is spectrogrammed before switching.
        let mut pending = Vec::new();
        if mel_changed {
            match self.flush_windows(&mut state) {
                Ok(b) => pending = b,
                Err(_) => return false,
            }
            state.reset_stream();
        }
        match state.negotiated.as_mut() {
            Some(neg) if !mel_changed => neg.format = format,
            _ => {
                state.negotiated = Some(Negotiated {
                    format,
                    n_mels,
                    mel: LogMel::new(n_mels),
                })
            }
        }
        drop(state);

        if let Err(err) = self.push_outputs(pending) {
            gst::warning!(CAT, imp = self, "Could not push the last window: {err:?}");
        }
        self.srcpad.push_event(gst::event::Caps::new(&src_caps))
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;

        gst::log!(CAT, obj = pad, "Handling event {event:?}");
        match event.view() {
            EventView::Caps(c) => self.set_caps(c.caps()),
            EventView::Eos(_) => {
                // A failure was posted as an element error already.
                let buffers = self.flush_windows(&mut self.state()).unwrap_or_default();
                if let Err(err) = self.push_outputs(buffers) {
                    gst::warning!(CAT, imp = self, "Could not push the last window: {err:?}");
                }
                self.srcpad.push_event(event)
            }
            EventView::FlushStop(_) => {
                self.state().reset_stream();
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::Segment(s) => {
                let segment = s.segment();
                self.state().segment_start = segment.downcast_ref::<gst::ClockTime>().and_then(|s| s.start());
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        if let Some(end) = passes::done_end(&event) {
            gst::trace!(CAT, imp = self, "Pass to {end} done");
            let mut state = self.state();
            state.pass_done_end = Some(state.pass_done_end.map_or(end, |d| d.max(end)));
            if let Some(released) = passes::done_released(&event) {
                state.released_end = Some(state.released_end.map_or(released, |r| r.max(released)));
            }
            return true;
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        use gst::QueryViewMut;

        match query.view_mut() {
            // Up to a whole window of audio is held back before it is output.
            QueryViewMut::Latency(q) => {
                let mut upstream = gst::query::Latency::new();
                if !self.sinkpad.peer_query(&mut upstream) {
                    return false;
                }
                let (live, min, max) = upstream.result();
                let window = self.settings().window_latency(live);
                q.set(live, min.saturating_add(window), max.map(|m| m.saturating_add(window)));
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for NpuMel {
    const NAME: &'static str = "GstNpuMel";
    type Type = super::NpuMel;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|_pad, parent, buffer| {
                NpuMel::catch_panic_pad_function(parent, || Err(gst::FlowError::Error), |imp| imp.sink_chain(buffer))
            })
            .event_function(|pad, parent, event| {
                NpuMel::catch_panic_pad_function(parent, || false, |imp| imp.sink_event(pad, event))
            })
            .build();

        let templ = klass.pad_template("src").unwrap();
        let srcpad = gst::Pad::builder_from_template(&templ)
            .query_function(|pad, parent, query| {
                NpuMel::catch_panic_pad_function(parent, || false, |imp| imp.src_query(pad, query))
            })
            .event_function(|pad, parent, event| {
                NpuMel::catch_panic_pad_function(parent, || false, |imp| imp.src_event(pad, event))
            })
            // Caps queries answer the negotiated caps once set.
            .flags(gst::PadFlags::FIXED_CAPS)
            .build();

        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
        }
    }
}

impl ObjectImpl for NpuMel {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(super::settings::param_specs);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        // transcriberbin sets the latency (hence this) in PAUSED, once it knows the video caps:
        // taken by the next window.
        if let name @ ("live-step" | "live-max-window") = pspec.name() {
            let ms = value.get::<u32>().expect("type checked upstream");
            let windower = {
                let mut settings = self.settings();
                if name == "live-step" {
                    settings.live_step_ms = ms;
                } else {
                    settings.live_max_window_ms = ms;
                }
                settings.live_windower()
            };
            let mut state = self.state();
            if state.live == Some(true) {
                state.windower.set_settings(windower);
            }
            return;
        }
        // The windower is created when going to PAUSED.
        if self.obj().current_state() > gst::State::Ready {
            gst::warning!(
                CAT,
                imp = self,
                "Property {} can only be changed in NULL or READY state",
                pspec.name()
            );
            return;
        }
        let mut settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        match pspec.name() {
            "vad" => {
                if let Ok(v) = value.get::<VadMode>() {
                    settings.vad = v;
                }
            }
            "silence-threshold" => {
                if let Ok(v) = value.get::<f64>() {
                    settings.windower.silence_threshold_db = v as f32;
                }
            }
            "min-pause" => {
                if let Ok(v) = value.get::<u32>() {
                    settings.windower.min_pause_ms = v;
                }
            }
            other => gst::warning!(CAT, imp = self, "Unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        match pspec.name() {
            "vad" => settings.vad.to_value(),
            "silence-threshold" => (settings.windower.silence_threshold_db as f64).to_value(),
            "min-pause" => settings.windower.min_pause_ms.to_value(),
            "live-max-window" => settings.live_max_window_ms.to_value(),
            "live-step" => settings.live_step_ms.to_value(),
            // GObject only asks for the properties declared above.
            _ => pspec.default_value().clone(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for NpuMel {}

impl ElementImpl for NpuMel {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Whisper log-mel spectrogram",
                "Filter/Analyzer/Audio",
                "Cuts 16 kHz mono audio into windows of up to 30 s and computes their Whisper log-mel spectrogram",
                "npuwhisper developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst_audio::AudioCapsBuilder::new_interleaved()
                .format_list([gst_audio::AudioFormat::F32le, gst_audio::AudioFormat::S16le])
                .rate(SAMPLE_RATE as i32)
                .channels(1)
                .build();
            let src_caps = caps::mel(None);
            caps::sink_src_templates(&sink_caps, &src_caps)
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(&self, transition: gst::StateChange) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            let settings = *self.settings.lock().unwrap_or_else(|e| e.into_inner());
            let windower = settings.windower().map_err(|err| {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Init,
                    ("Voice activity detection unavailable: {}", err),
                    ["vad={:?}; vad=energy needs no model", settings.vad]
                );
                gst::StateChangeError
            })?;
            *self.state() = State {
                windower,
                ..State::default()
            };
        }
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            // Caps are renegotiated after READY; start from scratch.
            *self.state() = State::default();
        }
        Ok(ret)
    }
}
