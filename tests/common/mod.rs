//! Shared helpers of the integration tests: running the real elements and scoring WER with
//! Whisper's normalizer, on top of core's GStreamer-free asset helpers (where the eval audio,
//! models and reference Python are, reading WAVs, skipping when they are missing).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Once;

use gst::prelude::*;

pub mod captions;
// The GStreamer-free half (asset paths, the skip rule, WAVs), shared with core's tests.
#[path = "../../core/tests/support/mod.rs"]
mod assets;
pub use assets::*;

pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        gst::init().expect("GStreamer initialises");
        gstnpuwhisper::plugin_register_static().expect("plugin registers");
    });
}

pub fn run_reference(script: &str, args: &[&Path]) -> String {
    let out = Command::new(reference_python())
        .arg(repo().join("tests/reference").join(script))
        .args(args)
        .output()
        .expect("reference python runs");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

pub fn write_f32(path: &Path, data: &[f32]) {
    std::fs::write(path, data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

/// `(file, duration, reference text)` rows of a manifest in the eval folder.
pub fn manifest(name: &str) -> Vec<(String, f64, String)> {
    std::fs::read_to_string(eval_file(name))
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            (
                f.next().unwrap().to_string(),
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap().to_string(),
            )
        })
        .collect()
}

/// Corpus WER in percent, after Whisper's English normalizer (tests/reference/score_wer.py).
pub fn wer(pairs: &[(String, String)]) -> f64 {
    score(pairs).wer
}

/// One text buffer from the decoder.
#[derive(Debug, Clone)]
pub struct Cue {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

impl Cue {
    /// A text buffer pulled from an appsink.
    pub fn from_sample(sample: &gst::Sample) -> Cue {
        let buf = sample.buffer().unwrap();
        let map = buf.map_readable().unwrap();
        let pts = buf.pts().expect("text without PTS");
        Cue {
            start: pts.nseconds() as f64 / 1e9,
            end: (pts + buf.duration().expect("text without duration")).nseconds() as f64 / 1e9,
            text: String::from_utf8(map.to_vec()).unwrap(),
        }
    }
}

/// Calls `f` with each buffer `sink` receives.
pub fn on_buffers(sink: &gst_app::AppSink, mut f: impl FnMut(&gst::BufferRef) + Send + 'static) {
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                f(sample.buffer().ok_or(gst::FlowError::Error)?);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// Runs `filesrc ! decodebin ! npuwhisper props ! appsink` on a file and returns the text buffers.
pub fn transcribe(path: &Path, props: &[(&str, &str)]) -> Vec<Cue> {
    transcribe_pipeline(&bin_pipeline(path, props))
}

/// Parses `desc`, a pipeline that ends in `appsink name=sink`: the pipeline and that sink.
pub fn launch_with_sink(desc: &str) -> (gst::Pipeline, gst_app::AppSink) {
    let pipeline = gst::parse::launch(desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    (pipeline, sink)
}

/// `filesrc ! decodebin ! npuwhisper props ! appsink name=sink` for a file.
pub fn bin_pipeline(path: &Path, props: &[(&str, &str)]) -> String {
    let mut desc = format!(
        "filesrc location=\"{}\" ! decodebin ! npuwhisper name=asr",
        path.display()
    );
    for (k, v) in props {
        desc.push_str(&format!(" {k}=\"{v}\""));
    }
    desc + " ! appsink name=sink sync=false"
}

/// Runs a pipeline description ending in `appsink name=sink` to EOS and returns the text
/// buffers; panics on a pipeline error.
pub fn transcribe_pipeline(desc: &str) -> Vec<Cue> {
    run_pipeline(desc).0
}

pub fn joined_text(cues: &[Cue]) -> String {
    cues.iter().map(|c| c.text.trim()).collect::<Vec<_>>().join(" ")
}

/// Like [`transcribe`], also returning the element messages posted on the bus.
pub fn transcribe_with_messages(path: &Path, props: &[(&str, &str)]) -> (Vec<Cue>, Vec<gst::Structure>) {
    run_pipeline(&bin_pipeline(path, props))
}

/// Runs a pipeline description ending in `appsink name=sink` to EOS; returns the text buffers
/// and the element messages. Panics on a pipeline error.
pub fn run_pipeline(desc: &str) -> (Vec<Cue>, Vec<gst::Structure>) {
    init();
    let (pipeline, sink) = launch_with_sink(desc);
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).expect("pipeline plays");
    let mut cues = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        cues.push(Cue::from_sample(&sample));
    }
    let mut messages = Vec::new();
    while let Some(msg) = bus.pop() {
        match msg.view() {
            gst::MessageView::Error(e) => panic!("pipeline error in {desc}: {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Element(e) => messages.extend(e.structure().map(|s| s.to_owned())),
            _ => (),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (cues, messages)
}

/// Start and end (s) of each utterance of `long_lj001_1-20.wav`: the twenty LJ clips of
/// manifest.tsv, each followed by a 0.6 s pause.
pub fn long_file_utterances() -> Vec<(String, f64, f64)> {
    let mut t = 0.0;
    let mut out = Vec::new();
    for (file, duration, text) in manifest("manifest.tsv")
        .into_iter()
        .filter(|(f, _, _)| f.starts_with("LJ001-"))
    {
        let _ = file;
        out.push((text, t, t + duration));
        t += duration + 0.6;
    }
    out
}

/// A text buffer of a live run and how long after its audio it came out.
#[derive(Debug, Clone)]
pub struct LiveCue {
    pub cue: Cue,
    /// Clock running time when the appsink got it minus the running time of its PTS.
    pub delay: f64,
}

/// Caps of the samples [`run_live`] pushes.
pub const LIVE_CAPS: &str = "audio/x-raw,format=F32LE,rate=16000,channels=1,layout=interleaved";
/// Length of each buffer [`run_live`] pushes, as a capture device would deliver them.
pub const LIVE_CHUNK_MS: u64 = 100;

/// Pushes 16 kHz mono `samples` into `appsrc` paced by the pipeline clock, in
/// [`LIVE_CHUNK_MS`] buffers, each when its last sample is due (like a capture device), then EOS.
pub fn push_live(pipeline: &gst::Pipeline, appsrc: &gst_app::AppSrc, samples: &[f32]) {
    push_live_with_jump(pipeline, appsrc, samples, None)
}

/// [`push_live`], where from buffer `jump.0` on timestamps (and pacing) are `jump.1` later and
/// that buffer is DISCONT: a capture device that lost audio.
pub fn push_live_with_jump(
    pipeline: &gst::Pipeline,
    appsrc: &gst_app::AppSrc,
    samples: &[f32],
    jump: Option<(usize, gst::ClockTime)>,
) {
    // The clock is set when the pipeline goes to PLAYING, which, with a live source, it only
    // completes once data reaches the sinks: wait for the clock, not for the state.
    let clock = loop {
        match pipeline.clock() {
            Some(clock) => break clock,
            None => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    };
    let base = pipeline.base_time().unwrap();
    let chunk = (16 * LIVE_CHUNK_MS) as usize;
    for (i, piece) in samples.chunks(chunk).enumerate() {
        let mut pts = gst::ClockTime::from_mseconds(i as u64 * LIVE_CHUNK_MS);
        let jumped = jump.filter(|&(at, _)| i >= at);
        if let Some((_, by)) = jumped {
            pts += by;
        }
        let duration = gst::ClockTime::SECOND.mul_div_floor(piece.len() as u64, 16000).unwrap();
        let _ = clock.new_single_shot_id(base + pts + duration).wait();
        let mut buffer = gst::Buffer::from_mut_slice(piece.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>());
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(pts);
            b.set_duration(duration);
            if jumped.is_some_and(|(at, _)| at == i) {
                b.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        if appsrc.push_buffer(buffer).is_err() {
            return;
        }
    }
    let _ = appsrc.end_of_stream();
}

/// What a live run gave.
pub struct LiveRun {
    pub cues: Vec<LiveCue>,
    /// npuwhisper's LATENCY answer `(live, min)`.
    pub latency: (bool, gst::ClockTime),
    /// GAP events leaving npuwhisper: `(start, end)` in seconds.
    pub gaps: Vec<(f64, f64)>,
    /// Warnings posted on the bus.
    pub warnings: Vec<String>,
}

/// Runs `appsrc (live, paced by the clock) ! npuwhisper props ! appsink` on `samples`.
pub fn run_live(samples: &[f32], props: &[(&str, &str)]) -> LiveRun {
    run_live_with_jump(samples, props, None)
}

/// [`run_live`] with a jump in the timestamps (see [`push_live_with_jump`]).
pub fn run_live_with_jump(samples: &[f32], props: &[(&str, &str)], jump: Option<(usize, gst::ClockTime)>) -> LiveRun {
    init();
    let mut desc = format!(
        "appsrc name=src is-live=true format=time min-latency={} caps=\"{LIVE_CAPS}\" ! npuwhisper name=asr",
        LIVE_CHUNK_MS * 1_000_000
    );
    for (k, v) in props {
        desc.push_str(&format!(" {k}=\"{v}\""));
    }
    desc.push_str(" ! appsink name=sink sync=false");
    let (pipeline, sink) = launch_with_sink(&desc);
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let gaps: std::sync::Arc<std::sync::Mutex<Vec<(f64, f64)>>> = Default::default();
    {
        let gaps = gaps.clone();
        pipeline.by_name("asr").unwrap().static_pad("src").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                if let Some(gst::EventView::Gap(g)) = info.event().map(|e| e.view()) {
                    let (pts, duration) = g.get();
                    let end = pts + duration.unwrap_or(gst::ClockTime::ZERO);
                    gaps.lock().unwrap().push((pts.seconds_f64(), end.seconds_f64()));
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    let pusher = {
        let (pipeline, src, samples) = (pipeline.clone(), src.clone(), samples.to_vec());
        std::thread::spawn(move || push_live_with_jump(&pipeline, &src, &samples, jump))
    };
    pipeline.set_state(gst::State::Playing).expect("pipeline plays");
    let mut cues = Vec::new();
    let mut latency = None;
    while let Ok(sample) = sink.pull_sample() {
        let (clock, base) = (pipeline.clock().unwrap(), pipeline.base_time().unwrap());
        if latency.is_none() {
            // Asked while playing, of npuwhisper's src pad (the appsink does not sync, so
            // it would answer "not live" for the pipeline).
            let mut q = gst::query::Latency::new();
            let asr_src = pipeline.by_name("asr").unwrap().static_pad("src").unwrap();
            assert!(asr_src.query(&mut q), "npuwhisper answers LATENCY");
            let (live, min, _) = q.result();
            latency = Some((live, min));
        }
        let now = clock.time().saturating_sub(base);
        let running = sample
            .segment()
            .and_then(|s| {
                s.downcast_ref::<gst::ClockTime>()
                    .and_then(|s| s.to_running_time(sample.buffer().unwrap().pts().unwrap()))
            })
            .expect("text in a time segment");
        cues.push(LiveCue {
            cue: Cue::from_sample(&sample),
            delay: now.saturating_sub(running).seconds_f64(),
        });
    }
    pusher.join().unwrap();
    let bus = pipeline.bus().unwrap();
    let mut warnings = Vec::new();
    while let Some(msg) = bus.pop() {
        match msg.view() {
            gst::MessageView::Error(e) => panic!("pipeline error in {desc}: {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
            _ => (),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let gaps = gaps.lock().unwrap().clone();
    LiveRun {
        cues,
        latency: latency.expect("some text came out"),
        gaps,
        warnings,
    }
}

/// `(p50, p95, max)` of `values`.
pub fn percentiles(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.95), at(1.0))
}

/// Puts `element` in a pipeline, fails going to READY and returns the error text.
pub fn ready_error(element: &gst::Element) -> String {
    let pipeline = gst::Pipeline::new();
    pipeline.add(element).unwrap();
    assert!(element.set_state(gst::State::Ready).is_err(), "READY should fail");

    let bus = pipeline.bus().unwrap();
    let msg = bus
        .pop_filtered(&[gst::MessageType::Error])
        .expect("no error on the bus");
    let gst::MessageView::Error(err) = msg.view() else {
        unreachable!()
    };
    let text = format!("{} ({:?})", err.error(), err.debug());
    let _ = pipeline.set_state(gst::State::Null);
    text
}
