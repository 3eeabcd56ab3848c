//! Numerics against reference computations: log-mel against faster-whisper's FeatureExtractor,
//! encoder states against CTranslate2's float32 encoder, on real speech.

mod common;

use common::*;
use npuwhisper_core::audio::WINDOW_SAMPLES;
use npuwhisper_core::model::Model;
use npuwhisper_kernels::mel::LogMel;

#[test]
fn log_mel_matches_whisper_reference_on_jfk() {
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
    check_encoder("tiny.en", &["jfk.wav", "LJ001-0001.wav", "stereo_right.wav"]);
}

#[test]
fn encoder_matches_ctranslate2_float32_base() {
    check_encoder("base", &["jfk.wav"]);
}
