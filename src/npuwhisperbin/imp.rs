use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::caps;
use crate::npuwhisperdec;

use super::live::{self, Live};
use super::progress::Progress;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "npuwhisper",
        gst::DebugColorFlags::empty(),
        Some("Whisper speech-to-text bin"),
    )
});

/// Windows each queue holds: enough to overlap the stages without hoarding memory.
const QUEUE_BUFFERS: u32 = 2;

/// The children that receive forwarded properties, and the ends of the chain.
struct Children {
    convert: gst::Element,
    mel: gst::Element,
    enc: gst::Element,
    dec: gst::Element,
    /// The elements added in passthrough mode.
    passthrough: Option<PassthroughBranch>,
}

/// Passthrough: `tee`, one branch the bin's src pad (the audio as it came), the other a queue
/// into the transcription chain, whose text ends in a fakesink (the words go on the bus).
struct PassthroughBranch {
    tee: gst::Element,
    queue: gst::Element,
    textsink: gst::Element,
}

/// Audio the transcription branch may hold in passthrough mode: a window's processing burst
/// must not hold up the audio passing through.
const PASSTHROUGH_QUEUE_NS: u64 = 10_000_000_000;

pub struct NpuWhisperBin {
    sinkpad: gst::GhostPad,
    srcpad: gst::GhostPad,
    children: Mutex<Option<Children>>,
    /// Why the children could not be built; reported when going to READY.
    build_error: Mutex<Option<String>>,
    /// Posts how much of the stream has been transcribed.
    progress: Arc<Progress>,
    /// `latency` and `lateness`, and what the bin promised when live.
    live: Arc<Live>,
    /// The `passthrough` property: audio out of the src pad, text only as messages.
    passthrough: AtomicBool,
}

impl NpuWhisperBin {
    fn children(&self) -> MutexGuard<'_, Option<Children>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn build_error(&self) -> MutexGuard<'_, Option<String>> {
        self.build_error.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spreads the latency over the pass step of npumel and the word hold of the decoder; warns
    /// when `latency` is below what the loaded model allows.
    fn apply_latency(&self, mel: &gst::Element, dec: &gst::Element) {
        let (latency, floor) = (self.live.latency_ms(), self.live.min_latency_ms());
        if latency < floor {
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                (
                    "Latency {} ms is below the {} ms this model needs on this machine (min-latency): using {} ms",
                    latency,
                    floor,
                    floor
                )
            );
        }
        let (step, hold) = self.live.step_and_hold_ms();
        gst::debug!(
            CAT,
            imp = self,
            "Latency {latency} ms (lowest {floor} ms): passes every {step} ms, words held up to {hold} ms"
        );
        mel.set_property("live-step", step);
        // Read at each pass: transcriberbin sets latency in PAUSED, before data flows.
        dec.set_property("live-hold", hold);
    }

    fn build(&self) -> Result<Children, String> {
        let make = |factory: &str, name: &str| {
            gst::ElementFactory::make(factory)
                .name(name)
                .build()
                .map_err(|_| format!("Element '{factory}' is not available (is its plugin installed?)"))
        };
        let convert = make("audioconvert", "convert")?;
        let resample = make("audioresample", "resample")?;
        let mel = make("npumel", "mel")?;
        let melqueue = make("queue", "melqueue")?;
        let enc = make("npuwhisperenc", "enc")?;
        let statesqueue = make("queue", "statesqueue")?;
        let dec = make("npuwhisperdec", "dec")?;

        for q in [&melqueue, &statesqueue] {
            q.set_property("max-size-buffers", QUEUE_BUFFERS);
            q.set_property("max-size-time", 0u64);
            q.set_property("max-size-bytes", 0u32);
        }

        let chain = [&convert, &resample, &mel, &melqueue, &enc, &statesqueue, &dec];
        let obj = self.obj();
        obj.add_many(chain)
            .map_err(|e| format!("Could not add the elements: {e}"))?;
        gst::Element::link_many(chain).map_err(|e| format!("Could not link the elements: {e}"))?;

        let children = Children {
            convert,
            mel,
            enc,
            dec,
            passthrough: None,
        };
        self.set_targets(&children)?;
        self.progress.install(obj.upcast_ref(), &children.dec)?;
        // On the decoder's pad, not the bin's: the text, also when it does not leave the bin.
        let text = children.dec.static_pad("src").ok_or("npuwhisperdec has no src pad")?;
        self.live.install(obj.upcast_ref(), &text);
        self.apply_latency(&children.mel, &children.dec);

        Ok(children)
    }

    /// Points the ghost pads at the chain: audio into audioconvert (or the tee) and the text
    /// out of npuwhisperdec (or the tee's audio branch).
    fn set_targets(&self, children: &Children) -> Result<(), String> {
        let (sink, src) = match &children.passthrough {
            None => (children.convert.static_pad("sink"), children.dec.static_pad("src")),
            Some(p) => (p.tee.static_pad("sink"), p.tee.request_pad_simple("src_%u")),
        };
        let sink = sink.ok_or("No sink pad for the bin's sink pad")?;
        let src = src.ok_or("No src pad for the bin's src pad")?;
        self.sinkpad
            .set_target(Some(&sink))
            .map_err(|e| format!("Could not set the sink pad target: {e}"))?;
        self.srcpad
            .set_target(Some(&src))
            .map_err(|e| format!("Could not set the src pad target: {e}"))?;
        Ok(())
    }

    /// Switches between the normal chain and passthrough (in NULL or READY).
    fn set_passthrough(&self, children: &mut Children, on: bool) -> Result<(), String> {
        if children.passthrough.is_some() == on {
            return Ok(());
        }
        let obj = self.obj();
        for pad in [&self.sinkpad, &self.srcpad] {
            pad.set_target(None::<&gst::Pad>)
                .map_err(|e| format!("Could not unset a ghost pad target: {e}"))?;
        }
        if on {
            let make = |factory: &str, name: &str| {
                gst::ElementFactory::make(factory)
                    .name(name)
                    .build()
                    .map_err(|_| format!("Element '{factory}' is not available"))
            };
            let tee = make("tee", "passtee")?;
            let queue = make("queue", "passqueue")?;
            queue.set_property("max-size-time", PASSTHROUGH_QUEUE_NS);
            queue.set_property("max-size-buffers", 0u32);
            queue.set_property("max-size-bytes", 0u32);
            // Not synchronised (the text is late by design) and so not live to the pipeline's
            // LATENCY query; no preroll wait for the first text.
            let textsink = make("fakesink", "textsink")?;
            textsink.set_property("sync", false);
            textsink.set_property("async", false);
            textsink.set_property("enable-last-sample", false);
            obj.add_many([&tee, &queue, &textsink])
                .map_err(|e| format!("Could not add the passthrough elements: {e}"))?;
            gst::Element::link_many([&tee, &queue, &children.convert])
                .map_err(|e| format!("Could not link the transcription branch: {e}"))?;
            children
                .dec
                .link(&textsink)
                .map_err(|e| format!("Could not link the text sink: {e}"))?;
            children.passthrough = Some(PassthroughBranch { tee, queue, textsink });
        } else if let Some(p) = children.passthrough.take() {
            for pad in p.tee.src_pads() {
                p.tee.release_request_pad(&pad);
            }
            obj.remove_many([&p.tee, &p.queue, &p.textsink])
                .map_err(|e| format!("Could not remove the passthrough elements: {e}"))?;
        }
        self.set_targets(children)?;
        self.passthrough.store(on, Ordering::Relaxed);
        Ok(())
    }
}

#[glib::object_subclass]
impl ObjectSubclass for NpuWhisperBin {
    const NAME: &'static str = "GstNpuWhisper";
    type Type = super::NpuWhisperBin;
    type ParentType = gst::Bin;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::GhostPad::builder_from_template(&templ).name("sink").build();
        let templ = klass.pad_template("src").unwrap();
        let srcpad = gst::GhostPad::builder_from_template(&templ)
            .name("src")
            .query_function(|pad, parent, query| {
                NpuWhisperBin::catch_panic_pad_function(parent, || false, |imp| imp.src_query(pad, query))
            })
            .build();

        Self {
            sinkpad,
            srcpad,
            children: Mutex::new(None),
            build_error: Mutex::new(None),
            progress: Arc::default(),
            live: Arc::new(Live::new()),
            passthrough: AtomicBool::new(false),
        }
    }
}

impl ObjectImpl for NpuWhisperBin {
    fn properties() -> &'static [glib::ParamSpec] {
        // Every decoding property of npuwhisperdec, forwarded to it.
        // Plus the bin's own: latency and lateness on live streams, passthrough.
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            // live-hold is derived from latency.
            let mut specs: Vec<_> = npuwhisperdec::param_specs()
                .into_iter()
                .filter(|p| p.name() != "live-hold")
                .collect();
            specs.extend(live::param_specs());
            specs.push(crate::npuwhisperenc::context_param_spec());
            specs.push(
                glib::ParamSpecEnum::builder_with_default("vad", crate::npumel::VadMode::default())
                    .nick("Voice activity detection")
                    .blurb("How npumel tells speech from silence, noise and music (silero, or energy: its silence-threshold)")
                    .mutable_ready()
                    .build(),
            );
            specs.push(
                glib::ParamSpecBoolean::builder("passthrough")
                    .nick("Passthrough")
                    .blurb("Pass the audio through the src pad unchanged; the transcript is still made and posted on the bus as element messages (npuwhisper-phrase / npuwhisper-word, see post-messages)")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
            );
            specs
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        match pspec.name() {
            "latency" => {
                let ms = value.get::<u32>().expect("type checked upstream");
                self.live.set_latency_ms(ms);
                if let Some(children) = self.children().as_ref() {
                    self.apply_latency(&children.mel, &children.dec);
                }
                // transcriberbin sets it in PAUSED: have the pipeline ask again.
                if self.obj().current_state() > gst::State::Ready {
                    let _ = self
                        .obj()
                        .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
                }
                return;
            }
            "lateness" => {
                self.live
                    .set_lateness_ms(value.get::<u32>().expect("type checked upstream"));
                return;
            }
            "passthrough" => {
                let on = value.get::<bool>().expect("type checked upstream");
                if self.obj().current_state() > gst::State::Ready {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "passthrough can only be changed in NULL or READY state"
                    );
                    return;
                }
                let mut children = self.children();
                let Some(children) = children.as_mut() else { return };
                if let Err(err) = self.set_passthrough(children, on) {
                    // Reported when going to READY, like a build error.
                    gst::error!(CAT, imp = self, "{err}");
                    *self.build_error() = Some(err);
                }
                return;
            }
            _ => (),
        }
        let children = self.children();
        let Some(children) = children.as_ref() else {
            gst::warning!(CAT, imp = self, "No children to set {} on", pspec.name());
            return;
        };
        if pspec.name() == "vad" {
            children.mel.set_property_from_value("vad", value);
            return;
        }
        if pspec.name() == "context" {
            children.enc.set_property_from_value("context", value);
            return;
        }
        // The decoder holds every setting; the encoder needs the model ones too.
        if crate::model_property::NAMES.contains(&pspec.name()) {
            children.enc.set_property_from_value(pspec.name(), value);
        }
        children.dec.set_property_from_value(pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "latency" => return self.live.latency_ms().to_value(),
            "min-latency" => return self.live.min_latency_ms().to_value(),
            "lateness" => return self.live.lateness_ms().to_value(),
            "passthrough" => return self.passthrough.load(Ordering::Relaxed).to_value(),
            _ => (),
        }
        match self.children().as_ref() {
            Some(children) if pspec.name() == "vad" => children.mel.property_value("vad"),
            Some(children) if pspec.name() == "context" => children.enc.property_value("context"),
            Some(children) => children.dec.property_value(pspec.name()),
            None => pspec.default_value().clone(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();

        match self.build() {
            Ok(children) => *self.children() = Some(children),
            Err(err) => {
                // No bus yet: reported when going to READY.
                gst::error!(CAT, imp = self, "{err}");
                *self.build_error() = Some(err);
            }
        }
    }
}

impl GstObjectImpl for NpuWhisperBin {}

impl ElementImpl for NpuWhisperBin {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Whisper speech-to-text bin",
                "Filter/Analyzer/Audio",
                "Transcribes speech to timed text with Whisper",
                "npuwhisper developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let audio = gst::Caps::new_empty_simple("audio/x-raw");
            // Text, or in passthrough mode the audio.
            let mut src = caps::text();
            src.merge(audio.clone());
            caps::sink_src_templates(&audio, &src)
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(&self, transition: gst::StateChange) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady {
            if let Some(err) = self.build_error().clone() {
                gst::element_imp_error!(self, gst::CoreError::MissingPlugin, ("{}", err));
                return Err(gst::StateChangeError);
            }
        }
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::NullToReady {
            self.model_loaded();
        }
        if transition == gst::StateChange::PausedToReady {
            self.progress.reset(self.obj().upcast_ref());
            self.live.reset();
        }
        Ok(ret)
    }
}

impl BinImpl for NpuWhisperBin {}

impl NpuWhisperBin {
    /// The decoder has loaded its model (going to READY): the lowest latency follows from it.
    fn model_loaded(&self) {
        let children = self.children();
        let Some(children) = children.as_ref() else { return };
        let mut settings = crate::model_property::ModelSettings::default();
        for &name in crate::model_property::NAMES {
            settings.set(name, &children.dec.property_value(name));
        }
        // The model the decoder holds, from the shared cache.
        match crate::model_property::load(&settings) {
            Ok(model) => self.live.set_model(&model),
            Err(err) => gst::warning!(CAT, imp = self, "Model not found for the lowest latency: {err:?}"),
        }
        self.apply_latency(&children.mel, &children.dec);
    }

    /// LATENCY: when upstream is live, what the bin adds is its `latency` property; in
    /// passthrough mode nothing (the audio is not held back), but the text is still checked
    /// against the latency.
    fn src_query(&self, pad: &gst::GhostPad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let mut inside = gst::query::Latency::new();
            if !self.proxy_query(pad, &mut inside) {
                return false;
            }
            let mut upstream = gst::query::Latency::new();
            let upstream = self.sinkpad.peer_query(&mut upstream).then(|| upstream.result());
            if self.passthrough.load(Ordering::Relaxed) {
                self.live
                    .answer_latency(&mut gst::query::Latency::new(), inside.result(), upstream);
                let (live, min, max) = inside.result();
                q.set(live, min, max);
            } else {
                self.live.answer_latency(q, inside.result(), upstream);
            }
            return true;
        }
        self.proxy_query(pad, query)
    }

    /// What the ghost pad does without a query function: forward to the target.
    fn proxy_query(&self, pad: &gst::GhostPad, query: &mut gst::QueryRef) -> bool {
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }
}
