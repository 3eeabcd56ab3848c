//! Live captioning benchmark: an eval file pushed by a live `appsrc` paced by the clock (as a
//! capture device delivers it) through `npuwhisper` into an appsink, as tests/live.rs does.
//! Prints the delay from each text's audio (its PTS) to its arrival at the sink (p50, p95,
//! max) against the promised latency, the CPU load of the process over the run, how long the
//! text lasted past the audio, and WER live against file mode.
//!
//!   cargo run --release --example live_bench -- [--file long_lj001_1-20.wav] [--latency 3000]
//!       [--model tiny.en] [--set PROP=VALUE,...]

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use common::*;

const USAGE: &str = "usage: live_bench [--file NAME] [--latency MS] [--model NAME|DIR] [--set PROP=VALUE,...]
  --file: a file of ../shared/eval/public listed in manifest_long.tsv or manifest.tsv
  --set: more npuwhisper properties, e.g. beam-size=5";

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut file, mut latency, mut model, mut set) = ("long_lj001_1-20.wav".to_string(), 3000u32, "tiny.en".to_string(), String::new());
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--file" => file = value(),
            "--latency" => latency = value().parse().expect("--latency takes milliseconds"),
            "--model" => model = value(),
            "--set" => set = value(),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let reference = ["manifest_long.tsv", "manifest.tsv"]
        .iter()
        .flat_map(|m| manifest(m))
        .find(|(f, _, _)| *f == file)
        .unwrap_or_else(|| panic!("{file} is in neither manifest"))
        .2;
    let path = eval_file(&file);
    let samples = read_wav(&path);
    let audio_seconds = samples.len() as f64 / 16000.0;

    let latency_value = latency.to_string();
    let mut props: Vec<(&str, &str)> = vec![("latency", latency_value.as_str()), ("model", model.as_str())];
    props.extend(set.split(',').filter(|kv| !kv.is_empty()).map(|kv| kv.split_once('=').expect("--set takes PROP=VALUE")));

    // Load the model before timing: a capture pipeline starts with it loaded.
    let file_props: Vec<(&str, &str)> = props.iter().filter(|(k, _)| *k != "latency").copied().collect();
    let file_text = joined_text(&transcribe(&path, &file_props));

    let (cpu0, t0) = (support::cpu_seconds(), Instant::now());
    let run = run_live(&samples, &props);
    let (cpu, wall) = (support::cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;

    let delays: Vec<f64> = run.cues.iter().map(|c| c.delay).collect();
    let (p50, p95, max) = percentiles(&delays);
    let promised = run.latency.1.seconds_f64();
    let text = joined_text(&run.cues.iter().map(|c| c.cue.clone()).collect::<Vec<_>>());
    let live_wer = wer(&[(reference.clone(), text)]);
    let file_wer = wer(&[(reference, file_text)]);
    println!("{file}: {audio_seconds:.1} s of audio, live at latency {latency} ms (LATENCY answer {promised:.2} s), model {model}");
    println!("text delay after its audio: p50 {p50:.2} s, p95 {p95:.2} s, max {max:.2} s over {} buffers", delays.len());
    println!(
        "CPU: {cpu:.1} s over {wall:.1} s wall = {:.0} % of {cores} cores; the run ended {:.2} s after the audio",
        100.0 * cpu / wall / cores,
        wall - audio_seconds
    );
    println!("WER live {live_wer:.2} %, file mode {file_wer:.2} % ({:+.2} points)", live_wer - file_wer);
    println!(
        "{{\"file\":\"{file}\",\"latency_ms\":{latency},\"p50\":{p50:.3},\"p95\":{p95:.3},\"max\":{max:.3},\"cpu_load\":{:.3},\"wer_live\":{live_wer:.2},\"wer_file\":{file_wer:.2}}}",
        cpu / wall / cores
    );
}
