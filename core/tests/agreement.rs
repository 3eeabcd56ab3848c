//! The live agreement policy replayed over the passes of a real live run: tiny.en at 1500 ms
//! on long_lj001_1-20.wav (LJ Speech, 144 s), as the decoder logged them
//! (`GST_DEBUG=npuwhisperdec:6`, see `examples/agreement_replay.rs`). Deterministic and without a
//! model, so a change to `decoding::stream` is judged on what Whisper really says pass by pass.

use std::io::Read;

use npuwhisper_core::decoding::stream::{LocalAgreement, Pass};

/// The LJ Speech transcript of the recording (public domain), as in
/// `../shared/eval/public/manifest_long.tsv`.
const REFERENCE: &str = include_str!("fixtures/long_lj001_1-20.txt");

fn passes() -> Vec<Pass> {
    let gz = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/live_passes_tiny_en_1500.jsonl.gz"
    ))
    .expect("fixture");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '-')
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word-level edit distance: substitutions, deletions and insertions.
fn errors(reference: &[String], hypothesis: &[String]) -> usize {
    let mut row: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let next = (diagonal + usize::from(r != h)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[hypothesis.len()]
}

/// Runs of 1 to 4 words said twice in a row in `hypothesis` but not in the reference.
fn repeats(reference: &[String], hypothesis: &[String]) -> Vec<String> {
    let said = |text: &[String], n: usize, k: usize| text[k..k + n] == text[k + n..k + 2 * n];
    let mut out = Vec::new();
    for n in 1..=4 {
        for k in 0..hypothesis.len().saturating_sub(2 * n - 1) {
            if said(hypothesis, n, k) {
                let run = hypothesis[k..k + 2 * n].to_vec();
                let in_reference =
                    (0..reference.len().saturating_sub(2 * n - 1)).any(|m| reference[m..m + 2 * n] == run);
                if !in_reference {
                    out.push(run.join(" "));
                }
            }
        }
    }
    out
}

#[test]
fn live_text_loses_nothing_the_complete_windows_heard() {
    let mut agreement = LocalAgreement::new();
    let (mut live, mut complete) = (String::new(), String::new());
    for pass in passes() {
        if let Pass::Final { words } = &pass {
            complete.extend(words.iter().map(|w| w.text.as_str()));
        }
        live.extend(pass.apply(&mut agreement).iter().map(|w| w.text.clone()));
    }
    let reference = words(REFERENCE);
    let (live_words, complete_words) = (words(&live), words(&complete));
    let (live_errors, complete_errors) = (errors(&reference, &live_words), errors(&reference, &complete_words));
    println!("live: {live}\ncomplete windows: {complete}");
    println!(
        "{} words spoken; errors: live {live_errors}, complete windows {complete_errors}",
        reference.len()
    );
    assert!(
        repeats(&reference, &live_words).is_empty(),
        "said twice: {:?}",
        repeats(&reference, &live_words)
    );
    // On these passes the agreement's text is as good as the complete windows': a word that
    // falls at the edge of a pass is not lost (the policy before the anchor lost two).
    assert!(
        live_errors <= complete_errors,
        "live {live_errors} errors, complete windows {complete_errors}"
    );
}
