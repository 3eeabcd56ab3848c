//! One recording through `filesrc ! decodebin ! npuwhisper ! fakesink`, the transcript taken
//! from the decoder's phrase (or word) messages on the bus.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gst::prelude::*;

use crate::formats::{Cue, Transcript, Word};

/// Why a recording gave no transcript.
pub enum Failure {
    Error(String),
    /// A signal asked to stop.
    Interrupted,
}

/// Sets `props` (`PROPERTY=VALUE` strings, as `gst-launch-1.0` reads them) on `element`.
pub fn set_properties(element: &gst::Element, props: &[(String, String)]) -> Result<(), String> {
    let factory = element
        .factory()
        .map_or_else(|| "element".to_string(), |f| f.name().to_string());
    for (name, value) in props {
        let pspec = element
            .find_property(name)
            .ok_or_else(|| format!("{factory} has no property '{name}' (gst-inspect-1.0 {factory} lists them)"))?;
        let v = glib::Value::deserialize_with_pspec(value, &pspec)
            .ok()
            .filter(|v| pspec.value_is_valid(v))
            .ok_or_else(|| {
                format!(
                    "'{value}' is not a valid value for {factory} property '{name}' ({})",
                    pspec.value_type().name()
                )
            })?;
        element.set_property_from_value(name, &v);
    }
    Ok(())
}

fn seconds(s: &gst::StructureRef, field: &str) -> f64 {
    s.get::<u64>(field).map_or(0.0, |ns| ns as f64 / 1e9)
}

fn cue_of(s: &gst::StructureRef) -> Cue {
    let words = s
        .get::<gst::List>("words")
        .map(|list| {
            list.iter()
                .filter_map(|v| v.get::<gst::Structure>().ok())
                .map(|w| Word {
                    text: w.get::<String>("text").unwrap_or_default(),
                    start: seconds(&w, "start"),
                    end: seconds(&w, "end"),
                    probability: w.get::<f64>("probability").unwrap_or(f64::NAN),
                })
                .collect()
        })
        .unwrap_or_default();
    Cue {
        start: seconds(s, "start"),
        end: seconds(s, "end"),
        text: s.get::<String>("text").unwrap_or_default(),
        avg_logprob: s.get::<f64>("avg-logprob").unwrap_or(f64::NAN),
        language: s.get::<String>("language").unwrap_or_default(),
        words,
    }
}

/// Transcribes `input`; `progress` gets the fraction done. Stops when `stop` is set.
pub fn transcribe(
    input: &Path,
    props: &[(String, String)],
    stop: &AtomicI32,
    progress: &dyn Fn(f64),
) -> Result<Transcript, Failure> {
    let fail = |e: String| Failure::Error(e);
    let make = |name: &str| {
        gst::ElementFactory::make(name)
            .build()
            .map_err(|_| fail(format!("GStreamer element '{name}' is missing")))
    };
    let pipeline = gst::Pipeline::new();
    let src = make("filesrc")?;
    src.set_property("location", input);
    let decode = make("decodebin")?;
    let asr = make("npuwhisper")?;
    set_properties(&asr, props).map_err(fail)?;
    asr.set_property("post-messages", true);
    let sink = make("fakesink")?;
    sink.set_property("sync", false);
    pipeline
        .add_many([&src, &decode, &asr, &sink])
        .map_err(|e| fail(e.to_string()))?;
    src.link(&decode).map_err(|e| fail(e.to_string()))?;
    asr.link(&sink).map_err(|e| fail(e.to_string()))?;

    // The first audio stream goes to npuwhisper; other streams are left unlinked.
    let linked = Arc::new(AtomicBool::new(false));
    let asr_sink = asr.static_pad("sink").expect("npuwhisper has a sink pad");
    {
        let linked = linked.clone();
        decode.connect_pad_added(move |_, pad| {
            let audio = pad
                .current_caps()
                .and_then(|c| c.structure(0).map(|s| s.name().starts_with("audio/")))
                .unwrap_or(false);
            if audio && !linked.load(Ordering::SeqCst) && pad.link(&asr_sink).is_ok() {
                linked.store(true, Ordering::SeqCst);
            }
        });
    }
    {
        let (linked, name) = (linked.clone(), input.display().to_string());
        decode.connect_no_more_pads(move |decode| {
            if !linked.load(Ordering::SeqCst) {
                decode.post_error_message(gst::error_msg!(
                    gst::StreamError::WrongType,
                    ("no audio stream in {}", name)
                ));
            }
        });
    }

    let result = run(&pipeline, stop, progress);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run(pipeline: &gst::Pipeline, stop: &AtomicI32, progress: &dyn Fn(f64)) -> Result<Transcript, Failure> {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let mut transcript = Transcript::default();
    if pipeline.set_state(gst::State::Playing).is_err() {
        // The reason is on the bus.
        let why = bus
            .iter_timed_filtered(gst::ClockTime::from_mseconds(500), &[gst::MessageType::Error])
            .next()
            .and_then(|m| match m.view() {
                gst::MessageView::Error(e) => Some(e.error().to_string()),
                _ => None,
            });
        return Err(Failure::Error(
            why.unwrap_or_else(|| "the pipeline did not start".into()),
        ));
    }
    loop {
        if stop.load(Ordering::SeqCst) != 0 {
            return Err(Failure::Interrupted);
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(
            Duration::from_millis(100).as_nanos() as u64
        )) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                let mut text = e.error().to_string();
                // "Internal data stream error" says nothing without the element's detail.
                if let Some(debug) = e.debug().filter(|_| e.error().matches(gst::StreamError::Failed)) {
                    text = format!("{text} ({})", debug.lines().last().unwrap_or(""));
                }
                return Err(Failure::Error(text));
            }
            gst::MessageView::Element(e) => {
                let Some(s) = e.structure() else { continue };
                match s.name().as_str() {
                    "npuwhisper-phrase" | "npuwhisper-word" => transcript.cues.push(cue_of(s)),
                    "npuwhisper-progress" => {
                        progress(s.get::<f64>("percent").unwrap_or(0.0) / 100.0);
                        if let Ok(d) = s.get::<u64>("duration") {
                            transcript.duration = Some(d as f64 / 1e9);
                        }
                    }
                    _ => (),
                }
            }
            _ => (),
        }
    }
    if transcript.duration.is_none() {
        transcript.duration = pipeline.query_duration::<gst::ClockTime>().map(|d| d.seconds_f64());
    }
    progress(1.0);
    Ok(transcript)
}
