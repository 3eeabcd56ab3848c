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

/// The children that receive forwarded properties.
struct Children {
    mel: gst::Element,
    enc: gst::Element,
    dec: gst::Element,
}

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
}

impl NpuWhisperBin {
    fn children(&self) -> MutexGuard<'_, Option<Children>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn build_error(&self) -> MutexGuard<'_, Option<String>> {
        self.build_error.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spreads `latency` (ms) over the pass step of npumel and the word hold of the decoder.
    fn apply_latency(&self, mel: &gst::Element, dec: &gst::Element, latency_ms: u32) {
        let (step, hold) = (live::step_ms(latency_ms), live::hold_ms(latency_ms));
        gst::debug!(CAT, imp = self, "Latency {latency_ms} ms: passes every {step} ms, words held up to {hold} ms");
        mel.set_property("live-step", step);
        // Read when the decoder starts: transcriberbin sets latency in PAUSED, before data flows.
        dec.set_property("live-hold", hold);
    }

    fn build(&self) -> Result<Children, String> {
        let make = |factory: &str, name: &str| {
            gst::ElementFactory::make(factory)
                .name(name)
                .build()
                .map_err(|_| {
                    format!("Element '{factory}' is not available (is its plugin installed?)")
                })
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

        let chain = [
            &convert,
            &resample,
            &mel,
            &melqueue,
            &enc,
            &statesqueue,
            &dec,
        ];
        let obj = self.obj();
        obj.add_many(chain)
            .map_err(|e| format!("Could not add the elements: {e}"))?;
        gst::Element::link_many(chain).map_err(|e| format!("Could not link the elements: {e}"))?;

        let target = convert
            .static_pad("sink")
            .ok_or("audioconvert has no sink pad")?;
        self.sinkpad
            .set_target(Some(&target))
            .map_err(|e| format!("Could not set the sink pad target: {e}"))?;
        let target = dec
            .static_pad("src")
            .ok_or("npuwhisperdec has no src pad")?;
        self.srcpad
            .set_target(Some(&target))
            .map_err(|e| format!("Could not set the src pad target: {e}"))?;
        self.progress.install(obj.upcast_ref(), &dec)?;
        self.live.install(obj.upcast_ref(), self.srcpad.upcast_ref());
        self.apply_latency(&mel, &dec, self.live.latency_ms());

        Ok(Children { mel, enc, dec })
    }
}

#[glib::object_subclass]
impl ObjectSubclass for NpuWhisperBin {
    const NAME: &'static str = "GstNpuWhisper";
    type Type = super::NpuWhisperBin;
    type ParentType = gst::Bin;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::GhostPad::builder_from_template(&templ)
            .name("sink")
            .build();
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
        }
    }
}

impl ObjectImpl for NpuWhisperBin {
    fn properties() -> &'static [glib::ParamSpec] {
        // Every decoding property of npuwhisperdec, forwarded to it.
        // Plus the bin's own: latency and lateness on live streams.
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            // live-hold is derived from latency.
            let mut specs: Vec<_> = npuwhisperdec::param_specs().into_iter().filter(|p| p.name() != "live-hold").collect();
            specs.extend(live::param_specs());
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
                    self.apply_latency(&children.mel, &children.dec, ms);
                }
                // transcriberbin sets it in PAUSED: have the pipeline ask again.
                if self.obj().current_state() > gst::State::Ready {
                    let _ = self.obj().post_message(gst::message::Latency::builder().src(&*self.obj()).build());
                }
                return;
            }
            "lateness" => {
                self.live.set_lateness_ms(value.get::<u32>().expect("type checked upstream"));
                return;
            }
            _ => (),
        }
        let children = self.children();
        let Some(children) = children.as_ref() else {
            gst::warning!(CAT, imp = self, "No children to set {} on", pspec.name());
            return;
        };
        // The decoder holds every setting; the encoder needs the model ones too.
        if matches!(pspec.name(), "model" | "precision" | "threads") {
            children.enc.set_property_from_value(pspec.name(), value);
        }
        children.dec.set_property_from_value(pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "latency" => return self.live.latency_ms().to_value(),
            "lateness" => return self.live.lateness_ms().to_value(),
            _ => (),
        }
        match self.children().as_ref() {
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
            caps::sink_src_templates(&gst::Caps::new_empty_simple("audio/x-raw"), &caps::text())
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady {
            if let Some(err) = self.build_error().clone() {
                gst::element_imp_error!(self, gst::CoreError::MissingPlugin, ("{}", err));
                return Err(gst::StateChangeError);
            }
        }
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            self.progress.reset(self.obj().upcast_ref());
            self.live.reset();
        }
        Ok(ret)
    }
}

impl BinImpl for NpuWhisperBin {}

impl NpuWhisperBin {
    /// LATENCY: when upstream is live, what the bin adds is its `latency` property.
    fn src_query(&self, pad: &gst::GhostPad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let mut inside = gst::query::Latency::new();
            if !self.proxy_query(pad, &mut inside) {
                return false;
            }
            let mut upstream = gst::query::Latency::new();
            let upstream = self.sinkpad.peer_query(&mut upstream).then(|| upstream.result());
            self.live.answer_latency(q, inside.result(), upstream);
            return true;
        }
        self.proxy_query(pad, query)
    }

    /// What the ghost pad does without a query function: forward to the target.
    fn proxy_query(&self, pad: &gst::GhostPad, query: &mut gst::QueryRef) -> bool {
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }
}
