//! End-to-end benchmark of the `npuwhisper` bin on an eval manifest, measured like
//! `../shared/bench/peer_faster_whisper.py` measures faster-whisper: model loaded once, one
//! warm-up on the first 5 s of the first file, then each file through
//! `filesrc ! decodebin ! npuwhisper ! appsink`, timed from PLAYING to EOS. Prints the audio
//! and wall seconds, realtime factor (audio / wall), WER (tests/reference/score_wer.py, the
//! peer's normaliser and jiwer), peak RSS of this process, the encoder's and decoder's busy
//! time, and a last line of JSON. `scripts/bench.sh` runs it beside the peer.
//!
//!   cargo run --release --example bench -- --manifest ../shared/eval/public/manifest.tsv
//!       [--model tiny.en] [--language en] [--set PROP=VALUE,...] [--python .venv/bin/python] [--hyp-out FILE] [--verbose]

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use gst::prelude::*;

const USAGE: &str = "usage: bench --manifest FILE.tsv [--model NAME|DIR] [--language en] [--set PROP=VALUE,...] [--python PYTHON] [--hyp-out FILE] [--verbose]
  --language: the npuwhisper property; en by default, as the peer decodes
  --set: more npuwhisper properties, e.g. beam-size=5,temperature-fallback=false
  --python: the Python with jiwer and whisper_normalizer that scores WER
            (default $NPUWHISPER_REFERENCE_PYTHON, else .venv/bin/python of the checkout)";

/// `(path, duration s, reference)` rows of a manifest, paths relative to its folder.
fn read_manifest(path: &Path) -> Vec<(PathBuf, f64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("{}: {e}", path.display());
        std::process::exit(1);
    });
    let base = path.parent().unwrap_or(Path::new("."));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let (name, dur, text) = (f.next().unwrap(), f.next().unwrap_or("0"), f.next().unwrap_or(""));
            (base.join(name), dur.parse().unwrap_or(0.0), text.to_string())
        })
        .collect()
}

/// Transcribes `path` (only up to `stop`, if given); returns the text and the wall time from
/// PLAYING to EOS.
fn transcribe(
    path: &Path,
    model: &str,
    language: &str,
    props: &[(String, String)],
    stop: Option<gst::ClockTime>,
) -> (String, f64) {
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path)
        .build()
        .unwrap();
    let decode = gst::ElementFactory::make("decodebin").build().unwrap();
    let asr = gst::ElementFactory::make("npuwhisper")
        .property("model", model)
        .property("language", language)
        .build()
        .unwrap();
    for (name, value) in props {
        asr.set_property_from_str(name, value);
    }
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline.add_many([&src, &decode, &asr, sink.upcast_ref()]).unwrap();
    src.link(&decode).unwrap();
    asr.link(&sink).unwrap();
    let asr_sink = asr.static_pad("sink").unwrap();
    decode.connect_pad_added(move |_, pad| {
        if !asr_sink.is_linked() {
            let _ = pad.link(&asr_sink);
        }
    });

    let bus = pipeline.bus().unwrap();
    let fail = |what: &str| -> ! {
        let err = bus.pop_filtered(&[gst::MessageType::Error]);
        eprintln!("{}: {what}: {err:?}", path.display());
        std::process::exit(1);
    };
    if let Some(stop) = stop {
        // Preroll, then play only [0, stop).
        pipeline
            .set_state(gst::State::Paused)
            .unwrap_or_else(|_| fail("no preroll"));
        if pipeline.state(gst::ClockTime::from_seconds(300)).0.is_err() {
            fail("no preroll");
        }
        pipeline
            .seek(
                1.0,
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::SeekType::Set,
                gst::ClockTime::ZERO,
                gst::SeekType::Set,
                stop,
            )
            .unwrap_or_else(|_| fail("seek failed"));
    }
    let start = Instant::now();
    pipeline
        .set_state(gst::State::Playing)
        .unwrap_or_else(|_| fail("does not play"));
    let mut texts = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
            texts.push(String::from_utf8_lossy(&map).trim().to_string());
        }
    }
    let wall = start.elapsed().as_secs_f64();
    if bus.pop_filtered(&[gst::MessageType::Error]).is_some() || !sink.is_eos() {
        fail("pipeline error");
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (texts.join(" "), wall)
}

/// Corpus WER in percent after Whisper's English normaliser, by tests/reference/score_wer.py.
fn score_wer(python: &Path, pairs: &[(String, String)]) -> Result<f64, String> {
    let json: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(r, h)| serde_json::json!({"ref": r, "hyp": h}))
        .collect();
    let file = std::env::temp_dir().join(format!("npuwhisper-bench-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_string(&json).unwrap()).map_err(|e| e.to_string())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/score_wer.py");
    let out = std::process::Command::new(python).arg(script).arg(&file).output();
    let _ = std::fs::remove_file(&file);
    let out = out.map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .trim()
        .strip_prefix("WER ")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("score_wer.py said {stdout:?}"))
}

fn main() {
    let args = support::Args::parse(
        USAGE,
        &[
            "--manifest",
            "--model",
            "--language",
            "--set",
            "--python",
            "--hyp-out",
            "--verbose",
        ],
    );
    let Some(manifest) = args.value("--manifest").map(PathBuf::from) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let model_name = args.value("--model").unwrap_or("tiny.en").to_string();
    let language = args.value("--language").unwrap_or("en").to_string();
    let python = args
        .value("--python")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("NPUWHISPER_REFERENCE_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let verbose = args.flag("--verbose");
    let props: Vec<(String, String)> = args
        .value("--set")
        .unwrap_or("")
        .split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                eprintln!("--set takes PROPERTY=VALUE[,PROPERTY=VALUE...], not {kv:?}");
                std::process::exit(2);
            }
        })
        .collect();

    support::init();
    let stages = support::StageTimes::install();
    let rows = read_manifest(&manifest);
    if rows.is_empty() {
        eprintln!("{}: no files", manifest.display());
        std::process::exit(1);
    }

    let t = Instant::now();
    let _model = support::load_model(&model_name);
    let _on_backend = support::keep_backend_model(&model_name, &props);
    let load_s = t.elapsed().as_secs_f64();
    transcribe(
        &rows[0].0,
        &model_name,
        &language,
        &props,
        Some(gst::ClockTime::from_seconds(5)),
    );
    stages.take();

    let (mut audio_s, mut wall_s) = (0.0, 0.0);
    let cpu_before = support::cpu_seconds();
    let mut pairs = Vec::new();
    let mut hyps = String::new();
    for (path, duration, reference) in &rows {
        let (text, wall) = transcribe(path, &model_name, &language, &props, None);
        if verbose {
            eprintln!(
                "{:>8.2} s audio {wall:7.2} s wall {:6.1}x  {}",
                duration,
                duration / wall,
                path.display()
            );
        }
        audio_s += duration;
        wall_s += wall;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        hyps.push_str(&format!("{name}\tnpuwhisper\t{text}\n"));
        pairs.push((reference.clone(), text));
    }
    let cpu_s = support::cpu_seconds() - cpu_before;
    let (enc_s, dec_s, windows) = stages.take();
    let peak = support::peak_rss_mb();
    if let Some(out) = args.value("--hyp-out") {
        std::fs::write(out, hyps).unwrap_or_else(|e| eprintln!("{out}: {e}"));
    }
    let wer = score_wer(&python, &pairs);
    let wer_text = match &wer {
        Ok(w) => format!("{w:5.2}%"),
        Err(e) => {
            eprintln!("WER not scored: {e}");
            "  n/a".to_string()
        }
    };

    println!(
        "npuwhisper {model_name:8} audio {audio_s:7.1}s wall {wall_s:7.2}s  {:6.1}x realtime  WER {wer_text}  peak RSS {peak:.0} MB",
        audio_s / wall_s
    );
    println!(
        "  model load {load_s:.2} s; busy in {windows} windows: encoder {enc_s:.2} s ({:.0} % of wall), decoder {dec_s:.2} s ({:.0} %); CPU {cpu_s:.2} s = {:.2} cores busy",
        100.0 * enc_s / wall_s,
        100.0 * dec_s / wall_s,
        cpu_s / wall_s
    );
    let round = |v: f64, d: i32| (v * 10f64.powi(d)).round() / 10f64.powi(d);
    println!(
        "{}",
        serde_json::json!({
            "engine": "npuwhisper",
            "model": model_name,
            "manifest": manifest.file_name().map(|n| n.to_string_lossy().into_owned()),
            "audio_s": round(audio_s, 2),
            "wall_s": round(wall_s, 3),
            "rtf_x": round(audio_s / wall_s, 2),
            "wer": wer.ok().map(|w| round(w / 100.0, 4)),
            "peak_rss_mb": peak.round(),
            "model_load_s": round(load_s, 3),
            "encoder_s": round(enc_s, 3),
            "decoder_s": round(dec_s, 3),
            "cpu_s": round(cpu_s, 3),
            "windows": windows,
        })
    );
}
