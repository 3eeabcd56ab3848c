use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::model_element::{self, HeldModel};
use crate::{caps, f32buf, model_property, passes};
use npuwhisper_core::model::{
    auto_frames, fitted_frames, Model, ENCODER_FRAMES, FIT_MARGIN_FRAMES, FIT_STEP_FRAMES, MEL_FRAMES,
};

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| gst::DebugCategory::new("npuwhisperenc", gst::DebugColorFlags::empty(), Some("Whisper encoder")));

/// How many encoder frames each window gets.
#[derive(Debug, Default, Eq, PartialEq, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstNpuWhisperContext")]
pub enum NpuWhisperContext {
    #[default]
    #[enum_value(name = "Full: every window over Whisper's 30 s (1500 frames)", nick = "full")]
    Full = 0,
    #[enum_value(
        name = "Fit: each window over its audio plus 4 s, rounded up to 2.56 s (whisper.cpp's audio_ctx per window)",
        nick = "fit"
    )]
    Fit = 1,
    #[enum_value(
        name = "Auto: windows of up to 14.5 s over their audio plus 6 s, longer ones over 30 s; a window whose text fails Whisper's checks is encoded again over 30 s",
        nick = "auto"
    )]
    Auto = 2,
}

#[derive(Default)]
struct Settings {
    model: model_property::ModelSettings,
    context: NpuWhisperContext,
}

/// Samples at 16 kHz in `d`.
fn samples(d: gst::ClockTime) -> usize {
    d.nseconds().div_ceil(1_000_000_000 / 16_000) as usize
}

/// The `context` property's spec (the bin forwards it).
pub fn context_param_spec() -> glib::ParamSpec {
    glib::ParamSpecEnum::builder_with_default("context", NpuWhisperContext::default())
        .nick("Encoder context")
        .blurb("Encoder frames per window: auto (windows up to 14.5 s over their audio plus 6 s, with the full context again for a window whose text fails Whisper's checks), full (30 s) or fit (every window over its audio plus 4 s); a short window costs a fraction of the encoder time; backend=onnxruntime keeps full")
        .mutable_ready()
        .build()
}

#[derive(Default)]
struct State {
    /// Loaded from NULL to READY, dropped from READY to NULL.
    model: HeldModel,
    /// Mel bins of the negotiated input.
    n_mels: Option<usize>,
}

pub struct NpuWhisperEnc {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

impl NpuWhisperEnc {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic was already reported; keep the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the model named by the `model` property unless it is already loaded.
    fn ensure_model(&self) -> Result<(), gst::StateChangeError> {
        let wanted = self.settings().model.clone();
        if self.state().model.loaded(&wanted).is_some() {
            return Ok(());
        }
        let m = model_element::load(&*self.obj(), *CAT, &wanted)?;
        self.state().model.set(m, wanted);
        Ok(())
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Caps(q) = query.view_mut() {
            if let Some(model) = self.state().model.model.clone() {
                model_element::answer_caps_query(*CAT, pad, q, "n-mels", model.n_mels());
                return true;
            }
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Caps(q) = query.view_mut() {
            if let Some(model) = self.state().model.model.clone() {
                model_element::answer_caps_query(*CAT, pad, q, "width", model.d_model());
                return true;
            }
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    fn set_caps(&self, caps: &gst::CapsRef) -> bool {
        let mut state = self.state();
        let Some(model) = state.model.model.clone() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("No model loaded"));
            return false;
        };
        let n_mels = match model_element::check_dimension(caps, "n-mels", model.n_mels()) {
            Ok(n) => n,
            Err(n_mels) => {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    (
                        "Spectrogram has {} mel bins but model {} expects {}",
                        n_mels,
                        model.dir.display(),
                        model.n_mels()
                    )
                );
                return false;
            }
        };
        state.n_mels = Some(n_mels);
        drop(state);

        let src_caps = caps::states(Some(model.d_model()));
        gst::debug!(CAT, imp = self, "Output caps {src_caps}");
        self.srcpad.push_event(gst::event::Caps::new(&src_caps))
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        gst::log!(CAT, obj = pad, "Handling event {event:?}");
        match event.view() {
            gst::EventView::Caps(c) => self.set_caps(c.caps()),
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// The model and mel bins to encode with, or a negotiation error.
    fn negotiated(&self) -> Result<(Arc<Model>, usize), gst::FlowError> {
        let state = self.state();
        match (state.model.model.clone(), state.n_mels) {
            (Some(model), Some(n_mels)) => Ok((model, n_mels)),
            _ => {
                drop(state);
                gst::element_imp_error!(self, gst::CoreError::Negotiation, ("Received a buffer before the caps"));
                Err(gst::FlowError::NotNegotiated)
            }
        }
    }

    fn read_mel(&self, buffer: &gst::BufferRef, n_mels: usize) -> Result<Vec<f32>, gst::FlowError> {
        let expected = n_mels * MEL_FRAMES * 4;
        if buffer.size() != expected {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "Spectrogram buffer of {} bytes, expected {} ({} × {} F32LE)",
                    buffer.size(),
                    expected,
                    n_mels,
                    MEL_FRAMES
                )
            );
            return Err(gst::FlowError::Error);
        }
        let map = buffer.map_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("Could not map input buffer"));
            gst::FlowError::Error
        })?;
        f32buf::f32_from_bytes(&map).ok_or(gst::FlowError::Error)
    }

    /// Encoder frames for a window lasting `duration` (the audio it covers), per `context`.
    fn frames(&self, duration: Option<gst::ClockTime>) -> usize {
        match (self.settings().context, duration) {
            (NpuWhisperContext::Fit, Some(d)) => fitted_frames(samples(d), FIT_STEP_FRAMES, FIT_MARGIN_FRAMES).max(1),
            (NpuWhisperContext::Auto, Some(d)) => auto_frames(samples(d)).max(1),
            _ => ENCODER_FRAMES,
        }
    }

    /// One encoder output per input window (`frames[i]` or, on a backend that cannot shorten
    /// the context, all 1500 frames).
    fn encode(&self, model: &Model, mels: &[&[f32]], frames: &[usize]) -> Result<Vec<Vec<f32>>, gst::FlowError> {
        let start = std::time::Instant::now();
        let failed = |e: npuwhisper_core::backend::BackendError| {
            gst::element_imp_error!(self, gst::LibraryError::Failed, ("Encoder failed: {}", e));
            gst::FlowError::Error
        };
        let states = if frames.iter().all(|&f| f == ENCODER_FRAMES) {
            model.encode_batch(mels).map_err(failed)?
        } else {
            // The CPU backend encodes windows one at a time anyway.
            let mut states = Vec::with_capacity(mels.len());
            for (mel, &f) in mels.iter().zip(frames) {
                states.extend(model.encode_batch_frames(&[mel], f).map_err(failed)?);
            }
            states
        };
        gst::debug!(
            CAT,
            imp = self,
            "Encoded {} windows of {:?} frames in {:?}",
            mels.len(),
            frames,
            start.elapsed()
        );

        let d = model.d_model();
        let fits = |(s, &f): (&Vec<f32>, &usize)| s.len() == f * d || s.len() == ENCODER_FRAMES * d;
        if states.len() != mels.len() || !states.iter().zip(frames).all(fits) {
            gst::element_imp_error!(
                self,
                gst::LibraryError::Failed,
                (
                    "Encoder returned {} outputs of sizes {:?}, expected {} of {:?} × {}",
                    states.len(),
                    states.iter().map(Vec::len).collect::<Vec<_>>(),
                    mels.len(),
                    frames,
                    d
                )
            );
            return Err(gst::FlowError::Error);
        }
        Ok(states)
    }

    /// Encoder states as a buffer carrying the timestamps and flags of its mel buffer. States
    /// over a fitted context (fewer than 1500 frames) carry the window's log-mel too, as a
    /// second memory (shared, not copied), for npuwhisperdec to encode it again over the full
    /// context if its text fails Whisper's checks.
    fn states_buffer(&self, input: &gst::BufferRef, states: &[f32], d_model: usize) -> gst::Buffer {
        let mut out = f32buf::buffer_from_f32(states);
        if let Some(out) = out.get_mut() {
            if let Err(err) = input.copy_into(out, gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::TIMESTAMPS, ..) {
                gst::warning!(CAT, imp = self, "Could not copy buffer metadata: {err}");
            }
            if states.len() < ENCODER_FRAMES * d_model {
                if let Some(mel) = input.all_memory() {
                    out.append_memory(mel);
                }
            }
        }
        out
    }

    /// A provisional live pass the clock has left behind: skipped, a newer one covers it.
    fn skip_stale(&self, buffer: &gst::BufferRef) -> bool {
        let stale = passes::skip_if_stale(&*self.obj(), &self.sinkpad, buffer);
        if stale {
            gst::debug!(
                CAT,
                imp = self,
                "Skipping a stale provisional pass at {}",
                buffer.pts().display()
            );
        }
        stale
    }

    fn sink_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        if self.skip_stale(&buffer) {
            return Ok(gst::FlowSuccess::Ok);
        }
        let (model, n_mels) = self.negotiated()?;
        let mel = self.read_mel(&buffer, n_mels)?;
        let states = self.encode(&model, &[&mel], &[self.frames(buffer.duration())])?;
        let out = self.states_buffer(&buffer, &states[0], model.d_model());
        self.srcpad.push(out)
    }

    fn sink_chain_list(&self, list: gst::BufferList) -> Result<gst::FlowSuccess, gst::FlowError> {
        let list = if list.iter().any(passes::is_provisional) {
            let mut kept = gst::BufferList::new();
            let kept_mut = kept.get_mut().ok_or(gst::FlowError::Error)?;
            for b in list.iter_owned().filter(|b| !self.skip_stale(b)) {
                kept_mut.add(b);
            }
            kept
        } else {
            list
        };
        if list.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let (model, n_mels) = self.negotiated()?;
        let mels = list
            .iter()
            .map(|b| self.read_mel(b, n_mels))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&[f32]> = mels.iter().map(Vec::as_slice).collect();
        let frames: Vec<usize> = list.iter().map(|b| self.frames(b.duration())).collect();
        let states = self.encode(&model, &refs, &frames)?;

        let mut out = gst::BufferList::new_sized(states.len());
        {
            let out = out.get_mut().ok_or(gst::FlowError::Error)?;
            for (input, s) in list.iter().zip(&states) {
                out.add(self.states_buffer(input, s, model.d_model()));
            }
        }
        self.srcpad.push_list(out)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for NpuWhisperEnc {
    const NAME: &'static str = "GstNpuWhisperEnc";
    type Type = super::NpuWhisperEnc;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|_pad, parent, buffer| {
                NpuWhisperEnc::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(buffer),
                )
            })
            .chain_list_function(|_pad, parent, list| {
                NpuWhisperEnc::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain_list(list),
                )
            })
            .event_function(|pad, parent, event| {
                NpuWhisperEnc::catch_panic_pad_function(parent, || false, |imp| imp.sink_event(pad, event))
            })
            .query_function(|pad, parent, query| {
                NpuWhisperEnc::catch_panic_pad_function(parent, || false, |imp| imp.sink_query(pad, query))
            })
            .build();

        let templ = klass.pad_template("src").unwrap();
        let srcpad = gst::Pad::builder_from_template(&templ)
            .query_function(|pad, parent, query| {
                NpuWhisperEnc::catch_panic_pad_function(parent, || false, |imp| imp.src_query(pad, query))
            })
            .build();

        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
        }
    }
}

impl ObjectImpl for NpuWhisperEnc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut specs = model_property::param_specs();
            specs.push(context_param_spec());
            specs
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if self.obj().current_state() > gst::State::Ready {
            gst::warning!(
                CAT,
                imp = self,
                "Property {} can only be changed in NULL or READY state",
                pspec.name()
            );
            return;
        }
        let mut settings = self.settings();
        if pspec.name() == "context" {
            settings.context = value.get().expect("type checked upstream");
            gst::info!(CAT, imp = self, "Encoder context now {:?}", settings.context);
            return;
        }
        if !settings.model.set(pspec.name(), value) {
            gst::warning!(CAT, imp = self, "Unknown property {}", pspec.name());
        }
        gst::info!(CAT, imp = self, "Model settings now {:?}", settings.model);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        // GObject only asks for the properties declared above.
        if pspec.name() == "context" {
            return self.settings().context.to_value();
        }
        self.settings()
            .model
            .get(pspec.name())
            .unwrap_or_else(|| pspec.default_value().clone())
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for NpuWhisperEnc {}

impl ElementImpl for NpuWhisperEnc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Whisper encoder",
                "Filter/Analyzer/Audio",
                "Runs the Whisper audio encoder on log-mel spectrogram windows",
                "npuwhisper developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = caps::mel(None);
            let src_caps = caps::states(None);
            caps::sink_src_templates(&sink_caps, &src_caps)
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(&self, transition: gst::StateChange) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::trace!(CAT, imp = self, "Changing state {transition:?}");
        match transition {
            gst::StateChange::NullToReady => self.ensure_model()?,
            // Picks up a model changed in READY.
            gst::StateChange::ReadyToPaused => self.ensure_model()?,
            _ => (),
        }

        let ret = self.parent_change_state(transition).inspect_err(|_| {
            if transition == gst::StateChange::NullToReady {
                *self.state() = State::default();
            }
        })?;

        match transition {
            gst::StateChange::PausedToReady => self.state().n_mels = None,
            gst::StateChange::ReadyToNull => *self.state() = State::default(),
            _ => (),
        }
        Ok(ret)
    }
}
