//! Whisper text decoder with a self-attention KV cache; cross-attention keys and values are
//! computed once per window.

use std::sync::{Arc, Mutex};

use half::{f16, slice::HalfFloatSliceExt};

use npuwhisper_kernels::attention::{attention, Shape};
use npuwhisper_kernels::gemm::{dot, gemm_nt};
use npuwhisper_kernels::ops::{add_in_place, gelu, softmax};
use npuwhisper_kernels::qgemm::{qlinear, QuantizedWeights};
use npuwhisper_kernels::store::Store;
use npuwhisper_kernels::xattn::{cross_attention, CrossQuery, HalfKv};

use super::{Dims, LayerNorm, Linear, Precision, Weights};
use crate::backend::{BackendError, SequenceCache};

pub(crate) struct DecoderLayer {
    self_ln: LayerNorm,
    self_qkv: Linear,
    self_out: Linear,
    cross_ln: LayerNorm,
    cross_q: Linear,
    cross_kv: Linear,
    cross_out: Linear,
    ffn_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// The token embeddings, used for the input lookups and (tied) as the vocabulary projection.
enum Embeddings {
    /// f32 models: one f32 matrix for both.
    F32(Store<f32>),
    /// INT8 models: f16 for the lookups (half the memory; INT8 lookups, even with a scale per
    /// 32 values, changed long-form transcripts, f16 did not), and quantized per token for the
    /// projection, the largest matrix read per token.
    Int8 {
        lookup: Store<f16>,
        projection: QuantizedWeights,
    },
}

pub(crate) struct Decoder {
    embeddings: Embeddings,
    positions: Store<f32>,
    layers: Vec<DecoderLayer>,
    /// Cross-attention keys and values in f16 (INT8 models).
    half_cross_kv: bool,
    /// The f32 K/V projection a window's f16 keys and values are made from, kept between
    /// windows (a fresh one would be new pages, a fault per 4 KiB).
    kv_scratch: Mutex<Vec<f32>>,
    ln: LayerNorm,
    d: usize,
    n_heads: usize,
    vocab: usize,
    max_positions: usize,
}

impl Decoder {
    /// In INT8, what is read once per token is quantized: the per-token layers and the
    /// vocabulary projection. The cross-attention K/V projection stays out of INT8: it runs
    /// once per window, so INT8 would save no per-token memory traffic, and its rounding would
    /// sit in every token's attention (on base it cost half a WER point on the long-form set).
    /// It is f32, or bf16 on AMX (relative rounding, as the f16 the K/V are then stored in).
    pub fn load(w: &Weights, dims: &Dims) -> Result<Decoder, String> {
        let d = dims.d_model;
        let layers = (0..dims.decoder_layers)
            .map(|i| {
                let p = format!("decoder/layer_{i}");
                Ok(DecoderLayer {
                    self_ln: w.layer_norm(&format!("{p}/self_attention/layer_norm"), d)?,
                    self_qkv: w.linear(&format!("{p}/self_attention/linear_0"), 3 * d, d, true)?,
                    self_out: w.linear(&format!("{p}/self_attention/linear_1"), d, d, true)?,
                    cross_ln: w.layer_norm(&format!("{p}/attention/layer_norm"), d)?,
                    cross_q: w.linear(&format!("{p}/attention/linear_0"), d, d, true)?,
                    cross_kv: w
                        .linear(&format!("{p}/attention/linear_1"), 2 * d, d, false)?
                        .with_precision(w.precision),
                    cross_out: w.linear(&format!("{p}/attention/linear_2"), d, d, true)?,
                    ffn_ln: w.layer_norm(&format!("{p}/ffn/layer_norm"), d)?,
                    fc1: w.linear(&format!("{p}/ffn/linear_0"), 4 * d, d, true)?,
                    fc2: w.linear(&format!("{p}/ffn/linear_1"), d, 4 * d, true)?,
                })
            })
            .collect::<Result<_, String>>()?;
        let emb = "decoder/embeddings/weight";
        let embeddings = match w.precision {
            Precision::Int8 => {
                let (projection, lookup) = w.quantized_and_f16(emb, dims.vocab_size, d)?;
                Embeddings::Int8 { lookup, projection }
            }
            Precision::F32 => Embeddings::F32(w.tensor(emb, &[dims.vocab_size, d])?),
        };
        Ok(Decoder {
            embeddings,
            positions: w.tensor("decoder/position_encodings/encodings", &[dims.max_text_positions, d])?,
            layers,
            half_cross_kv: w.precision == Precision::Int8,
            kv_scratch: Mutex::new(Vec::new()),
            ln: w.layer_norm("decoder/layer_norm", d)?,
            d,
            n_heads: dims.n_heads,
            vocab: dims.vocab_size,
            max_positions: dims.max_text_positions,
        })
    }
}

/// Softmax of head `h`'s scaled scores over the first `n_frames` keys, `t × n_frames`.
fn head_weights(q: &[f32], kv: &LayerKv, t: usize, d: usize, h: usize, head_dim: usize, n_frames: usize) -> Vec<f32> {
    let scale = 1.0 / (head_dim as f32).sqrt();
    let off = h * head_dim;
    let mut w = vec![0f32; t * n_frames];
    for (i, row) in w.chunks_mut(n_frames).enumerate() {
        let qi = &q[i * d + off..i * d + off + head_dim];
        match kv {
            LayerKv::F32(kv) => {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = dot(qi, &kv[j * 2 * d + off..j * 2 * d + off + head_dim]) * scale;
                }
            }
            LayerKv::Half(kv) => kv.scores(h, qi, row),
        }
        softmax(row);
    }
    w
}

/// One layer's cross-attention keys and values.
enum LayerKv {
    /// `frames × 2d`, K then V in each row (f32 models).
    F32(Vec<f32>),
    /// In f16, laid out for the decoder step's products (INT8 models): half the bytes to read
    /// per token, at the WER of f32 keys and values (README, Benchmarks).
    Half(HalfKv),
}

/// Cross-attention keys and values of one window, per layer: computed once and shared by
/// every hypothesis decoded over that window.
pub struct CrossKv {
    layers: Vec<LayerKv>,
    /// Encoder frames of the window (fewer than `ENCODER_FRAMES` over a shorter context).
    frames: usize,
}

/// One hypothesis being decoded: its window's cross K/V and its own self-attention cache.
/// Cloning forks a beam.
#[derive(Clone)]
pub struct Sequence {
    cross: Arc<CrossKv>,
    self_k: Vec<Vec<f32>>,
    self_v: Vec<Vec<f32>>,
    len: usize,
    max_positions: usize,
}

impl Sequence {
    /// Encoder frames of the window this hypothesis is decoded over.
    pub fn cross_frames(&self) -> usize {
        self.cross.frames
    }
}

impl SequenceCache for Sequence {
    fn len(&self) -> usize {
        self.len
    }

    fn remaining(&self) -> usize {
        self.max_positions - self.len
    }

    fn reset(&mut self) {
        self.self_k
            .iter_mut()
            .chain(self.self_v.iter_mut())
            .for_each(Vec::clear);
        self.len = 0;
    }

    fn fork(&self) -> Box<dyn SequenceCache> {
        Box::new(self.clone())
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Cross-attention weights captured for word alignment: `(layer, head)` pairs, frames kept, output.
pub(crate) type Capture<'a> = (&'a [(usize, usize)], usize, &'a mut Vec<Vec<f32>>);

impl Decoder {
    /// `states` is `frames × d` for any `frames` up to `ENCODER_FRAMES`.
    pub fn cross_kv(&self, states: &[f32]) -> Arc<CrossKv> {
        let d = self.d;
        let frames = states.len() / d;
        let mut kv = if self.half_cross_kv {
            std::mem::take(&mut *self.kv_scratch.lock().unwrap_or_else(|e| e.into_inner()))
        } else {
            Vec::new()
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.cross_kv.forward(frames, states, &mut kv);
                if self.half_cross_kv {
                    LayerKv::Half(HalfKv::new(
                        &kv,
                        2 * d,
                        &kv[d..],
                        2 * d,
                        frames,
                        self.n_heads,
                        d / self.n_heads,
                    ))
                } else {
                    LayerKv::F32(std::mem::take(&mut kv))
                }
            })
            .collect();
        if self.half_cross_kv {
            *self.kv_scratch.lock().unwrap_or_else(|e| e.into_inner()) = kv;
        }
        Arc::new(CrossKv { layers, frames })
    }

    pub fn sequence(&self, cross: &Arc<CrossKv>) -> Sequence {
        let n = self.layers.len();
        Sequence {
            cross: Arc::clone(cross),
            self_k: vec![Vec::new(); n],
            self_v: vec![Vec::new(); n],
            len: 0,
            max_positions: self.max_positions,
        }
    }

    /// Runs `tokens[i]` after the cached tokens of `seqs[i]`, for all sequences together: every
    /// linear layer takes the rows of all of them in one pass over its weights, which is what
    /// makes beams and batched windows cheap on memory-bound hardware. Returns the final hidden
    /// states of all the tokens, sequence after sequence (`Σ tokens[i].len() × d`).
    pub fn forward(
        &self,
        seqs: &mut [&mut Sequence],
        tokens: &[&[u32]],
        mut capture: Option<Capture<'_>>,
    ) -> Result<Vec<f32>, BackendError> {
        let d = self.d;
        assert_eq!(seqs.len(), tokens.len(), "one token list per sequence");
        assert!(
            capture.is_none() || seqs.len() == 1,
            "alignment capture is for one sequence"
        );
        for (seq, toks) in seqs.iter().zip(tokens) {
            if toks.is_empty() || toks.len() > seq.remaining() {
                return Err(BackendError::ContextFull {
                    tokens: toks.len(),
                    remaining: seq.remaining(),
                });
            }
            if let Some(&bad) = toks.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(BackendError::TokenOutOfVocabulary(bad));
            }
        }
        // Row offset of each sequence's tokens in the stacked matrices.
        let mut offsets = Vec::with_capacity(seqs.len() + 1);
        offsets.push(0);
        for toks in tokens {
            offsets.push(offsets.last().unwrap() + toks.len());
        }
        let rows = *offsets.last().unwrap();
        let mut x = vec![0f32; rows * d];
        for (s, (seq, toks)) in seqs.iter().zip(tokens).enumerate() {
            for (i, &tok) in toks.iter().enumerate() {
                let pos = seq.len + i;
                let row = &mut x[(offsets[s] + i) * d..(offsets[s] + i + 1) * d];
                let range = tok as usize * d..(tok as usize + 1) * d;
                match &self.embeddings {
                    Embeddings::F32(e) => row.copy_from_slice(&e[range]),
                    Embeddings::Int8 { lookup, .. } => lookup[range].convert_to_f32_slice(row),
                }
                add_in_place(row, &self.positions[pos * d..(pos + 1) * d]);
            }
        }
        let head_dim = d / self.n_heads;
        let (mut h, mut buf, mut att, mut proj) = (Vec::new(), Vec::new(), vec![0f32; rows * d], Vec::new());
        for (l, layer) in self.layers.iter().enumerate() {
            layer.self_ln.forward_into(&x, &mut h);
            layer.self_qkv.forward(rows, &h, &mut buf);
            for (s, seq) in seqs.iter_mut().enumerate() {
                let (a, b) = (offsets[s], offsets[s + 1]);
                for row in buf[a * 3 * d..b * 3 * d].chunks(3 * d) {
                    seq.self_k[l].extend_from_slice(&row[d..2 * d]);
                    seq.self_v[l].extend_from_slice(&row[2 * d..]);
                }
                let (t, tk) = (b - a, seq.len + b - a);
                let shape = Shape {
                    tq: t,
                    tk,
                    n_heads: self.n_heads,
                    head_dim,
                    q_stride: 3 * d,
                    k_stride: d,
                    v_stride: d,
                    causal: true,
                };
                attention(
                    shape,
                    &buf[a * 3 * d..],
                    &seq.self_k[l],
                    &seq.self_v[l],
                    &mut att[a * d..b * d],
                );
            }
            layer.self_out.forward(rows, &att, &mut proj);
            add_in_place(&mut x, &proj);

            layer.cross_ln.forward_into(&x, &mut h);
            layer.cross_q.forward(rows, &h, &mut buf);
            // f16 windows all in one call (one parallel loop over windows, heads and rows).
            let mut half_queries = Vec::new();
            let mut rest = &mut att[..];
            for (s, seq) in seqs.iter().enumerate() {
                let (a, b) = (offsets[s], offsets[s + 1]);
                let (out, tail) = rest.split_at_mut((b - a) * d);
                rest = tail;
                match &seq.cross.layers[l] {
                    LayerKv::Half(kv) => half_queries.push(CrossQuery {
                        q: &buf[a * d..b * d],
                        tq: b - a,
                        q_stride: d,
                        kv,
                        out,
                    }),
                    LayerKv::F32(kv) => {
                        let shape = Shape {
                            tq: b - a,
                            tk: seq.cross.frames,
                            n_heads: self.n_heads,
                            head_dim,
                            q_stride: d,
                            k_stride: 2 * d,
                            v_stride: 2 * d,
                            causal: false,
                        };
                        attention(shape, &buf[a * d..b * d], kv, &kv[d..], out);
                    }
                }
            }
            cross_attention(&mut half_queries);
            drop(half_queries);
            if let Some((heads, n_frames, out)) = capture.as_mut() {
                let kv = &seqs[0].cross.layers[l];
                for &(_, hd) in heads.iter().filter(|&&(hl, _)| hl == l) {
                    out.push(head_weights(&buf, kv, rows, d, hd, head_dim, *n_frames));
                }
            }
            layer.cross_out.forward(rows, &att, &mut proj);
            add_in_place(&mut x, &proj);

            layer.ffn_ln.forward_into(&x, &mut h);
            layer.fc1.forward(rows, &h, &mut buf);
            gelu(&mut buf);
            layer.fc2.forward(rows, &buf, &mut proj);
            add_in_place(&mut x, &proj);
        }
        for (seq, toks) in seqs.iter_mut().zip(tokens) {
            seq.len += toks.len();
        }
        self.ln.forward_into(&x, &mut h);
        Ok(h)
    }

    /// Vocabulary logits of `m` hidden states (`m × vocab`); the output layer is the tied
    /// embedding matrix, read once for all rows.
    pub fn logits(&self, m: usize, hidden: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; m * self.vocab];
        match &self.embeddings {
            Embeddings::Int8 { projection, .. } => qlinear(hidden, m, self.d, projection, None, &mut out),
            Embeddings::F32(e) => gemm_nt(m, self.vocab, self.d, hidden, e, &mut out),
        }
        out
    }
}
