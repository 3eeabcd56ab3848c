//! The live path on real speech: audio pushed by a live `appsrc` paced by the clock (as a
//! capture device delivers it) through `npuwhisper` into an appsink. Checks the LATENCY answer,
//! that the text comes out within it, that it is close to file mode and that nothing is said
//! twice or during silences.

mod common;

use common::*;
use gstnpuwhisper::model::{load_shared, resolve_model_path};

/// Slack over the promised latency for text on a shared, noisy machine.
const SLACK: f64 = 1.0;

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs `file` (of manifest_long.tsv) live and checks what holds for any speech; returns the
/// text buffers, the live and the file-mode WER.
fn run_and_check(file: &str) -> (Vec<LiveCue>, f64, f64) {
    let _model = load_shared(&resolve_model_path("tiny.en")).unwrap();
    let path = eval_file(file);
    let reference = manifest("manifest_long.tsv").into_iter().find(|(f, _, _)| f == file).unwrap().2;
    let file_text = joined_text(&transcribe(&path, &[]));

    // The default; LIVE_LATENCY_MS=4000 tries transcriberbin's.
    let latency_ms: u32 = std::env::var("LIVE_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let (cues, (live, min)) = run_live(&read_wav(&path), &[("latency", &latency_ms.to_string())]);
    for c in &cues {
        println!("{:7.2} {:7.2} +{:.2} s  {}", c.cue.start, c.cue.end, c.delay, c.cue.text);
    }
    let promised = latency_ms as f64 / 1000.0 + LIVE_CHUNK_MS as f64 / 1000.0;
    assert!(live, "npuwhisper is live");
    assert_eq!(min.mseconds(), latency_ms as u64 + LIVE_CHUNK_MS, "LATENCY: appsrc's {LIVE_CHUNK_MS} ms + latency");

    let delays: Vec<f64> = cues.iter().map(|c| c.delay).collect();
    let (p50, p95, max) = percentiles(&delays);
    println!("latency {latency_ms} ms, text delay after its audio: p50 {p50:.2} s, p95 {p95:.2} s, max {max:.2} s (promised {promised:.2} s)");
    assert!(max <= promised + SLACK, "text {max:.2} s after its audio, promised {promised:.2} s");

    let text = joined_text(&cues.iter().map(|c| c.cue.clone()).collect::<Vec<_>>());
    let live_wer = wer(&[(reference.clone(), text.clone())]);
    let file_wer = wer(&[(reference.clone(), file_text.clone())]);
    println!("live: {text}\nfile: {file_text}\nWER live {live_wer:.2} %, file {file_wer:.2} %");

    // Nothing said twice at a window boundary, nor more words than spoken.
    let w = words(&text);
    assert!(w.windows(2).all(|p| p[0] != p[1]), "a word repeated: {text}");
    assert!(w.len() <= words(&reference).len() + 2, "{} words for {} spoken: {text}", w.len(), words(&reference).len());
    assert!(cues.windows(2).all(|p| p[0].cue.end <= p[1].cue.start + 1e-6), "text overlaps");
    (cues, live_wer, file_wer)
}

/// jfk.wav, 20 s silence, a short phrase, 20 s silence: 56 s in real time.
#[test]
fn live_speech_and_silences_within_latency() {
    let (cues, live_wer, file_wer) = run_and_check("silence_gaps.wav");
    // 2 s windows lose words at their edges (file mode: up to 28 s): 18.5 % on this clip
    // at 3 s latency when this was written, 0 % in file mode.
    assert!(live_wer <= file_wer + 25.0, "live WER {live_wer:.2} % vs file {file_wer:.2} %");

    // No text in the silences: jfk.wav is 0-11 s, the phrase about 31-33.5 s.
    let jfk_end = read_wav(&eval_file("jfk.wav")).len() as f64 / 16000.0;
    let right_start = jfk_end + 20.0;
    let right_end = right_start + read_wav(&eval_file("stereo_right.wav")).len() as f64 / 16000.0;
    for c in &cues {
        let in_speech = c.cue.start < jfk_end + 0.5 || (c.cue.start >= right_start - 0.5 && c.cue.end <= right_end + 0.5);
        assert!(in_speech, "text in a silence: {c:?}");
    }
}

/// Twenty LJ Speech clips, 144 s in real time: `cargo test --release --test live -- --ignored`.
/// FAILS today (13:24 UTC run, loaded machine): delays p50 2.71 s but p95 11.8 s, max 14.0 s,
/// in two bursts around 2 s windows that tiny.en hallucinates on ("Thank you for watching",
/// not in file mode). Likely cause, not yet verified: temperature fallback decodes such windows
/// again and again and the decoder falls behind; live mode needs bounded work per window.
#[test]
#[ignore]
fn live_long_form_within_latency() {
    let (_, live_wer, file_wer) = run_and_check("long_lj001_1-20.wav");
    assert!(live_wer <= file_wer + 25.0, "live WER {live_wer:.2} % vs file {file_wer:.2} %");
}
