//! Silero VAD on the kernels crate against the same ONNX file run through ONNX Runtime: chunk
//! probabilities and speech decisions on real speech from ../shared/eval/public at its own
//! level, turned down 40 dB, under white noise (both made with sox), and on noise alone.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use npuwhisper_core::audio::vad::{self, ChunkGate, SileroVad, Speech, VadSettings};

/// Largest difference allowed between the two probabilities of a chunk. Both compute in f32
/// with different summation orders and activation approximations (relative error of order
/// 1e-7 per layer); through ten layers and an LSTM state carried over thousands of chunks the
/// measured difference stays near 1e-6 (printed). 1e-5 is far below anything that moves a
/// decision (thresholds 0.35, 0.5, 0.8), yet a wrong weight, tap or gate shows as 1e-2 or more.
const BOUND: f32 = 1e-5;

fn probs(vad: &mut SileroVad, samples: &[f32], push: usize) -> Vec<f32> {
    vad.reset();
    let mut out = Vec::new();
    for piece in samples.chunks(push) {
        out.extend(vad.push(piece).unwrap());
    }
    out.extend(vad.finish().unwrap());
    out
}

fn decisions(probs: &[f32]) -> Vec<Speech> {
    let mut gate = ChunkGate::new(VadSettings::default());
    probs.iter().map(|&p| gate.decide(p)).collect()
}

/// `sox` with seeded noise and dither, so the files are the same every run.
fn sox(args: &[&str]) {
    let status = std::process::Command::new("sox")
        .args(["-R", "-V1"])
        .args(args)
        .status()
        .expect("sox runs (scripts/install-deps.sh installs it)");
    assert!(status.success(), "sox {args:?} failed");
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn kernels_port_matches_onnxruntime() {
    if !support::require(&[support::Need::Models, support::Need::Shared]) {
        return;
    }
    let long = support::eval_file("long_lj001_1-20.wav");
    let dir = support::tempfile_dir();
    let quiet = dir.join("quiet.wav");
    sox(&[path(&long), "-b", "16", path(&quiet), "gain", "-40"]);
    let noise = dir.join("noise.wav");
    sox(&[
        "-n",
        "-r",
        "16000",
        "-c",
        "1",
        "-b",
        "16",
        path(&noise),
        "synth",
        "144",
        "whitenoise",
        "vol",
        "0.05",
    ]);
    let noisy = dir.join("noisy.wav");
    sox(&["-m", path(&long), path(&noise), "-b", "16", path(&noisy)]);
    let files: Vec<PathBuf> = vec![
        long,
        quiet,
        noisy,
        support::eval_file("jfk.wav"),
        support::eval_file("noise_30s.wav"),
    ];

    let model = vad::default_model_path();
    let mut ort = SileroVad::load_onnxruntime(&model).unwrap();
    let mut port = SileroVad::load(&model).unwrap();
    let mut speech_chunks = 0;
    for file in &files {
        let samples = support::read_wav(file);
        let want = probs(&mut ort, &samples, samples.len());
        let got = probs(&mut port, &samples, samples.len());
        assert_eq!(got.len(), want.len());
        let (worst, at) = got
            .iter()
            .zip(&want)
            .enumerate()
            .map(|(i, (a, b))| ((a - b).abs(), i))
            .fold((0f32, 0), |m, x| if x.0 > m.0 { x } else { m });
        let (d_got, d_want) = (decisions(&got), decisions(&want));
        let speech = d_want.iter().filter(|d| d.speech).count();
        speech_chunks += speech;
        println!(
            "{}: {} chunks, {speech} speech; largest difference {worst:.2e} (chunk {at}: {} vs {})",
            file.file_name().unwrap().to_string_lossy(),
            got.len(),
            got[at],
            want[at]
        );
        assert!(
            worst <= BOUND,
            "{}: chunk {at}: {} against {}",
            file.display(),
            got[at],
            want[at]
        );
        assert_eq!(d_got, d_want, "{}: speech decisions differ", file.display());
        // Pushed in 10 ms buffers and in 4096-sample ones, run as they come (live) or held
        // back for batches (files): the same bits.
        for batch in [1, vad::FILE_BATCH, 100] {
            port.set_batch(batch);
            for push in [160, 4096] {
                assert_eq!(
                    probs(&mut port, &samples, push),
                    got,
                    "{}: pushed {push} at a time, batches of {batch} chunks",
                    file.display()
                );
            }
        }
        port.set_batch(1);
    }
    // The audio does exercise both decisions.
    assert!(speech_chunks > 5000, "{speech_chunks} speech chunks in all");
    std::fs::remove_dir_all(dir).ok();
}
