//! Where the time goes: one recording through each stage of the plugin's work in turn, with core
//! alone (no GStreamer linked) and without the overlap the elements add, each stage on all the kernel threads:
//!
//!   cargo run --release -p npuwhisper-core --example stage_profile -- [--file ../shared/eval/public/long_lj001_1-20.wav]
//!       [--model tiny.en] [--batch 8] [--repeat 3] [--precision int8|f32] [--vad silero|silero-onnxruntime|energy]
//!       [--load-only] [--onnxruntime PROVIDER|none] [--onnxruntime-stages encoder|encoder-decoder]
//!       [--onnxruntime-calibration WAV]
//!
//! Stages: speech detection with windowing at pauses, and log-mel (npumel), the encoder
//! (npuwhisperenc), and decoding
//! (npuwhisperdec: cross-attention keys and values, greedy search with timestamps, fallback,
//! `--batch` windows at a time as the decoder does for files). Prints each stage's wall and CPU
//! seconds (the fastest of `--repeat` runs), the realtime factor the sum would give, and the
//! decoded tokens per second. Set `NPUWHISPER_ISA=avx512` (or `avx2`) to see a lower SIMD path.
//! `--onnxruntime` (default `cpu`) also runs the encoder stage on ONNX Runtime's PROVIDER (the
//! ONNX graph of the same weights, at the same `--precision`: int8 is int8 QDQ weights there),
//! printed as its own row beside the CPU kernels' encoder; the sum counts the CPU one. With
//! `--onnxruntime-stages encoder-decoder` the decoder stage runs on ONNX Runtime too (its
//! static-shape step graphs, from the CPU encoder's states), as a row of its own.
//! `--onnxruntime-calibration` quantizes the int8 encoder graph's activations too (A16W8),
//! calibrated on that 16 kHz WAV.
//! First it prints the model's load time and whether its weights were mapped from the weight
//! cache or made from `model.bin`; `--load-only` stops there.

#[path = "../tests/support/mod.rs"]
mod assets;
mod support;

use std::path::PathBuf;
use std::time::Instant;

use npuwhisper_core::audio::vad::VadSettings;
use npuwhisper_core::audio::{
    level_speech, Detector, SileroFrames, Windower, WindowerSettings, SAMPLE_RATE, WINDOW_SAMPLES,
};
use npuwhisper_core::backend::onnxruntime::{OrtOptions, OrtStages};
use npuwhisper_core::backend::BackendChoice;
use npuwhisper_core::decoding::{DecodeOptions, Transcriber};
use npuwhisper_core::model::{self, Precision};
use npuwhisper_kernels::mel::LogMel;

const USAGE: &str = "usage: stage_profile [--file WAV] [--model NAME|DIR] [--batch N] [--repeat N] [--precision int8|f32] [--vad silero|silero-onnxruntime|energy] [--load-only] [--onnxruntime PROVIDER|none] [--onnxruntime-stages encoder|encoder-decoder] [--onnxruntime-calibration WAV]";

/// Wall and CPU seconds of `f`, and its result.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, f64, T) {
    let (t, cpu) = (Instant::now(), support::cpu_seconds());
    let out = f();
    (t.elapsed().as_secs_f64(), support::cpu_seconds() - cpu, out)
}

fn main() {
    let args = support::Args::parse(
        USAGE,
        &[
            "--file",
            "--model",
            "--batch",
            "--repeat",
            "--precision",
            "--vad",
            "--load-only",
            "--onnxruntime",
            "--onnxruntime-stages",
            "--onnxruntime-calibration",
        ],
    );
    // Silero on the kernels, Silero through ONNX Runtime (its reference), or the energy gate.
    let silero = match args.value("--vad").unwrap_or("silero") {
        "silero" => Some(false),
        "silero-onnxruntime" => Some(true),
        "energy" => None,
        other => {
            eprintln!("--vad is silero, silero-onnxruntime or energy, not {other}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let file = args
        .value("--file")
        .map_or_else(|| assets::eval_file("long_lj001_1-20.wav"), PathBuf::from);
    let model_name = args.value("--model").unwrap_or(model::DEFAULT_MODEL).to_string();
    let batch: usize = args.parsed("--batch", 8).max(1);
    let repeat: usize = args.parsed("--repeat", 3).max(1);
    let precision = match args.value("--precision").unwrap_or("int8") {
        "int8" => Precision::Int8,
        "f32" => Precision::F32,
        other => {
            eprintln!("--precision is int8 or f32, not {other}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let dir = model::resolve_model_path(&model_name);
    let t0 = Instant::now();
    let model = model::load_shared_with(&dir, precision).unwrap_or_else(|e| {
        eprintln!("cannot load {}: {e}", dir.display());
        std::process::exit(1);
    });
    println!(
        "model {model_name} {precision:?} loaded in {:.1} ms: {:?}",
        1e3 * t0.elapsed().as_secs_f64(),
        model.weight_cache
    );
    if args.flag("--load-only") {
        return;
    }
    let stages = args.value("--onnxruntime-stages").unwrap_or("encoder");
    let stages = OrtStages::parse(stages).unwrap_or_else(|| {
        eprintln!("--onnxruntime-stages is encoder or encoder-decoder, not {stages}\n{USAGE}");
        std::process::exit(2);
    });
    // The same weights as ONNX graphs, behind the model interface the elements use.
    let ort = match args.value("--onnxruntime").unwrap_or("cpu") {
        "none" => None,
        provider => {
            let opts = OrtOptions {
                provider: provider.to_string(),
                precision: precision.into(),
                threads: npuwhisper_kernels::pool::threads(),
                stages,
                calibration: args.value("--onnxruntime-calibration").map(PathBuf::from),
            };
            let t = Instant::now();
            let ort_model = model::load_shared_on(&dir, precision, &BackendChoice::Onnxruntime(opts.clone()))
                .unwrap_or_else(|e| {
                    eprintln!("ONNX Runtime: {e}");
                    std::process::exit(1);
                });
            println!(
                "ONNX Runtime graphs ({provider}, {:?}, {stages:?}) built and loaded in {:.1} ms",
                opts.precision,
                1e3 * t.elapsed().as_secs_f64()
            );
            Some(ort_model)
        }
    };
    let ort_decoder = ort.as_ref().filter(|_| stages == OrtStages::EncoderDecoder);
    let mut ort_best: Option<(f64, f64)> = None;
    let mut ort_decoder_best: Option<(f64, f64, usize)> = None;
    let samples = assets::read_wav(&file);
    let audio_s = samples.len() as f64 / SAMPLE_RATE as f64;
    let threads = npuwhisper_kernels::pool::threads();

    // (stage, wall, cpu), the fastest run of each.
    let mut best: Vec<(&str, f64, f64)> = Vec::new();
    let keep = |best: &mut Vec<(&'static str, f64, f64)>, i: usize, name: &'static str, wall: f64, cpu: f64| {
        if i == best.len() {
            best.push((name, wall, cpu));
        } else if wall < best[i].1 {
            best[i] = (name, wall, cpu);
        }
    };
    let mut tokens = 0;
    let mut text = String::new();
    for _ in 0..repeat {
        let (wall, cpu, windows) = timed(|| {
            let detector = if let Some(ort) = silero {
                let vad = support::load_vad(ort);
                Detector::Silero(Box::new(SileroFrames::new(vad, VadSettings::default())))
            } else {
                Detector::default()
            };
            let mut windower = Windower::with_detector(WindowerSettings::default(), detector);
            let mut windows = windower.push(&samples).expect("speech detection");
            windows.extend(windower.flush().expect("speech detection"));
            windows
        });
        keep(&mut best, 0, "speech + windows", wall, cpu);
        let (wall, cpu, mels) = timed(|| {
            let mel = LogMel::new(model.n_mels());
            let speech: Vec<_> = windows.into_iter().filter(|w| w.has_speech).collect();
            speech
                .into_iter()
                .map(|mut w| {
                    level_speech(&mut w.samples, &w.speech);
                    (
                        mel.compute(&w.samples, WINDOW_SAMPLES),
                        w.samples.len() as f64 / SAMPLE_RATE as f64,
                    )
                })
                .collect::<Vec<_>>()
        });
        keep(&mut best, 1, "log-mel", wall, cpu);
        let (wall, cpu, states) = timed(|| {
            mels.iter()
                .map(|(mel, secs)| (model.encode_batch(&[mel]).expect("encoder").remove(0), *secs))
                .collect::<Vec<_>>()
        });
        keep(&mut best, 2, "encoder", wall, cpu);
        if let Some(ort) = &ort {
            let (wall, cpu, _) = timed(|| {
                for (mel, _) in &mels {
                    ort.encode_batch(&[mel.as_slice()]).expect("ONNX Runtime encoder");
                }
            });
            if ort_best.is_none_or(|(w, _)| wall < w) {
                ort_best = Some((wall, cpu));
            }
        }
        let decode = |model: &std::sync::Arc<model::Model>| {
            let options = DecodeOptions {
                language: Some("en".into()),
                ..Default::default()
            };
            let mut transcriber = Transcriber::new(model.clone(), options);
            let windows: Vec<(&[f32], f64)> = states.iter().map(|(s, secs)| (s.as_slice(), *secs)).collect();
            windows
                .chunks(batch)
                .flat_map(|chunk| transcriber.transcribe_batch(chunk))
                .collect::<Vec<_>>()
        };
        let (wall, cpu, results) = timed(|| decode(&model));
        keep(&mut best, 3, "decoder", wall, cpu);
        if let Some(ort) = ort_decoder {
            let (wall, cpu, results) = timed(|| decode(ort));
            let text: Vec<&str> = results
                .iter()
                .flat_map(|r| &r.segments)
                .map(|s| s.text.trim())
                .collect();
            let tokens = model.tokenizer.encode(&text.join(" ")).len();
            if ort_decoder_best.is_none_or(|(w, _, _)| wall < w) {
                ort_decoder_best = Some((wall, cpu, tokens));
            }
        }
        text = results
            .iter()
            .flat_map(|r| &r.segments)
            .map(|s| s.text.trim())
            .collect::<Vec<_>>()
            .join(" ");
        tokens = model.tokenizer.encode(&text).len();
        let lengths: Vec<String> = states.iter().map(|(_, secs)| format!("{secs:.1}")).collect();
        eprintln!(
            "{} windows ({} s): {:.2} s wall in all",
            states.len(),
            lengths.join(", "),
            best.iter().map(|b| b.1).sum::<f64>()
        );
    }

    println!("{} ({audio_s:.1} s), model {model_name} {precision:?}, {threads} threads, SIMD path {}, decoder batch {batch}, best of {repeat}", file.display(), npuwhisper_kernels::isa::describe());
    println!(
        "{:<20} {:>8} {:>8} {:>7} {:>8}",
        "stage", "wall s", "CPU s", "cores", "share"
    );
    let total: f64 = best.iter().map(|b| b.1).sum();
    for &(name, wall, cpu) in &best {
        println!(
            "{name:<20} {wall:8.3} {cpu:8.3} {:7.2} {:7.1}%",
            cpu / wall,
            100.0 * wall / total
        );
    }
    println!("{:<20} {total:8.3} {:>8} {:>7} {:>8}", "sum", "", "", "");
    if let Some((wall, cpu)) = ort_best {
        println!(
            "{:<20} {wall:8.3} {cpu:8.3} {:7.2}  (encoder on ONNX Runtime {}: {:.2}x the CPU kernels' time)",
            "encoder (ORT)",
            cpu / wall,
            args.value("--onnxruntime").unwrap_or("cpu"),
            wall / best[2].1
        );
    }
    if let Some((wall, cpu, ort_tokens)) = ort_decoder_best {
        println!(
            "{:<20} {wall:8.3} {cpu:8.3} {:7.2}  (decoder on ONNX Runtime {}: {:.2}x the CPU kernels' time; {:.0} text tokens/s, {ort_tokens} tokens against {tokens})",
            "decoder (ORT)",
            cpu / wall,
            args.value("--onnxruntime").unwrap_or("cpu"),
            wall / best[3].1,
            ort_tokens as f64 / wall
        );
    }
    println!(
        "stages in turn: {:.1}x realtime; decoder {:.0} text tokens/s",
        audio_s / total,
        tokens as f64 / best[3].1
    );
    println!("text: {}…", text.chars().take(120).collect::<String>());
}
