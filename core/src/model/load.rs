//! Loading a CTranslate2 Whisper directory: the text files, `model.bin`'s tensors (converted
//! and quantized one at a time, or mapped from the weight cache), the architecture read off
//! the tensors, and the CPU backend built from them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::f16;
use npuwhisper_kernels::qgemm::QuantizedWeights;
use npuwhisper_kernels::store::Store;

use super::layers::{LayerNorm, Linear};
use super::registry::return_large_buffers_to_the_system;
use super::tokenizer::Tokenizer;
use super::{cache, ct2, decoder, encoder, CacheOutcome, Config, Dims, Model, ModelError, Precision, WeightCache};
use super::{MAX_D_MODEL, MAX_N_MELS};
use crate::backend::cpu::CpuBackend;

/// Fewest decoder positions accepted: a start-of-transcript sequence and some text, half of
/// which is kept as the next window's prompt.
const MIN_TEXT_POSITIONS: usize = 8;

/// Reads tensors out of `model.bin` as the model is built, each converted (and, in INT8,
/// quantized) on its own, with errors that name the tensor. In INT8 the arrays come instead
/// from a mapped weight cache, or are written to a new one as they are made.
pub(crate) struct Weights {
    bin: ct2::ModelBin,
    /// Tensors read so far (by their own name, not an alias): each is read once.
    taken: std::cell::RefCell<std::collections::HashSet<String>>,
    pub precision: Precision,
    cache: Option<cache::Cache>,
    writer: Option<std::cell::RefCell<cache::Writer>>,
}

impl Weights {
    /// The tensor of `name` (or the alias `name`), checked to have `shape`, marked as read.
    fn take(&self, name: &str, shape: &[usize]) -> Result<(&str, &ct2::Tensor), String> {
        let (target, t) = self
            .bin
            .resolve(name)
            .ok_or_else(|| format!("tensor {name} is missing"))?;
        if t.shape != shape {
            return Err(format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape));
        }
        if !self.taken.borrow_mut().insert(target.to_string()) {
            return Err(format!("tensor {name} is used twice"));
        }
        Ok((target, t))
    }

    /// A tensor's values as f32; a tensor is read once.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Store<f32>, String> {
        let (target, t) = self.take(name, shape)?;
        if let Some(cache) = &self.cache {
            return cache.f32(target, t.len());
        }
        let v = Store::from(self.bin.read(name, t)?);
        if let Some(w) = &self.writer {
            w.borrow_mut().f32(target, &v);
        }
        Ok(v)
    }

    /// A `[n_out, k]` matrix quantized per row straight from the file, a block of rows at a
    /// time: its f32 form never exists whole.
    pub fn quantized(&self, name: &str, n_out: usize, k: usize) -> Result<QuantizedWeights, String> {
        let (target, t) = self.take(name, &[n_out, k])?;
        if let Some(cache) = &self.cache {
            return cache.int8(target, n_out, k);
        }
        let q = self.quantize(name, t, n_out, k, |_| {})?;
        if let Some(w) = &self.writer {
            w.borrow_mut().int8(target, &q);
        }
        Ok(q)
    }

    /// [`quantized`](Self::quantized), and the matrix in f16 beside it.
    pub fn quantized_and_f16(
        &self,
        name: &str,
        n_out: usize,
        k: usize,
    ) -> Result<(QuantizedWeights, Store<f16>), String> {
        let (target, t) = self.take(name, &[n_out, k])?;
        if let Some(cache) = &self.cache {
            return Ok((cache.int8(target, n_out, k)?, cache.f16(target, n_out * k)?));
        }
        let mut half = Vec::with_capacity(n_out * k);
        let q = self.quantize(name, t, n_out, k, |rows| {
            half.extend(rows.iter().map(|&v| f16::from_f32(v)))
        })?;
        let half = Store::from(half);
        if let Some(w) = &self.writer {
            let mut w = w.borrow_mut();
            w.int8(target, &q);
            w.f16(target, &half);
        }
        Ok((q, half))
    }

    /// Quantizes `t` from the file, handing each block of f32 rows, in order, to `also`.
    fn quantize(
        &self,
        name: &str,
        t: &ct2::Tensor,
        n_out: usize,
        k: usize,
        mut also: impl FnMut(&[f32]),
    ) -> Result<QuantizedWeights, String> {
        let mut err = Ok(());
        let q = QuantizedWeights::quantize_with(n_out, k, |r0, rows| {
            if err.is_ok() {
                err = self.bin.read_into(name, t, r0 * k, rows);
            }
            also(rows);
        });
        err.map(|()| q)
    }

    pub fn shape(&self, name: &str) -> Result<Vec<usize>, String> {
        self.bin
            .get(name)
            .map(|t| t.shape.clone())
            .ok_or_else(|| format!("tensor {name} is missing"))
    }

    pub fn scalar(&self, name: &str) -> Result<f32, String> {
        let t = self.bin.get(name).ok_or_else(|| format!("tensor {name} is missing"))?;
        if t.len() != 1 {
            return Err(format!("tensor {name} is not a scalar"));
        }
        Ok(self.bin.read(name, t)?[0])
    }

    pub fn has(&self, name: &str) -> bool {
        self.bin.get(name).is_some()
    }

    /// Checks the tensors the model did not use as the used ones were checked (finite values),
    /// so that what a file may hold does not depend on which tensors a model reads.
    fn check_unread(&self) -> Result<(), String> {
        let taken = self.taken.borrow();
        let mut buf = Vec::new();
        for (name, t) in self.bin.tensors.iter().filter(|(n, _)| !taken.contains(n.as_str())) {
            for start in (0..t.len()).step_by(1 << 16) {
                buf.resize((t.len() - start).min(1 << 16), 0.0);
                self.bin.read_into(name, t, start, &mut buf)?;
            }
        }
        Ok(())
    }

    /// A linear layer, INT8 if `quantize` and the model is loaded in INT8.
    pub fn linear(&self, prefix: &str, n_out: usize, n_in: usize, quantize: bool) -> Result<Linear, String> {
        let name = format!("{prefix}/weight");
        let b = |w: &Self| -> Result<_, String> {
            if w.has(&format!("{prefix}/bias")) {
                Ok(Some(w.tensor(&format!("{prefix}/bias"), &[n_out])?))
            } else {
                Ok(None)
            }
        };
        if quantize && self.precision == Precision::Int8 {
            let q = self.quantized(&name, n_out, n_in)?;
            Ok(Linear::new_quantized(q, b(self)?))
        } else {
            let w = self.tensor(&name, &[n_out, n_in])?;
            Ok(Linear::new(w, b(self)?, n_out, n_in))
        }
    }

    pub fn layer_norm(&self, prefix: &str, d: usize) -> Result<LayerNorm, String> {
        Ok(LayerNorm {
            gamma: self.tensor(&format!("{prefix}/gamma"), &[d])?,
            beta: self.tensor(&format!("{prefix}/beta"), &[d])?,
        })
    }

    fn count_layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| self.has(&format!("{prefix}/layer_{i}/ffn/layer_norm/gamma")))
            .count()
    }

    /// A tensor of `prefix/layer_N` with N ≥ `n_layers`: left of a layer that is incomplete.
    fn stray_layer_tensor(&self, prefix: &str, n_layers: usize) -> Option<String> {
        let layer_prefix = format!("{prefix}/layer_");
        self.bin.names().find_map(|name| {
            let i: usize = name.strip_prefix(&layer_prefix)?.split('/').next()?.parse().ok()?;
            (i >= n_layers).then(|| {
                format!("tensor {name} is of a layer after {prefix}/layer_{n_layers}, which is missing or incomplete")
            })
        })
    }

    /// A head count scalar: a whole number from 1 to the widest model.
    fn head_count(&self, name: &str) -> Result<usize, String> {
        let v = self.scalar(name)?;
        if !(v >= 1.0 && v <= MAX_D_MODEL as f32 && v.fract() == 0.0) {
            return Err(format!("{name} is {v}, not a number of heads"));
        }
        Ok(v as usize)
    }
}

fn derive_dims(w: &Weights, vocab_size: usize) -> Result<Dims, String> {
    let conv1 = w.shape("encoder/conv1/weight")?;
    if conv1.len() != 3 || conv1[2] != 3 {
        return Err(format!(
            "encoder/conv1/weight has shape {conv1:?}, expected [d, n_mels, 3]"
        ));
    }
    let (d_model, n_mels) = (conv1[0], conv1[1]);
    // Zero sizes would be empty chunks in the forward pass; the caps carry at most these.
    if !(1..=MAX_D_MODEL).contains(&d_model) || !(1..=MAX_N_MELS).contains(&n_mels) {
        return Err(format!(
            "encoder/conv1/weight has shape {conv1:?}: width must be 1 to {MAX_D_MODEL} and mel bins 1 to {MAX_N_MELS}"
        ));
    }
    let emb = w.shape("decoder/embeddings/weight")?;
    let pos = w.shape("decoder/position_encodings/encodings")?;
    if emb.len() != 2 || pos.len() != 2 {
        return Err("decoder embeddings are not matrices".into());
    }
    let n_heads = w.head_count("encoder/num_heads")?;
    if d_model % n_heads != 0 {
        return Err(format!("encoder/num_heads {n_heads} does not divide width {d_model}"));
    }
    // One head count serves both stacks.
    if w.has("decoder/num_heads") {
        let dec_heads = w.head_count("decoder/num_heads")?;
        if dec_heads != n_heads {
            return Err(format!(
                "decoder/num_heads {dec_heads} differs from encoder/num_heads {n_heads}"
            ));
        }
    }
    let dims = Dims {
        n_mels,
        d_model,
        n_heads,
        encoder_layers: w.count_layers("encoder"),
        decoder_layers: w.count_layers("decoder"),
        vocab_size: emb[0],
        max_text_positions: pos[0],
    };
    if dims.encoder_layers == 0 || dims.decoder_layers == 0 {
        return Err("no encoder or decoder layers found".into());
    }
    for (prefix, n) in [("encoder", dims.encoder_layers), ("decoder", dims.decoder_layers)] {
        if let Some(e) = w.stray_layer_tensor(prefix, n) {
            return Err(e);
        }
    }
    if dims.max_text_positions < MIN_TEXT_POSITIONS {
        return Err(format!(
            "decoder/position_encodings/encodings has {} positions, fewer than the {MIN_TEXT_POSITIONS} decoding needs",
            dims.max_text_positions
        ));
    }
    if dims.vocab_size != vocab_size {
        return Err(format!(
            "the embeddings have {} rows but vocabulary.txt has {vocab_size} tokens (files of different models?)",
            dims.vocab_size
        ));
    }
    Ok(dims)
}

fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|e| ModelError {
        file: path.to_path_buf(),
        reason: format!("cannot read: {e}"),
    })
}

fn parse_config(bytes: &[u8]) -> Result<Config, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let ids = |key: &str| -> Result<Vec<u32>, String> {
        match v.get(key) {
            None => Ok(Vec::new()),
            Some(a) => serde_json::from_value(a.clone()).map_err(|e| format!("{key}: {e}")),
        }
    };
    let heads: Vec<(usize, usize)> = match v.get("alignment_heads") {
        None => Vec::new(),
        Some(a) => serde_json::from_value(a.clone()).map_err(|e| format!("alignment_heads: {e}"))?,
    };
    if !v.is_object() {
        return Err("is not a JSON object".into());
    }
    Ok(Config {
        alignment_heads: heads,
        suppress_ids: ids("suppress_ids")?,
        suppress_ids_begin: ids("suppress_ids_begin")?,
    })
}

fn parse_added_tokens(bytes: &[u8]) -> Result<Vec<(String, u32)>, String> {
    #[derive(serde::Deserialize)]
    struct Added {
        id: u32,
        content: String,
    }
    // The model (vocabulary and merges, most of the file) is only checked to be an object here:
    // skipped over, not built.
    #[derive(serde::Deserialize)]
    struct TokenizerJson {
        #[serde(default)]
        added_tokens: Vec<Added>,
        #[serde(rename = "model")]
        _model: HashMap<String, serde::de::IgnoredAny>,
    }
    let t: TokenizerJson = serde_json::from_slice(bytes).map_err(|e| format!("invalid tokenizer JSON: {e}"))?;
    Ok(t.added_tokens.into_iter().map(|a| (a.content, a.id)).collect())
}

impl Model {
    /// Loads a CTranslate2 Whisper directory. The architecture is read off the tensors, so any
    /// Whisper size loads.
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        Model::load_with(dir, Precision::F32)
    }

    /// Loads a model at `precision`. In INT8 each matrix is quantized as it is read, so the
    /// loading peak is the INT8 model and one f32 block, not the f32 model; the INT8 weights
    /// then go to the weight cache that `NPUWHISPER_WEIGHT_CACHE` names ([`WeightCache::from_env`]),
    /// from which the next load maps them.
    pub fn load_with(dir: &Path, precision: Precision) -> Result<Model, ModelError> {
        Model::load_cached(dir, precision, &WeightCache::from_env())
    }

    /// [`load_with`](Self::load_with) with the weight cache at `policy`.
    pub fn load_cached(dir: &Path, precision: Precision, policy: &WeightCache) -> Result<Model, ModelError> {
        return_large_buffers_to_the_system();
        let err = |file: &str, reason: String| ModelError {
            file: dir.join(file),
            reason,
        };
        if !dir.is_dir() {
            return Err(ModelError {
                file: dir.to_path_buf(),
                reason: "model directory does not exist".into(),
            });
        }
        let config_json = read_file(&dir.join("config.json"))?;
        let config = parse_config(&config_json).map_err(|e| err("config.json", e))?;
        let tokenizer_json = read_file(&dir.join("tokenizer.json"))?;
        let added = parse_added_tokens(&tokenizer_json).map_err(|e| err("tokenizer.json", e))?;
        let vocab_bytes = read_file(&dir.join("vocabulary.txt"))?;
        let vocab = std::str::from_utf8(&vocab_bytes).map_err(|_| err("vocabulary.txt", "is not UTF-8".into()))?;
        let tokenizer = Tokenizer::new(vocab, &added).map_err(|e| err("vocabulary.txt", e))?;
        let bin_path = dir.join("model.bin");
        let plan = match precision {
            Precision::Int8 => cache::Plan::new(dir, &bin_path, &[&config_json, &tokenizer_json, &vocab_bytes], policy),
            Precision::F32 => cache::Plan::Unused,
        };
        // A cache is made from text files whose BPE passed the checks: they are the same bytes,
        // so building it (a fifth of a second) waits for the first prompt to encode.
        let tokenizer = match plan {
            cache::Plan::Map { .. } => tokenizer.with_lazy_encoder(tokenizer_json),
            _ => tokenizer
                .with_encoder(&tokenizer_json)
                .map_err(|e| err("tokenizer.json", e))?,
        };

        let weights = |cache, writer| -> Result<Weights, ModelError> {
            let file = std::fs::File::open(&bin_path).map_err(|e| err("model.bin", format!("cannot open: {e}")))?;
            let bin = ct2::parse(file).map_err(|e| err("model.bin", e))?;
            if !bin.spec.is_empty() && bin.spec != "WhisperSpec" {
                return Err(err(
                    "model.bin",
                    format!("holds a {:?} model, not a WhisperSpec", bin.spec),
                ));
            }
            Ok(Weights {
                bin,
                taken: Default::default(),
                precision,
                cache,
                writer,
            })
        };
        let build = |w: &Weights| -> Result<(Dims, encoder::Encoder, decoder::Decoder), String> {
            let dims = derive_dims(w, tokenizer.vocab_size())?;
            let encoder = encoder::Encoder::load(w, &dims)?;
            let decoder = decoder::Decoder::load(w, &dims)?;
            // A cache was made from a model.bin whose every tensor passed (the same bytes).
            if w.cache.is_none() {
                w.check_unread()?;
            }
            Ok((dims, encoder, decoder))
        };
        // Makes the weights from model.bin, writing them to a new cache where the plan says.
        let make = |candidates: &[PathBuf], source: Option<cache::Source>, mut notes: Vec<String>| {
            // The notes reach the caller in `CacheOutcome::Built` (the elements log them).
            let writer = source
                .as_ref()
                .and_then(|_| cache::Plan::writer(candidates, &mut notes));
            let w = weights(None, writer.map(std::cell::RefCell::new))?;
            let (dims, encoder, decoder) = build(&w).map_err(|e| err("model.bin", e))?;
            let outcome = match (w.writer.map(|w| w.into_inner()), source) {
                (Some(writer), Some(source)) => {
                    let path = writer
                        .finish(source)
                        .map_err(|e| notes.push(format!("cannot write the weight cache: {e}")))
                        .ok();
                    CacheOutcome::Built {
                        path,
                        note: notes.join("; "),
                    }
                }
                (None, Some(_)) => CacheOutcome::Built {
                    path: None,
                    note: notes.join("; "),
                },
                _ => CacheOutcome::Unused,
            };
            Ok::<_, ModelError>((dims, encoder, decoder, outcome))
        };
        let (dims, encoder, decoder, weight_cache) = match plan {
            cache::Plan::Unused => make(&[], None, Vec::new())?,
            cache::Plan::Write {
                candidates,
                source,
                notes,
            } => make(&candidates, Some(source), notes)?,
            cache::Plan::Map { cache, source } => {
                let path = cache.path.clone();
                match build(&weights(Some(cache), None)?) {
                    Ok((dims, encoder, decoder)) => (dims, encoder, decoder, CacheOutcome::Mapped(path)),
                    Err(why) => {
                        let note = format!("{} not used: {why}", path.display());
                        make(&[path], Some(source), vec![note])?
                    }
                }
            }
        };
        let bad_id = config
            .suppress_ids
            .iter()
            .chain(&config.suppress_ids_begin)
            .find(|&&id| id as usize >= dims.vocab_size);
        if let Some(id) = bad_id {
            return Err(err(
                "config.json",
                format!(
                    "token id {id} is outside the vocabulary of {} (vocabulary.txt)",
                    dims.vocab_size
                ),
            ));
        }
        if let Some(&(l, h)) = config
            .alignment_heads
            .iter()
            .find(|&&(l, h)| l >= dims.decoder_layers || h >= dims.n_heads)
        {
            return Err(err(
                "config.json",
                format!(
                    "alignment head [{l}, {h}] does not exist in model.bin's {} decoder layers of {} heads",
                    dims.decoder_layers, dims.n_heads
                ),
            ));
        }
        Ok(Model {
            dims,
            precision,
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            weight_cache,
            backend: Box::new(CpuBackend::new(encoder, decoder, dims.n_mels, dims.d_model)),
        })
    }
}
