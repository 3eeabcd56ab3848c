//! Whisper's decoder as static-shape ONNX graphs (what NPUs take), built from the CTranslate2
//! weights like the encoder's, and run by [`OrtDecoder`]:
//! - the cross graph: one window's encoder states → every layer's cross-attention keys and values,
//!   once per window;
//! - the step graphs: `T` tokens (1, or a chunk of [`CHUNK`] padded and masked) after a
//!   self-attention cache of fixed length → logits, the cache with the tokens' keys and values
//!   scattered in at their positions, and (on request) the cross-attention scores word alignment
//!   needs. Every shape is fixed: the cache holds [`CHUNK`] slots past the model's 448 positions,
//!   so a padded chunk's rows always land in slots the mask hides.
//!
//! It mirrors `model/decoder.rs`: token and position embeddings; pre-norm blocks of causal
//! self-attention, cross-attention and a GELU MLP; the final layer norm; the tied embeddings as
//! the vocabulary projection.

use std::sync::{Arc, Mutex};

use ort::editor::{Model, Opset, ONNX_DOMAIN};
use ort::session::builder::SessionBuilder;
use ort::session::{OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{Outlet, Shape, SymbolicDimensions, TensorElementType, TensorRef, ValueType};

use super::encoder::{GraphPrecision, TensorSource, ENCODER_FRAMES, OPSET};
use super::graph::{attr, ort_err, GraphResult, Layers};
use crate::backend::{AlignmentRequest, BackendError, CrossCache, Sequence, SequenceCache, StepInput, StepOutput};

/// Tokens of the chunk graph: prompts and alignment passes run in chunks of this many (the last
/// one padded), single tokens in the one-token graph. 32 holds a typical prompt in a few runs
/// while a padded chunk wastes little.
pub const CHUNK: usize = 32;
/// Added to the scores of the slots a row may not see: finite in float16 too, so a padded row
/// never turns a cache slot into NaN, and far enough below any score that exp() gives 0.
const MASKED: f32 = -1e4;

/// Sizes of the decoder, read off the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderDims {
    pub d_model: usize,
    pub n_heads: usize,
    pub layers: usize,
    pub vocab: usize,
    /// Positions of the text context (448).
    pub max_positions: usize,
}

impl DecoderDims {
    fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Slots of the self-attention cache: the context and room for a padded chunk past it.
    pub fn cache_len(&self) -> usize {
        self.max_positions + CHUNK
    }
}

fn outlet(name: &str, ty: TensorElementType, shape: &[usize]) -> Outlet {
    Outlet::new(
        name,
        ValueType::Tensor {
            ty,
            shape: Shape::new(shape.iter().map(|&s| s as i64)),
            dimension_symbols: SymbolicDimensions::empty(shape.len()),
        },
    )
}

fn f32_outlet(name: &str, shape: &[usize]) -> Outlet {
    outlet(name, TensorElementType::Float32, shape)
}

fn finish(l: Layers<'_>) -> GraphResult<Model> {
    let mut model = Model::new([Opset::new(ONNX_DOMAIN, OPSET).map_err(ort_err("opset"))?])
        .map_err(ort_err("cannot create an ONNX model"))?;
    model.set_graph(l.b.graph).map_err(ort_err("cannot add the graph"))?;
    Ok(model)
}

/// The cross graph: input `states` `[1, 1500, d]`; outputs `cross_k_{l}` `[1, H, hd, 1500]`
/// (transposed for the score product) and `cross_v_{l}` `[1, H, 1500, hd]`, float32.
pub fn build_cross(w: &dyn TensorSource, dims: DecoderDims, precision: GraphPrecision) -> GraphResult<Model> {
    let (d, h, hd) = (dims.d_model, dims.n_heads, dims.head_dim());
    let mut l = Layers::new(w, precision)?;
    let mut outputs = Vec::new();
    for i in 0..dims.layers {
        outputs.push(f32_outlet(&format!("cross_k_{i}"), &[1, h, hd, ENCODER_FRAMES]));
        outputs.push(f32_outlet(&format!("cross_v_{i}"), &[1, h, ENCODER_FRAMES, hd]));
    }
    l.b.graph
        .set_inputs([f32_outlet("states", &[1, ENCODER_FRAMES, d])])
        .map_err(ort_err("graph inputs"))?;
    l.b.graph.set_outputs(outputs).map_err(ort_err("graph outputs"))?;
    let x = l.cast_in("states")?;
    let split = l.b.init_i64("kv_split", &[d as i64; 2])?;
    for i in 0..dims.layers {
        // Not quantized, as on the CPU backend: it runs once per window, and its rounding would
        // sit in every token's attention.
        let kv = l.linear(&x, &format!("decoder/layer_{i}/attention/linear_1"), 2 * d, d, false)?;
        let parts = l.b.node_n("Split", &[&kv, &split], vec![attr("axis", -1i64)?], 2)?;
        let k = l.split_heads(&parts[0], h, hd, vec![0, 2, 3, 1])?;
        let v = l.split_heads(&parts[1], h, hd, vec![0, 2, 1, 3])?;
        let k = l.cast_out(&k)?;
        let v = l.cast_out(&v)?;
        l.b.output(&k, &format!("cross_k_{i}"))?;
        l.b.output(&v, &format!("cross_v_{i}"))?;
    }
    finish(l)
}

/// The step graph for `t` tokens. Inputs: `tokens` and `positions` (int64 `[1, t]`), `mask`
/// (`[1, 1, t, S]`, 0 where a row may look, [`MASKED`] elsewhere), `self_k_{l}`/`self_v_{l}`
/// (`[1, H, S, hd]`), `cross_k_{l}`/`cross_v_{l}` as the cross graph makes them. Outputs:
/// `logits` `[t, vocab]`, `self_k_out_{l}`/`self_v_out_{l}` (the cache with the rows' keys and
/// values at slots `positions`), `cross_scores_{l}` `[1, H, t, 1500]` (scaled, before softmax).
/// S is [`DecoderDims::cache_len`]; all float tensors are float32.
pub fn build_step(w: &dyn TensorSource, dims: DecoderDims, precision: GraphPrecision, t: usize) -> GraphResult<Model> {
    let (d, h, hd, s) = (dims.d_model, dims.n_heads, dims.head_dim(), dims.cache_len());
    let mut l = Layers::new(w, precision)?;
    let i64_ty = TensorElementType::Int64;
    let mut inputs = vec![
        outlet("tokens", i64_ty, &[1, t]),
        outlet("positions", i64_ty, &[1, t]),
        f32_outlet("mask", &[1, 1, t, s]),
    ];
    let mut outputs = vec![f32_outlet("logits", &[t, dims.vocab])];
    for i in 0..dims.layers {
        inputs.push(f32_outlet(&format!("self_k_{i}"), &[1, h, s, hd]));
        inputs.push(f32_outlet(&format!("self_v_{i}"), &[1, h, s, hd]));
        inputs.push(f32_outlet(&format!("cross_k_{i}"), &[1, h, hd, ENCODER_FRAMES]));
        inputs.push(f32_outlet(&format!("cross_v_{i}"), &[1, h, ENCODER_FRAMES, hd]));
        outputs.push(f32_outlet(&format!("self_k_out_{i}"), &[1, h, s, hd]));
        outputs.push(f32_outlet(&format!("self_v_out_{i}"), &[1, h, s, hd]));
        outputs.push(f32_outlet(&format!("cross_scores_{i}"), &[1, h, t, ENCODER_FRAMES]));
    }
    l.b.graph.set_inputs(inputs).map_err(ort_err("graph inputs"))?;
    l.b.graph.set_outputs(outputs).map_err(ort_err("graph outputs"))?;

    let emb = w.f32("decoder/embeddings/weight", &[dims.vocab, d])?;
    let emb = l.float("decoder/embeddings/weight", &[dims.vocab as i64, d as i64], &emb)?;
    // Zero rows past the context: a padded row's position may reach them.
    let mut pos = w.f32("decoder/position_encodings/encodings", &[dims.max_positions, d])?;
    pos.resize(s * d, 0.0);
    let pos = l.float("decoder/position_encodings/encodings", &[s as i64, d as i64], &pos)?;
    let x_tok = l.b.node("Gather", &[&emb, "tokens"], vec![])?;
    let x_pos = l.b.node("Gather", &[&pos, "positions"], vec![])?;
    let mut x = l.b.node("Add", &[&x_tok, &x_pos], vec![])?;
    let mask = l.cast_in("mask")?;
    // Scatter indices: each row's slot, over every head and channel.
    let col = l.b.init_i64("slot_shape", &[1, 1, t as i64, 1])?;
    let full = l.b.init_i64("slot_expand", &[1, h as i64, t as i64, hd as i64])?;
    let slots = l.b.node("Reshape", &["positions", &col], vec![])?;
    let slots = l.b.node("Expand", &[&slots, &full], vec![])?;
    let scale = l.float("attention_scale", &[], &[1.0 / (hd as f32).sqrt()])?;
    let split = l.b.init_i64("qkv_split", &[d as i64; 3])?;
    for i in 0..dims.layers {
        let p = format!("decoder/layer_{i}");
        // Causal self-attention over the cache with this step's rows scattered in.
        let hn = l.layer_norm(&x, &format!("{p}/self_attention/layer_norm"), d)?;
        let qkv = l.linear(&hn, &format!("{p}/self_attention/linear_0"), 3 * d, d, true)?;
        let parts = l.b.node_n("Split", &[&qkv, &split], vec![attr("axis", -1i64)?], 3)?;
        let q = l.split_heads(&parts[0], h, hd, vec![0, 2, 1, 3])?;
        let k_new = l.split_heads(&parts[1], h, hd, vec![0, 2, 1, 3])?;
        let v_new = l.split_heads(&parts[2], h, hd, vec![0, 2, 1, 3])?;
        let mut caches = Vec::new();
        for (name, new) in [("self_k", &k_new), ("self_v", &v_new)] {
            let cache = l.cast_in(&format!("{name}_{i}"))?;
            let cache =
                l.b.node("ScatterElements", &[&cache, &slots, new], vec![attr("axis", 2i64)?])?;
            let out = l.cast_out(&cache)?;
            l.b.output(&out, &format!("{name}_out_{i}"))?;
            caches.push(cache);
        }
        let kt =
            l.b.node("Transpose", &[&caches[0]], vec![attr("perm", vec![0i64, 1, 3, 2])?])?;
        let scores = l.b.node("MatMul", &[&q, &kt], vec![])?;
        let scores = l.b.node("Mul", &[&scores, &scale], vec![])?;
        let scores = l.b.node("Add", &[&scores, &mask], vec![])?;
        let probs = l.b.node("Softmax", &[&scores], vec![attr("axis", -1i64)?])?;
        let ctx = l.b.node("MatMul", &[&probs, &caches[1]], vec![])?;
        let ctx = l.merge_heads(&ctx, d)?;
        let a = l.linear(&ctx, &format!("{p}/self_attention/linear_1"), d, d, true)?;
        x = l.b.node("Add", &[&x, &a], vec![])?;

        // Cross-attention over the window's keys and values.
        let hn = l.layer_norm(&x, &format!("{p}/attention/layer_norm"), d)?;
        let q = l.linear(&hn, &format!("{p}/attention/linear_0"), d, d, true)?;
        let q = l.split_heads(&q, h, hd, vec![0, 2, 1, 3])?;
        let ck = l.cast_in(&format!("cross_k_{i}"))?;
        let cv = l.cast_in(&format!("cross_v_{i}"))?;
        let scores = l.b.node("MatMul", &[&q, &ck], vec![])?;
        let scores = l.b.node("Mul", &[&scores, &scale], vec![])?;
        let out = l.cast_out(&scores)?;
        l.b.output(&out, &format!("cross_scores_{i}"))?;
        let probs = l.b.node("Softmax", &[&scores], vec![attr("axis", -1i64)?])?;
        let ctx = l.b.node("MatMul", &[&probs, &cv], vec![])?;
        let ctx = l.merge_heads(&ctx, d)?;
        let a = l.linear(&ctx, &format!("{p}/attention/linear_2"), d, d, true)?;
        x = l.b.node("Add", &[&x, &a], vec![])?;

        let hn = l.layer_norm(&x, &format!("{p}/ffn/layer_norm"), d)?;
        let f = l.linear(&hn, &format!("{p}/ffn/linear_0"), 4 * d, d, true)?;
        let f = l.b.node("Gelu", &[&f], vec![])?;
        let f = l.linear(&f, &format!("{p}/ffn/linear_1"), d, 4 * d, true)?;
        x = l.b.node("Add", &[&x, &f], vec![])?;
    }
    let x = l.layer_norm(&x, "decoder/layer_norm", d)?;
    let rows = l.b.init_i64("rows_shape", &[t as i64, d as i64])?;
    let x = l.b.node("Reshape", &[&x, &rows], vec![])?;
    // The tied embeddings, shared with the lookup (one copy of the largest matrix).
    let logits = l.b.node("Gemm", &[&x, &emb], vec![attr("transB", 1i64)?])?;
    let logits = l.cast_out(&logits)?;
    l.b.output(&logits, "logits")?;
    finish(l)
}

/// One window's cross-attention keys and values, per layer, as the step graphs take them.
pub struct OrtCross {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// A hypothesis on the ONNX Runtime decoder: the window's cross cache and its own
/// self-attention cache, `[H, S, hd]` per layer (slots past `len` are masked).
#[derive(Clone)]
pub struct OrtSequence {
    cross: Arc<OrtCross>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    max_positions: usize,
}

impl SequenceCache for OrtSequence {
    fn len(&self) -> usize {
        self.len
    }

    fn remaining(&self) -> usize {
        self.max_positions - self.len
    }

    fn reset(&mut self) {
        // The slots stay as they are: the mask hides everything past `len`.
        self.len = 0;
    }

    fn fork(&self) -> Box<dyn SequenceCache> {
        Box::new(self.clone())
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// The decoder on ONNX Runtime: the cross graph and the step graphs for one token and for a
/// chunk, each in its own session.
pub struct OrtDecoder {
    cross: Mutex<Session>,
    one: Mutex<Session>,
    chunk: Mutex<Session>,
    pub dims: DecoderDims,
}

fn view(v: &[f32], shape: [usize; 4]) -> Result<SessionInputValue<'_>, BackendError> {
    Ok(TensorRef::from_array_view((shape, v)).map_err(run_err)?.into())
}

fn run_err(e: ort::Error) -> BackendError {
    BackendError::Failed(format!("ONNX Runtime decoder run: {e}"))
}

impl OrtDecoder {
    /// Builds the three graphs from `w` and their sessions from `builder`.
    pub fn new(
        w: &dyn TensorSource,
        dims: DecoderDims,
        precision: GraphPrecision,
        builder: &SessionBuilder,
    ) -> Result<OrtDecoder, String> {
        if dims.n_heads == 0 || !dims.d_model.is_multiple_of(dims.n_heads) {
            return Err(format!("{} heads do not divide width {}", dims.n_heads, dims.d_model));
        }
        let session = |model: Model, what: &str| {
            model
                .into_session(builder)
                .map_err(|e| format!("ONNX Runtime session for the decoder's {what}: {e}"))
        };
        Ok(OrtDecoder {
            cross: Mutex::new(session(build_cross(w, dims, precision)?, "cross graph")?),
            one: Mutex::new(session(build_step(w, dims, precision, 1)?, "one-token graph")?),
            chunk: Mutex::new(session(build_step(w, dims, precision, CHUNK)?, "chunk graph")?),
            dims,
        })
    }

    pub fn cross_cache(&self, states: &[f32]) -> Result<CrossCache, BackendError> {
        let d = self.dims.d_model;
        if states.len() != ENCODER_FRAMES * d {
            return Err(BackendError::BadInput(format!(
                "encoder states of {} values, not {ENCODER_FRAMES} × {d}",
                states.len()
            )));
        }
        let mut session = self.cross.lock().unwrap_or_else(|e| e.into_inner());
        let input = TensorRef::from_array_view(([1, ENCODER_FRAMES, d], states)).map_err(run_err)?;
        let outputs = session.run(ort::inputs!["states" => input]).map_err(run_err)?;
        let take = |name: String| -> Result<Vec<f32>, BackendError> {
            Ok(outputs[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(run_err)?
                .1
                .to_vec())
        };
        let mut cross = OrtCross {
            k: Vec::new(),
            v: Vec::new(),
        };
        for i in 0..self.dims.layers {
            cross.k.push(take(format!("cross_k_{i}"))?);
            cross.v.push(take(format!("cross_v_{i}"))?);
        }
        Ok(CrossCache::new(Arc::new(cross)))
    }

    pub fn sequence(&self, cross: &CrossCache) -> Result<Sequence, BackendError> {
        let cross = cross.downcast::<OrtCross>().ok_or(BackendError::ForeignCache)?;
        let DecoderDims { d_model, layers, .. } = self.dims;
        let slots = self.dims.cache_len() * d_model;
        Ok(Sequence::new(Box::new(OrtSequence {
            cross,
            k: vec![vec![0.0; slots]; layers],
            v: vec![vec![0.0; slots]; layers],
            len: 0,
            max_positions: self.dims.max_positions,
        })))
    }

    /// Runs `tokens[start..start + n]` (n ≤ the graph's `t`, the rest padded) after `seq`'s
    /// cache through the graph of `t` tokens; appends the logits of the rows in `logits_at`,
    /// and with `scores` each layer's cross-attention scores `[H, n, 1500]`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        t: usize,
        seq: &mut OrtSequence,
        tokens: &[u32],
        logits_at: &[usize],
        start: usize,
        logits: &mut Vec<f32>,
        scores: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<(), BackendError> {
        let DecoderDims {
            n_heads: h,
            layers,
            vocab,
            ..
        } = self.dims;
        let (hd, s) = (self.dims.head_dim(), self.dims.cache_len());
        let n = (tokens.len() - start).min(t);
        let pos = seq.len;
        let ids: Vec<i64> = (0..t)
            .map(|k| if k < n { tokens[start + k] as i64 } else { 0 })
            .collect();
        let positions: Vec<i64> = (0..t).map(|k| (pos + k) as i64).collect();
        let mut mask = vec![MASKED; t * s];
        for (k, row) in mask.chunks_mut(s).enumerate() {
            row[..=pos + k].fill(0.0);
        }
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = vec![
            (
                "tokens".into(),
                TensorRef::from_array_view(([1, t], ids.as_slice()))
                    .map_err(run_err)?
                    .into(),
            ),
            (
                "positions".into(),
                TensorRef::from_array_view(([1, t], positions.as_slice()))
                    .map_err(run_err)?
                    .into(),
            ),
            (
                "mask".into(),
                TensorRef::from_array_view(([1, 1, t, s], mask.as_slice()))
                    .map_err(run_err)?
                    .into(),
            ),
        ];
        for i in 0..layers {
            inputs.push((format!("self_k_{i}"), view(&seq.k[i], [1, h, s, hd])?));
            inputs.push((format!("self_v_{i}"), view(&seq.v[i], [1, h, s, hd])?));
            inputs.push((
                format!("cross_k_{i}"),
                view(&seq.cross.k[i], [1, h, hd, ENCODER_FRAMES])?,
            ));
            inputs.push((
                format!("cross_v_{i}"),
                view(&seq.cross.v[i], [1, h, ENCODER_FRAMES, hd])?,
            ));
        }
        let mut select = OutputSelector::no_default().with("logits");
        for i in 0..layers {
            select = select.with(format!("self_k_out_{i}")).with(format!("self_v_out_{i}"));
            if scores.is_some() {
                select = select.with(format!("cross_scores_{i}"));
            }
        }
        let options = RunOptions::new().map_err(run_err)?.with_outputs(select);
        let mut session = if t == 1 { &self.one } else { &self.chunk }
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let outputs = session.run_with_options(inputs, &options).map_err(run_err)?;
        let (_, out) = outputs["logits"].try_extract_tensor::<f32>().map_err(run_err)?;
        for &r in logits_at.iter().filter(|&&r| r >= start && r < start + n) {
            let k = r - start;
            logits.extend_from_slice(&out[k * vocab..(k + 1) * vocab]);
        }
        let mut new_k = Vec::with_capacity(layers);
        let mut new_v = Vec::with_capacity(layers);
        for i in 0..layers {
            // Only the rows' slots changed: copy those back, per head.
            for (name, dst) in [("self_k_out", &mut new_k), ("self_v_out", &mut new_v)] {
                let (_, c) = outputs[format!("{name}_{i}").as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(run_err)?;
                let rows: Vec<f32> = (0..h)
                    .flat_map(|head| c[(head * s + pos) * hd..(head * s + pos + n) * hd].iter().copied())
                    .collect();
                dst.push(rows);
            }
        }
        if let Some(scores) = scores {
            for i in 0..layers {
                let (_, c) = outputs[format!("cross_scores_{i}").as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(run_err)?;
                // Real rows only, per head.
                for head in 0..h {
                    scores[i].extend_from_slice(&c[head * t * ENCODER_FRAMES..(head * t + n) * ENCODER_FRAMES]);
                }
            }
        }
        drop(outputs);
        drop(session);
        for i in 0..layers {
            for head in 0..h {
                let dst = (head * s + pos) * hd..(head * s + pos + n) * hd;
                let src = head * n * hd..(head + 1) * n * hd;
                seq.k[i][dst.clone()].copy_from_slice(&new_k[i][src.clone()]);
                seq.v[i][dst].copy_from_slice(&new_v[i][src]);
            }
        }
        seq.len += n;
        Ok(())
    }

    pub fn decode(
        &self,
        seqs: &mut [&mut Sequence],
        inputs: &[StepInput<'_>],
        alignment: Option<AlignmentRequest<'_>>,
    ) -> Result<StepOutput, BackendError> {
        crate::backend::check_step(seqs.len(), inputs, alignment.is_some())?;
        for (seq, input) in seqs.iter().zip(inputs) {
            if input.tokens.is_empty() || input.tokens.len() > seq.remaining() {
                return Err(BackendError::ContextFull {
                    tokens: input.tokens.len(),
                    remaining: seq.remaining(),
                });
            }
            if let Some(&bad) = input.tokens.iter().find(|&&id| id as usize >= self.dims.vocab) {
                return Err(BackendError::TokenOutOfVocabulary(bad));
            }
        }
        if let Some(bad) = alignment.and_then(|a| {
            a.heads
                .iter()
                .find(|&&(l, h)| l >= self.dims.layers || h >= self.dims.n_heads)
        }) {
            return Err(BackendError::BadInput(format!("no attention head {bad:?}")));
        }
        let mut logits = Vec::new();
        // Per layer, `[H, tokens, 1500]` scores of the aligned sequence, chunk after chunk.
        let mut scores: Option<Vec<Vec<f32>>> = alignment.map(|_| vec![Vec::new(); self.dims.layers]);
        // One sequence at a time: the graphs' batch is fixed at 1.
        for (seq, input) in seqs.iter_mut().zip(inputs) {
            let seq = seq.downcast_mut::<OrtSequence>().ok_or(BackendError::ForeignCache)?;
            let mut start = 0;
            while start < input.tokens.len() {
                let left = input.tokens.len() - start;
                // The cross scores are an output of the chunk graph's runs.
                let t = if left == 1 && scores.is_none() { 1 } else { CHUNK };
                self.run(
                    t,
                    seq,
                    input.tokens,
                    input.logits_at,
                    start,
                    &mut logits,
                    scores.as_mut(),
                )?;
                start += left.min(t);
            }
        }
        let attention = match (alignment, scores) {
            (Some(a), Some(scores)) => self.alignment_weights(a, &scores, inputs[0].tokens.len()),
            _ => Vec::new(),
        };
        Ok(StepOutput { logits, attention })
    }

    /// Per requested head (layer by layer, as the CPU backend orders them), `tokens × n_frames`
    /// softmax weights over the first `n_frames` frames.
    fn alignment_weights(&self, a: AlignmentRequest<'_>, scores: &[Vec<f32>], tokens: usize) -> Vec<Vec<f32>> {
        let n_frames = a.n_frames.clamp(1, ENCODER_FRAMES);
        let h = self.dims.n_heads;
        let mut out = Vec::new();
        for (l, layer) in scores.iter().enumerate() {
            // `layer` is chunks of `[H, n, 1500]`; gather head `hd`'s rows in token order.
            for &(_, head) in a.heads.iter().filter(|&&(hl, _)| hl == l) {
                let mut w = Vec::with_capacity(tokens * n_frames);
                let mut offset = 0;
                let mut done = 0;
                while done < tokens {
                    let n = (tokens - done).min(CHUNK);
                    let chunk = &layer[offset..offset + h * n * ENCODER_FRAMES];
                    for r in 0..n {
                        let row = &chunk[(head * n + r) * ENCODER_FRAMES..][..n_frames];
                        let start = w.len();
                        w.extend_from_slice(row);
                        npuwhisper_kernels::ops::softmax(&mut w[start..]);
                    }
                    offset += h * n * ENCODER_FRAMES;
                    done += n;
                }
                out.push(w);
            }
        }
        out
    }
}
