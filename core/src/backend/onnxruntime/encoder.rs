//! The Whisper encoder as an ONNX graph, built in memory from the CTranslate2 weights with ONNX
//! Runtime's Model Editor API (no export step, no file). It mirrors `model/encoder.rs`: conv1
//! (stride 1) and conv2 (stride 2), each with exact GELU; the stored position encodings;
//! pre-norm blocks of fused-QKV self-attention and a GELU MLP; the final layer norm.
//! Only standard ai.onnx operators, so any execution provider can take the whole graph.

use ort::editor::{Model, Opset, ONNX_DOMAIN};
use ort::value::{Outlet, Shape, SymbolicDimensions, TensorElementType, ValueType};

use super::graph::{attr, ActivationQuant, GraphResult, Layers};

/// Opset 20 is the first with `Gelu`.
pub(crate) const OPSET: u32 = 21;
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
    l: Layers<'a>,
    dims: EncoderDims,
}

impl EncoderGraph<'_> {
    fn float(&mut self, name: &str, shape: &[i64], v: &[f32]) -> GraphResult<String> {
        self.l.float(name, shape, v)
    }

    fn layer_norm(&mut self, x: &str, prefix: &str) -> GraphResult<String> {
        self.l.layer_norm(x, prefix, self.dims.d_model)
    }

    fn linear(&mut self, x: &str, prefix: &str, n_out: usize, n_in: usize) -> GraphResult<String> {
        self.l.linear(x, prefix, n_out, n_in, true)
    }

    fn conv(&mut self, x: &str, prefix: &str, d_out: usize, d_in: usize, stride: i64) -> GraphResult<String> {
        let w = self.l.w.f32(&format!("{prefix}/weight"), &[d_out, d_in, 3])?;
        let bias = self.l.w.f32(&format!("{prefix}/bias"), &[d_out])?;
        let wn = self.float(&format!("{prefix}/weight"), &[d_out as i64, d_in as i64, 3], &w)?;
        let bn = self.float(&format!("{prefix}/bias"), &[d_out as i64], &bias)?;
        let y = self.l.b.node(
            "Conv",
            &[x, &wn, &bn],
            vec![
                attr("kernel_shape", vec![3i64])?,
                attr("pads", vec![1i64, 1])?,
                attr("strides", vec![stride])?,
            ],
        )?;
        self.l.b.node("Gelu", &[&y], vec![])
    }

    fn attention(&mut self, x: &str, prefix: &str) -> GraphResult<String> {
        let EncoderDims {
            d_model: d, n_heads: h, ..
        } = self.dims;
        let hd = d / h;
        let qkv = self.linear(x, &format!("{prefix}/linear_0"), 3 * d, d)?;
        let split = self.l.b.init_i64(&format!("{prefix}/split"), &[d as i64; 3])?;
        let parts = self
            .l
            .b
            .node_n("Split", &[&qkv, &split], vec![attr("axis", -1i64)?], 3)?;
        // q, v: [B, H, T, hd]; k: [B, H, hd, T].
        let q = self.l.split_heads(&parts[0], h, hd, vec![0, 2, 1, 3])?;
        let k = self.l.split_heads(&parts[1], h, hd, vec![0, 2, 3, 1])?;
        let v = self.l.split_heads(&parts[2], h, hd, vec![0, 2, 1, 3])?;
        let scale = 1.0 / (hd as f32).sqrt();
        let sn = self.float(&format!("{prefix}/scale"), &[], &[scale])?;
        let scores = self.l.b.node("MatMul", &[&q, &k], vec![])?;
        let scores = self.l.b.node("Mul", &[&scores, &sn], vec![])?;
        let probs = self.l.b.node("Softmax", &[&scores], vec![attr("axis", -1i64)?])?;
        let ctx = self.l.b.node("MatMul", &[&probs, &v], vec![])?;
        let ctx = self.l.merge_heads(&ctx, d)?;
        self.linear(&ctx, &format!("{prefix}/linear_1"), d, d)
    }

    fn build(mut self) -> GraphResult<Model> {
        let EncoderDims {
            n_mels,
            d_model: d,
            layers,
            ..
        } = self.dims;
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
        self.l
            .b
            .graph
            .set_inputs([io("mel", [-1, n_mels as i64, MEL_FRAMES as i64])])
            .map_err(super::graph::ort_err("graph inputs"))?;
        let mut x = self.l.cast_in("mel")?;
        x = self.l.b.activation(&x)?;
        x = self.conv(&x, "encoder/conv1", d, n_mels, 1)?;
        x = self.conv(&x, "encoder/conv2", d, d, 2)?;
        x = self
            .l
            .b
            .node("Transpose", &[&x], vec![attr("perm", vec![0i64, 2, 1])?])?;
        let pos = self
            .l
            .w
            .f32("encoder/position_encodings/encodings", &[ENCODER_FRAMES, d])?;
        let pn = self.float(
            "encoder/position_encodings/encodings",
            &[ENCODER_FRAMES as i64, d as i64],
            &pos,
        )?;
        x = self.l.b.node("Add", &[&x, &pn], vec![])?;
        for i in 0..layers {
            let p = format!("encoder/layer_{i}");
            let h = self.layer_norm(&x, &format!("{p}/self_attention/layer_norm"))?;
            let a = self.attention(&h, &format!("{p}/self_attention"))?;
            x = self.l.b.node("Add", &[&x, &a], vec![])?;
            let h = self.layer_norm(&x, &format!("{p}/ffn/layer_norm"))?;
            let h = self.linear(&h, &format!("{p}/ffn/linear_0"), 4 * d, d)?;
            let h = self.l.b.node("Gelu", &[&h], vec![])?;
            let h = self.linear(&h, &format!("{p}/ffn/linear_1"), d, 4 * d)?;
            x = self.l.b.node("Add", &[&x, &h], vec![])?;
        }
        x = self.layer_norm(&x, "encoder/layer_norm")?;
        x = self.l.cast_out(&x)?;
        self.l.b.output(&x, "states")?;
        // The activation ranges, when recording them for calibration: float32 scalars.
        let scalar = |name: &str| {
            Outlet::new(
                name,
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    shape: Shape::new([]),
                    dimension_symbols: SymbolicDimensions::new([]),
                },
            )
        };
        let mut outputs = vec![io("states", [-1, ENCODER_FRAMES as i64, d as i64])];
        outputs.extend(self.l.b.recorded.iter().map(|n| scalar(n)));
        self.l
            .b
            .graph
            .set_outputs(outputs)
            .map_err(super::graph::ort_err("graph outputs"))?;
        let mut model = Model::new([Opset::new(ONNX_DOMAIN, OPSET).map_err(super::graph::ort_err("opset"))?])
            .map_err(super::graph::ort_err("cannot create an ONNX model"))?;
        model
            .set_graph(self.l.b.graph)
            .map_err(super::graph::ort_err("cannot add the graph"))?;
        Ok(model)
    }
}

/// The encoder graph of the weights in `w`: input `mel` `[batch, n_mels, 3000]`, output
/// `states` `[batch, 1500, d_model]`, both float32.
pub fn build_encoder(w: &dyn TensorSource, dims: EncoderDims, precision: GraphPrecision) -> GraphResult<Model> {
    build_encoder_quant(w, dims, precision, ActivationQuant::None)
}

/// [`build_encoder`] with its activations recorded or quantized as `quant` says.
pub(crate) fn build_encoder_quant(
    w: &dyn TensorSource,
    dims: EncoderDims,
    precision: GraphPrecision,
    quant: ActivationQuant,
) -> GraphResult<Model> {
    if dims.n_heads == 0 || !dims.d_model.is_multiple_of(dims.n_heads) {
        return Err(format!("{} heads do not divide width {}", dims.n_heads, dims.d_model));
    }
    let mut l = Layers::new(w, precision)?;
    l.b.quant = quant;
    EncoderGraph { l, dims }.build()
}
