//! The weight cache: an INT8 load writes the weights it makes to a cache file that later loads
//! map instead, with the same results bit for bit; a changed model, or a corrupt or truncated
//! cache, is noticed and the cache rebuilt (never a crash); two processes share its pages.
//! On a random-weight model with tiny.en's vocabulary (written here, 7 MB).

mod common;
mod fixtures;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fixtures::FixtureDims;
use npuwhisper_core::model::{CacheOutcome, Model, Precision, WeightCache, MEL_FRAMES};

const DIMS: FixtureDims = FixtureDims {
    name: "cache-test",
    n_mels: 80,
    d_model: 64,
    n_heads: 4,
    encoder_layers: 2,
    decoder_layers: 2,
    text_positions: 448,
};

/// A test's temporary directory, removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fixture model in a fresh directory, and a directory for its cache; both go with the guard.
fn fixture(tag: &str, seed: u64) -> (PathBuf, PathBuf, TempDir) {
    let root = common::tempfile_dir().join(tag);
    let model = root.join("model");
    fixtures::write_model(&model, &DIMS, &common::model_dir("tiny.en"), seed);
    (model, root.join("cache"), TempDir(root))
}

fn load(model: &Path, policy: &WeightCache) -> Model {
    Model::load_cached(model, Precision::Int8, policy).unwrap_or_else(|e| panic!("{e}"))
}

/// What the model computes: encoder states of a fixed log-mel, and the logits of three tokens
/// decoded over them. Equal outputs mean equal weights (every array takes part).
fn outputs(m: &Model) -> (Vec<f32>, Vec<f32>) {
    let mel: Vec<f32> = (0..m.n_mels() * MEL_FRAMES)
        .map(|i| ((i % 977) as f32 * 0.37).sin())
        .collect();
    let states = m.encode_batch(&[&mel]).unwrap().remove(0);
    let cross = m.cross_cache(&states).unwrap();
    let mut seq = m.sequence(&cross).unwrap();
    let tokens = [m.tokenizer.sot, 50, 100];
    let logits = m.step(&mut seq, &tokens, &[0, 1, 2]).unwrap();
    (states, logits)
}

fn mapped_path(m: &Model) -> PathBuf {
    match &m.weight_cache {
        CacheOutcome::Mapped(path) => path.clone(),
        other => panic!("expected the weights mapped from the cache, got {other:?}"),
    }
}

/// The model was made from model.bin and written to a cache; returns the note.
fn built_note(m: &Model) -> String {
    match &m.weight_cache {
        CacheOutcome::Built { path: Some(_), note } => note.clone(),
        other => panic!("expected a new cache written, got {other:?}"),
    }
}

#[test]
fn second_load_maps_the_cache_with_the_same_results() {
    let (model, cache_dir, _dir) = fixture("same", 1);
    let policy = WeightCache::In(cache_dir.clone());
    let reference = load(&model, &WeightCache::Off);
    assert_eq!(reference.weight_cache, CacheOutcome::Unused);
    let first = load(&model, &policy);
    assert_eq!(built_note(&first), "", "a first load has nothing to say");
    let second = load(&model, &policy);
    let path = mapped_path(&second);
    assert!(
        path.starts_with(&cache_dir),
        "{} is not in {}",
        path.display(),
        cache_dir.display()
    );
    let expected = outputs(&reference);
    assert!(
        outputs(&first) == expected,
        "the load that wrote the cache computes differently"
    );
    assert!(outputs(&second) == expected, "the mapped weights compute differently");
    // No temporary files left beside it.
    let files: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // f32 loads neither read nor write it.
    let f32_model = Model::load_cached(&model, Precision::F32, &policy).unwrap();
    assert_eq!(f32_model.weight_cache, CacheOutcome::Unused);
}

#[test]
fn cache_beside_the_model_by_default() {
    let (model, _, _dir) = fixture("beside", 2);
    let first = load(&model, &WeightCache::Beside);
    built_note(&first);
    let path = mapped_path(&load(&model, &WeightCache::Beside));
    assert_eq!(path, model.canonicalize().unwrap().join("npuwhisper-int8.cache"));
}

#[test]
fn changed_model_rebuilds_the_cache() {
    let (model, cache_dir, _dir) = fixture("changed", 3);
    let policy = WeightCache::In(cache_dir);
    built_note(&load(&model, &policy));
    let old = outputs(&load(&model, &policy));
    // Other weights, same size: only the content tells.
    fixtures::write_model(&model, &DIMS, &common::model_dir("tiny.en"), 4);
    let changed = load(&model, &policy);
    let note = built_note(&changed);
    assert!(note.contains("model changed"), "{note}");
    let new = outputs(&changed);
    assert!(new != old, "the rebuilt model computes as the old one");
    assert!(
        new == outputs(&load(&model, &WeightCache::Off)),
        "the rebuilt cache differs from the new model"
    );
    mapped_path(&load(&model, &policy));
}

#[test]
fn corrupt_or_truncated_cache_is_rebuilt() {
    let (model, cache_dir, _dir) = fixture("corrupt", 5);
    let policy = WeightCache::In(cache_dir);
    built_note(&load(&model, &policy));
    let good_model = load(&model, &policy);
    let path = mapped_path(&good_model);
    let expected = outputs(&good_model);
    drop(good_model);
    let good = std::fs::read(&path).unwrap();
    let flip = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x10;
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated to 10 bytes", good[..10].to_vec()),
        ("truncated to half", good[..good.len() / 2].to_vec()),
        ("last byte missing", good[..good.len() - 1].to_vec()),
        ("byte flipped in the weights", flip(good.len() / 2)),
        ("byte flipped in the index", flip(good.len() - 20)),
        ("byte flipped in the magic", flip(0)),
        ("other format version", flip(8)),
        ("length field changed", flip(16)),
        ("garbage", (0..good.len()).map(|i| (i * 7919 % 251) as u8).collect()),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let m = Model::load_cached(&model, Precision::Int8, &policy)
            .unwrap_or_else(|e| panic!("{what}: the load failed: {e}"));
        let note = built_note(&m);
        assert!(note.contains("not used"), "{what}: {note}");
        println!("{what}: {note}");
        assert!(
            outputs(&m) == expected,
            "{what}: the rebuilt model computes differently"
        );
        assert_eq!(
            mapped_path(&load(&model, &policy)),
            path,
            "{what}: the cache was not rebuilt"
        );
    }
}

/// Bytes of `path` that process `pid` maps (Rss) and that are also mapped by another process
/// (Shared_Clean + Shared_Dirty), from /proc/PID/smaps.
fn mapped_bytes(pid: u32, path: &Path) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut rss, mut shared, mut inside) = (0, 0, false);
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.trim_end().ends_with(path.to_str().unwrap());
        } else if inside {
            let kb: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match first {
                "Rss:" => rss += kb * 1024,
                "Shared_Clean:" | "Shared_Dirty:" => shared += kb * 1024,
                _ => {}
            }
        }
    }
    (rss, shared)
}

#[test]
fn two_processes_share_the_cache() {
    let (model, cache_dir, _dir) = fixture("shared", 6);
    let policy = WeightCache::In(cache_dir.clone());
    built_note(&load(&model, &policy));
    let path = mapped_path(&load(&model, &policy));
    let size = std::fs::metadata(&path).unwrap().len();
    let spawn = || {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_holds_the_model",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(
                "NPUWHISPER_CACHE_TEST_CHILD",
                format!("{}\n{}", model.display(), cache_dir.display()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("holding: ") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the child ended before loading");
        }
        assert!(line.contains("mapped"), "child: {line}");
        (child, out)
    };
    let mut children = [spawn(), spawn()];
    for (child, _) in &children {
        let (rss, shared) = mapped_bytes(child.id(), &path);
        println!(
            "child {}: maps {rss} bytes of the {size}-byte cache, {shared} shared",
            child.id()
        );
        assert!(rss * 10 >= size * 9, "the child maps {rss} of {size} bytes");
        assert!(shared * 10 >= size * 9, "only {shared} of {size} bytes are shared");
    }
    for (child, _) in &mut children {
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    }
}

/// Helper process of `two_processes_share_the_cache`: loads the model, computes once, says so,
/// and holds it until its standard input closes.
#[test]
#[ignore = "a helper process that two_processes_share_the_cache starts"]
fn child_holds_the_model() {
    let Ok(spec) = std::env::var("NPUWHISPER_CACHE_TEST_CHILD") else {
        return;
    };
    let (model, cache_dir) = spec.split_once('\n').unwrap();
    let m = load(Path::new(model), &WeightCache::In(PathBuf::from(cache_dir)));
    outputs(&m);
    let what = if matches!(m.weight_cache, CacheOutcome::Mapped(_)) {
        "mapped"
    } else {
        "not mapped"
    };
    println!("holding: {what}");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_line(&mut String::new());
}
