//! Memory over a long stream: loops an eval file, decoded once, into
//! `appsrc ! npuwhisper ! appsink` with continuous timestamps, for hours of audio, and prints the
//! resident set at every interval of audio transcribed (from the bin's progress messages), the
//! peak, and the realtime factor, to show that memory does not grow with the duration.
//!
//!   cargo run --release --example long_memory -- --hours 2
//!   cargo run --release --example long_memory -- --minutes 20 [--every 5] [--model tiny.en]
//!       [--input ../shared/eval/public/long_lj001_1-20.wav] [--text-out FILE]

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use gst::prelude::*;

const USAGE: &str =
    "usage: long_memory [--hours H | --minutes M] [--every MINUTES] [--model NAME|DIR] [--input FILE] [--text-out FILE]
  --hours/--minutes: audio to feed (default 2 hours); --every: audio minutes between two
  RSS lines (default 10, or a tenth of a shorter run); --text-out: the transcript, a line
  per text buffer (start s, text)";

const RATE: u64 = 16000;
/// Samples per buffer pushed: 100 ms.
const CHUNK: usize = 1600;

/// The whole of `path` as 16 kHz mono S16LE.
fn decode(path: &std::path::Path) -> Vec<u8> {
    let desc = format!(
        "filesrc name=src ! decodebin ! audioconvert ! audioresample ! \
         audio/x-raw,format=S16LE,rate={RATE},channels=1,layout=interleaved ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    pipeline.by_name("src").unwrap().set_property("location", path);
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline
        .set_state(gst::State::Playing)
        .expect("the decoding pipeline plays");
    let mut pcm = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
            pcm.extend_from_slice(&map);
        }
    }
    let error = pipeline.bus().unwrap().pop_filtered(&[gst::MessageType::Error]);
    pipeline.set_state(gst::State::Null).unwrap();
    if error.is_some() || pcm.is_empty() {
        eprintln!("{}: could not decode it: {error:?}", path.display());
        std::process::exit(1);
    }
    pcm
}

fn sample_time(n: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(n * 1_000_000_000 / RATE)
}

fn main() {
    let args = support::Args::parse(
        USAGE,
        &["--hours", "--minutes", "--every", "--model", "--input", "--text-out"],
    );
    let minutes: f64 = match (args.value("--hours"), args.value("--minutes")) {
        (Some(_), _) => args.parsed("--hours", 2.0) * 60.0,
        (None, Some(_)) => args.parsed("--minutes", 120.0),
        (None, None) => 120.0,
    };
    let every: f64 = args.parsed("--every", (minutes / 10.0).min(10.0));
    let model = args.value("--model").unwrap_or("tiny.en").to_string();
    let input = args.value("--input").map(PathBuf::from).unwrap_or_else(|| {
        let shared = std::env::var_os("NPUWHISPER_SHARED_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
        shared.join("eval/public/long_lj001_1-20.wav")
    });
    if !(minutes > 0.0 && every > 0.0) {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }

    support::init();
    let pcm = Arc::new(decode(&input));
    let loop_samples = (pcm.len() / 2) as u64;
    let total_samples = (minutes * 60.0 * RATE as f64) as u64;
    let total = sample_time(total_samples);
    println!(
        "{}: {:.1} s looped {:.1} times into {total} of audio, model {model}",
        input.display(),
        loop_samples as f64 / RATE as f64,
        total_samples as f64 / loop_samples as f64
    );
    let rss_start = support::rss_mb();

    let pipeline = gst::Pipeline::new();
    let caps = gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("rate", RATE as i32)
        .field("channels", 1i32)
        .field("layout", "interleaved")
        .build();
    // A duration, so the bin posts its progress; a second of audio queued at most.
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .block(true)
        .max_bytes(2 * RATE)
        .build();
    src.set_duration(total);
    let asr = gst::ElementFactory::make("npuwhisper")
        .name("asr")
        .property("model", &model)
        .build()
        .unwrap();
    // Words transcribed, and the transcript if asked for.
    let words = Arc::new(AtomicU64::new(0));
    let counted = words.clone();
    let mut text_out = args.value("--text-out").map(|path| {
        std::io::BufWriter::new(std::fs::File::create(path).unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }))
    });
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let text = String::from_utf8_lossy(&map);
                    counted.fetch_add(text.split_whitespace().count() as u64, Ordering::Relaxed);
                    if let Some(out) = text_out.as_mut() {
                        let start = buffer.pts().map_or(-1.0, |t| t.seconds_f64());
                        let _ = writeln!(out, "{start:.2}\t{}", text.trim());
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        )
        .build();
    pipeline.add_many([src.upcast_ref(), &asr, sink.upcast_ref()]).unwrap();
    gst::Element::link_many([src.upcast_ref(), &asr, sink.upcast_ref()]).unwrap();

    let start = Instant::now();
    pipeline.set_state(gst::State::Playing).unwrap_or_else(|_| {
        eprintln!("the pipeline does not play (is model {model} there? scripts/fetch-models.sh)");
        std::process::exit(1);
    });

    let feeder = {
        let src = src.clone();
        std::thread::spawn(move || {
            let mut pushed = 0u64;
            while pushed < total_samples {
                let at = (pushed % loop_samples) as usize;
                let n = (CHUNK as u64).min(loop_samples - at as u64).min(total_samples - pushed) as usize;
                let mut buffer = gst::Buffer::from_mut_slice(pcm[2 * at..2 * (at + n)].to_vec());
                {
                    let b = buffer.get_mut().unwrap();
                    b.set_pts(sample_time(pushed));
                    b.set_duration(sample_time(pushed + n as u64) - sample_time(pushed));
                }
                if src.push_buffer(buffer).is_err() {
                    return; // shutting down
                }
                pushed += n as u64;
            }
            let _ = src.end_of_stream();
        })
    };

    println!(
        "{:>10} {:>9} {:>8} {:>9} {:>11} {:>7}",
        "audio min", "wall s", "RSS MB", "peak MB", "x realtime", "words"
    );
    let line = |audio: gst::ClockTime| {
        let wall = start.elapsed().as_secs_f64();
        println!(
            "{:>10.1} {:>9.1} {:>8.1} {:>9.1} {:>11.2} {:>7}",
            audio.seconds_f64() / 60.0,
            wall,
            support::rss_mb(),
            support::peak_rss_mb(),
            audio.seconds_f64() / wall,
            words.load(Ordering::Relaxed)
        );
    };
    let mut rss = Vec::new();
    let mut next = every;
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                eprintln!("pipeline error: {} ({:?})", e.error(), e.debug());
                std::process::exit(1);
            }
            gst::MessageView::Element(e) => {
                let Some(s) = e.structure().filter(|s| s.name() == "npuwhisper-progress") else {
                    continue;
                };
                let Ok(position) = s.get::<gst::ClockTime>("position") else {
                    continue;
                };
                if position.seconds_f64() / 60.0 >= next - 1e-9 {
                    line(position);
                    rss.push(support::rss_mb());
                    while next <= position.seconds_f64() / 60.0 + 1e-9 {
                        next += every;
                    }
                }
            }
            _ => (),
        }
    }
    let wall = start.elapsed().as_secs_f64();
    pipeline.set_state(gst::State::Null).unwrap();
    let _ = feeder.join();

    let (first, last) = (rss.first().copied().unwrap_or(0.0), rss.last().copied().unwrap_or(0.0));
    let max = rss.iter().copied().fold(0.0, f64::max);
    println!(
        "{:.1} min of audio in {wall:.1} s: {:.2}x realtime, {} words",
        minutes,
        total.seconds_f64() / wall,
        words.load(Ordering::Relaxed)
    );
    println!(
        "RSS {rss_start:.1} MB before the pipeline; over the run first {first:.1} MB, last {last:.1} MB \
         (last - first {:+.1} MB), highest sampled {max:.1} MB; peak (ru_maxrss) {:.1} MB",
        last - first,
        support::peak_rss_mb()
    );
}
