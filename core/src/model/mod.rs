//! Whisper model: CTranslate2 directory loading, the tokenizer, and the forward passes through
//! its [`Backend`]: `Model::load(dir)?.encode_batch(&[&mel])?`, then per window a
//! [`CrossCache`] and a [`Sequence`] per hypothesis.

mod cache;
pub(crate) mod ct2;
pub(crate) mod decoder;
pub(crate) mod encoder;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use crate::backend::cpu::CpuBackend;
use crate::backend::{
    AlignmentRequest, Backend, BackendChoice, BackendError, CrossCache, Sequence, StepInput, StepOutput,
};
pub use cache::{CacheOutcome, WeightCache};
use half::f16;
use npuwhisper_kernels::bgemm::Bf16Weights;
use npuwhisper_kernels::qgemm::QuantizedWeights;
use npuwhisper_kernels::store::Store;
use tokenizer::Tokenizer;

/// Frames of log-mel per 30 s window (10 ms hop).
pub const MEL_FRAMES: usize = 3000;
/// Encoder positions per window (the conv stem halves the frames).
pub const ENCODER_FRAMES: usize = 1500;
/// Seconds of audio per encoder position / timestamp token step.
pub const SECONDS_PER_TIMESTAMP: f64 = 0.02;
/// Most mel bins and widest model the elements' caps carry.
pub const MAX_N_MELS: usize = 256;
pub const MAX_D_MODEL: usize = 4096;
/// Fewest decoder positions accepted: a start-of-transcript sequence and some text, half of
/// which is kept as the next window's prompt.
const MIN_TEXT_POSITIONS: usize = 8;
const LN_EPS: f32 = 1e-5;

/// A model file that could not be used: names the file and what is wrong with it.
#[derive(Debug, Clone)]
pub struct ModelError {
    pub file: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

impl std::error::Error for ModelError {}

/// Architecture, derived from the tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub n_mels: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub vocab_size: usize,
    pub max_text_positions: usize,
}

/// Options of `config.json` that decoding needs.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub alignment_heads: Vec<(usize, usize)>,
    pub suppress_ids: Vec<u32>,
    pub suppress_ids_begin: Vec<u32>,
}

/// Arithmetic of the linear layers and the vocabulary projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// The weights as shipped, widened to f32.
    F32,
    /// Weights quantized per output channel at load, activations per row at run time: a quarter
    /// of the weight memory to read per decoded token. On CPUs with AMX, also the encoder's
    /// attention products and the cross-attention K/V projection in bf16 (f32 sums).
    #[default]
    Int8,
}

/// `y = x·Wᵀ + b`, W stored `[n_out, n_in]`, in f32, INT8 once quantized, or bf16 on AMX.
pub(crate) struct Linear {
    pub w: Store<f32>,
    pub q: Option<QuantizedWeights>,
    pub h: Option<Bf16Weights>,
    pub b: Option<Store<f32>>,
    pub n_out: usize,
    pub n_in: usize,
}

impl Linear {
    pub fn new(w: Store<f32>, b: Option<Store<f32>>, n_out: usize, n_in: usize) -> Linear {
        Linear {
            w,
            q: None,
            h: None,
            b,
            n_out,
            n_in,
        }
    }

    pub fn new_quantized(q: QuantizedWeights, b: Option<Store<f32>>) -> Linear {
        Linear {
            w: Store::default(),
            n_out: q.n_out(),
            n_in: q.k(),
            q: Some(q),
            h: None,
            b,
        }
    }

    /// The layer in bf16 on the AMX tiles when `precision` is INT8 and the CPU has them;
    /// otherwise unchanged.
    pub fn with_precision(self, precision: Precision) -> Linear {
        if precision != Precision::Int8 || self.q.is_some() {
            return self;
        }
        match Bf16Weights::pack(&self.w, self.n_out, self.n_in) {
            Some(h) => Linear {
                w: Store::default(),
                h: Some(h),
                ..self
            },
            None => self,
        }
    }

    pub fn forward(&self, m: usize, x: &[f32], y: &mut Vec<f32>) {
        y.resize(m * self.n_out, 0.0);
        match (&self.q, &self.h) {
            (Some(q), _) => npuwhisper_kernels::qgemm::qlinear(x, m, self.n_in, q, self.b.as_deref(), y),
            (None, Some(h)) => npuwhisper_kernels::bgemm::linear_bf16(x, m, self.n_in, h, self.b.as_deref(), y),
            (None, None) => {
                npuwhisper_kernels::gemm::linear(m, self.n_out, self.n_in, x, &self.w, self.b.as_deref(), y)
            }
        }
    }
}

pub(crate) struct LayerNorm {
    pub gamma: Store<f32>,
    pub beta: Store<f32>,
}

impl LayerNorm {
    pub fn forward_into(&self, x: &[f32], out: &mut Vec<f32>) {
        npuwhisper_kernels::ops::layer_norm_into(x, &self.gamma, &self.beta, LN_EPS, out);
    }
}

pub struct Model {
    pub dims: Dims,
    pub precision: Precision,
    pub dir: PathBuf,
    pub config: Config,
    pub tokenizer: Tokenizer,
    /// Where the INT8 weights came from: mapped from the weight cache, or made from `model.bin`.
    pub weight_cache: CacheOutcome,
    backend: Box<dyn Backend>,
}

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

    /// A model from its parts, on any backend (another backend over loaded weights, or a
    /// scripted one in tests).
    pub fn from_parts(dims: Dims, config: Config, tokenizer: Tokenizer, backend: Box<dyn Backend>) -> Model {
        Model {
            dims,
            precision: Precision::default(),
            dir: PathBuf::new(),
            config,
            tokenizer,
            weight_cache: CacheOutcome::Unused,
            backend,
        }
    }

    /// The model with its backend replaced by what `f` makes of it (a backend wrapping the
    /// current one, say).
    pub fn wrap_backend<E>(self, f: impl FnOnce(Box<dyn Backend>) -> Result<Box<dyn Backend>, E>) -> Result<Model, E> {
        let Model {
            dims,
            precision,
            dir,
            config,
            tokenizer,
            weight_cache,
            backend,
        } = self;
        Ok(Model {
            backend: f(backend)?,
            dims,
            precision,
            dir,
            config,
            tokenizer,
            weight_cache,
        })
    }

    /// Runs the forward passes on `backend` from now on.
    pub fn set_backend(&mut self, backend: Box<dyn Backend>) {
        self.backend = backend;
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    pub fn n_mels(&self) -> usize {
        self.dims.n_mels
    }

    pub fn d_model(&self) -> usize {
        self.dims.d_model
    }

    /// Whisper's rule: multilingual vocabularies have 51865 tokens or more.
    pub fn is_multilingual(&self) -> bool {
        self.dims.vocab_size >= 51865
    }

    /// Encodes a batch of log-mel windows, each `n_mels × MEL_FRAMES` (mel-major).
    /// Returns one `ENCODER_FRAMES × d_model` state matrix per window.
    pub fn encode_batch(&self, mels: &[&[f32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.backend.encode(mels)
    }

    /// The cross-attention cache of one window's encoder states (`ENCODER_FRAMES × d_model`),
    /// shared by every hypothesis decoded over it.
    pub fn cross_cache(&self, states: &[f32]) -> Result<CrossCache, BackendError> {
        self.backend.cross_cache(states)
    }

    /// An empty hypothesis over one window.
    pub fn sequence(&self, cross: &CrossCache) -> Result<Sequence, BackendError> {
        self.backend.sequence(cross)
    }

    /// A decoder step of several sequences at once: see [`Backend::decode`].
    pub fn decode(
        &self,
        seqs: &mut [&mut Sequence],
        inputs: &[StepInput<'_>],
        alignment: Option<AlignmentRequest<'_>>,
    ) -> Result<StepOutput, BackendError> {
        self.backend.decode(seqs, inputs, alignment)
    }

    /// Runs `tokens` after `seq`'s cache; returns the logits of the rows `logits_at`
    /// (`logits_at.len() × vocab_size`).
    pub fn step(&self, seq: &mut Sequence, tokens: &[u32], logits_at: &[usize]) -> Result<Vec<f32>, BackendError> {
        let input = StepInput { tokens, logits_at };
        Ok(self.backend.decode(&mut [seq], &[input], None)?.logits)
    }
}

/// Bytes from which glibc's malloc serves an allocation with its own mapping.
const MMAP_THRESHOLD: usize = 1 << 20;

/// Makes glibc's malloc give buffers of [`MMAP_THRESHOLD`] or more straight back to the system
/// when they are freed. By default the threshold grows to the size of any mapped block freed
/// (up to 32 MiB), after which the per-window buffers (encoder activations, cross-attention
/// keys and values, states: MBs each, freed after every window, on several threads) come
/// from per-thread arenas that keep them: on tiny.en's bench that retention was about 100 MB
/// of the peak resident set. 1 MiB rather than more because the f16 cross-attention layers
/// are 2.3 MB (tiny.en) to 3.1 MB (base): at 4 MiB the short-clip peak was 197-202 MB, at
/// 1 MiB 157. Per-token allocations (a step's logits, 0.2 MB a row) stay in the arenas.
/// Process-wide and done once; left alone when the user set `MALLOC_MMAP_THRESHOLD_`.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
                // SAFETY: mallopt only sets a malloc tunable; it is thread-safe in glibc.
                unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) };
            }
        });
    }
}

/// Directory holding the models fetched by the set-up: `$NPUWHISPER_MODELS_DIR`, else
/// `$XDG_DATA_HOME/npuwhisper/models` (`~/.local/share/npuwhisper/models`).
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NPUWHISPER_MODELS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(".local/share"));
    data.join("npuwhisper/models")
}

/// The `model` property value: a directory path, or a model name inside [`models_dir`].
pub fn resolve_model_path(name_or_path: &str) -> PathBuf {
    let p = Path::new(name_or_path);
    if p.is_absolute() || name_or_path.contains('/') {
        p.to_path_buf()
    } else {
        models_dir().join(name_or_path)
    }
}

/// Default `model` property value.
pub const DEFAULT_MODEL: &str = "tiny.en";

/// Loads a model once per process: every element naming the same directory and precision
/// shares it while any of them holds it.
pub fn load_shared(dir: &Path) -> Result<Arc<Model>, ModelError> {
    load_shared_with(dir, Precision::default())
}

pub fn load_shared_with(dir: &Path, precision: Precision) -> Result<Arc<Model>, ModelError> {
    load_shared_on(dir, precision, &BackendChoice::Cpu)
}

/// [`load_shared_with`] on a chosen backend: shared by the elements naming the same directory,
/// precision and backend options.
pub fn load_shared_on(dir: &Path, precision: Precision, backend: &BackendChoice) -> Result<Arc<Model>, ModelError> {
    type Key = (PathBuf, Precision, BackendChoice);
    static CACHE: LazyLock<Mutex<HashMap<Key, Weak<Model>>>> = LazyLock::new(Default::default);
    let key = (
        dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
        precision,
        backend.clone(),
    );
    // Loading under the lock makes a second element wait for the first load instead of repeating it.
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(model) = cache.get(&key).and_then(Weak::upgrade) {
        return Ok(model);
    }
    let model = Model::load_with(dir, precision)?;
    let model = Arc::new(match backend {
        BackendChoice::Cpu => model,
        BackendChoice::Onnxruntime(opts) => crate::backend::onnxruntime::OrtBackend::wrap(model, opts)?,
    });
    cache.retain(|_, m| m.strong_count() > 0);
    cache.insert(key, Arc::downgrade(&model));
    Ok(model)
}
