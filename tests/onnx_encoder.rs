//! The encoder graph on ONNX Runtime (CPU provider) against the CPU kernels, on mel windows of
//! real eval audio: float32 must match (cosine ≥ 0.999 per window); float16, INT8 (QDQ) weights,
//! and INT8 weights with uint16 activations at calibrated static scales (A16W8, the form NPU
//! providers run) are printed beside it with looser bounds.

mod common;

use common::*;
use npuwhisper_core::backend::onnxruntime::{
    calibration_mels, encoder_activation_ranges, EncoderDims, GraphPrecision, ModelBinSource, OrtEncoder, OrtOptions,
};
use npuwhisper_core::model::{Model, Precision};

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Five 30 s windows: a short clip, an LJ clip, and the first three windows of the long file.
fn windows(n_mels: usize) -> Vec<(String, Vec<f32>)> {
    let mel = npuwhisper_kernels::mel::LogMel::new(n_mels);
    let mut out = Vec::new();
    for f in ["jfk.wav", "LJ001-0001.wav"] {
        out.push((f.to_string(), mel.compute(&read_wav(&eval_file(f)), 480_000)));
    }
    let long = read_wav(&eval_file("long_lj001_1-20.wav"));
    for (i, chunk) in long.chunks(480_000).take(3).enumerate() {
        out.push((format!("long_lj001_1-20.wav window {i}"), mel.compute(chunk, 480_000)));
    }
    out
}

fn compare(model: &str, precision: GraphPrecision, bound: f64) {
    let opts = OrtOptions {
        precision,
        ..OrtOptions::default()
    };
    compare_on(model, &opts, bound, |dir, dims| {
        OrtEncoder::from_model_dir(dir, dims, &opts).unwrap()
    });
}

/// Calibration audio for the activation ranges: other speakers, and German beside English,
/// than the windows compared.
const CALIBRATION: &str = "multilingual_en_de.wav";

/// The worst window's cosine of the graph `make` builds against the CPU kernels' f32 encoder.
fn compare_on(
    model: &str,
    opts: &OrtOptions,
    bound: f64,
    make: impl Fn(&std::path::Path, EncoderDims) -> OrtEncoder,
) -> f64 {
    let precision = match opts.calibration {
        Some(_) => format!("{:?}, uint16 activations", opts.precision),
        None => format!("{:?}", opts.precision),
    };
    let dir = model_dir(model);
    let cpu = Model::load_with(&dir, Precision::F32).unwrap();
    let dims = EncoderDims::from(&cpu.dims);
    let ort = make(&dir, dims);
    let wins = windows(dims.n_mels);
    let mels: Vec<&[f32]> = wins.iter().map(|(_, m)| m.as_slice()).collect();
    let expected = cpu.encode_batch(&mels).unwrap();
    // Two at once as well, so the batch dimension is exercised.
    let mut got = ort.encode_batch(&mels[..2]).unwrap();
    got.extend(ort.encode_batch(&mels[2..]).unwrap());
    let mut worst = f64::MAX;
    for ((name, _), (e, g)) in wins.iter().zip(expected.iter().zip(&got)) {
        let c = cosine(e, g);
        let max_abs = e.iter().zip(g).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!(
            "{model} {precision:?} {name}: cosine {c:.6} (1 - cosine {:.1e}), largest difference {max_abs:.4}",
            1.0 - c
        );
        worst = worst.min(c);
    }
    println!("{model} {precision:?}: worst window cosine {worst:.6}");
    assert!(
        worst >= bound,
        "{model} {precision:?}: a window's cosine is {worst:.6}, below {bound}"
    );
    worst
}

/// INT8 weights and uint16 activations (A16W8): the figure is the point; the bound catches a
/// wrong scale or zero point. Ranges a thousand times too narrow then show that every
/// activation really passes through its quantizer: clipped, the states are far off.
fn compare_activation_quantized(model: &str, bound: f64) {
    let opts = OrtOptions {
        precision: GraphPrecision::Int8Qdq,
        calibration: Some(eval_file(CALIBRATION)),
        ..OrtOptions::default()
    };
    compare_on(model, &opts, bound, |dir, dims| {
        OrtEncoder::from_model_dir(dir, dims, &opts).unwrap()
    });
    let narrow = compare_on(model, &opts, -1.0, |dir, dims| {
        let source = ModelBinSource::open(dir).unwrap();
        let mels = calibration_mels(&eval_file(CALIBRATION), dims.n_mels).unwrap();
        let ranges = encoder_activation_ranges(&source, dims, &mels).unwrap();
        let narrow = ranges.iter().map(|&(lo, hi)| (lo * 1e-3, hi * 1e-3)).collect();
        OrtEncoder::with_ranges(&source, dims, &opts, Some(narrow)).unwrap()
    });
    assert!(
        narrow < 0.9,
        "{model}: ranges 1000x too narrow still give cosine {narrow:.4}"
    );
}

#[test]
fn tiny_en_int8_activation_quantized_graph_stays_close() {
    compare_activation_quantized("tiny.en", 0.998);
}

#[test]
fn base_int8_activation_quantized_graph_stays_close() {
    compare_activation_quantized("base", 0.998);
}

#[test]
fn calibration_audio_is_checked() {
    let n_mels = 80;
    let missing = calibration_mels(std::path::Path::new("/nonexistent/cal.wav"), n_mels).unwrap_err();
    assert!(missing.contains("/nonexistent/cal.wav"), "{missing}");
    let dir = std::env::temp_dir().join(format!("npuwhisper-cal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("8k.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    (0..16000).for_each(|i| w.write_sample((i % 100) as i16).unwrap());
    w.finalize().unwrap();
    let rate = calibration_mels(&wav, n_mels).unwrap_err();
    assert!(rate.contains("8000 Hz") && rate.contains("16000"), "{rate}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tiny_en_f32_graph_matches_cpu_kernels() {
    compare("tiny.en", GraphPrecision::F32, 0.999);
}

#[test]
fn base_f32_graph_matches_cpu_kernels() {
    compare("base", GraphPrecision::F32, 0.999);
}

/// float16 and INT8 (QDQ) graphs: their figures are the point; the bounds only catch a broken
/// graph (a wrong layout or scale gives cosines far below 0.9).
#[test]
fn tiny_en_f16_and_int8_graphs_stay_close() {
    compare("tiny.en", GraphPrecision::F16, 0.99);
    compare("tiny.en", GraphPrecision::Int8Qdq, 0.99);
}

#[test]
fn base_f16_and_int8_graphs_stay_close() {
    compare("base", GraphPrecision::F16, 0.99);
    compare("base", GraphPrecision::Int8Qdq, 0.99);
}
