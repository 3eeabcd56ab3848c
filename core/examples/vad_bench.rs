//! Speech detection's cost per 32 ms chunk: Silero VAD on the kernels crate against the same
//! ONNX file through ONNX Runtime (one thread), on one recording pushed whole (as
//! stage_profile does), in buffers run as they come (live streams) and in buffers held back
//! for batches of `FILE_BATCH` chunks (files, as npumel runs them):
//!
//!   cargo run --release -p npuwhisper-core --example vad_bench -- [--file WAV] [--repeat 5] [--push 4096]
//!       [--only kernels|onnxruntime]
//!
//! Prints wall and CPU µs per chunk (the fastest of `--repeat` runs) for each. The kernels'
//! version uses the kernels' threads for pushes of 32 chunks and more; the CPU column shows it.
//! Set `NPUWHISPER_ISA=avx512` (or `avx2`) for a lower SIMD path.

#[path = "../tests/support/mod.rs"]
mod assets;
mod support;

use std::path::PathBuf;
use std::time::Instant;

use npuwhisper_core::audio::vad::{CHUNK, FILE_BATCH};
use npuwhisper_kernels::isa::Isa;

const USAGE: &str = "usage: vad_bench [--file WAV] [--repeat N] [--push SAMPLES] [--only kernels|onnxruntime]";

fn main() {
    let args = support::Args::parse(USAGE, &["--file", "--repeat", "--push", "--only"]);
    let only = args.value("--only");
    let file = args
        .value("--file")
        .map_or_else(|| assets::eval_file("long_lj001_1-20.wav"), PathBuf::from);
    let repeat: usize = args.parsed("--repeat", 5).max(1);
    let push: usize = args.parsed("--push", 4096).max(1);
    let samples = assets::read_wav(&file);
    let chunks = samples.len().div_ceil(CHUNK);
    let load = |ort: bool| {
        let t = Instant::now();
        let vad = support::load_vad(ort);
        (vad, t.elapsed().as_secs_f64() * 1e3)
    };
    println!(
        "{} ({chunks} chunks), SIMD path {:?}, {} kernel threads, best of {repeat}",
        file.display(),
        Isa::detect(),
        npuwhisper_kernels::pool::threads()
    );
    println!(
        "{:<14} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "", "load ms", "whole µs", "CPU µs", "pushed µs", "CPU µs", "batched µs", "CPU µs"
    );
    for (name, ort) in [("ONNX Runtime", true), ("kernels", false)] {
        if only.is_some_and(|o| o != if ort { "onnxruntime" } else { "kernels" }) {
            continue;
        }
        let (mut vad, load_ms) = load(ort);
        let mut run = |piece: usize, batch: usize| {
            let mut best = (f64::MAX, 0.0);
            vad.set_batch(batch);
            for _ in 0..repeat {
                vad.reset();
                let (t, cpu) = (Instant::now(), support::cpu_seconds());
                let mut n = 0;
                for p in samples.chunks(piece) {
                    n += vad.push(p).expect("VAD").len();
                }
                n += vad.finish().expect("VAD").len();
                assert_eq!(n, chunks);
                let wall = t.elapsed().as_secs_f64();
                if wall < best.0 {
                    best = (wall, support::cpu_seconds() - cpu);
                }
            }
            (best.0 * 1e6 / chunks as f64, best.1 * 1e6 / chunks as f64)
        };
        let whole = run(samples.len(), 1);
        let pushed = run(push, 1);
        let batched = run(push, FILE_BATCH);
        println!(
            "{name:<14} {load_ms:>8.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            whole.0, whole.1, pushed.0, pushed.1, batched.0, batched.1
        );
    }
}
