//! What a shorter encoder context (whisper.cpp's `audio_ctx`) does to WER and encoder time: the
//! files of a manifest through speech detection, log-mel, the encoder over each rule's context
//! and decoding (core alone, `--batch` windows at a time as the decoder does for files), one row
//! per rule:
//!
//!   cargo run --release -p npuwhisper-core --example audio_ctx -- [--model tiny.en]
//!       [--manifest manifest.tsv] [--rules full,fit64+50,fit128+100,fit128+200,750,1000] [--batch 8] [--print]
//!       [--no-fallback] [--refit]
//!
//! Rules, each giving a window's encoder frames (20 ms each, at most 1500) from its audio:
//! `full` 1500; `fitS+M` the audio's frames plus a margin of M, rounded up to a multiple
//! of S; `fitS+M<C` the same where that is at most C frames, else 1500 (`context=auto` is
//! `fit128+300<1024`); `N` (a number) N frames when the audio fits in them, else 1500.
//! `--refit` decodes a fitted window whose text fails Whisper's checks again from the full
//! context (npuwhisperdec's safety net; that encoding counts as decoder time) and prints how
//! many were. Prints per rule the
//! mean frames, the encoder's milliseconds per window (mean, wall clock: on a shared machine say
//! the load), decoder seconds, WER and word errors after Whisper's English normaliser
//! (`tests/reference/score_wer.py`, the venv's Python). `--print` prints each file's text and decoder time,
//! `--no-fallback` decodes at temperature 0 only (what the greedy pass makes of each context).
//! Set `NPUWHISPER_ISA=avx512` (or `avx2`) for a lower SIMD path.

#[path = "../tests/support/mod.rs"]
mod assets;
mod support;

use std::time::Instant;

use npuwhisper_core::audio::vad::VadSettings;
use npuwhisper_core::audio::{level_speech, Detector, SileroFrames, Windower, WindowerSettings, WINDOW_SAMPLES};
use npuwhisper_core::decoding::{DecodeOptions, Transcriber};
use npuwhisper_core::model::{self, ENCODER_FRAMES};
use npuwhisper_kernels::isa::Isa;
use npuwhisper_kernels::mel::LogMel;

const USAGE: &str = "usage: audio_ctx [--model NAME|DIR] [--manifest manifest.tsv] [--rules full,fit64+50,750,...] [--batch N] [--print] [--no-fallback] [--refit]";

/// Audio samples per encoder frame (20 ms at 16 kHz).
const SAMPLES_PER_FRAME: usize = 320;

#[derive(Debug, Clone, Copy)]
enum Rule {
    Full,
    /// Fitted, or the full context where the fit would exceed `cap` frames.
    Fit {
        step: usize,
        margin: usize,
        cap: usize,
    },
    Fixed(usize),
}

impl Rule {
    fn parse(s: &str) -> Option<Rule> {
        if s == "full" {
            return Some(Rule::Full);
        }
        if let Some(rest) = s.strip_prefix("fit") {
            let (rest, cap) = match rest.split_once('<') {
                Some((r, c)) => (r, c.parse().ok()?),
                None => (rest, ENCODER_FRAMES),
            };
            let (step, margin) = rest.split_once('+')?;
            let step: usize = step.parse().ok().filter(|&s| s > 0)?;
            return Some(Rule::Fit {
                step,
                margin: margin.parse().ok()?,
                cap,
            });
        }
        s.parse()
            .ok()
            .filter(|n| (1..=ENCODER_FRAMES).contains(n))
            .map(Rule::Fixed)
    }

    /// Encoder frames for a window of `samples` audio samples.
    fn frames(self, samples: usize) -> usize {
        let audio = samples.div_ceil(SAMPLES_PER_FRAME);
        match self {
            Rule::Full => ENCODER_FRAMES,
            Rule::Fit { step, margin, cap } => model::fitted_frames_within(samples, step, margin, cap),
            Rule::Fixed(n) if audio <= n => n,
            Rule::Fixed(_) => ENCODER_FRAMES,
        }
    }
}

fn manifest(name: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(assets::eval_file(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let file = f.next().unwrap().to_string();
            f.next();
            (file, f.next().unwrap_or_default().to_string())
        })
        .collect()
}

/// A window's log-mel, its audio samples and seconds.
type MelWindow = (Vec<f32>, usize, f64);

fn main() {
    let args = support::Args::parse(
        USAGE,
        &[
            "--model",
            "--manifest",
            "--rules",
            "--batch",
            "--print",
            "--no-fallback",
            "--refit",
        ],
    );
    let model_name = args.value("--model").unwrap_or(model::DEFAULT_MODEL).to_string();
    let manifest_name = args.value("--manifest").unwrap_or("manifest.tsv").to_string();
    let batch: usize = args.parsed("--batch", 8).max(1);
    let rules: Vec<(String, Rule)> = args
        .value("--rules")
        .unwrap_or("full,fit64+50,fit128+100,fit128+200,750,1000")
        .split(',')
        .map(|r| {
            let rule = Rule::parse(r).unwrap_or_else(|| {
                eprintln!("unknown rule {r:?}\n{USAGE}");
                std::process::exit(2);
            });
            (r.to_string(), rule)
        })
        .collect();
    let dir = model::resolve_model_path(&model_name);
    let model = model::load_shared(&dir).unwrap_or_else(|e| {
        eprintln!("cannot load {}: {e}", dir.display());
        std::process::exit(1);
    });
    let mel = LogMel::new(model.n_mels());
    // Per file: its reference and its windows' (mel, audio samples, seconds).
    let files: Vec<(String, String, Vec<MelWindow>)> = manifest(&manifest_name)
        .into_iter()
        .map(|(file, reference)| {
            let samples = assets::read_wav(&assets::eval_file(&file));
            let vad = support::load_vad(false);
            let detector = Detector::Silero(Box::new(SileroFrames::new(vad, VadSettings::default())));
            let mut windower = Windower::with_detector(WindowerSettings::default(), detector);
            let mut windows = windower.push(&samples).expect("speech detection");
            windows.extend(windower.flush().expect("speech detection"));
            let mels = windows
                .into_iter()
                .filter(|w| w.has_speech)
                .map(|mut w| {
                    level_speech(&mut w.samples, &w.speech);
                    let n = w.samples.len();
                    (mel.compute(&w.samples, WINDOW_SAMPLES), n, n as f64 / 16_000.0)
                })
                .collect();
            (file, reference, mels)
        })
        .collect();
    let n_windows: usize = files.iter().map(|f| f.2.len()).sum();
    println!(
        "{manifest_name}: {} files, {n_windows} windows; model {model_name} {:?}, SIMD path {:?}, {} threads, decoder batch {batch}",
        files.len(),
        model.precision,
        Isa::detect(),
        npuwhisper_kernels::pool::threads()
    );
    // The first window once, so that no rule's time holds the first run's page faults.
    if let Some((m, _, _)) = files.iter().flat_map(|f| &f.2).next() {
        model.encode_batch(&[m]).expect("encoder");
    }
    println!(
        "| rule | mean frames | encoder ms/window | encoder s | decoder s | WER | word errors | refits |\n|---|---|---|---|---|---|---|---|"
    );
    for (name, rule) in &rules {
        let (mut enc_s, mut dec_s, mut frames_sum, mut refits) = (0.0, 0.0, 0, 0);
        let mut pairs = Vec::new();
        for (file, reference, mel_windows) in &files {
            let mut states = Vec::new();
            for (m, samples, secs) in mel_windows {
                let frames = rule.frames(*samples);
                frames_sum += frames;
                let t = Instant::now();
                let s = model.encode_batch_frames(&[m], frames).expect("encoder").remove(0);
                enc_s += t.elapsed().as_secs_f64();
                assert_eq!(s.len(), frames * model.d_model());
                states.push((s, *secs));
            }
            let t = Instant::now();
            let mut options = DecodeOptions {
                language: Some("en".into()),
                ..Default::default()
            };
            if args.flag("--no-fallback") {
                options.temperatures.truncate(1);
            }
            let mut transcriber = Transcriber::new(model.clone(), options);
            let windows: Vec<(&[f32], f64)> = states.iter().map(|(s, secs)| (s.as_slice(), *secs)).collect();
            // --refit: a fitted window whose text fails Whisper's checks is encoded again over
            // the full context (npuwhisperdec's safety net).
            let results: Vec<_> = windows
                .chunks(batch)
                .enumerate()
                .flat_map(|(c, chunk)| {
                    let refit = |i: usize| {
                        let (m, _, _) = &mel_windows[c * batch + i];
                        model.encode_batch(&[m]).ok().and_then(|mut s| s.pop())
                    };
                    if args.flag("--refit") {
                        transcriber.transcribe_batch_refit(chunk, &refit)
                    } else {
                        transcriber.transcribe_batch(chunk)
                    }
                })
                .collect();
            refits += transcriber.refits();
            let file_dec_s = t.elapsed().as_secs_f64();
            dec_s += file_dec_s;
            let hyp = results
                .iter()
                .flat_map(|r| &r.segments)
                .map(|s| s.text.trim())
                .collect::<Vec<_>>()
                .join(" ");
            if args.flag("--print") {
                println!("{name} {file} (decoder {file_dec_s:.2} s): {hyp}");
            }
            pairs.push((reference.clone(), hyp));
        }
        let assets::Score { wer, errors, words } = assets::score(&pairs);
        println!(
            "| {name} | {:.0} | {:.1} | {enc_s:.2} | {dec_s:.2} | {wer:.2} % | {errors} of {words} | {refits} |",
            frames_sum as f64 / n_windows as f64,
            1e3 * enc_s / n_windows as f64,
        );
    }
}
