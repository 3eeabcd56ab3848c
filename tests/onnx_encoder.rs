//! The encoder graph on ONNX Runtime (CPU provider) against the CPU kernels, on mel windows of
//! real eval audio: float32 must match (cosine ≥ 0.999 per window); float16 and INT8 (QDQ) are
//! printed beside it with looser bounds.

mod common;

use common::*;
use npuwhisper_core::backend::onnxruntime::{EncoderDims, GraphPrecision, OrtEncoder, OrtOptions};
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
    let dir = model_dir(model);
    let cpu = Model::load_with(&dir, Precision::F32).unwrap();
    let dims = EncoderDims::from(&cpu.dims);
    let opts = OrtOptions {
        precision,
        ..OrtOptions::default()
    };
    let ort = OrtEncoder::from_model_dir(&dir, dims, &opts).unwrap();
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
