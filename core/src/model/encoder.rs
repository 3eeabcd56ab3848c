//! Whisper encoder: conv stem (as GEMMs over im2col), sinusoidal positions, pre-norm
//! transformer blocks, final layer norm. Windows of a batch share every linear layer's GEMM.

use std::sync::Mutex;

use npuwhisper_kernels::attention::{attention, attention_bf16, Shape};
use npuwhisper_kernels::ops::{add_in_place, gelu};
use npuwhisper_kernels::store::Store;

use super::{Dims, LayerNorm, Linear, Precision, Weights, ENCODER_FRAMES, MEL_FRAMES};

pub(crate) struct EncoderLayer {
    attn_ln: LayerNorm,
    qkv: Linear,
    attn_out: Linear,
    ffn_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub(crate) struct Encoder {
    /// Convolutions as linear layers over `[channel, tap]` columns.
    conv1: Linear,
    conv2: Linear,
    positions: Store<f32>,
    layers: Vec<EncoderLayer>,
    ln_post: LayerNorm,
    n_mels: usize,
    d: usize,
    n_heads: usize,
    /// Self-attention's two products in bf16 (INT8 models, where the CPU has a bf16 matrix
    /// unit); f32 models keep f32.
    bf16_attention: bool,
    /// Working buffers of finished windows, for the next ones (one per concurrent caller).
    scratch: Mutex<Vec<Scratch>>,
}

fn conv(w: &Weights, prefix: &str, d_out: usize, d_in: usize) -> Result<Linear, String> {
    let weight = w.tensor(&format!("{prefix}/weight"), &[d_out, d_in, 3])?;
    let bias = w.tensor(&format!("{prefix}/bias"), &[d_out])?;
    Ok(Linear::new(weight, Some(bias), d_out, d_in * 3))
}

impl Encoder {
    /// In INT8 the transformer layers are quantized; the conv stem stays f32 (a small share of
    /// the work, and the first layer sees raw log-mel, the input most sensitive to rounding:
    /// even bf16 there cost base words on the short clips; README, Benchmarks).
    pub fn load(w: &Weights, dims: &Dims) -> Result<Encoder, String> {
        let d = dims.d_model;
        let layers = (0..dims.encoder_layers)
            .map(|i| {
                let p = format!("encoder/layer_{i}");
                Ok(EncoderLayer {
                    attn_ln: w.layer_norm(&format!("{p}/self_attention/layer_norm"), d)?,
                    qkv: w.linear(&format!("{p}/self_attention/linear_0"), 3 * d, d, true)?,
                    attn_out: w.linear(&format!("{p}/self_attention/linear_1"), d, d, true)?,
                    ffn_ln: w.layer_norm(&format!("{p}/ffn/layer_norm"), d)?,
                    fc1: w.linear(&format!("{p}/ffn/linear_0"), 4 * d, d, true)?,
                    fc2: w.linear(&format!("{p}/ffn/linear_1"), d, 4 * d, true)?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Encoder {
            conv1: conv(w, "encoder/conv1", d, dims.n_mels)?,
            conv2: conv(w, "encoder/conv2", d, d)?,
            positions: w.tensor("encoder/position_encodings/encodings", &[ENCODER_FRAMES, d])?,
            layers,
            bf16_attention: w.precision == Precision::Int8,
            scratch: Mutex::new(Vec::new()),
            ln_post: w.layer_norm("encoder/layer_norm", d)?,
            n_mels: dims.n_mels,
            d,
            n_heads: dims.n_heads,
        })
    }

    /// Each mel is `n_mels × MEL_FRAMES`; returns `frames × d` per window (`frames` ≤
    /// `ENCODER_FRAMES`): the encoder runs over the first `2 · frames` mel frames only, with
    /// the first `frames` positions (whisper.cpp's `audio_ctx`).
    ///
    /// The windows go through one after the other: with 1500 positions each, a window alone
    /// already reuses every weight 1500 times, so stacking windows gains no speed, while it
    /// multiplies the activations held at once (README, Benchmarks).
    pub fn forward_batch(&self, mels: &[&[f32]], frames: usize) -> Vec<Vec<f32>> {
        debug_assert!((1..=ENCODER_FRAMES).contains(&frames));
        // On the kernels' pool as a whole: each kernel's own hand-off from another thread
        // (wake a worker, block, be woken) would otherwise come once per layer and operation.
        npuwhisper_kernels::pool::install(|| mels.iter().map(|mel| self.forward(mel, frames)).collect())
    }

    /// One window: `n_mels × MEL_FRAMES` in, `frames × d` out.
    fn forward(&self, mel: &[f32], frames: usize) -> Vec<f32> {
        // The buffers of an earlier window: fresh ones would each be new pages from the
        // system (glibc's mmap threshold is 1 MiB here), a page fault per 4 KiB.
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let out = self.forward_with(mel, frames, &mut scratch);
        self.scratch.lock().unwrap_or_else(|e| e.into_inner()).push(scratch);
        out
    }

    fn forward_with(&self, mel: &[f32], frames: usize, scratch: &mut Scratch) -> Vec<f32> {
        // The mel is cut after `mel_t` frames: conv1 pads there as at the window's end.
        let (d, t, mel_t) = (self.d, frames, 2 * frames);
        let Scratch {
            cols,
            h1,
            x,
            h,
            qkv,
            att,
            proj,
        } = scratch;
        // Stem: conv1 (stride 1) over the mel, conv2 (stride 2) over its output; padding 1.
        let c1 = self.n_mels * 3;
        cols.clear();
        cols.resize(mel_t * c1, 0.0);
        for (ti, row) in cols.chunks_mut(c1).enumerate() {
            for c in 0..self.n_mels {
                for k in 0..3 {
                    let src = ti as isize + k as isize - 1;
                    if (0..mel_t as isize).contains(&src) {
                        row[c * 3 + k] = mel[c * MEL_FRAMES + src as usize];
                    }
                }
            }
        }
        self.conv1.forward(mel_t, cols, h1);
        gelu(h1);
        let c2 = d * 3;
        cols.clear();
        cols.resize(t * c2, 0.0);
        for (ti, row) in cols.chunks_mut(c2).enumerate() {
            for k in 0..3 {
                let src = 2 * ti as isize + k as isize - 1;
                if (0..mel_t as isize).contains(&src) {
                    let frame = &h1[src as usize * d..(src as usize + 1) * d];
                    for (c, &v) in frame.iter().enumerate() {
                        row[c * 3 + k] = v;
                    }
                }
            }
        }
        self.conv2.forward(t, cols, x);
        gelu(x);
        add_in_place(x, &self.positions[..t * d]);

        att.resize(t * d, 0.0);
        let head_dim = d / self.n_heads;
        for layer in &self.layers {
            layer.attn_ln.forward_into(x, h);
            layer.qkv.forward(t, h, qkv);
            let s = Shape {
                tq: t,
                tk: t,
                n_heads: self.n_heads,
                head_dim,
                q_stride: 3 * d,
                k_stride: 3 * d,
                v_stride: 3 * d,
                causal: false,
            };
            if self.bf16_attention {
                attention_bf16(s, qkv, &qkv[d..], &qkv[2 * d..], att);
            } else {
                attention(s, qkv, &qkv[d..], &qkv[2 * d..], att);
            }
            layer.attn_out.forward(t, att, proj);
            add_in_place(x, proj);
            layer.ffn_ln.forward_into(x, h);
            layer.fc1.forward(t, h, qkv);
            gelu(qkv);
            layer.fc2.forward(t, qkv, proj);
            add_in_place(x, proj);
        }
        let mut out = Vec::new();
        self.ln_post.forward_into(x, &mut out);
        out
    }
}

/// One window's working buffers, kept between windows.
#[derive(Default)]
struct Scratch {
    /// The convolutions' input columns.
    cols: Vec<f32>,
    /// conv1's output.
    h1: Vec<f32>,
    /// The residual stream.
    x: Vec<f32>,
    /// Layer-norm output.
    h: Vec<f32>,
    /// Fused Q, K, V; then the MLP's hidden layer.
    qkv: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
}
