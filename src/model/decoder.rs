//! Whisper text decoder with a self-attention KV cache; cross-attention keys and values are
//! computed once per window.

use npuwhisper_kernels::attention::{attention, Shape};
use npuwhisper_kernels::gemm::{dot, gemm_nt};
use npuwhisper_kernels::ops::{add_in_place, gelu, softmax};

use super::{Dims, LayerNorm, Linear, Model, Weights, ENCODER_FRAMES};

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

pub(crate) struct Decoder {
    embeddings: Vec<f32>,
    positions: Vec<f32>,
    layers: Vec<DecoderLayer>,
    ln: LayerNorm,
    d: usize,
    n_heads: usize,
    vocab: usize,
    max_positions: usize,
}

impl Decoder {
    pub fn load(w: &Weights, dims: &Dims) -> Result<Decoder, String> {
        let d = dims.d_model;
        let layers = (0..dims.decoder_layers)
            .map(|i| {
                let p = format!("decoder/layer_{i}");
                Ok(DecoderLayer {
                    self_ln: w.layer_norm(&format!("{p}/self_attention/layer_norm"), d)?,
                    self_qkv: w.linear(&format!("{p}/self_attention/linear_0"), 3 * d, d)?,
                    self_out: w.linear(&format!("{p}/self_attention/linear_1"), d, d)?,
                    cross_ln: w.layer_norm(&format!("{p}/attention/layer_norm"), d)?,
                    cross_q: w.linear(&format!("{p}/attention/linear_0"), d, d)?,
                    cross_kv: w.linear(&format!("{p}/attention/linear_1"), 2 * d, d)?,
                    cross_out: w.linear(&format!("{p}/attention/linear_2"), d, d)?,
                    ffn_ln: w.layer_norm(&format!("{p}/ffn/layer_norm"), d)?,
                    fc1: w.linear(&format!("{p}/ffn/linear_0"), 4 * d, d)?,
                    fc2: w.linear(&format!("{p}/ffn/linear_1"), d, 4 * d)?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Decoder {
            embeddings: w.tensor("decoder/embeddings/weight", &[dims.vocab_size, d])?,
            positions: w.tensor("decoder/position_encodings/encodings", &[dims.max_text_positions, d])?,
            layers,
            ln: w.layer_norm("decoder/layer_norm", d)?,
            d,
            n_heads: dims.n_heads,
            vocab: dims.vocab_size,
            max_positions: dims.max_text_positions,
        })
    }
}

/// Softmax of one head's scaled scores over the first `n_frames` keys, `t × n_frames`.
fn head_weights(q: &[f32], kv: &[f32], t: usize, d: usize, off: usize, head_dim: usize, n_frames: usize) -> Vec<f32> {
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut w = vec![0f32; t * n_frames];
    for (i, row) in w.chunks_mut(n_frames).enumerate() {
        let qi = &q[i * d + off..i * d + off + head_dim];
        for (j, v) in row.iter_mut().enumerate() {
            *v = dot(qi, &kv[j * 2 * d + off..j * 2 * d + off + head_dim]) * scale;
        }
        softmax(row);
    }
    w
}

/// Decoding state of one window: cross-attention K/V and the growing self-attention cache.
pub struct DecoderSession<'m> {
    dec: &'m Decoder,
    cross_kv: Vec<Vec<f32>>,
    self_k: Vec<Vec<f32>>,
    self_v: Vec<Vec<f32>>,
    len: usize,
}

impl<'m> DecoderSession<'m> {
    pub(crate) fn new(model: &'m Model, states: &[f32]) -> Self {
        let dec = &model.decoder;
        let cross_kv = dec
            .layers
            .iter()
            .map(|l| {
                let mut kv = Vec::new();
                l.cross_kv.forward(ENCODER_FRAMES, states, &mut kv);
                kv
            })
            .collect();
        let n = dec.layers.len();
        DecoderSession { dec, cross_kv, self_k: vec![Vec::new(); n], self_v: vec![Vec::new(); n], len: 0 }
    }

    /// Tokens decoded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions left before the decoder's context is full.
    pub fn remaining(&self) -> usize {
        self.dec.max_positions - self.len
    }

    /// Forgets the tokens, keeping the encoder's keys and values.
    pub fn reset(&mut self) {
        self.self_k.iter_mut().chain(self.self_v.iter_mut()).for_each(Vec::clear);
        self.len = 0;
    }

    /// Runs `tokens` after those already decoded; returns their final hidden states
    /// (`tokens.len() × d`), or an error if they do not fit in the context or are out of vocabulary.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, String> {
        self.forward_capturing(tokens, None)
    }

    /// Runs `tokens` from an empty cache and returns, for each `(layer, head)` of `heads`, the
    /// cross-attention weights of every token over the first `n_frames` encoder frames
    /// (`tokens.len() × n_frames`, softmax over those frames only), for word alignment.
    pub fn cross_attention_weights(
        &mut self,
        tokens: &[u32],
        heads: &[(usize, usize)],
        n_frames: usize,
    ) -> Result<Vec<Vec<f32>>, String> {
        self.reset();
        let mut out = Vec::new();
        self.forward_capturing(tokens, Some((heads, n_frames.clamp(1, ENCODER_FRAMES), &mut out)))?;
        Ok(out)
    }

    fn forward_capturing(
        &mut self,
        tokens: &[u32],
        mut capture: Option<(&[(usize, usize)], usize, &mut Vec<Vec<f32>>)>,
    ) -> Result<Vec<f32>, String> {
        let (dec, d, t) = (self.dec, self.dec.d, tokens.len());
        if t == 0 || t > self.remaining() {
            return Err(format!("{t} tokens do not fit the {} positions left", self.remaining()));
        }
        if let Some(bad) = tokens.iter().find(|&&id| id as usize >= dec.vocab) {
            return Err(format!("token {bad} is outside the vocabulary"));
        }
        let mut x = vec![0f32; t * d];
        for (i, (&tok, row)) in tokens.iter().zip(x.chunks_mut(d)).enumerate() {
            let pos = self.len + i;
            row.copy_from_slice(&dec.embeddings[tok as usize * d..(tok as usize + 1) * d]);
            add_in_place(row, &dec.positions[pos * d..(pos + 1) * d]);
        }
        let head_dim = d / dec.n_heads;
        let (mut h, mut buf, mut att, mut proj) = (Vec::new(), Vec::new(), vec![0f32; t * d], Vec::new());
        for (l, layer) in dec.layers.iter().enumerate() {
            layer.self_ln.forward_into(&x, &mut h);
            layer.self_qkv.forward(t, &h, &mut buf);
            for row in buf.chunks(3 * d) {
                self.self_k[l].extend_from_slice(&row[d..2 * d]);
                self.self_v[l].extend_from_slice(&row[2 * d..]);
            }
            let tk = self.len + t;
            let s = Shape { tq: t, tk, n_heads: dec.n_heads, head_dim, q_stride: 3 * d, k_stride: d, v_stride: d, causal: true };
            attention(s, &buf, &self.self_k[l], &self.self_v[l], &mut att);
            layer.self_out.forward(t, &att, &mut proj);
            add_in_place(&mut x, &proj);

            layer.cross_ln.forward_into(&x, &mut h);
            layer.cross_q.forward(t, &h, &mut buf);
            let kv = &self.cross_kv[l];
            let s = Shape { tq: t, tk: ENCODER_FRAMES, n_heads: dec.n_heads, head_dim, q_stride: d, k_stride: 2 * d, v_stride: 2 * d, causal: false };
            attention(s, &buf, kv, &kv[d..], &mut att);
            if let Some((heads, n_frames, out)) = capture.as_mut() {
                for &(_, h) in heads.iter().filter(|&&(hl, _)| hl == l) {
                    out.push(head_weights(&buf, kv, t, d, h * head_dim, head_dim, *n_frames));
                }
            }
            layer.cross_out.forward(t, &att, &mut proj);
            add_in_place(&mut x, &proj);

            layer.ffn_ln.forward_into(&x, &mut h);
            layer.fc1.forward(t, &h, &mut buf);
            gelu(&mut buf);
            layer.fc2.forward(t, &buf, &mut proj);
            add_in_place(&mut x, &proj);
        }
        self.len += t;
        dec.ln.forward_into(&x, &mut h);
        Ok(h)
    }

    /// Vocabulary logits of one hidden state (the output layer is the tied embedding matrix).
    pub fn logits(&self, hidden: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.dec.vocab];
        gemm_nt(1, self.dec.vocab, self.dec.d, hidden, &self.dec.embeddings, &mut out);
        out
    }
}
