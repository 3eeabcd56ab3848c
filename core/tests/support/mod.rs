//! Where the tests' assets are, without GStreamer: the eval audio in `../shared`, the models,
//! the reference Python, reading WAVs, and the rule for a test whose assets are missing.
//! Core's tests and examples include it; the plugin's `tests/common` re-exports it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// What a test needs beyond the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// tiny.en and base, Silero VAD and ONNX Runtime (scripts/fetch-models.sh).
    Models,
    /// The eval audio in ../shared/eval/public.
    Shared,
    /// The reference Python in .venv (scripts/setup-reference.sh).
    Venv,
}

/// Whether what a test needs is here. Plain `cargo test` on a bare clone skips a test whose
/// assets are missing, saying what is missing on stderr (past the output capture); with
/// `NPUWHISPER_TESTS_REQUIRE_ALL=1` (CI, and the README's command after the set-up) a missing
/// asset fails the test instead.
pub fn require(needs: &[Need]) -> bool {
    let mut missing = Vec::new();
    for need in needs {
        match need {
            Need::Models => {
                let dir = npuwhisper_core::model::models_dir();
                let files = [
                    dir.join("tiny.en/model.bin"),
                    dir.join("base/model.bin"),
                    npuwhisper_core::audio::vad::default_model_path(),
                    npuwhisper_core::runtime::library_path(),
                ];
                if let Some(f) = files.iter().find(|f| !f.is_file()) {
                    missing.push(format!("{} (run scripts/fetch-models.sh)", f.display()));
                }
            }
            Need::Shared => {
                let dir = shared_eval_dir();
                if !dir.is_dir() {
                    missing.push(format!("{} (the shared eval audio beside the checkout)", dir.display()));
                }
            }
            Need::Venv => {
                let py = reference_python_path();
                if !py.is_file() {
                    missing.push(format!("{} (run scripts/setup-reference.sh)", py.display()));
                }
            }
        }
    }
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(", ");
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    if std::env::var_os("NPUWHISPER_TESTS_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{test} needs {what} (NPUWHISPER_TESTS_REQUIRE_ALL=1 makes a skip a failure)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: missing {what}");
    false
}

/// The workspace root, whichever of its crates (the plugin, core, interop) includes this.
pub fn repo() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if dir.ends_with("interop") || dir.ends_with("core") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir
    }
}

/// `../shared/eval/public` beside the checkout (or `$NPUWHISPER_SHARED_DIR/eval/public`).
fn shared_eval_dir() -> PathBuf {
    let shared = std::env::var_os("NPUWHISPER_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared"));
    shared.join("eval/public")
}

pub fn eval_dir() -> PathBuf {
    let dir = shared_eval_dir();
    assert!(
        dir.is_dir(),
        "{} is missing: the tests read the shared eval audio from there",
        dir.display()
    );
    dir
}

pub fn eval_file(name: &str) -> PathBuf {
    eval_dir().join(name)
}

/// A model fetched by `scripts/fetch-models.sh`.
pub fn model_dir(name: &str) -> PathBuf {
    let dir = npuwhisper_core::model::resolve_model_path(name);
    assert!(
        dir.join("model.bin").is_file(),
        "{} has no model.bin: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

/// The Python with faster-whisper made by `scripts/setup-reference.sh`.
fn reference_python_path() -> PathBuf {
    std::env::var_os("NPUWHISPER_REFERENCE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

pub fn reference_python() -> PathBuf {
    let py = reference_python_path();
    assert!(
        py.is_file(),
        "{} is missing: run scripts/setup-reference.sh",
        py.display()
    );
    py
}

/// Samples of a 16-bit mono WAV as f32 in [-1, 1).
pub fn read_wav(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut pos = 12;
    while pos + 8 <= b.len() {
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if &b[pos..pos + 4] == b"data" {
            let end = (pos + 8 + len).min(b.len());
            return b[pos + 8..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
                .collect();
        }
        pos += 8 + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// A fresh directory under the system's temporary one, unique to this process and call.
pub fn tempfile_dir() -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("npuwhisper-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A transcript set's score after Whisper's English normaliser (tests/reference/score_wer.py).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Corpus WER in percent.
    pub wer: f64,
    pub errors: usize,
    pub words: usize,
}

/// Scores `pairs` (reference, hypothesis) with the reference Python.
pub fn score(pairs: &[(String, String)]) -> Score {
    let dir = tempfile_dir();
    let json = dir.join("pairs.json");
    let items: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(r, h)| serde_json::json!({"ref": r, "hyp": h}))
        .collect();
    std::fs::write(&json, serde_json::to_string(&items).unwrap()).unwrap();
    let out = std::process::Command::new(reference_python())
        .arg(repo().join("tests/reference/score_wer.py"))
        .arg("--counts")
        .arg(&json)
        .output()
        .expect("reference python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "score_wer.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "WER 2.2785 ERRORS 9 WORDS 395"
    match text.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["WER", wer, "ERRORS", errors, "WORDS", words] => Score {
            wer: wer.parse().unwrap(),
            errors: errors.parse().unwrap(),
            words: words.parse().unwrap(),
        },
        _ => panic!("score_wer.py said {text:?}"),
    }
}
