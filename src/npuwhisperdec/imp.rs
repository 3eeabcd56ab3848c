use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::NpuWhisperTask;
use crate::{caps, f32buf, model_property, passes};
use npuwhisper_core::cues::{self, Layout};
use npuwhisper_core::decoding::stream::{LocalAgreement, StreamWord};
use npuwhisper_core::decoding::{DecodeOptions, Transcriber, WindowResult, FALLBACK_TEMPERATURES};
use npuwhisper_core::model::{Model, ENCODER_FRAMES};

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| gst::DebugCategory::new("npuwhisperdec", gst::DebugColorFlags::empty(), Some("Whisper decoder")));

/// Whisper windows never exceed 30 s; also the length assumed when a buffer has none.
const MAX_WINDOW: gst::ClockTime = gst::ClockTime::from_seconds(30);
/// Shortest text buffer pushed.
const MIN_DURATION: gst::ClockTime = gst::ClockTime::from_mseconds(1);
/// Temperatures tried per window on live streams: enough to escape a loop, bounded in time.
const LIVE_TEMPERATURES: usize = 2;
/// After a provisional pass, no text is expected before the words it left unconfirmed, nor
/// before this long before its end (a word being spoken there may not be decoded yet).
const LIVE_GAP_MARGIN: gst::ClockTime = gst::ClockTime::from_seconds(1);

#[derive(Debug, Clone)]
struct Settings {
    model: model_property::ModelSettings,
    language: String,
    task: NpuWhisperTask,
    condition_on_previous_text: bool,
    initial_prompt: Option<String>,
    beam_size: u32,
    best_of: u32,
    temperature_fallback: bool,
    compression_ratio_threshold: f32,
    logprob_threshold: f32,
    no_speech_threshold: f32,
    word_timestamps: bool,
    post_messages: bool,
    batch_size: u32,
    live_hold_ms: u32,
    /// How phrases are laid out as cues.
    layout: Layout,
}

impl Default for Settings {
    fn default() -> Self {
        let d = DecodeOptions::default();
        Settings {
            model: model_property::ModelSettings::default(),
            language: super::DEFAULT_LANGUAGE.to_string(),
            task: NpuWhisperTask::default(),
            condition_on_previous_text: d.condition_on_previous_text,
            initial_prompt: None,
            beam_size: d.beam_size as u32,
            best_of: d.best_of as u32,
            temperature_fallback: true,
            compression_ratio_threshold: d.compression_ratio_threshold,
            logprob_threshold: d.logprob_threshold,
            no_speech_threshold: d.no_speech_threshold,
            word_timestamps: false,
            post_messages: true,
            batch_size: 0,
            live_hold_ms: super::DEFAULT_LIVE_HOLD_MS,
            layout: Layout::default(),
        }
    }
}

#[derive(Default)]
struct State {
    /// Loaded from NULL to READY, dropped from READY to NULL.
    model: Option<Arc<Model>>,
    /// Model property values `model` was loaded with.
    loaded_with: Option<model_property::ModelSettings>,
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

/// Seconds from the start of a window as a time, clamped to `[0, max]`.
fn offset(seconds: f64, max: f64) -> gst::ClockTime {
    let s = if seconds.is_nan() { 0.0 } else { seconds.clamp(0.0, max) };
    gst::ClockTime::try_from_seconds_f64(s).unwrap_or(gst::ClockTime::ZERO)
}

/// Windows decoded together when `batch-size` is 0 (auto) and upstream is not live. Each token
/// step streams the vocabulary projection once for the whole batch: on tiny.en long-form, 8
/// decoded 1.3x faster than 4 at the same WER (base too; `examples/stage_profile.rs`).
const AUTO_BATCH: usize = 8;

/// A window waiting to be decoded with the next ones.
struct Window {
    states: Vec<f32>,
    pts: gst::ClockTime,
    duration: gst::ClockTime,
    discont: bool,
}

fn content_seconds(duration: gst::ClockTime) -> f64 {
    duration.seconds_f64().min(MAX_WINDOW.seconds_f64())
}

/// A piece of text to push, timed on the stream.
struct Piece {
    text: String,
    start: gst::ClockTime,
    end: gst::ClockTime,
    avg_logprob: f32,
    /// The words of a laid-out cue: text, start, end, probability.
    words: Vec<(String, gst::ClockTime, gst::ClockTime, f32)>,
}

/// Phrases of a window laid out as cues (or its words, one by one), timed inside it.
fn window_pieces(
    result: &WindowResult,
    window_pts: gst::ClockTime,
    content_seconds: f64,
    words: bool,
    layout: &Layout,
) -> Vec<Piece> {
    let at = |seconds: f64| window_pts.saturating_add(offset(seconds, content_seconds));
    let piece = |text: &str, start: f64, end: f64, avg_logprob: f32| Piece {
        text: text.to_string(),
        start: at(start),
        end: at(end),
        avg_logprob,
        words: Vec::new(),
    };
    if !words && result.segments.iter().all(|seg| !seg.words.is_empty()) {
        // Each word with the log-probability of its phrase.
        let timed: Vec<(cues::Word, f32, f32)> = result
            .segments
            .iter()
            .flat_map(|seg| {
                let last = seg.words.len() - 1;
                seg.words.iter().enumerate().map(move |(k, w)| {
                    (
                        cues::Word {
                            text: w.text.clone(),
                            start: w.start,
                            end: w.end,
                            phrase_end: k == last,
                        },
                        seg.avg_logprob,
                        w.probability,
                    )
                })
            })
            .filter(|(w, _, _)| !w.text.trim().is_empty())
            .collect();
        let plain: Vec<cues::Word> = timed.iter().map(|(w, _, _)| w.clone()).collect();
        return cues::layout(&plain, content_seconds, layout)
            .into_iter()
            .map(|cue| {
                let held = &timed[cue.words.clone()];
                let avg_logprob = held.iter().map(|(_, lp, _)| lp).sum::<f32>() / held.len().max(1) as f32;
                let mut p = piece(&cue.text, cue.start, cue.end, avg_logprob);
                p.words = held
                    .iter()
                    .map(|(w, _, prob)| (w.text.trim().to_string(), at(w.start), at(w.end), *prob))
                    .collect();
                p
            })
            .collect();
    }
    result
        .segments
        .iter()
        .flat_map(|seg| {
            if words && !seg.words.is_empty() {
                seg.words
                    .iter()
                    .map(|w| piece(&w.text, w.start, w.end, seg.avg_logprob))
                    .collect()
            } else {
                vec![piece(&seg.text, seg.start, seg.end, seg.avg_logprob)]
            }
        })
        .collect()
}

/// A time on the stream from the seconds the agreement works in.
fn stream_time(seconds: f64) -> gst::ClockTime {
    gst::ClockTime::try_from_seconds_f64(seconds.max(0.0)).unwrap_or(gst::ClockTime::ZERO)
}

/// Words released by the agreement, grouped by the phrase of their pass unless each word is
/// wanted on its own.
fn stream_pieces(words: &[StreamWord], one_per_word: bool) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut last_phrase = None;
    for w in words {
        match pieces.last_mut() {
            Some(p) if !one_per_word && last_phrase == Some(w.phrase) => {
                p.text.push_str(&w.text);
                p.end = stream_time(w.end);
            }
            _ => pieces.push(Piece {
                text: w.text.clone(),
                start: stream_time(w.start),
                end: stream_time(w.end),
                avg_logprob: w.avg_logprob,
                words: Vec::new(),
            }),
        }
        last_phrase = Some(w.phrase);
    }
    pieces
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
        {
            let state = self.state();
            if let Some(m) = state
                .model
                .as_ref()
                .filter(|_| state.loaded_with.as_ref() == Some(&wanted))
            {
                return Ok(m.clone());
            }
        }
        gst::debug!(CAT, imp = self, "Loading model {wanted:?}");
        match model_property::load(&wanted) {
            Ok(m) => {
                gst::info!(CAT, imp = self, "Loaded {}: width {}", m.dir.display(), m.d_model());
                let mut state = self.state();
                state.model = Some(m.clone());
                state.loaded_with = Some(wanted);
                Ok(m)
            }
            Err(msg) => {
                self.post_error_message(msg);
                Err(gst::StateChangeError)
            }
        }
    }

    /// Creates the transcriber from the current settings.
    fn start(&self) -> Result<(), gst::StateChangeError> {
        let model = self.ensure_model()?;
        let settings = self.settings().clone();
        let multilingual = model.is_multilingual();

        let requested = settings.language.trim().to_lowercase();
        let auto = requested.is_empty() || requested == "auto";
        let language = if !multilingual {
            // English-only models have no language token to choose.
            if !auto && requested != "en" {
                gst::element_imp_warning!(
                    self,
                    gst::LibraryError::Settings,
                    (
                        "Model {} is English-only: language {:?} is ignored, the text will be English",
                        settings.model.model,
                        requested
                    ),
                    ["use a multilingual model (e.g. model=base) to transcribe {}", requested]
                );
            }
            None
        } else if auto {
            None
        } else if model.tokenizer.language_token(&requested).is_some() {
            Some(requested)
        } else {
            let known: Vec<&str> = model.tokenizer.languages.iter().map(|(c, _)| c.as_str()).collect();
            gst::element_imp_error!(
                self,
                gst::LibraryError::Settings,
                (
                    "Unknown language {:?}; use \"auto\" or one of: {}",
                    requested,
                    known.join(", ")
                )
            );
            return Err(gst::StateChangeError);
        };
        if !multilingual && settings.task == NpuWhisperTask::Translate {
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                (
                    "Model {} is English-only: task=translate does nothing",
                    settings.model.model
                )
            );
        }

        let options = DecodeOptions {
            language,
            task: settings.task.into(),
            condition_on_previous_text: settings.condition_on_previous_text,
            initial_prompt: settings.initial_prompt.clone(),
            beam_size: settings.beam_size as usize,
            best_of: settings.best_of as usize,
            temperatures: if settings.temperature_fallback {
                FALLBACK_TEMPERATURES.to_vec()
            } else {
                vec![0.0]
            },
            compression_ratio_threshold: settings.compression_ratio_threshold,
            logprob_threshold: settings.logprob_threshold,
            no_speech_threshold: settings.no_speech_threshold,
            // Words are always aligned: phrases are cut by them.
            word_timestamps: true,
        };
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
            let model = self.state().model.clone();
            if let Some(model) = model {
                let mut caps = pad.pad_template_caps();
                caps.make_mut().set("width", model.d_model() as i32);
                let caps = match q.filter() {
                    Some(filter) => filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
                    None => caps,
                };
                gst::log!(CAT, obj = pad, "Answering caps query with {caps}");
                q.set_result(&caps);
                return true;
            }
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    fn set_caps(&self, caps: &gst::CapsRef) -> bool {
        let width = caps.structure(0).and_then(|s| s.get::<i32>("width").ok()).unwrap_or(0);
        let mut state = self.state();
        let Some(model) = state.model.clone() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("No model loaded"));
            return false;
        };
        if width < 0 || width as usize != model.d_model() {
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
        state.width = Some(width as usize);
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
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
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

        let expected = ENCODER_FRAMES * width * 4;
        if buffer.size() != expected {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "Encoder states buffer of {} bytes, expected {} ({} × {} F32LE)",
                    buffer.size(),
                    expected,
                    ENCODER_FRAMES,
                    width
                )
            );
            return Err(gst::FlowError::Error);
        }
        let states = {
            let map = buffer.map_readable().map_err(|_| {
                gst::element_imp_error!(self, gst::StreamError::Failed, ("Could not map input buffer"));
                gst::FlowError::Error
            })?;
            f32buf::f32_from_bytes(&map).ok_or(gst::FlowError::Error)?
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
                pts,
                duration,
                discont,
            };
            if provisional {
                // Decoded now, and its audio comes again: the next window starts where it did.
                drop(state);
                let ret = self.decode_pass(window);
                passes::send_done(&self.sinkpad, &buffer);
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

    /// A provisional pass over a live window: pushes the words it and the previous pass agree
    /// on, and those too old to wait for the next pass.
    fn decode_pass(&self, window: Window) -> Result<gst::FlowSuccess, gst::FlowError> {
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

    /// Windows decoded together: `batch-size`, or when 0, 8 for recordings and 1 when upstream
    /// is live (where waiting for more windows would only add latency); and whether it is live.
    fn choose_batch_size(&self) -> (usize, bool) {
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
            let results = transcriber.transcribe_batch(&windows);
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
                    let released = state
                        .agreement
                        .finalize(StreamWord::of_window(&result, window.pts.seconds_f64()));
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

    /// Pushes what a decoded window gives: a language tag when it changes, its text `pieces`,
    /// or else a GAP up to `gap_until`. The language is posted for complete windows only.
    fn push_text(
        &self,
        result: &WindowResult,
        window_pts: gst::ClockTime,
        window_duration: gst::ClockTime,
        pieces: Vec<Piece>,
        gap_until: gst::ClockTime,
        complete: bool,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings().clone();
        let mut outputs = Vec::new();
        let mut messages = Vec::new();
        {
            let mut state = self.state();
            let window_end = window_pts.saturating_add(window_duration);

            let language = result
                .language
                .clone()
                .or_else(|| (!state.multilingual).then(|| "en".to_string()));
            if language.is_some() && language != state.language {
                let mut tags = gst::TagList::new();
                if let (Some(tags), Some(lang)) = (tags.get_mut(), language.as_deref()) {
                    tags.add::<gst::tags::LanguageCode>(&lang, gst::TagMergeMode::Replace);
                }
                gst::info!(CAT, imp = self, "Language {language:?}");
                outputs.push(Output::Event(gst::event::Tag::new(tags)));
                state.language = language;
            }

            if let (Some(lang), true) = (
                result.language.as_deref(),
                complete && settings.post_messages && state.multilingual,
            ) {
                let s = gst::Structure::builder("npuwhisper-language")
                    .field("language", lang)
                    .field("start", window_pts)
                    .field("duration", window_duration)
                    .build();
                messages.push(gst::message::Element::builder(s).src(&*self.obj()).build());
            }

            let english = state.language.as_deref().unwrap_or("en") == "en";
            // A window may start inside a sentence; live passes keep their own text.
            let mut first = complete && !state.streaming;
            for Piece {
                text,
                start,
                end,
                avg_logprob,
                words,
            } in &pieces
            {
                let (mut start, mut end) = (*start, *end);
                let text = if std::mem::take(&mut first) {
                    cues::continue_sentence(state.last_char, text.trim(), english)
                } else {
                    text.trim().to_string()
                };
                let text = text.as_str();
                if text.is_empty() {
                    continue;
                }
                // No overlap with what was pushed: clip the start, never go backwards.
                if let Some(last_end) = state.last_end {
                    start = start.max(last_end);
                }
                end = end.min(window_end);
                if end < start.saturating_add(MIN_DURATION) {
                    // Passes the window end only if the previous text already reached it.
                    end = start.saturating_add(MIN_DURATION);
                }
                gst::debug!(CAT, imp = self, "{start} - {end}: {text}");

                let mut buffer = gst::Buffer::from_mut_slice(text.as_bytes().to_vec());
                if let Some(b) = buffer.get_mut() {
                    b.set_pts(start);
                    b.set_duration(end - start);
                    if std::mem::take(&mut state.discont) {
                        b.set_flags(gst::BufferFlags::DISCONT);
                    }
                }
                state.last_end = Some(end);
                state.last_char = text.chars().last();
                outputs.push(Output::Buffer(buffer));
                if settings.post_messages {
                    let name = if settings.word_timestamps {
                        "npuwhisper-word"
                    } else {
                        "npuwhisper-phrase"
                    };
                    let mut s = gst::Structure::builder(name)
                        .field("text", text)
                        .field("start", start)
                        .field("end", end)
                        .field("avg-logprob", *avg_logprob as f64)
                        .field("language", state.language.as_deref().unwrap_or("en"));
                    if !words.is_empty() {
                        let words = words.iter().map(|(text, start, end, probability)| {
                            gst::Structure::builder("word")
                                .field("text", text)
                                .field("start", *start)
                                .field("end", *end)
                                .field("probability", *probability as f64)
                                .build()
                                .to_send_value()
                        });
                        s = s.field("words", gst::List::new(words));
                    }
                    let s = s.build();
                    messages.push(gst::message::Element::builder(s).src(&*self.obj()).build());
                }
            }

            if !outputs.iter().any(|o| matches!(o, Output::Buffer(_))) {
                // No text: tell downstream the time passed.
                let gap_start = state.last_end.map_or(window_pts, |e| e.max(window_pts));
                let gap_end = gap_until.min(window_end);
                if gap_end > gap_start {
                    outputs.push(Output::Event(
                        gst::event::Gap::builder(gap_start)
                            .duration(gap_end - gap_start)
                            .build(),
                    ));
                    state.last_end = Some(gap_end);
                }
            }
        }

        for message in messages {
            // Without a bus (a lone element in a test) nobody is listening.
            let _ = self.obj().post_message(message);
        }
        for output in outputs {
            match output {
                Output::Event(event) => {
                    if !self.srcpad.push_event(event) {
                        gst::debug!(CAT, imp = self, "Downstream did not handle an event");
                    }
                }
                Output::Buffer(buffer) => {
                    self.srcpad.push(buffer)?;
                }
            }
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
        let string = || value.get::<Option<String>>().ok().flatten();
        if settings.model.set(pspec.name(), value) {
            gst::info!(CAT, imp = self, "Settings now {settings:?}");
            return;
        }
        match pspec.name() {
            "language" => settings.language = string().unwrap_or_else(|| super::DEFAULT_LANGUAGE.to_string()),
            "language-code" => settings.language = super::language_from_code(&string().unwrap_or_default()),
            "task" => settings.task = value.get().expect("type checked upstream"),
            "condition-on-previous-text" => {
                settings.condition_on_previous_text = value.get().expect("type checked upstream")
            }
            "initial-prompt" => settings.initial_prompt = string(),
            "beam-size" => settings.beam_size = value.get().expect("type checked upstream"),
            "best-of" => settings.best_of = value.get().expect("type checked upstream"),
            "temperature-fallback" => settings.temperature_fallback = value.get().expect("type checked upstream"),
            "compression-ratio-threshold" => {
                settings.compression_ratio_threshold = value.get().expect("type checked upstream")
            }
            "logprob-threshold" => settings.logprob_threshold = value.get().expect("type checked upstream"),
            "no-speech-threshold" => settings.no_speech_threshold = value.get().expect("type checked upstream"),
            "word-timestamps" => settings.word_timestamps = value.get().expect("type checked upstream"),
            "post-messages" => settings.post_messages = value.get().expect("type checked upstream"),
            "batch-size" => settings.batch_size = value.get().expect("type checked upstream"),
            "max-line-chars" => {
                settings.layout.max_line_chars = value.get::<u32>().expect("type checked upstream") as usize
            }
            "max-lines" => settings.layout.max_lines = value.get::<u32>().expect("type checked upstream") as usize,
            "min-cue-duration" => {
                settings.layout.min_duration = value.get::<u32>().expect("type checked upstream") as f64 / 1000.0
            }
            "max-cue-duration" => {
                settings.layout.max_duration = value.get::<u32>().expect("type checked upstream") as f64 / 1000.0
            }
            "max-reading-speed" => settings.layout.max_cps = value.get::<f32>().expect("type checked upstream") as f64,
            other => gst::warning!(CAT, imp = self, "Unknown property {other}"),
        }
        gst::info!(CAT, imp = self, "Settings now {settings:?}");
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings();
        if let Some(v) = s.model.get(pspec.name()) {
            return v;
        }
        match pspec.name() {
            "language" | "language-code" => s.language.to_value(),
            "task" => s.task.to_value(),
            "condition-on-previous-text" => s.condition_on_previous_text.to_value(),
            "initial-prompt" => s.initial_prompt.to_value(),
            "beam-size" => s.beam_size.to_value(),
            "best-of" => s.best_of.to_value(),
            "temperature-fallback" => s.temperature_fallback.to_value(),
            "compression-ratio-threshold" => s.compression_ratio_threshold.to_value(),
            "logprob-threshold" => s.logprob_threshold.to_value(),
            "no-speech-threshold" => s.no_speech_threshold.to_value(),
            "word-timestamps" => s.word_timestamps.to_value(),
            "post-messages" => s.post_messages.to_value(),
            "batch-size" => s.batch_size.to_value(),
            "live-hold" => s.live_hold_ms.to_value(),
            "max-line-chars" => (s.layout.max_line_chars as u32).to_value(),
            "max-lines" => (s.layout.max_lines as u32).to_value(),
            "min-cue-duration" => ((s.layout.min_duration * 1000.0).round() as u32).to_value(),
            "max-cue-duration" => ((s.layout.max_duration * 1000.0).round() as u32).to_value(),
            "max-reading-speed" => (s.layout.max_cps as f32).to_value(),
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
