//! Fuzzing of the model loader: every mangled model directory is answered by `Model::load` with
//! an `Err` that names the file at fault, never a panic; a model that loads also runs.
//!
//! Most cases mutate a miniature CTranslate2 Whisper directory written here (same tensor names,
//! layout and scalars as tiny.en, width 8, 48 kB): truncations, bit flips and overwrites of the
//! tensor table, shapes and scalars that disagree, broken JSON, wrong types in config.json,
//! mangled tokenizer.json and vocabulary.txt. A few hundred more mutate the header of the real
//! tiny.en `model.bin`. Seeded: a failure prints its case number and mutation;
//! `NPUWHISPER_FUZZ_SEED`, `NPUWHISPER_FUZZ_CASES` (12 000) and `NPUWHISPER_FUZZ_REAL_CASES`
//! (300) replay or extend the run, `NPUWHISPER_FUZZ_VERBOSE=1` prints every outcome.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use npuwhisper_core::decoding::{DecodeOptions, Transcriber};
use npuwhisper_core::model::{Model, ModelError, MEL_FRAMES};
use serde_json::{json, Value};

const FILES: [&str; 4] = ["model.bin", "config.json", "tokenizer.json", "vocabulary.txt"];
/// Longest error message accepted: the reason must be readable, not a dump of the file.
const MAX_MESSAGE: usize = 600;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// SplitMix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn value(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

// ---------------------------------------------------------------------------------------------
// A miniature Whisper model, written as CTranslate2 does (/work/shared/docs/ct2-whisper-format.md).

const D: usize = 8;
const N_MELS: usize = 4;
const HEADS: usize = 2;
const ENC_LAYERS: usize = 1;
const DEC_LAYERS: usize = 2;
const TEXT_POSITIONS: usize = 448;
const ENC_POSITIONS: usize = 1500;

#[derive(Clone)]
struct TensorSpec {
    name: String,
    shape: Vec<usize>,
    /// CTranslate2 dtype id: 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16.
    dtype: u8,
    values: Vec<f32>,
}

#[derive(Clone)]
struct Mini {
    version: u32,
    spec: String,
    revision: u32,
    tensors: Vec<TensorSpec>,
    aliases: Vec<(String, String)>,
    vocab: Vec<String>,
    config: Value,
    tokenizer: Value,
}

/// What a byte of `model.bin` is, for aimed mutations.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Field {
    Version,
    Count,
    StrLen,
    StrBytes,
    Rank,
    Dim,
    Dtype,
    NBytes,
    Data,
}

#[derive(Clone, Copy, Debug)]
struct Span {
    at: usize,
    len: usize,
    field: Field,
}

#[derive(Default)]
struct BinWriter {
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

impl BinWriter {
    fn put(&mut self, field: Field, b: &[u8]) {
        self.spans.push(Span {
            at: self.bytes.len(),
            len: b.len(),
            field,
        });
        self.bytes.extend_from_slice(b);
    }
    fn u32(&mut self, field: Field, v: u32) {
        self.put(field, &v.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        let mut raw = s.as_bytes().to_vec();
        raw.push(0);
        self.put(Field::StrLen, &(raw.len() as u16).to_le_bytes());
        self.put(Field::StrBytes, &raw);
    }
}

/// GPT-2's byte → printable character map, as byte-level BPE vocabularies spell bytes.
fn byte_chars() -> Vec<char> {
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if printable {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(c).unwrap()
        })
        .collect()
}

const SPECIALS: [&str; 10] = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
];

fn mini_vocab() -> Vec<String> {
    let mut v: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    v.extend(["Ġthe", "Ġa", "Ġof", "Ġprint", "ing", "ed"].map(String::from));
    v.extend(SPECIALS.map(String::from));
    v.extend((0..=100).map(|i| format!("<|{:.2}|>", i as f64 * 0.02)));
    v
}

fn tensor(name: &str, shape: &[usize], rng: &mut Rng) -> TensorSpec {
    let n = shape.iter().product();
    let values = if name.ends_with("/gamma") {
        vec![1.0; n]
    } else if name.ends_with("/beta") {
        vec![0.0; n]
    } else {
        (0..n).map(|_| rng.value()).collect()
    };
    TensorSpec {
        name: name.into(),
        shape: shape.to_vec(),
        dtype: 4,
        values,
    }
}

fn scalar(name: &str, dtype: u8, v: f32) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        shape: Vec::new(),
        dtype,
        values: vec![v],
    }
}

fn add_block(t: &mut Vec<TensorSpec>, p: &str, cross: bool, rng: &mut Rng) {
    let mut linear = |t: &mut Vec<TensorSpec>, name: &str, out: usize, inp: usize| {
        t.push(tensor(&format!("{p}/{name}/weight"), &[out, inp], rng));
        t.push(tensor(&format!("{p}/{name}/bias"), &[out], rng));
    };
    linear(t, "self_attention/linear_0", 3 * D, D);
    linear(t, "self_attention/linear_1", D, D);
    linear(t, "ffn/linear_0", 4 * D, D);
    linear(t, "ffn/linear_1", D, 4 * D);
    if cross {
        linear(t, "attention/linear_0", D, D);
        linear(t, "attention/linear_1", 2 * D, D);
        linear(t, "attention/linear_2", D, D);
    }
    let norms: &[&str] = if cross {
        &["self_attention", "ffn", "attention"]
    } else {
        &["self_attention", "ffn"]
    };
    for n in norms {
        for g in ["gamma", "beta"] {
            t.push(tensor(&format!("{p}/{n}/layer_norm/{g}"), &[D], rng));
        }
    }
}

impl Mini {
    fn new(rng: &mut Rng) -> Mini {
        let vocab = mini_vocab();
        let mut t = vec![
            scalar("decoder/activation", 1, 3.0),
            scalar("decoder/alibi", 1, 0.0),
            scalar("decoder/alignment_heads", 2, 1.0),
            scalar("decoder/alignment_layer", 2, -1.0),
            tensor("decoder/embeddings/weight", &[vocab.len(), D], rng),
            tensor("decoder/layer_norm/gamma", &[D], rng),
            tensor("decoder/layer_norm/beta", &[D], rng),
            scalar("decoder/num_heads", 2, HEADS as f32),
            tensor("decoder/position_encodings/encodings", &[TEXT_POSITIONS, D], rng),
            scalar("decoder/pre_norm", 1, 1.0),
            scalar("decoder/scale_embeddings", 1, 0.0),
            scalar("decoder/start_from_zero_embedding", 1, 0.0),
            tensor("encoder/conv1/weight", &[D, N_MELS, 3], rng),
            tensor("encoder/conv1/bias", &[D], rng),
            tensor("encoder/conv2/weight", &[D, D, 3], rng),
            tensor("encoder/conv2/bias", &[D], rng),
            tensor("encoder/layer_norm/gamma", &[D], rng),
            tensor("encoder/layer_norm/beta", &[D], rng),
            scalar("encoder/num_heads", 2, HEADS as f32),
            tensor("encoder/position_encodings/encodings", &[ENC_POSITIONS, D], rng),
        ];
        for i in 0..ENC_LAYERS {
            add_block(&mut t, &format!("encoder/layer_{i}"), false, rng);
        }
        for i in 0..DEC_LAYERS {
            add_block(&mut t, &format!("decoder/layer_{i}"), true, rng);
        }
        t.sort_by(|a, b| a.name.cmp(&b.name));

        let id = |s: &str| vocab.iter().position(|v| v == s).unwrap();
        let added: Vec<Value> = SPECIALS
            .iter()
            .map(|s| json!({"id": id(s), "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            .collect();
        let model_vocab: BTreeMap<&str, usize> = vocab.iter().enumerate().map(|(i, v)| (v.as_str(), i)).collect();
        let tokenizer = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "vocab": model_vocab, "merges": []},
        });
        let config = json!({
            "alignment_heads": [[1, 0], [1, 1]],
            "lang_ids": [id("<|en|>"), id("<|de|>")],
            "suppress_ids": [1, 2, 7, 8, 9],
            "suppress_ids_begin": [id("Ġ"), id("<|endoftext|>")],
        });
        Mini {
            version: 6,
            spec: "WhisperSpec".into(),
            revision: 3,
            tensors: t,
            aliases: vec![("decoder/projection/weight".into(), "decoder/embeddings/weight".into())],
            vocab,
            config,
            tokenizer,
        }
    }

    fn find(&mut self, name: &str) -> &mut TensorSpec {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap()
    }

    fn model_bin(&self) -> BinWriter {
        let mut w = BinWriter::default();
        w.u32(Field::Version, self.version);
        if self.version >= 2 {
            w.string(&self.spec);
            w.u32(Field::Count, self.revision);
        }
        w.u32(Field::Count, self.tensors.len() as u32);
        for t in &self.tensors {
            w.string(&t.name);
            w.put(Field::Rank, &[t.shape.len() as u8]);
            for &d in &t.shape {
                w.u32(Field::Dim, d as u32);
            }
            w.put(Field::Dtype, &[t.dtype]);
            let data = encode(t.dtype, &t.values);
            if self.version >= 4 {
                w.u32(Field::NBytes, data.len() as u32);
            }
            w.put(Field::Data, &data);
        }
        if self.version >= 3 {
            w.u32(Field::Count, self.aliases.len() as u32);
            for (a, t) in &self.aliases {
                w.string(a);
                w.string(t);
            }
        }
        w
    }

    fn file(&self, name: &str) -> Vec<u8> {
        match name {
            "model.bin" => self.model_bin().bytes,
            "config.json" => serde_json::to_vec_pretty(&self.config).unwrap(),
            "tokenizer.json" => serde_json::to_vec_pretty(&self.tokenizer).unwrap(),
            "vocabulary.txt" => (self.vocab.join("\n") + "\n").into_bytes(),
            _ => unreachable!(),
        }
    }

    fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for f in FILES {
            std::fs::write(dir.join(f), self.file(f)).unwrap();
        }
    }
}

/// The miniature model and its files, written once.
struct Base {
    mini: Mini,
    bin: BinWriter,
    files: Vec<Vec<u8>>,
}

impl Base {
    fn new() -> Base {
        let mini = Mini::new(&mut Rng(1));
        Base {
            bin: mini.model_bin(),
            files: FILES.iter().map(|f| mini.file(f)).collect(),
            mini,
        }
    }

    fn file(&self, name: &str) -> &[u8] {
        &self.files[FILES.iter().position(|f| *f == name).unwrap()]
    }
}

fn encode(dtype: u8, values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| match dtype {
            0 => v.to_le_bytes().to_vec(),
            1 => vec![v as i8 as u8],
            2 => (v as i16).to_le_bytes().to_vec(),
            3 => (v as i32).to_le_bytes().to_vec(),
            4 => half::f16::from_f32(v).to_le_bytes().to_vec(),
            5 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
            _ => unreachable!(),
        })
        .collect()
}

/// A mutated model directory: what changed, and whether no valid model can survive it.
struct Case {
    desc: String,
    /// The file changed: the error must name it.
    file: &'static str,
    bytes: Vec<u8>,
    /// Another file changed to match, if any.
    also: Option<(&'static str, Vec<u8>)>,
    must_fail: bool,
}

// Mutations of the miniature model's files, then the runner and the tests.
#[path = "fuzz_loader/mutations.rs"]
mod mutations;
#[path = "fuzz_loader/run.rs"]
mod run;
