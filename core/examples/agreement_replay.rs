//! Replays the passes of a live run through the agreement policy and prints the text it emits.
//! The passes come from the decoder's log: run a live pipeline with
//! `GST_DEBUG=npuwhisperdec:6 GST_DEBUG_FILE=run.log`, then
//! `cargo run --release -p npuwhisper-core --example agreement_replay -- run.log`.
//! Lets a change to `decoding::stream` be judged on real passes in a second, not a live run.

use npuwhisper_core::decoding::stream::{LocalAgreement, Pass};

fn main() {
    let path = std::env::args().nth(1).expect("usage: agreement_replay GST_DEBUG_FILE");
    let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut agreement = LocalAgreement::new();
    let mut out = Vec::new();
    let mut lags = Vec::new();
    let verbose = std::env::var_os("VERBOSE").is_some();
    for line in log.lines() {
        let Some((_, json)) = line.split_once("agreement pass ") else {
            continue;
        };
        let pass: Pass = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        if verbose {
            let (kind, emit, words) = match &pass {
                Pass::Provisional { emit_before, words } => ("provisional", *emit_before, &words[..]),
                Pass::Final { words } => ("final", f64::NAN, &words[..]),
                Pass::Reset => ("reset", f64::NAN, &[][..]),
            };
            eprintln!(
                "--- {kind} emit_before {emit:.2} committed_end {:.2}",
                agreement.committed_end()
            );
            let heard: Vec<String> = words
                .iter()
                .map(|w| format!("{}@{:.2}-{:.2}", w.text.trim(), w.start, w.end))
                .collect();
            eprintln!("    heard: {}", heard.join(" "));
        }
        let released = pass.apply(&mut agreement);
        if verbose {
            let r: Vec<&str> = released.iter().map(|w| w.text.trim()).collect();
            eprintln!("    out:   {}", r.join(" "));
        }
        // The log's clock (h:mm:ss.nnn since start) when the pass came out.
        let clock = line.split_whitespace().next().and_then(|t| {
            let f: Vec<f64> = t.split(':').filter_map(|x| x.parse().ok()).collect();
            (f.len() == 3).then(|| f[0] * 3600.0 + f[1] * 60.0 + f[2])
        });
        if let Some(clock) = clock {
            lags.extend(released.iter().map(|w| clock - w.start));
        }
        out.extend(released.into_iter().map(|w| w.text));
    }
    println!("{}", out.concat().trim());
    if !lags.is_empty() {
        lags.sort_by(f64::total_cmp);
        let at = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
        // Log clock less audio time: the delay of each word plus a constant (when the stream began).
        eprintln!(
            "word lag (+ a constant): p50 {:.2} s, p95 {:.2} s, max {:.2} s",
            at(0.5),
            at(0.95),
            at(1.0)
        );
    }
}
