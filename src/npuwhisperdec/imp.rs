use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::output::{content_seconds, stream_pieces, stream_time, window_pieces, MAX_WINDOW};
use super::settings::Settings;

mod live;
mod text;
use crate::model_element::{self, HeldModel};
use crate::{caps, f32buf, passes};
use npuwhisper_core::decoding::stream::{LocalAgreement, Pass, StreamWord};
use npuwhisper_core::decoding::{choose_language, IgnoredRequest, Transcriber, WindowResult};
use npuwhisper_core::model::{Model, ENCODER_FRAMES, MEL_FRAMES};

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| gst::DebugCategory::new("npuwhisperdec", gst::DebugColorFlags::empty(), Some("Whisper decoder")));

/// Temperatures tried per window on live streams: enough to escape a loop, bounded in time.
const LIVE_TEMPERATURES: usize = 2;
/// Tokens a live window may sample per second of its audio (besides a few always allowed).
const LIVE_TOKENS_PER_SECOND: f32 = 10.0;

#[derive(Default)]
struct State {
    /// Loaded from NULL to READY, dropped from READY to NULL.
    model: HeldModel,
    /// Cached `model.is_multilingual()`, set with the transcriber.
    multilingual: bool,
    /// Width of the negotiated input.
    width: Option<usize>,
    /// End of the previous window: the start of a window without PTS.
    next_window_pts: Option<gst::ClockTime>,
    /// End of the last text buffer or gap pushed; nothing is pushed before it.
    last_end: Option<gst::ClockTime>,
    /// Language of the last tag pushed.
    language: Option<String>,
    /// Last character of the text pushed: whether the next window starts a sentence.
    last_char: Option<char>,
    /// Mark the next text buffer DISCONT.
    discont: bool,
    /// Windows received and not yet decoded.
    pending: Vec<Window>,
    /// Events that came while windows were pending, pushed after their text.
    held_events: Vec<gst::Event>,
    /// Windows decoded together, chosen when streaming starts.
    batch_size: usize,
    /// Provisional passes came since the last reset: complete windows then only release
    /// what the passes have not.
    streaming: bool,
    /// What the passes of this stream have emitted and what they wait to see confirmed.
    agreement: LocalAgreement,
}

impl State {
    fn reset_timestamps(&mut self) {
        self.streaming = false;
        self.agreement.reset();
        self.pending.clear();
        self.held_events.clear();
        self.next_window_pts = None;
        self.last_end = None;
        self.last_char = None;
        self.discont = true;
    }
}

/// A window waiting to be decoded with the next ones.
struct Window {
    states: Vec<f32>,
    /// The window's log-mel, when npuwhisperenc encoded it over a fitted context.
    mel: Option<Vec<f32>>,
    pts: gst::ClockTime,
    duration: gst::ClockTime,
    discont: bool,
}

/// What one window produced, pushed in order once the locks are released.
enum Output {
    Event(gst::Event),
    Buffer(gst::Buffer),
}

pub struct NpuWhisperDec {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Apart from `state` so caps queries are not blocked while a window decodes.
    transcriber: Mutex<Option<Transcriber>>,
}

impl NpuWhisperDec {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic was already reported; keep the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn transcriber(&self) -> MutexGuard<'_, Option<Transcriber>> {
        self.transcriber.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the model named by the `model` property unless it is already loaded.
    fn ensure_model(&self) -> Result<Arc<Model>, gst::StateChangeError> {
        let wanted = self.settings().model.clone();
        if let Some(m) = self.state().model.loaded(&wanted) {
            return Ok(m);
        }
        let m = model_element::load(&*self.obj(), *CAT, &wanted)?;
        self.state().model.set(m.clone(), wanted);
        Ok(m)
    }

    /// Creates the transcriber from the current settings.
    fn start(&self) -> Result<(), gst::StateChangeError> {
        let model = self.ensure_model()?;
        let settings = self.settings().clone();
        let multilingual = model.is_multilingual();

        let choice = match choose_language(&model, &settings.language, settings.task.into()) {
            Ok(choice) => choice,
            Err(unknown) => {
                gst::element_imp_error!(self, gst::LibraryError::Settings, ("{}", unknown));
                return Err(gst::StateChangeError);
            }
        };
        for ignored in &choice.ignored {
            match ignored {
                IgnoredRequest::Language(requested) => gst::element_imp_warning!(
                    self,
                    gst::LibraryError::Settings,
                    (
                        "Model {} is English-only: language {:?} is ignored, the text will be English",
                        settings.model.model,
                        requested
                    ),
                    ["use a multilingual model (e.g. model=base) to transcribe {}", requested]
                ),
                IgnoredRequest::Translate => gst::element_imp_warning!(
                    self,
                    gst::LibraryError::Settings,
                    (
                        "Model {} is English-only: task=translate does nothing",
                        settings.model.model
                    )
                ),
            }
        }
        let options = settings.decode_options(choice.language);
        gst::debug!(CAT, imp = self, "Decoding with {options:?}");
        *self.transcriber() = Some(Transcriber::new(model, options));

        let mut state = self.state();
        state.multilingual = multilingual;
        state.language = None;
        state.reset_timestamps();
        Ok(())
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        // Any width reaches set_caps, which names both models when they differ (refused
        // here, the stream would only stop "not negotiated").
        if let gst::QueryViewMut::AcceptCaps(q) = query.view_mut() {
            let ok = q.caps().can_intersect(&pad.pad_template_caps());
            q.set_result(ok);
            return true;
        }
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
        let width = match model_element::check_dimension(caps, "width", model.d_model()) {
            Ok(width) => width,
            Err(width) => {
                drop(state);
                let encoder = self
                    .upstream_encoder_model()
                    .map_or_else(String::new, |m| format!(" from model {m:?}"));
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    (
                        "Encoder states{} have width {} but the decoder's model {:?} ({}) has width {}: the encoder and decoder must use the same model",
                        encoder,
                        width,
                        self.settings().model.model,
                        model.dir.display(),
                        model.d_model()
                    )
                );
                return false;
            }
        };
        state.width = Some(width);
        drop(state);

        let src_caps = caps::text();
        self.srcpad.push_event(gst::event::Caps::new(&src_caps))
    }

    /// The `model` of the npuwhisperenc upstream (through queues), to name it in errors.
    fn upstream_encoder_model(&self) -> Option<String> {
        let mut pad = self.sinkpad.peer()?;
        for _ in 0..8 {
            let element = pad.parent_element()?;
            if element.factory().is_some_and(|f| f.name() == "npuwhisperenc") {
                return element.property::<Option<String>>("model");
            }
            pad = element.static_pad("sink")?.peer()?;
        }
        None
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        gst::log!(CAT, obj = pad, "Handling event {event:?}");
        if matches!(
            event.view(),
            gst::EventView::Tag(_) | gst::EventView::StreamGroupDone(_)
        ) {
            let mut state = self.state();
            if !state.pending.is_empty() {
                // Tags (a decoder's bitrate, say) and decodebin's end of group do not end a
                // batch: batches, hence prompts and text, stay the same whatever upstream
                // sends besides the audio.
                state.held_events.push(event);
                return true;
            }
        }
        // Windows waiting for a batch go out before anything that follows them in the stream.
        if event.is_serialized() && !matches!(event.type_(), gst::EventType::FlushStop) {
            if let Err(err) = self.drain() {
                gst::debug!(CAT, imp = self, "Pending windows not pushed: {err:?}");
            }
        }
        match event.view() {
            gst::EventView::Caps(c) => {
                let (batch_size, live) = self.choose_batch_size();
                gst::debug!(CAT, imp = self, "Decoding {batch_size} windows at a time");
                self.state().batch_size = batch_size;
                if live {
                    if let Some(t) = self.transcriber().as_mut() {
                        t.limit_temperatures(LIVE_TEMPERATURES);
                        t.limit_tokens_per_second(LIVE_TOKENS_PER_SECOND);
                    }
                }
                self.set_caps(c.caps())
            }
            gst::EventView::FlushStop(_) => {
                if let Some(t) = self.transcriber().as_mut() {
                    t.reset();
                }
                self.state().reset_timestamps();
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            // A window without speech (from npumel): passed on, and text never goes before it.
            gst::EventView::Gap(g) => {
                let (pts, duration) = g.get();
                if let Some(end) = duration.and_then(|d| pts.checked_add(d)) {
                    let mut state = self.state();
                    state.last_end = Some(state.last_end.map_or(end, |e| e.max(end)));
                    state.next_window_pts = Some(end);
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => {
                if let Some((start, end)) = passes::released_window(&event) {
                    self.window_released(start, end);
                    return true;
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
        }
    }

    fn sink_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        // A stale pass is decoded all the same: its encoder work is done, and npumel sends the
        // next one only once this one is (skipping it left a loaded machine with no text
        // until the window was complete). The encoder skips those that waited for it.
        let Some(width) = self.state().width else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("Received a buffer before the caps"));
            return Err(gst::FlowError::NotNegotiated);
        };

        // Up to 1500 frames: fewer when the encoder ran over a shorter context, and then the
        // window's log-mel may follow as a second memory.
        let row = width * 4;
        let fitted = buffer.n_memory() == 2 && buffer.peek_memory(1).size().is_multiple_of(MEL_FRAMES * 4);
        let states_size = if fitted {
            buffer.peek_memory(0).size()
        } else {
            buffer.size()
        };
        if !states_size.is_multiple_of(row) || !(1..=ENCODER_FRAMES).contains(&(states_size / row)) {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "Encoder states buffer of {} bytes, expected 1 to {} frames of {} F32LE ({} bytes each)",
                    states_size,
                    ENCODER_FRAMES,
                    width,
                    row
                )
            );
            return Err(gst::FlowError::Error);
        }
        let read = |memory: &gst::MemoryRef| {
            let map = memory.map_readable().map_err(|_| {
                gst::element_imp_error!(self, gst::StreamError::Failed, ("Could not map input buffer"));
                gst::FlowError::Error
            })?;
            f32buf::f32_from_bytes(&map).ok_or(gst::FlowError::Error)
        };
        let (states, mel) = if fitted {
            (read(buffer.peek_memory(0))?, Some(read(buffer.peek_memory(1))?))
        } else {
            // One memory as it is; several (from an upstream that split the buffer) merged.
            let all = buffer.all_memory().ok_or(gst::FlowError::Error)?;
            (read(&all)?, None)
        };

        let discont = buffer.flags().contains(gst::BufferFlags::DISCONT);
        if discont {
            // Windows before the discontinuity are decoded with the text that came before them.
            self.drain()?;
        }
        let provisional = passes::is_provisional(&buffer);
        let batch = {
            let mut state = self.state();
            let pts = buffer.pts().or(state.next_window_pts).unwrap_or(gst::ClockTime::ZERO);
            let duration = buffer.duration().unwrap_or(MAX_WINDOW).min(MAX_WINDOW);
            let window = Window {
                states,
                mel,
                pts,
                duration,
                discont,
            };
            if provisional {
                // Decoded now, and its audio comes again: the next window starts where it did.
                drop(state);
                let ret = self.decode_pass(window);
                let released = self.state().agreement.released_until().map(stream_time);
                passes::send_done(&self.sinkpad, &buffer, released);
                return ret;
            }
            state.next_window_pts = pts.checked_add(duration);
            state.pending.push(window);
            state.pending.len() >= state.batch_size
        };
        if batch {
            self.drain()?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// A window that could not be decoded is not silence: it is said on the bus (a warning: the
    /// stream goes on with the next window) and in the log.
    fn report_failure(&self, result: &WindowResult, pts: gst::ClockTime) {
        if let Some(error) = &result.error {
            gst::warning!(CAT, imp = self, "Window at {pts} not decoded: {error}");
            gst::element_imp_warning!(
                self,
                gst::StreamError::Decode,
                ("Could not decode the window at {}: {}", pts, error)
            );
        }
    }

    /// Decodes the pending windows and pushes their text.
    fn drain(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let pending = std::mem::take(&mut self.state().pending);
        if pending.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let results = {
            let mut transcriber = self.transcriber();
            let Some(transcriber) = transcriber.as_mut() else {
                // Only between PAUSED and READY, while the pad is being deactivated.
                return Err(gst::FlowError::Flushing);
            };
            if pending[0].discont {
                transcriber.reset();
            }
            let start = std::time::Instant::now();
            let windows: Vec<(&[f32], f64)> = pending
                .iter()
                .map(|w| (w.states.as_slice(), content_seconds(w.duration)))
                .collect();
            // A fitted window whose text fails Whisper's checks is encoded again over the full
            // context, from its log-mel.
            let model = Arc::clone(transcriber.model());
            let refit = |i: usize| {
                let mel = pending[i]
                    .mel
                    .as_deref()
                    .filter(|m| m.len() == model.dims.n_mels * MEL_FRAMES)?;
                match model.encode_batch(&[mel]) {
                    Ok(mut states) => states.pop(),
                    Err(e) => {
                        gst::warning!(CAT, imp = self, "Could not encode the window again: {e}");
                        None
                    }
                }
            };
            let refits = transcriber.refits();
            let results = transcriber.transcribe_batch_refit(&windows, &refit);
            if transcriber.refits() > refits {
                gst::info!(
                    CAT,
                    imp = self,
                    "{} windows from {} encoded again over the full context",
                    transcriber.refits() - refits,
                    pending[0].pts
                );
            }
            gst::debug!(
                CAT,
                imp = self,
                "Decoded {} windows from {} in {:?}",
                pending.len(),
                pending[0].pts,
                start.elapsed()
            );
            results
        };
        for (window, result) in pending.iter().zip(results) {
            self.report_failure(&result, window.pts);
            gst::debug!(
                CAT,
                imp = self,
                "Window at {} ({:.2} s): {} segments, no-speech {:.2}",
                window.pts,
                content_seconds(window.duration),
                result.segments.len(),
                result.no_speech_prob
            );
            let window_end = window.pts.saturating_add(window.duration);
            let (words_apart, layout) = {
                let settings = self.settings();
                (settings.word_timestamps, settings.layout)
            };
            let pieces = {
                let mut state = self.state();
                if state.streaming {
                    // The passes before this complete window released part of it already.
                    let words = StreamWord::of_window(&result, window.pts.seconds_f64());
                    let released = self.agree(&mut state.agreement, Pass::Final { words });
                    stream_pieces(&released, words_apart)
                } else {
                    window_pieces(
                        &result,
                        window.pts,
                        content_seconds(window.duration),
                        words_apart,
                        &layout,
                    )
                }
            };
            self.push_text(&result, window.pts, window.duration, pieces, window_end, true)?;
        }
        let held = std::mem::take(&mut self.state().held_events);
        for event in held {
            self.srcpad.push_event(event);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for NpuWhisperDec {
    const NAME: &'static str = "GstNpuWhisperDec";
    type Type = super::NpuWhisperDec;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|_pad, parent, buffer| {
                NpuWhisperDec::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(buffer),
                )
            })
            .event_function(|pad, parent, event| {
                NpuWhisperDec::catch_panic_pad_function(parent, || false, |imp| imp.sink_event(pad, event))
            })
            .query_function(|pad, parent, query| {
                NpuWhisperDec::catch_panic_pad_function(parent, || false, |imp| imp.sink_query(pad, query))
            })
            .build();

        let templ = klass.pad_template("src").unwrap();
        let srcpad = gst::Pad::builder_from_template(&templ)
            .flags(gst::PadFlags::FIXED_CAPS)
            .build();

        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
            transcriber: Mutex::new(None),
        }
    }
}

impl ObjectImpl for NpuWhisperDec {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(super::param_specs);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        // Read at each pass: transcriberbin sets the latency (hence this) in PAUSED.
        if pspec.name() == "live-hold" {
            self.settings().live_hold_ms = value.get().expect("type checked upstream");
            return;
        }
        // Other settings are read when going to PAUSED.
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
        if !settings.set(pspec.name(), value) {
            gst::warning!(CAT, imp = self, "Unknown property {}", pspec.name());
            return;
        }
        gst::info!(CAT, imp = self, "Settings now {settings:?}");
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        self.settings()
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

impl GstObjectImpl for NpuWhisperDec {}

impl ElementImpl for NpuWhisperDec {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Whisper decoder",
                "Filter/Analyzer/Audio",
                "Decodes Whisper encoder states into timed text segments",
                "npuwhisper developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = caps::states(None);
            let src_caps = caps::text();
            caps::sink_src_templates(&sink_caps, &src_caps)
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(&self, transition: gst::StateChange) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::trace!(CAT, imp = self, "Changing state {transition:?}");
        match transition {
            gst::StateChange::NullToReady => {
                self.ensure_model()?;
            }
            gst::StateChange::ReadyToPaused => self.start()?,
            _ => (),
        }

        let ret = self.parent_change_state(transition).inspect_err(|_| match transition {
            gst::StateChange::NullToReady => *self.state() = State::default(),
            gst::StateChange::ReadyToPaused => *self.transcriber() = None,
            _ => (),
        })?;

        match transition {
            gst::StateChange::PausedToReady => {
                *self.transcriber() = None;
                let mut state = self.state();
                state.width = None;
                state.reset_timestamps();
            }
            gst::StateChange::ReadyToNull => *self.state() = State::default(),
            _ => (),
        }
        Ok(ret)
    }
}
