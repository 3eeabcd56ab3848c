//! INT8 against f32: transcripts within a few words of each other, and encoder states close to
//! CTranslate2's float32 ones.

mod common;

use common::*;
use npuwhisper_core::model::{load_shared_with, resolve_model_path, Model, Precision};

/// `(word errors, reference words)` of the transcripts of `pairs` (reference, hypothesis), after
/// Whisper's English normalizer, as tests/reference/score_wer.py scores them.
fn word_errors(pairs: &[(String, String)]) -> (usize, usize) {
    let s = score(pairs);
    (s.errors, s.words)
}

fn manifest_errors(model: &str, manifest_name: &str, precision: &str) -> (usize, usize) {
    let pairs: Vec<(String, String)> = manifest(manifest_name)
        .into_iter()
        .map(|(file, _, reference)| {
            (
                reference,
                joined_text(&transcribe(
                    &eval_file(&file),
                    &[("model", model), ("precision", precision)],
                )),
            )
        })
        .collect();
    word_errors(&pairs)
}

/// Word errors INT8 may make beyond f32's, over both manifests together (about 770 words).
///
/// A bound in words because these sets are small: one word is 0.13 points of the pooled set
/// (0.26 of the short one alone). INT8 and f32 round differently, and which borderline words
/// that flips depends on the SIMD path too: base's short clips score 2.78 % in INT8 on AMX
/// (bf16 attention) and 3.29 % on AVX-512, two words apart, with the same f32 result. Four
/// words is above that noise and far below what a wrong quantization costs (tens of words).
/// How close INT8 comes to the peer's float32 is the benchmark's question (scripts/bench.sh).
const EXTRA_WORD_ERRORS: usize = 4;

fn int8_holds_f32_wer(model: &str) {
    let _f32 = load_shared_with(&resolve_model_path(model), Precision::F32).unwrap();
    let _int8 = load_shared_with(&resolve_model_path(model), Precision::Int8).unwrap();
    let (mut f32_errors, mut int8_errors, mut words) = (0, 0, 0);
    for manifest_name in ["manifest.tsv", "manifest_long.tsv"] {
        let (f, n) = manifest_errors(model, manifest_name, "f32");
        let (q, _) = manifest_errors(model, manifest_name, "int8");
        let pct = |e: usize| 100.0 * e as f64 / n as f64;
        println!(
            "{model} {manifest_name}: {n} words, f32 {f} errors ({:.2} %), int8 {q} ({:.2} %)",
            pct(f),
            pct(q)
        );
        (f32_errors, int8_errors, words) = (f32_errors + f, int8_errors + q, words + n);
    }
    println!("{model} both manifests, {words} words: f32 {f32_errors} errors, int8 {int8_errors}");
    assert!(
        int8_errors <= f32_errors + EXTRA_WORD_ERRORS,
        "{model}: int8 makes {int8_errors} word errors in {words} words, more than f32's {f32_errors} + {EXTRA_WORD_ERRORS}"
    );
}

#[test]
fn tiny_en_int8_holds_f32_wer() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    int8_holds_f32_wer("tiny.en");
}

#[test]
fn base_int8_holds_f32_wer() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    int8_holds_f32_wer("base");
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn int8_encoder_states_stay_close_to_f32() {
    if !common::require(&[common::Need::Models, common::Need::Shared]) {
        return;
    }
    let dir = model_dir("tiny.en");
    let f32_model = Model::load_with(&dir, Precision::F32).unwrap();
    let int8_model = Model::load_with(&dir, Precision::Int8).unwrap();
    let audio = read_wav(&eval_file("jfk.wav"));
    let mel = npuwhisper_kernels::mel::LogMel::new(f32_model.n_mels()).compute(&audio, 480_000);
    let a = &f32_model.encode_batch(&[&mel]).unwrap()[0];
    let b = &int8_model.encode_batch(&[&mel]).unwrap()[0];
    let c = cosine(a, b);
    println!("tiny.en encoder states, int8 vs f32: cosine {c:.5}");
    assert!(c > 0.99, "cosine {c}");
}
