//! `npuwhisper passthrough=true`: the audio leaves the bin's src pad as it came in (caps,
//! bytes, timestamps) and the transcript comes only as element messages on the bus; on a live
//! stream the bin then adds no latency to the audio.

mod common;

use std::sync::{Arc, Mutex};

use gst::prelude::*;

use common::{eval_file, manifest, on_buffers, push_live, read_wav, wer, LIVE_CAPS, LIVE_CHUNK_MS};

/// Caps, then every buffer's PTS, duration and bytes, as an appsink received them.
#[derive(Default, Debug, PartialEq)]
struct Received {
    caps: Option<String>,
    buffers: Vec<(Option<gst::ClockTime>, Option<gst::ClockTime>, Vec<u8>)>,
}

fn record(pipeline: &gst::Pipeline, name: &str) -> Arc<Mutex<Received>> {
    let received: Arc<Mutex<Received>> = Arc::default();
    let sink = pipeline.by_name(name).unwrap().downcast::<gst_app::AppSink>().unwrap();
    let (r, pad) = (received.clone(), sink.static_pad("sink").unwrap());
    on_buffers(&sink, move |buffer| {
        let mut r = r.lock().unwrap();
        if r.caps.is_none() {
            r.caps = pad.current_caps().map(|c| c.to_string());
        }
        r.buffers
            .push((buffer.pts(), buffer.duration(), buffer.map_readable().unwrap().to_vec()));
    });
    received
}

/// Runs `pipeline` to EOS; returns the `npuwhisper-phrase` messages' text and the time
/// (running, s) each was posted, and the LATENCY answer of the element named `asr` once
/// playing.
/// `(running s, word)` of each posted word, and the `(live, min)` LATENCY answer.
type Run = (Vec<(f64, String)>, Option<(bool, gst::ClockTime)>);

fn run(pipeline: &gst::Pipeline) -> Run {
    pipeline.set_state(gst::State::Playing).expect("pipeline plays");
    let bus = pipeline.bus().unwrap();
    let (mut phrases, mut latency, mut eos) = (Vec::new(), None, false);
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Eos(_) => {
                eos = true;
                break;
            }
            gst::MessageView::Error(e) => panic!("error: {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == "npuwhisper-phrase" {
                    let now = pipeline.current_running_time().map_or(0.0, |t| t.seconds_f64());
                    phrases.push((now, s.get::<String>("text").unwrap()));
                }
            }
            gst::MessageView::StateChanged(sc)
                if sc.src() == Some(pipeline.upcast_ref()) && sc.current() == gst::State::Playing =>
            {
                let mut q = gst::query::Latency::new();
                if pipeline
                    .by_name("asr")
                    .unwrap()
                    .static_pad("src")
                    .unwrap()
                    .query(&mut q)
                {
                    let (live, min, _) = q.result();
                    latency = Some((live, min));
                }
            }
            _ => (),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(eos, "no EOS within 120 s");
    (phrases, latency)
}

fn jfk_reference() -> String {
    manifest("manifest.tsv")
        .into_iter()
        .find(|(f, _, _)| f == "jfk.wav")
        .unwrap()
        .2
}

fn joined(phrases: &[(f64, String)]) -> String {
    phrases.iter().map(|(_, t)| t.trim()).collect::<Vec<_>>().join(" ")
}

/// From a file: the audio out of npuwhisper equals the audio into it, and the phrases posted
/// on the bus are the transcript of jfk.wav.
#[test]
fn passthrough_keeps_the_audio_and_posts_the_words() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    common::init();
    let desc = format!(
        "filesrc location=\"{}\" ! wavparse ! tee name=t \
         t. ! queue ! appsink name=before sync=false \
         t. ! queue ! npuwhisper name=asr passthrough=true ! appsink name=after sync=false",
        eval_file("jfk.wav").display()
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    assert!(pipeline.by_name("asr").unwrap().property::<bool>("passthrough"));
    let (before, after) = (record(&pipeline, "before"), record(&pipeline, "after"));
    let (phrases, _) = run(&pipeline);

    let (before, after) = (before.lock().unwrap(), after.lock().unwrap());
    let bytes = before.buffers.iter().map(|b| b.2.len()).sum::<usize>();
    println!(
        "{} buffers, {bytes} bytes in; caps out: {:?}",
        before.buffers.len(),
        after.caps
    );
    assert!(bytes > 300_000, "jfk.wav is 11 s of 16-bit audio: {bytes} bytes");
    assert_eq!(after.caps, before.caps, "caps changed");
    assert_eq!(after.buffers.len(), before.buffers.len(), "buffer count changed");
    assert!(*after == *before, "buffers (bytes, PTS or duration) changed");

    let transcript = joined(&phrases);
    let wer = wer(&[(jfk_reference(), transcript.clone())]);
    println!("{} phrases on the bus: {transcript}\nWER {wer:.1} %", phrases.len());
    assert!(wer <= 10.0, "WER {wer:.1} % of the messages: {transcript}");
}

/// Live (audio pushed as the clock goes): the bin adds no latency to the audio (its LATENCY
/// answer is upstream's), the audio passes unchanged, and the phrases still come within the
/// latency.
#[test]
fn passthrough_live_adds_no_latency() {
    if !common::require(&[common::Need::Models, common::Need::Shared]) {
        return;
    }
    common::init();
    let samples = read_wav(&eval_file("jfk.wav"));
    let desc = format!(
        "appsrc name=src is-live=true format=time min-latency={} caps=\"{LIVE_CAPS}\" ! tee name=t \
         t. ! queue ! appsink name=before sync=false \
         t. ! queue ! npuwhisper name=asr passthrough=true ! appsink name=after sync=false",
        LIVE_CHUNK_MS * 1_000_000
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let (before, after) = (record(&pipeline, "before"), record(&pipeline, "after"));
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let pusher = {
        let (pipeline, samples) = (pipeline.clone(), samples.clone());
        std::thread::spawn(move || push_live(&pipeline, &src, &samples))
    };
    let (phrases, latency) = run(&pipeline);
    pusher.join().unwrap();

    let (live, min) = latency.expect("npuwhisper answered LATENCY");
    println!("LATENCY answer in passthrough: live {live}, min {min}");
    assert!(live, "upstream is live");
    assert_eq!(
        min,
        gst::ClockTime::from_mseconds(LIVE_CHUNK_MS),
        "passthrough adds latency to the audio"
    );
    assert!(*after.lock().unwrap() == *before.lock().unwrap(), "buffers changed");

    let seconds = samples.len() as f64 / 16000.0;
    let transcript = joined(&phrases);
    println!("phrases (posted at running time):");
    for (t, text) in &phrases {
        println!("  {t:6.2} s  {text}");
    }
    assert!(
        transcript.to_lowercase().contains("americans"),
        "transcript: {transcript}"
    );
    // Live text within the latency (3 s by default) of the end of the audio, with some slack.
    let last = phrases.last().map_or(f64::NAN, |p| p.0);
    assert!(
        last <= seconds + 3.0 + 2.0,
        "last phrase posted at {last} s, audio ends at {seconds} s"
    );
}

/// Passthrough switched on and off again (in NULL) leaves the normal bin: text out of the src
/// pad.
#[test]
fn passthrough_off_again_gives_text() {
    if !common::require(&[common::Need::Models, common::Need::Shared]) {
        return;
    }
    common::init();
    let desc = format!(
        "filesrc location=\"{}\" ! wavparse ! npuwhisper name=asr ! appsink name=sink sync=false",
        eval_file("jfk.wav").display()
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let asr = pipeline.by_name("asr").unwrap();
    asr.set_property("passthrough", true);
    asr.set_property("passthrough", false);
    assert!(!asr.property::<bool>("passthrough"));
    let text = record(&pipeline, "sink");
    let (phrases, _) = run(&pipeline);
    let text = text.lock().unwrap();
    assert_eq!(
        text.caps.as_deref(),
        Some("text/x-raw, format=(string)utf8"),
        "caps out"
    );
    let joined = text
        .buffers
        .iter()
        .map(|b| String::from_utf8_lossy(&b.2).trim().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    println!("text out: {joined}");
    assert!(joined.to_lowercase().contains("country"), "text out: {joined}");
    assert_eq!(text.buffers.len(), phrases.len(), "one message per text buffer");
}
