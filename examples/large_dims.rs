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

use npuwhisper_core::model::{Model, Precision, WeightCache};

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
    peer(&dir, dims, steps, weights_mb);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// The peer, CTranslate2 int8 through faster-whisper, on the same directory, the same measures
/// (its decoder steps: greedy generation of `steps` more tokens after the same prompt, the
/// difference over `steps`). Skipped without the reference Python (scripts/setup-reference.sh).
const PEER: &str = r#"
import json, resource, sys, time
import numpy as np, ctranslate2
from faster_whisper import WhisperModel
path, n_mels, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = time.perf_counter()
m = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=2, num_workers=1)
load = time.perf_counter() - t
i = np.arange(n_mels * 3000)
mel = (np.sin((i % 613) * 0.11) * 0.8).astype(np.float32).reshape(1, n_mels, 3000)
feats = ctranslate2.StorageView.from_array(mel)
m.model.encode(feats)
t = time.perf_counter()
enc = m.model.encode(feats)
window = time.perf_counter() - t
tok = m.hf_tokenizer
prompt = [tok.token_to_id(x) for x in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>")]
# End of text suppressed, so that every generation runs its full length.
eot = tok.token_to_id("<|endoftext|>")
def gen(n):
    t = time.perf_counter()
    m.model.generate(enc, [prompt], beam_size=1, max_length=len(prompt) + n, suppress_blank=False, suppress_tokens=[eot])
    return time.perf_counter() - t
gen(1)
step = (gen(steps + 1) - gen(1)) / steps
print(json.dumps({"load_s": load, "window_s": window, "step_ms": step * 1e3, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"#;

fn peer(dir: &std::path::Path, dims: fixtures::FixtureDims, steps: usize, weights_mb: f64) {
    let python = common::repo().join(".venv/bin/python");
    if !python.is_file() {
        return eprintln!("no {}: the peer is not measured", python.display());
    }
    let out = std::process::Command::new(python)
        .args(["-c", PEER])
        .arg(dir)
        .arg(dims.n_mels.to_string())
        .arg(steps.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text.trim()) else {
        return eprintln!("peer on {}: {}", dims.name, String::from_utf8_lossy(&out.stderr));
    };
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "{:<15} {:>9} {:>7.1} {:>10.2} {:>11.1} {:>10.0} {:>12.0} {:>9.2}x",
        "  faster-whisper",
        "",
        f("load_s"),
        f("window_s"),
        f("step_ms"),
        weights_mb,
        f("peak_rss_mb"),
        f("peak_rss_mb") / weights_mb
    );
}

fn main() {
    let args = support::Args::parse(USAGE, &["--sizes", "--steps", "--one"]);
    let steps: usize = args.parsed("--steps", 16).max(1);
    let all = [
        fixtures::SMALL,
        fixtures::MEDIUM,
        fixtures::LARGE_V3,
        fixtures::LARGE_V3_TURBO,
    ];
    let by_name = |n: &str| {
        all.into_iter()
            .find(|d| d.name == n)
            .unwrap_or_else(|| panic!("no size {n}\n{USAGE}"))
    };
    if let Some(one) = args.value("--one") {
        return run(by_name(one), steps);
    }
    let sizes: Vec<_> = args
        .value("--sizes")
        .map_or_else(|| all.to_vec(), |s| s.split(',').map(by_name).collect());
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
