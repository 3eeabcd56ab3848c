//! INT8 against f32: the same transcripts within 0.3 WER points, and encoder states close to
//! CTranslate2's float32 ones.

mod common;

use common::*;
use gstnpuwhisper::model::{load_shared_with, resolve_model_path, Model, Precision};

fn manifest_wer(model: &str, manifest_name: &str, precision: &str) -> f64 {
    let pairs: Vec<(String, String)> = manifest(manifest_name)
        .into_iter()
        .map(|(file, _, reference)| (reference, joined_text(&transcribe(&eval_file(&file), &[("model", model), ("precision", precision)]))))
        .collect();
    wer(&pairs)
}

fn int8_holds_f32_wer(model: &str) {
    let _f32 = load_shared_with(&resolve_model_path(model), Precision::F32).unwrap();
    let _int8 = load_shared_with(&resolve_model_path(model), Precision::Int8).unwrap();
    for manifest_name in ["manifest.tsv", "manifest_long.tsv"] {
        let f = manifest_wer(model, manifest_name, "f32");
        let q = manifest_wer(model, manifest_name, "int8");
        println!("{model} {manifest_name}: f32 WER {f:.2} %, int8 WER {q:.2} %");
        assert!(q <= f + 0.3, "{model} {manifest_name}: int8 WER {q:.2} % > f32 {f:.2} % + 0.3");
    }
}

#[test]
fn tiny_en_int8_holds_f32_wer() {
    int8_holds_f32_wer("tiny.en");
}

#[test]
fn base_int8_holds_f32_wer() {
    int8_holds_f32_wer("base");
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn int8_encoder_states_stay_close_to_f32() {
    let dir = model_dir("tiny.en");
    let f32_model = Model::load_with(&dir, Precision::F32).unwrap();
    let int8_model = Model::load_with(&dir, Precision::Int8).unwrap();
    let audio = read_wav(&eval_file("jfk.wav"));
    let mel = npuwhisper_kernels::mel::LogMel::new(f32_model.n_mels()).compute(&audio, 480_000);
    let a = &f32_model.encode_batch(&[&mel])[0];
    let b = &int8_model.encode_batch(&[&mel])[0];
    let c = cosine(a, b);
    println!("tiny.en encoder states, int8 vs f32: cosine {c:.5}");
    assert!(c > 0.99, "cosine {c}");
}
