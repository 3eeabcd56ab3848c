//! Mutations of the miniature model's files. Each returns a description; `must_fail` marks
//! mutations no valid model survives.

use super::*;

pub(crate) fn interesting_u32(orig: u32, file_len: usize, rng: &mut Rng) -> u32 {
    let r = rng.next() as u32;
    *rng.pick(&[
        0,
        1,
        2,
        3,
        255,
        0xFFFF,
        0x7FFF_FFFF,
        0x8000_0000,
        0xFFFF_FFFF,
        orig.wrapping_add(1),
        orig.wrapping_sub(1),
        orig.wrapping_mul(2),
        orig.wrapping_mul(1 << 16),
        file_len as u32,
        r,
        r & 0xFFF,
    ])
}

pub(crate) fn flip_bits(bytes: &mut [u8], positions: impl Fn(&mut Rng) -> usize, n: usize, rng: &mut Rng) -> String {
    let mut at = Vec::new();
    for _ in 0..n {
        let p = positions(rng);
        let bit = rng.below(8);
        bytes[p] ^= 1 << bit;
        at.push(format!("{p}.{bit}"));
    }
    at.join(",")
}

/// Byte-level mutations of `model.bin`: aimed at the tensor table most of the time, else the
/// damage any file gets.
pub(crate) fn mutate_bin_bytes(base: &Base, rng: &mut Rng) -> Case {
    let w = &base.bin;
    if rng.chance(0.3) {
        return mangled(base, "model.bin", rng);
    }
    let mut b = w.bytes.clone();
    let table: Vec<Span> = w.spans.iter().copied().filter(|s| s.field != Field::Data).collect();
    let s = *rng.pick(&table);
    let desc = match rng.below(6) {
        0 => {
            let n = s.at + rng.below(s.len + 1);
            b.truncate(n);
            format!("truncated to {n} bytes, inside {:?} at {}", s.field, s.at)
        }
        1 => {
            let n = 1 + rng.below(4);
            let at = flip_bits(
                &mut b,
                |r| {
                    let s = r.pick(&table);
                    s.at + r.below(s.len)
                },
                n,
                rng,
            );
            format!("table bits flipped at {at}")
        }
        2 => {
            let n = 1 + rng.below(8);
            if rng.chance(0.5) {
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(s.at..s.at, junk);
                format!("{n} bytes inserted before {:?} at {}", s.field, s.at)
            } else {
                b.drain(s.at..(s.at + n).min(b.len()));
                format!("{n} bytes deleted from {:?} at {}", s.field, s.at)
            }
        }
        3 => {
            let n = 1 + rng.below(64);
            b.extend((0..n).map(|_| rng.next() as u8));
            format!("{n} junk bytes appended")
        }
        _ => {
            let orig = &b[s.at..s.at + s.len];
            let new: Vec<u8> = match s.len {
                4 => interesting_u32(u32::from_le_bytes(orig.try_into().unwrap()), b.len(), rng)
                    .to_le_bytes()
                    .to_vec(),
                2 => {
                    let o = u16::from_le_bytes(orig.try_into().unwrap());
                    let r = rng.next() as u16;
                    rng.pick(&[
                        0,
                        1,
                        0xFFFF,
                        0x8000,
                        o.wrapping_add(1),
                        o.wrapping_sub(1),
                        o.wrapping_add(9),
                        r,
                    ])
                    .to_le_bytes()
                    .to_vec()
                }
                1 => {
                    let r = rng.next() as u8;
                    vec![*rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 0x7F, 0x80, 0xFF, orig[0].wrapping_add(1), r])]
                }
                n => {
                    let mut v = orig.to_vec();
                    let i = rng.below(n);
                    let r = rng.next() as u8;
                    v[i] = *rng.pick(&[0, b'/', b'_', b'0', b'1', b'x', 0x80, 0xC3, 0xFF, r]);
                    v
                }
            };
            b[s.at..s.at + s.len].copy_from_slice(&new);
            format!(
                "{:?} at {} overwritten {:02x?} -> {new:02x?}",
                s.field,
                s.at,
                &w.bytes[s.at..s.at + s.len]
            )
        }
    };
    Case {
        also: None,
        desc,
        file: "model.bin",
        bytes: b,
        must_fail: false,
    }
}

pub(crate) fn resize(t: &mut TensorSpec, shape: Vec<usize>, rng: &mut Rng) {
    let n: usize = shape.iter().product();
    t.values = (0..n).map(|_| rng.value()).collect();
    t.shape = shape;
}

/// Well-formed `model.bin` files whose content is wrong: shapes, scalars, names, versions.
pub(crate) fn mutate_bin_meaning(base: &Base, rng: &mut Rng) -> Case {
    let mut m = base.mini.clone();
    let mut must_fail = true;
    let n_tensors = m.tensors.len();
    let desc = match rng.below(14) {
        0 => {
            let i = rng.below(n_tensors);
            let t = m.tensors.remove(i);
            must_fail = false; // flags and biases may be absent
            format!("tensor {} removed", t.name)
        }
        1 => {
            let i = rng.below(n_tensors);
            let mut shape = m.tensors[i].shape.clone();
            let name = m.tensors[i].name.clone();
            match (shape.len(), rng.below(4)) {
                (0, _) => shape.push(1 + rng.below(3)),
                (_, 0) => shape.push(1),
                (_, 1) => {
                    shape.pop();
                }
                (n, 2) => shape.swap(0, n - 1),
                (n, _) => {
                    let k = rng.below(n);
                    shape[k] = *rng.pick(&[0, 1, shape[k] - 1, shape[k] + 1, 2 * shape[k]]);
                }
            }
            must_fail = false; // a swap of equal dims, or a reshaped unused flag, is harmless
            let desc = format!("tensor {name} reshaped {:?} -> {shape:?}", m.tensors[i].shape);
            resize(&mut m.tensors[i], shape, rng);
            desc
        }
        2 => {
            let which = *rng.pick(&["encoder/num_heads", "decoder/num_heads"]);
            let v = *rng.pick(&[0.0, 3.0, 5.0, 16.0, -2.0, 30000.0, 2.5, f32::NAN, 1e30]);
            let dtype = if v.fract() != 0.0 || v.is_nan() || v.abs() > 32767.0 {
                0
            } else {
                *rng.pick(&[0, 2, 3])
            };
            // 2 heads or 1 would still fit a width of 8; the others do not, or disagree.
            m.find(which).values = vec![v];
            m.find(which).dtype = dtype;
            format!("{which} = {v} (dtype {dtype})")
        }
        3 => {
            let rows = *rng.pick(&[0usize, 1, 2, 3]);
            resize(m.find("decoder/position_encodings/encodings"), vec![rows, D], rng);
            format!("decoder positions: {rows} rows")
        }
        4 => {
            let rows = m.vocab.len() + *rng.pick(&[1usize, 2, 100]);
            let rows = if rng.chance(0.5) {
                rows
            } else {
                m.vocab.len() - (rows - m.vocab.len())
            };
            resize(m.find("decoder/embeddings/weight"), vec![rows, D], rng);
            format!("embeddings: {rows} rows for {} tokens", m.vocab.len())
        }
        5 => {
            // Every tensor consistent with another width or mel count.
            let (d, n_mels) = *rng.pick(&[(0usize, N_MELS), (D, 0), (D, 300), (0, 0)]);
            for t in &mut m.tensors {
                let shape: Vec<usize> = t
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(k, &s)| {
                        if s == N_MELS && k == 1 && t.name == "encoder/conv1/weight" {
                            n_mels
                        } else if s % D == 0 && s > 0 && s <= 4 * D {
                            s / D * d
                        } else {
                            s
                        }
                    })
                    .collect();
                let n = shape.iter().product();
                t.values.resize(n, 0.1);
                t.shape = shape;
            }
            format!("model of width {d} with {n_mels} mel bins")
        }
        6 => {
            let i = rng.below(n_tensors);
            let v = *rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
            let t = &mut m.tensors[i];
            must_fail = t.dtype == 0 || t.dtype == 4 || t.dtype == 5;
            let k = rng.below(t.values.len().max(1));
            if let Some(x) = t.values.get_mut(k) {
                *x = v;
            } else {
                must_fail = false;
            }
            format!("{} [{k}] = {v}", t.name)
        }
        7 => {
            let i = rng.below(n_tensors);
            let dtype = rng.below(6) as u8;
            let t = &mut m.tensors[i];
            must_fail = false;
            if dtype != 0 && dtype != 4 && dtype != 5 {
                for v in &mut t.values {
                    *v = (*v * 4.0).round();
                }
            }
            t.dtype = dtype;
            format!("{} stored as dtype {dtype}", t.name)
        }
        8 => {
            // A layer that is there only in part.
            let (p, i) = *rng.pick(&[
                ("encoder", ENC_LAYERS),
                ("decoder", DEC_LAYERS),
                ("decoder", DEC_LAYERS + 3),
            ]);
            let name = format!("{p}/layer_{i}/ffn/layer_norm/gamma");
            m.tensors.push(TensorSpec {
                name: name.clone(),
                shape: vec![D],
                dtype: 4,
                values: vec![1.0; D],
            });
            format!("stray {name}")
        }
        9 => {
            // Aliases: to nothing, in a cycle, or standing in for a tensor that is gone.
            match rng.below(3) {
                0 => {
                    m.aliases
                        .push(("decoder/projection/weight".into(), "nothing/here".into()));
                    must_fail = false;
                    "alias to a missing tensor".into()
                }
                1 => {
                    m.tensors.retain(|t| t.name != "decoder/embeddings/weight");
                    m.aliases = vec![
                        ("decoder/embeddings/weight".into(), "decoder/projection/weight".into()),
                        ("decoder/projection/weight".into(), "decoder/embeddings/weight".into()),
                    ];
                    "embeddings only as an alias cycle".into()
                }
                _ => {
                    m.tensors.retain(|t| t.name != "encoder/conv2/weight");
                    m.aliases
                        .push(("encoder/conv2/weight".into(), "encoder/conv1/weight".into()));
                    "conv2 aliased to conv1".into()
                }
            }
        }
        10 => {
            // A second entry of the same name: the last one wins, and it must fit.
            let i = rng.below(n_tensors);
            let mut t = m.tensors[i].clone();
            let shape = if t.shape.is_empty() {
                vec![2]
            } else {
                t.shape.iter().map(|&s| s + 1).collect()
            };
            let name = t.name.clone();
            resize(&mut t, shape, rng);
            m.tensors.push(t);
            must_fail = !name.contains("alibi")
                && !name.contains("alignment")
                && !name.contains("activation")
                && !name.contains("pre_norm")
                && !name.contains("scale_emb")
                && !name.contains("start_from");
            format!("{name} repeated with a bigger shape")
        }
        11 => {
            m.spec = rng
                .pick(&["TransformerSpec", "", "WhisperSpecX", "Whisper"])
                .to_string();
            must_fail = !m.spec.is_empty();
            format!("spec name {:?}", m.spec)
        }
        12 => {
            m.version = *rng.pick(&[0, 1, 2, 3, 4, 5, 7, 100, u32::MAX]);
            must_fail = !(1..=6).contains(&m.version);
            format!("written as binary version {}", m.version)
        }
        _ => {
            let name = *rng.pick(&[
                "encoder/conv1/weight",
                "decoder/embeddings/weight",
                "encoder/position_encodings/encodings",
            ]);
            let t = m.find(name);
            let big = vec![t.shape[0], t.shape[1] * 2];
            resize(t, big, rng);
            format!("{name} has a doubled last dimension")
        }
    };
    Case {
        also: None,
        desc,
        file: "model.bin",
        bytes: m.file("model.bin"),
        must_fail,
    }
}

/// Byte-level damage to a text file.
pub(crate) fn mangle_text(bytes: &[u8], rng: &mut Rng) -> (String, Vec<u8>) {
    let mut b = bytes.to_vec();
    let len = b.len();
    let desc = match rng.below(6) {
        0 => {
            let n = rng.below(len);
            b.truncate(n);
            format!("truncated to {n} bytes")
        }
        1 => {
            let n = 1 + rng.below(6);
            format!("bits flipped at {}", flip_bits(&mut b, |r| r.below(len), n, rng))
        }
        2 => {
            let at = rng.below(len);
            let c = *rng.pick(&[
                b'{', b'}', b'[', b']', b'"', b'\\', b',', b':', b'\n', 0, 0xFF, 0xC3, b'-', b'9',
            ]);
            b[at] = c;
            format!("byte {at} = {c:#04x}")
        }
        3 => {
            let at = rng.below(len);
            let n = 1 + rng.below(32);
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            b.splice(at..at, junk);
            format!("{n} random bytes inserted at {at}")
        }
        4 => {
            let n = rng.below(4096);
            b = (0..n).map(|_| rng.next() as u8).collect();
            format!("{n} bytes of garbage")
        }
        _ => {
            let at = rng.below(len);
            let n = (1 + rng.below(64)).min(len - at);
            b.drain(at..at + n);
            format!("{n} bytes deleted at {at}")
        }
    };
    (desc, b)
}

pub(crate) fn mangled(base: &Base, file: &'static str, rng: &mut Rng) -> Case {
    let (desc, bytes) = mangle_text(base.file(file), rng);
    Case {
        also: None,
        desc,
        file,
        bytes,
        must_fail: false,
    }
}

pub(crate) fn odd_json(rng: &mut Rng) -> Value {
    rng.pick(&[
        json!(null),
        json!("string"),
        json!(5),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(true),
        json!({}),
        json!([]),
        json!([[0]]),
        json!([[0, 0, 0]]),
        json!([[-1, 0]]),
        json!([[0, 99]]),
        json!([[99, 0]]),
        json!([[1, 2]]),
        json!([["a", 0]]),
        json!([[0.5, 1]]),
        json!([-1]),
        json!([4294967296u64]),
        json!([99999]),
        json!([373]),
        json!([372]),
        json!(["x"]),
        json!([[1]]),
        json!([null]),
    ])
    .clone()
}

pub(crate) fn mutate_config(base: &Base, rng: &mut Rng) -> Case {
    let mini = &base.mini;
    let file = "config.json";
    if rng.chance(0.4) {
        return mangled(base, file, rng);
    }
    let mut c = mini.config.clone();
    let desc = match rng.below(5) {
        0 => {
            c = rng
                .pick(&[
                    json!([]),
                    json!(1),
                    json!("config"),
                    json!(null),
                    json!([{"alignment_heads": []}]),
                ])
                .clone();
            format!("config is {c}")
        }
        1 => {
            let depth = *rng.pick(&[200usize, 5000, 100_000]);
            let text = "[".repeat(depth) + &"]".repeat(depth);
            return Case {
                also: None,
                desc: format!("nested {depth} deep"),
                file,
                bytes: format!("{{\"alignment_heads\": {text}}}").into_bytes(),
                must_fail: true,
            };
        }
        _ => {
            let key = *rng.pick(&["alignment_heads", "suppress_ids", "suppress_ids_begin", "lang_ids"]);
            let v = odd_json(rng);
            c[key] = v.clone();
            format!("{key} = {v}")
        }
    };
    // Which of these are valid is for the loader to say; a loaded model runs.
    Case {
        also: None,
        desc,
        file,
        bytes: serde_json::to_vec(&c).unwrap(),
        must_fail: false,
    }
}

pub(crate) fn mutate_tokenizer(base: &Base, rng: &mut Rng) -> Case {
    let mini = &base.mini;
    let file = "tokenizer.json";
    if rng.chance(0.5) {
        return mangled(base, file, rng);
    }
    let mut t = mini.tokenizer.clone();
    let n = t["added_tokens"].as_array().unwrap().len();
    let i = rng.below(n);
    let mut must_fail = true;
    let desc = match rng.below(7) {
        0 => {
            t.as_object_mut().unwrap().remove("model");
            "no model".into()
        }
        1 => {
            t["model"] = odd_json(rng);
            must_fail = !t["model"].is_object();
            format!("model = {}", t["model"])
        }
        2 => {
            let id = t["added_tokens"][i]["id"].as_u64().unwrap();
            let new = *rng.pick(&[id + 1, id - 1, 0, 372, 373, u32::MAX as u64]);
            t["added_tokens"][i]["id"] = json!(new);
            format!("added token {i} id {id} -> {new}")
        }
        3 => {
            t["added_tokens"][i]["id"] = odd_json(rng);
            must_fail = false; // may still be a valid id
            format!("added token {i} id = {}", t["added_tokens"][i]["id"])
        }
        4 => {
            t["added_tokens"][i]["content"] = json!(rng.pick(&["<|nothing|>", "", "\u{0}", "Ġthe"]));
            format!("added token {i} content = {}", t["added_tokens"][i]["content"])
        }
        5 => {
            t["added_tokens"] = odd_json(rng);
            must_fail = false; // [] is valid
            format!("added_tokens = {}", t["added_tokens"])
        }
        _ => {
            t = odd_json(rng);
            format!("tokenizer is {t}")
        }
    };
    Case {
        also: None,
        desc,
        file,
        bytes: serde_json::to_vec(&t).unwrap(),
        must_fail,
    }
}

pub(crate) fn mutate_vocab(base: &Base, rng: &mut Rng) -> Case {
    let mini = &base.mini;
    let file = "vocabulary.txt";
    if rng.chance(0.4) {
        return mangled(base, file, rng);
    }
    let mut v = mini.vocab.clone();
    let n = v.len();
    let (i, j) = (rng.below(n), rng.below(n));
    let specials = 262..n;
    let mut must_fail = true;
    let desc = match rng.below(8) {
        0 => {
            v.remove(i);
            format!("line {i} removed")
        }
        1 => {
            v.swap(i, j);
            must_fail = false; // swapping plain tokens is only a different vocabulary
            format!("lines {i} and {j} swapped")
        }
        2 => {
            // tokenizer.json follows, so only the order of the special tokens is wrong.
            let (a, b) = (rng.below(10) + 262, rng.below(111) + 262);
            v.swap(a, b);
            // Moving <|endoftext|> or a timestamp breaks Whisper's order; some other swaps do not.
            must_fail = a != b && (a == 262 || b == 262 || b >= 272);
            let mut t = mini.tokenizer.clone();
            for added in t["added_tokens"].as_array_mut().unwrap() {
                let content = added["content"].as_str().unwrap().to_string();
                added["id"] = json!(v.iter().position(|x| *x == content).unwrap());
            }
            let mut bytes = v.join("\n").into_bytes();
            bytes.push(b'\n');
            let desc = format!("special lines {a} and {b} swapped, tokenizer.json alike");
            return Case {
                also: Some(("tokenizer.json", serde_json::to_vec(&t).unwrap())),
                desc,
                file,
                bytes,
                must_fail,
            };
        }
        3 => {
            v[i] = rng.pick(&["a b", "中", "\t", "x\u{7f}", "<|", "|>"]).to_string();
            must_fail = !matches!(v[i].as_str(), "<|" | "|>");
            format!("line {i} = {:?}", v[i])
        }
        4 => {
            let k = rng.below(n);
            v.truncate(k);
            format!("only the first {k} lines")
        }
        5 => {
            let s = v[rng.below(specials.len()) + specials.start].clone();
            v[i] = s.clone();
            must_fail = false; // the first occurrence keeps its id
            format!("line {i} = {s}")
        }
        6 => {
            let mut bytes = base.file(file).to_vec();
            let at = rng.below(bytes.len());
            bytes.insert(at, *rng.pick(&[0xFF, 0xC3, 0x80, 0xFE]));
            return Case {
                also: None,
                desc: format!("invalid UTF-8 at {at}"),
                file,
                bytes,
                must_fail: true,
            };
        }
        _ => {
            let crlf = v.join("\r\n") + "\r\n";
            return Case {
                also: None,
                desc: "CRLF line ends".into(),
                file,
                bytes: crlf.into_bytes(),
                must_fail: false,
            };
        }
    };
    let mut bytes = v.join("\n").into_bytes();
    bytes.push(b'\n');
    Case {
        also: None,
        desc,
        file,
        bytes,
        must_fail,
    }
}
