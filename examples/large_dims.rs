//! Speed and memory at Whisper's larger sizes, on random-weight CTranslate2 directories with the
//! dimensions of small, medium, large-v3 and large-v3-turbo (tests/fixtures, written to a
//! temporary directory and deleted after each):
//!
//!   cargo run --release --example large_dims -- [--sizes small,medium,large-v3,large-v3-turbo] [--steps 16]
//!
//! For each: INT8 load seconds, encoder seconds for one 30 s window, decoder milliseconds per
//! token step (one sequence, after a 3-token prompt), and the peak resident set of a process
//! that did only that size, against the bytes of its INT8 weights. Run one size per process
//! (the default runs each in a child process) so that every peak is its own.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fixtures/mod.rs"]
mod fixtures;
mod support;

use std::time::Instant;

use gstnpuwhisper::model::{Model, Precision, WeightCache};

const USAGE: &str = "usage: large_dims [--sizes small,medium,large-v3,large-v3-turbo] [--steps N]";

fn run(dims: fixtures::FixtureDims, steps: usize) {
    let dir = common::tempfile_dir().join(dims.name);
    let bytes = fixtures::write_model(&dir, &dims, &common::model_dir("base"), 7);
    let rss_before = support::peak_rss_mb();
    let t0 = Instant::now();
    let model = Model::load_cached(&dir, Precision::Int8, &WeightCache::Off).unwrap_or_else(|e| panic!("{e}"));
    let load_s = t0.elapsed().as_secs_f64();
    let d = model.dims;
    // INT8 matrices (a byte per weight, a scale and a row sum per row), f16 embeddings for
    // lookups, and the f32 rest (conv stem, positions, cross-attention K/V projections, norms).
    let (dm, v) = (d.d_model, d.vocab_size);
    let int8 = (d.encoder_layers * 12 + d.decoder_layers * 14) * dm * dm + v * dm;
    let f16 = 2 * v * dm;
    let f32 = 4 * ((3 * d.n_mels + 3 * dm) * dm + (1500 + d.max_text_positions) * dm + d.decoder_layers * 2 * dm * dm);
    let weights_mb = (int8 + f16 + f32) as f64 / (1 << 20) as f64;
    fixtures::window_and_steps(&model, 1); // warm-up: first touch of the buffers
    let (encoded, stepped) = fixtures::window_and_steps(&model, steps);
    let (encode_s, step_ms) = (encoded.as_secs_f64(), stepped.as_secs_f64() * 1e3 / steps as f64);
    let peak = support::peak_rss_mb();
    println!(
        "{:<15} {:>9.2} {:>7.1} {:>10.2} {:>11.1} {:>10.0} {:>12.0} {:>9.2}x",
        dims.name,
        bytes as f64 / 1e9,
        load_s,
        encode_s,
        step_ms,
        weights_mb,
        peak,
        peak / weights_mb
    );
    eprintln!("({} before loading: {rss_before:.0} MB)", dims.name);
    drop(model);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

fn main() {
    let args = support::Args::parse(USAGE, &["--sizes", "--steps", "--one"]);
    let steps: usize = args.parsed("--steps", 16).max(1);
    let all = [fixtures::SMALL, fixtures::MEDIUM, fixtures::LARGE_V3, fixtures::LARGE_V3_TURBO];
    let by_name = |n: &str| all.into_iter().find(|d| d.name == n).unwrap_or_else(|| panic!("no size {n}\n{USAGE}"));
    if let Some(one) = args.value("--one") {
        return run(by_name(one), steps);
    }
    let sizes: Vec<_> = args.value("--sizes").map_or_else(|| all.to_vec(), |s| s.split(',').map(by_name).collect());
    println!(
        "INT8, {} threads, SIMD path {:?}; random weights, {steps} token steps",
        npuwhisper_kernels::pool::threads(),
        npuwhisper_kernels::isa::Isa::detect()
    );
    println!(
        "{:<15} {:>9} {:>7} {:>10} {:>11} {:>10} {:>12} {:>10}",
        "size", "model GB", "load s", "window s", "ms / step", "INT8 MB", "peak RSS MB", "RSS/INT8"
    );
    for dims in sizes {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--one", dims.name, "--steps", &steps.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "{}: {status}", dims.name);
    }
}
