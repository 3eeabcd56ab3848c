//! Numerics against reference computations: log-mel against faster-whisper's FeatureExtractor,
//! encoder states against CTranslate2's float32 encoder, on real speech.

mod common;

use common::*;
use npuwhisper_core::audio::WINDOW_SAMPLES;
use npuwhisper_core::model::{Model, Precision};
use npuwhisper_kernels::mel::LogMel;

#[test]
fn log_mel_matches_whisper_reference_on_jfk() {
    if !common::require(&[common::Need::Shared, common::Need::Venv]) {
        return;
    }
    let wav = eval_file("jfk.wav");
    let dir = tempfile_dir();
    let reference = dir.join("mel_ref.f32");
    run_reference("mel_ref.py", &[&wav, &reference]);
    let expected = read_f32(&reference);
    let mel = LogMel::new(80).compute(&read_wav(&wav), WINDOW_SAMPLES);
    assert_eq!(mel.len(), expected.len());
    let max_diff = mel
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("log-mel max |diff| = {max_diff:e}");
    assert!(max_diff <= 2e-3, "log-mel differs from the reference by {max_diff}");
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn check_encoder(model_name: &str, wavs: &[&str]) {
    let model_path = model_dir(model_name);
    let model = Model::load(&model_path).unwrap();
    let front = LogMel::new(model.n_mels());
    let dir = tempfile_dir();
    let mels: Vec<Vec<f32>> = wavs
        .iter()
        .map(|w| front.compute(&read_wav(&eval_file(w)), WINDOW_SAMPLES))
        .collect();
    // One batch, so batching is what is checked.
    let refs: Vec<&[f32]> = mels.iter().map(Vec::as_slice).collect();
    let states = model.encode_batch(&refs).expect("encoder");
    for ((wav, mel), ours) in wavs.iter().zip(&mels).zip(&states) {
        let mel_path = dir.join(format!("{wav}.mel.f32"));
        let out_path = dir.join(format!("{wav}.states.f32"));
        write_f32(&mel_path, mel);
        run_reference("encoder_ref.py", &[&model_path, &mel_path, &out_path]);
        let expected = read_f32(&out_path);
        assert_eq!(ours.len(), expected.len());
        let cos = cosine(ours, &expected);
        println!("{model_name} {wav}: cosine {cos:.6}");
        assert!(cos >= 0.999, "{model_name} {wav}: cosine similarity {cos} < 0.999");
    }
}

#[test]
fn encoder_matches_ctranslate2_float32_tiny_en() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    check_encoder("tiny.en", &["jfk.wav", "LJ001-0001.wav", "stereo_right.wav"]);
}

#[test]
fn encoder_matches_ctranslate2_float32_base() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    check_encoder("base", &["jfk.wav"]);
}

/// The encoder over a shorter context (whisper.cpp's `audio_ctx`: the first `2 · frames` mel
/// frames, the first `frames` positions) against CTranslate2's float32 encoder given the same
/// cut mel, to cosine `bound`. The full-context states' first `frames` rows are not the answer
/// (attention sees the padding there): their cosine is printed, and must stay below ours in f32.
fn check_encoder_context(model_name: &str, precision: Precision, wav: &str, contexts: &[usize], bound: f64) {
    let model_path = model_dir(model_name);
    let model = Model::load_with(&model_path, precision).unwrap();
    let mel = LogMel::new(model.n_mels()).compute(&read_wav(&eval_file(wav)), WINDOW_SAMPLES);
    let d = model.d_model();
    let full = model.encode_batch(&[&mel]).expect("encoder").remove(0);
    let dir = tempfile_dir();
    let mel_path = dir.join("mel.f32");
    write_f32(&mel_path, &mel);
    for &frames in contexts {
        let ours = model.encode_batch_frames(&[&mel], frames).expect("encoder").remove(0);
        assert_eq!(ours.len(), frames * d, "{frames} frames × {d}");
        let out_path = dir.join(format!("states_{frames}.f32"));
        let n = frames.to_string();
        run_reference(
            "encoder_ref.py",
            &[&model_path, &mel_path, &out_path, std::path::Path::new(&n)],
        );
        let expected = read_f32(&out_path);
        assert_eq!(expected.len(), frames * d);
        let cos = cosine(&ours, &expected);
        let prefix = cosine(&full[..frames * d], &expected);
        println!(
            "{model_name} {precision:?} {wav} {frames} frames: cosine {cos:.6} (full context's first rows {prefix:.6})"
        );
        assert!(
            cos >= bound,
            "{model_name} {wav} {frames} frames: cosine {cos} < {bound}"
        );
        if precision == Precision::F32 {
            assert!(
                prefix < cos,
                "{frames} frames: the full context's rows match the reference as well"
            );
        }
    }
}

#[test]
fn encoder_shorter_context_matches_ctranslate2_float32_tiny_en() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    // jfk is 11 s = 550 frames: its audio plus a margin, exactly its audio, a cut inside the
    // speech at an odd length, and the shortest context a 64-frame step gives.
    check_encoder_context("tiny.en", Precision::F32, "jfk.wav", &[640, 550, 333, 64], 0.999);
    // INT8 (bf16 attention on AMX) to the bound tests/precision.rs holds it to at full context.
    check_encoder_context("tiny.en", Precision::Int8, "jfk.wav", &[640, 333], 0.99);
}

#[test]
fn encoder_shorter_context_matches_ctranslate2_float32_base() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    check_encoder_context("base", Precision::F32, "jfk.wav", &[640], 0.999);
}

#[test]
fn encoder_context_out_of_range_is_an_error() {
    if !common::require(&[common::Need::Models]) {
        return;
    }
    let model = Model::load(&model_dir("tiny.en")).unwrap();
    let mel = vec![-0.5f32; model.n_mels() * npuwhisper_core::model::MEL_FRAMES];
    for frames in [0, 1501] {
        let err = model.encode_batch_frames(&[&mel], frames).unwrap_err();
        assert!(err.to_string().contains("encoder context"), "{frames}: {err}");
    }
    let d = model.d_model();
    for rows in [0, 1501] {
        assert!(model.cross_cache(&vec![0.0; rows * d]).is_err(), "{rows} rows accepted");
    }
    assert!(
        model.cross_cache(&vec![0.0; 100 * d + 1]).is_err(),
        "a partial row accepted"
    );
    // A shorter window's states make a cache that decodes.
    let states = model.encode_batch_frames(&[&mel], 100).unwrap().remove(0);
    let cross = model.cross_cache(&states).unwrap();
    let mut seq = model.sequence(&cross).unwrap();
    let logits = model.step(&mut seq, &[model.tokenizer.sot], &[0]).unwrap();
    assert!(logits.iter().all(|l| l.is_finite()));
}
