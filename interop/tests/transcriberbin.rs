//! `npuwhisper` as the transcriber of gst-plugins-rs `transcriberbin` (gst-plugin-closedcaption
//! 0.13, statically registered): live audio (jfk.wav pushed by an `appsrc` paced by the clock)
//! and live video go in; the CEA-608 captions transcriberbin attaches to the video are pulled
//! out again (`ccextractor`, characters read from the byte pairs) and must hold the words of
//! the speech.

use std::sync::{Arc, Mutex};

use gst::prelude::*;

#[path = "../../tests/common/mod.rs"]
mod common;

use common::captions::{cea608_text, on_extracted_captions};
use common::{eval_file, push_live, read_wav};

fn init() {
    common::init();
    gstrsclosedcaption::plugin_register_static().expect("rsclosedcaption registers");
    gsttextwrap::plugin_register_static().expect("textwrap registers");
}

#[test]
fn npuwhisper_captions_video_in_transcriberbin() {
    if !common::require(&[common::Need::Models, common::Need::Shared]) {
        return;
    }
    init();
    let samples = read_wav(&eval_file("jfk.wav"));
    let seconds = samples.len() as f64 / 16000.0;
    // Video goes on past the audio by more than the latency, so the last captions get a frame.
    let frames = ((seconds + 6.0) * 30.0) as u32;

    let pipeline = build_pipeline(frames);
    let asr = pipeline.by_name("asr").unwrap();
    let tb = pipeline.by_name("tb").unwrap();
    // transcriberbin passes its language-code to the transcriber when it changes.
    tb.set_property("language-code", "en-GB");

    // Text leaving npuwhisper inside transcriberbin.
    let text: Arc<Mutex<Vec<(gst::ClockTime, String)>>> = Arc::default();
    {
        let text = text.clone();
        asr.static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(buffer) = info.buffer() {
                    let map = buffer.map_readable().unwrap();
                    text.lock().unwrap().push((
                        buffer.pts().expect("text has a PTS"),
                        String::from_utf8_lossy(&map).into_owned(),
                    ));
                }
                gst::PadProbeReturn::Ok
            });
    }
    // Captions: ccextractor's caption pad appears with the first caption meta.
    let captions: Arc<Mutex<String>> = Arc::default();
    {
        let captions = captions.clone();
        on_extracted_captions(&pipeline, &pipeline.by_name("cc").unwrap(), move |buffer| {
            captions
                .lock()
                .unwrap()
                .push_str(&cea608_text(&buffer.map_readable().unwrap()));
        });
    }

    let appsrc = pipeline
        .by_name("audio")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let pusher = {
        let pipeline = pipeline.clone();
        std::thread::spawn(move || push_live(&pipeline, &appsrc, &samples))
    };

    pipeline
        .set_state(gst::State::Playing)
        .expect("transcriberbin with npuwhisper plays");

    let bus = pipeline.bus().unwrap();
    let mut latency = None;
    let mut played = false;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(seconds as u64 + 60)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("error: {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Warning(w) => println!("warning: {} ({:?})", w.error(), w.debug()),
            gst::MessageView::StateChanged(sc) if sc.src() == Some(pipeline.upcast_ref()) => {
                played |= sc.current() == gst::State::Playing;
            }
            gst::MessageView::Latency(_) => {
                let _ = pipeline.recalculate_latency();
                let mut q = gst::query::Latency::new();
                if pipeline.query(&mut q) {
                    latency = Some(q.result());
                }
            }
            _ => (),
        }
    }
    pusher.join().unwrap();
    assert!(played, "the pipeline reached PLAYING");
    // transcriberbin drives the transcriber's latency (its own default, 4 s).
    assert_eq!(asr.property::<u32>("latency"), tb.property::<u32>("latency"));
    assert_eq!(
        asr.property::<String>("language"),
        "en",
        "language-code en-GB maps to en"
    );
    pipeline.set_state(gst::State::Null).unwrap();

    let text = text.lock().unwrap().clone();
    let captions = captions.lock().unwrap().clone();
    println!("npuwhisper inside transcriberbin:");
    for (pts, t) in &text {
        println!("  {pts} {t}");
    }
    println!("captions (CEA-608 on the video, as typed):\n{captions}");
    println!("pipeline latency: {latency:?}");

    let joined = text
        .iter()
        .map(|(_, t)| t.as_str())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    assert!(
        joined.contains("country") && joined.contains("americans"),
        "transcript: {joined}"
    );
    assert!(text.windows(2).all(|w| w[0].0 <= w[1].0), "text PTS go backwards");
    assert!(
        text.iter().all(|(pts, _)| pts.seconds_f64() < seconds),
        "text PTS past the audio"
    );
    let captions = captions.to_lowercase();
    assert!(
        captions.contains("country") && captions.contains("fellow"),
        "captions: {captions}"
    );
}

/// appsrc (live audio) and videotestsrc (live video) into transcriberbin with npuwhisper as its
/// transcriber and CEA-708 muxing (its CEA-608 muxer, `cea608mux`, needs GStreamer 1.24); the
/// captions reach the video as CEA-608 (transcriberbin's default `cc-caps`).
fn build_pipeline(frames: u32) -> gst::Pipeline {
    let pipeline = gst::Pipeline::new();
    let asr = gst::ElementFactory::make("npuwhisper").name("asr").build().unwrap();
    let tb = gst::ElementFactory::make("transcriberbin")
        .name("tb")
        .property_from_str("mux-method", "cea708")
        .property("transcriber", &asr)
        .build()
        .expect("transcriberbin (gst-plugin-closedcaption) is registered");
    let audio = gst::ElementFactory::make("appsrc")
        .name("audio")
        .property("is-live", true)
        .property_from_str("format", "time")
        .property("min-latency", 100_000_000i64)
        .property(
            "caps",
            "audio/x-raw,format=F32LE,rate=16000,channels=1,layout=interleaved"
                .parse::<gst::Caps>()
                .unwrap(),
        )
        .build()
        .unwrap();
    let video = gst::ElementFactory::make("videotestsrc")
        .property("is-live", true)
        .property("num-buffers", frames as i32)
        .property_from_str("pattern", "black")
        .build()
        .unwrap();
    let vcaps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            "video/x-raw,width=320,height=240,framerate=30/1"
                .parse::<gst::Caps>()
                .unwrap(),
        )
        .build()
        .unwrap();
    let cc = gst::ElementFactory::make("ccextractor").name("cc").build().unwrap();
    // Not prerolling: cccombiner only lets video through once captions or its deadline arrive,
    // and the deadline needs the clock running, i.e. PLAYING.
    let asink = gst::ElementFactory::make("fakesink")
        .property("sync", true)
        .property("async", false)
        .build()
        .unwrap();
    let vsink = gst::ElementFactory::make("fakesink")
        .property("sync", true)
        .property("async", false)
        .build()
        .unwrap();
    pipeline
        .add_many([&audio, &video, &vcaps, &tb, &cc, &asink, &vsink])
        .unwrap();
    audio.link_pads(None, &tb, Some("sink_audio")).unwrap();
    video.link(&vcaps).unwrap();
    vcaps.link_pads(None, &tb, Some("sink_video")).unwrap();
    tb.link_pads(Some("src_audio"), &asink, None).unwrap();
    tb.link_pads(Some("src_video"), &cc, None).unwrap();
    cc.link_pads(Some("src"), &vsink, None).unwrap();
    pipeline
}
