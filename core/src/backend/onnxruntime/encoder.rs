//! The Whisper encoder as an ONNX graph, built in memory from the CTranslate2 weights with ONNX
//! Runtime's Model Editor API (no export step, no file). It mirrors `model/encoder.rs`: conv1
//! (stride 1) and conv2 (stride 2), each with exact GELU; the stored position encodings;
//! pre-norm blocks of fused-QKV self-attention and a GELU MLP; the final layer norm.
//! Only standard ai.onnx operators, so any execution provider can take the whole graph.

use ort::editor::{Model, Opset, ONNX_DOMAIN};
use ort::value::{Outlet, Shape, SymbolicDimensions, TensorElementType, ValueType};

use super::graph::{attr, Builder, GraphResult};

/// Whisper's layer-norm epsilon (as `model::LN_EPS`).
const LN_EPS: f32 = 1e-5;
/// Opset 20 is the first with `Gelu`.
const OPSET: u32 = 21;
pub const MEL_FRAMES: usize = 3000;
pub const ENCODER_FRAMES: usize = 1500;

/// Number form of the graph's weights and arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GraphPrecision {
    #[default]
    F32,
    /// Weights and activations in float16; input and output stay float32.
    F16,
    /// Linear layers' weights int8 per output channel behind `DequantizeLinear` (QDQ, weights
    /// only); activations and the conv stem in float32.
    Int8Qdq,
}

impl GraphPrecision {
    pub fn parse(s: &str) -> Option<GraphPrecision> {
        match s {
            "f32" | "float32" => Some(GraphPrecision::F32),
            "f16" | "float16" => Some(GraphPrecision::F16),
            "int8" | "qdq" => Some(GraphPrecision::Int8Qdq),
            _ => None,
        }
    }
}

/// Sizes of the encoder, read off the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderDims {
    pub n_mels: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub layers: usize,
}

/// Where the graph's weights come from: a tensor by CTranslate2 name, checked to have `shape`.
pub trait TensorSource {
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String>;
    fn has(&self, name: &str) -> bool;
}

struct EncoderGraph<'a> {
    b: Builder,
    w: &'a dyn TensorSource,
    p: GraphPrecision,
    dims: EncoderDims,
}

impl EncoderGraph<'_> {
    /// A float initializer in the graph's float type.
    fn float(&mut self, name: &str, shape: &[i64], v: &[f32]) -> GraphResult<String> {
        match self.p {
            GraphPrecision::F16 => self.b.init_f16(name, shape, v),
            _ => self.b.init_f32(name, shape, v),
        }
    }

    fn layer_norm(&mut self, x: &str, prefix: &str) -> GraphResult<String> {
        let d = self.dims.d_model;
        let g = self.w.f32(&format!("{prefix}/gamma"), &[d])?;
        let bt = self.w.f32(&format!("{prefix}/beta"), &[d])?;
        let g = self.float(&format!("{prefix}/gamma"), &[d as i64], &g)?;
        let bt = self.float(&format!("{prefix}/beta"), &[d as i64], &bt)?;
        self.b.node(
            "LayerNormalization",
            &[x, &g, &bt],
            vec![attr("axis", -1i64)?, attr("epsilon", LN_EPS)?],
        )
    }

    /// `x·Wᵀ + b` with W stored `[n_out, n_in]` as CTranslate2 has it.
    fn linear(&mut self, x: &str, prefix: &str, n_out: usize, n_in: usize) -> GraphResult<String> {
        let w = self.w.f32(&format!("{prefix}/weight"), &[n_out, n_in])?;
        // MatMul wants `[n_in, n_out]`.
        let mut wt = vec![0f32; w.len()];
        for o in 0..n_out {
            for i in 0..n_in {
                wt[i * n_out + o] = w[o * n_in + i];
            }
        }
        let shape = [n_in as i64, n_out as i64];
        let wname = format!("{prefix}/weight");
        let w_in = match self.p {
            GraphPrecision::Int8Qdq => {
                // Symmetric per output channel (a column of `wt`), as the CPU INT8 path does per row.
                let mut scale = vec![0f32; n_out];
                for (o, s) in scale.iter_mut().enumerate() {
                    let m = (0..n_in).map(|i| wt[i * n_out + o].abs()).fold(0f32, f32::max);
                    *s = if m > 0.0 { m / 127.0 } else { 1.0 };
                }
                let q: Vec<i8> = wt
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| (v / scale[k % n_out]).round().clamp(-127.0, 127.0) as i8)
                    .collect();
                let qn = self.b.init_i8(&format!("{wname}/q"), &shape, &q)?;
                let sn = self.b.init_f32(&format!("{wname}/scale"), &[n_out as i64], &scale)?;
                let zn = self
                    .b
                    .init_i8(&format!("{wname}/zero"), &[n_out as i64], &vec![0i8; n_out])?;
                self.b
                    .node("DequantizeLinear", &[&qn, &sn, &zn], vec![attr("axis", 1i64)?])?
            }
            _ => self.float(&wname, &shape, &wt)?,
        };
        let y = self.b.node("MatMul", &[x, &w_in], vec![])?;
        let bias_name = format!("{prefix}/bias");
        if self.w.has(&bias_name) {
            let bias = self.w.f32(&bias_name, &[n_out])?;
            let bn = self.float(&bias_name, &[n_out as i64], &bias)?;
            self.b.node("Add", &[&y, &bn], vec![])
        } else {
            Ok(y)
        }
    }

    fn conv(&mut self, x: &str, prefix: &str, d_out: usize, d_in: usize, stride: i64) -> GraphResult<String> {
        let w = self.w.f32(&format!("{prefix}/weight"), &[d_out, d_in, 3])?;
        let bias = self.w.f32(&format!("{prefix}/bias"), &[d_out])?;
        let wn = self.float(&format!("{prefix}/weight"), &[d_out as i64, d_in as i64, 3], &w)?;
        let bn = self.float(&format!("{prefix}/bias"), &[d_out as i64], &bias)?;
        let y = self.b.node(
            "Conv",
            &[x, &wn, &bn],
            vec![
                attr("kernel_shape", vec![3i64])?,
                attr("pads", vec![1i64, 1])?,
                attr("strides", vec![stride])?,
            ],
        )?;
        self.b.node("Gelu", &[&y], vec![])
    }

    fn attention(&mut self, x: &str, prefix: &str) -> GraphResult<String> {
        let EncoderDims {
            d_model: d, n_heads: h, ..
        } = self.dims;
        let hd = d / h;
        let qkv = self.linear(x, &format!("{prefix}/linear_0"), 3 * d, d)?;
        let split = self.b.init_i64(&format!("{prefix}/split"), &[d as i64; 3])?;
        let parts = self.b.node_n("Split", &[&qkv, &split], vec![attr("axis", -1i64)?], 3)?;
        let heads = self
            .b
            .init_i64(&format!("{prefix}/heads_shape"), &[0, 0, h as i64, hd as i64])?;
        let mut split_heads = |t: &str, perm: Vec<i64>| -> GraphResult<String> {
            let r = self.b.node("Reshape", &[t, &heads], vec![])?;
            self.b.node("Transpose", &[&r], vec![attr("perm", perm)?])
        };
        // q, v: [B, H, T, hd]; k: [B, H, hd, T].
        let q = split_heads(&parts[0], vec![0, 2, 1, 3])?;
        let k = split_heads(&parts[1], vec![0, 2, 3, 1])?;
        let v = split_heads(&parts[2], vec![0, 2, 1, 3])?;
        let scale = 1.0 / (hd as f32).sqrt();
        let sn = self.float(&format!("{prefix}/scale"), &[], &[scale])?;
        let scores = self.b.node("MatMul", &[&q, &k], vec![])?;
        let scores = self.b.node("Mul", &[&scores, &sn], vec![])?;
        let probs = self.b.node("Softmax", &[&scores], vec![attr("axis", -1i64)?])?;
        let ctx = self.b.node("MatMul", &[&probs, &v], vec![])?;
        let ctx = self
            .b
            .node("Transpose", &[&ctx], vec![attr("perm", vec![0i64, 2, 1, 3])?])?;
        let merged = self.b.init_i64(&format!("{prefix}/merged_shape"), &[0, 0, d as i64])?;
        let ctx = self.b.node("Reshape", &[&ctx, &merged], vec![])?;
        self.linear(&ctx, &format!("{prefix}/linear_1"), d, d)
    }

    fn build(mut self) -> GraphResult<Model> {
        let EncoderDims {
            n_mels,
            d_model: d,
            layers,
            ..
        } = self.dims;
        let float_ty = match self.p {
            GraphPrecision::F16 => TensorElementType::Float16,
            _ => TensorElementType::Float32,
        };
        let io = |name: &str, shape: [i64; 3]| {
            Outlet::new(
                name,
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    shape: Shape::new(shape),
                    dimension_symbols: SymbolicDimensions::new(["batch".to_string(), String::new(), String::new()]),
                },
            )
        };
        self.b
            .graph
            .set_inputs([io("mel", [-1, n_mels as i64, MEL_FRAMES as i64])])
            .map_err(super::graph::ort_err("graph inputs"))?;
        self.b
            .graph
            .set_outputs([io("states", [-1, ENCODER_FRAMES as i64, d as i64])])
            .map_err(super::graph::ort_err("graph outputs"))?;
        let mut x = "mel".to_string();
        if float_ty == TensorElementType::Float16 {
            x = self.b.node("Cast", &[&x], vec![attr("to", 10i64)?])?;
        }
        x = self.conv(&x, "encoder/conv1", d, n_mels, 1)?;
        x = self.conv(&x, "encoder/conv2", d, d, 2)?;
        x = self.b.node("Transpose", &[&x], vec![attr("perm", vec![0i64, 2, 1])?])?;
        let pos = self
            .w
            .f32("encoder/position_encodings/encodings", &[ENCODER_FRAMES, d])?;
        let pn = self.float(
            "encoder/position_encodings/encodings",
            &[ENCODER_FRAMES as i64, d as i64],
            &pos,
        )?;
        x = self.b.node("Add", &[&x, &pn], vec![])?;
        for i in 0..layers {
            let p = format!("encoder/layer_{i}");
            let h = self.layer_norm(&x, &format!("{p}/self_attention/layer_norm"))?;
            let a = self.attention(&h, &format!("{p}/self_attention"))?;
            x = self.b.node("Add", &[&x, &a], vec![])?;
            let h = self.layer_norm(&x, &format!("{p}/ffn/layer_norm"))?;
            let h = self.linear(&h, &format!("{p}/ffn/linear_0"), 4 * d, d)?;
            let h = self.b.node("Gelu", &[&h], vec![])?;
            let h = self.linear(&h, &format!("{p}/ffn/linear_1"), d, 4 * d)?;
            x = self.b.node("Add", &[&x, &h], vec![])?;
        }
        x = self.layer_norm(&x, "encoder/layer_norm")?;
        if float_ty == TensorElementType::Float16 {
            x = self.b.node("Cast", &[&x], vec![attr("to", 1i64)?])?;
        }
        self.b.output(&x, "states")?;
        let mut model = Model::new([Opset::new(ONNX_DOMAIN, OPSET).map_err(super::graph::ort_err("opset"))?])
            .map_err(super::graph::ort_err("cannot create an ONNX model"))?;
        model
            .set_graph(self.b.graph)
            .map_err(super::graph::ort_err("cannot add the graph"))?;
        Ok(model)
    }
}

/// The encoder graph of the weights in `w`: input `mel` `[batch, n_mels, 3000]`, output
/// `states` `[batch, 1500, d_model]`, both float32.
pub fn build_encoder(w: &dyn TensorSource, dims: EncoderDims, precision: GraphPrecision) -> GraphResult<Model> {
    if dims.n_heads == 0 || !dims.d_model.is_multiple_of(dims.n_heads) {
        return Err(format!("{} heads do not divide width {}", dims.n_heads, dims.d_model));
    }
    EncoderGraph {
        b: Builder::new()?,
        w,
        p: precision,
        dims,
    }
    .build()
}
