//! Live captioning benchmark: an eval file pushed by a live `appsrc` paced by the clock (as a
//! capture device delivers it) through `npuwhisper` into an appsink, as tests/live.rs does.
//! Prints the delay from each text's audio (its PTS) to its arrival at the sink (p50, p95,
//! max) against the promised latency, the CPU load of the process over the run, how long the
//! text lasted past the audio, and WER live against file mode. `--sweep` runs the latencies
//! 1000, 1500, 2000, 3000 and 4000 ms in turn and prints one table row each.
//!
//!   cargo run --release --example live_bench -- [--file long_lj001_1-20.wav] [--latency 3000]
//!       [--sweep] [--model tiny.en] [--set PROP=VALUE,...]

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use common::*;

const USAGE: &str = "usage: live_bench [--file NAME] [--latency MS | --sweep] [--model NAME|DIR] [--set PROP=VALUE,...]
  --file: a file of ../shared/eval/public listed in manifest_long.tsv or manifest.tsv
  --sweep: latencies 1000, 1500, 2000, 3000 and 4000 ms in turn, one table row each
  --set: more npuwhisper properties, e.g. beam-size=5";

const SWEEP_MS: [u32; 5] = [1000, 1500, 2000, 3000, 4000];

/// What one live run measured.
struct Run {
    latency_ms: u32,
    /// The LATENCY answer (s): upstream's 0.1 s plus what the bin promised.
    promised: f64,
    p50: f64,
    p95: f64,
    max: f64,
    /// Share of all cores busy over the run.
    cpu_load: f64,
    /// Seconds the run lasted past the audio.
    overrun: f64,
    wer_live: f64,
}

fn run(samples: &[f32], reference: &str, props: &[(&str, &str)], latency_ms: u32) -> Run {
    let latency = latency_ms.to_string();
    let mut props = props.to_vec();
    props.push(("latency", latency.as_str()));
    let (cpu0, t0) = (support::cpu_seconds(), Instant::now());
    let live = run_live(samples, &props);
    let (cpu, wall) = (support::cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let delays: Vec<f64> = live.cues.iter().map(|c| c.delay).collect();
    let (p50, p95, max) = percentiles(&delays);
    let text = joined_text(&live.cues.iter().map(|c| c.cue.clone()).collect::<Vec<_>>());
    Run {
        latency_ms,
        promised: live.latency.1.seconds_f64(),
        p50,
        p95,
        max,
        cpu_load: cpu / wall / cores,
        overrun: wall - samples.len() as f64 / 16000.0,
        wer_live: wer(&[(reference.to_string(), text)]),
    }
}

fn main() {
    let args = support::Args::parse(USAGE, &["--file", "--latency", "--sweep", "--model", "--set"]);
    let file = args.value("--file").unwrap_or("long_lj001_1-20.wav").to_string();
    let model = args.value("--model").unwrap_or("tiny.en").to_string();
    let latencies = if args.flag("--sweep") {
        SWEEP_MS.to_vec()
    } else {
        vec![args.parsed("--latency", 3000u32)]
    };
    let set = args.value("--set").unwrap_or("");
    let reference = ["manifest_long.tsv", "manifest.tsv"]
        .iter()
        .flat_map(|m| manifest(m))
        .find(|(f, _, _)| *f == file)
        .unwrap_or_else(|| panic!("{file} is in neither manifest"))
        .2;
    let path = eval_file(&file);
    let samples = read_wav(&path);
    let audio_seconds = samples.len() as f64 / 16000.0;

    let mut props: Vec<(&str, &str)> = vec![("model", model.as_str())];
    props.extend(
        set.split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split_once('=').expect("--set takes PROP=VALUE")),
    );

    // Load the model before timing, and keep it for every run: a capture pipeline starts with
    // it loaded.
    let _model = support::load_model(&model);
    let file_wer = wer(&[(reference.clone(), joined_text(&transcribe(&path, &props)))]);
    println!("{file}: {audio_seconds:.1} s of audio, live, paced by the clock, model {model}");
    println!("| model | latency | LATENCY answer | delay p50 / p95 / max | CPU | WER live | WER file |");
    println!("|---|---|---|---|---|---|---|");
    let mut runs = Vec::new();
    for latency_ms in latencies {
        let r = run(&samples, &reference, &props, latency_ms);
        println!(
            "| {model} | {} ms | {:.2} s | {:.2} / {:.2} / {:.2} s | {:.0} % | {:.2} % | {file_wer:.2} % |",
            r.latency_ms,
            r.promised,
            r.p50,
            r.p95,
            r.max,
            100.0 * r.cpu_load,
            r.wer_live
        );
        runs.push(r);
    }
    for r in &runs {
        println!(
            "{{\"file\":\"{file}\",\"model\":\"{model}\",\"latency_ms\":{},\"promised\":{:.3},\"p50\":{:.3},\"p95\":{:.3},\"max\":{:.3},\"cpu_load\":{:.3},\"overrun\":{:.2},\"wer_live\":{:.2},\"wer_file\":{file_wer:.2}}}",
            r.latency_ms, r.promised, r.p50, r.p95, r.max, r.cpu_load, r.overrun, r.wer_live
        );
    }
}
