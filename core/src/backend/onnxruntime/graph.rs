//! A small builder over ONNX Runtime's Model Editor API: nodes with generated output names and
//! initializers copied from host slices, so graph code reads as the forward pass it mirrors.

use ort::editor::{Graph, Node, ONNX_DOMAIN};
use ort::memory::Allocator;
use ort::operator::Attribute;
use ort::value::{DynTensor, TensorElementType};

use super::encoder::{GraphPrecision, TensorSource};

/// Whisper's layer-norm epsilon (as `model::LN_EPS`).
const LN_EPS: f32 = 1e-5;

pub(crate) type GraphResult<T> = Result<T, String>;

pub(crate) fn ort_err(what: &str) -> impl Fn(ort::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// What the builder does with each activation (every float output of a node, and the inputs
/// that [`Builder::activation`] is called on): nothing, record its range as graph outputs, or
/// quantize it with a recorded range.
#[derive(Debug, Clone, Default)]
pub(crate) enum ActivationQuant {
    #[default]
    None,
    /// Outputs `act_min_{k}` and `act_max_{k}` (float32 scalars) for activation `k`.
    Record,
    /// A uint16 `QuantizeLinear` / `DequantizeLinear` pair on activation `k`, with range `k`.
    Apply(Vec<(f32, f32)>),
}

/// The uint16 scale and zero point of the range `(lo, hi)`, widened to hold 0, as ONNX
/// Runtime's quantization tools compute them.
pub(crate) fn u16_scale(lo: f32, hi: f32) -> (f32, u16) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 65535.0 } else { 1.0 };
    (scale, (-lo / scale).round().clamp(0.0, 65535.0) as u16)
}

pub(crate) struct Builder {
    pub graph: Graph,
    allocator: Allocator,
    n: usize,
    pub quant: ActivationQuant,
    /// Activations seen so far (their index is their order).
    activations: usize,
    /// The graph outputs [`ActivationQuant::Record`] added.
    pub recorded: Vec<String>,
}

impl Builder {
    pub fn new() -> GraphResult<Builder> {
        Ok(Builder {
            graph: Graph::new().map_err(ort_err("cannot create an ONNX graph"))?,
            allocator: Allocator::default(),
            n: 0,
            quant: ActivationQuant::None,
            activations: 0,
            recorded: Vec::new(),
        })
    }

    /// Activation `x` as the rest of the graph should read it: itself, or (with
    /// [`ActivationQuant::Apply`]) through its quantize-dequantize pair. With
    /// [`ActivationQuant::Record`] its range becomes two graph outputs.
    pub fn activation(&mut self, x: &str) -> GraphResult<String> {
        let k = self.activations;
        match &self.quant {
            ActivationQuant::None => Ok(x.to_string()),
            ActivationQuant::Record => {
                self.activations += 1;
                for (op, out) in [
                    ("ReduceMin", format!("act_min_{k}")),
                    ("ReduceMax", format!("act_max_{k}")),
                ] {
                    let keep = attr("keepdims", 0i64)?;
                    let node = Node::new(op, ONNX_DOMAIN, format!("{out}_node"), [x], [out.as_str()], [keep])
                        .map_err(ort_err(op))?;
                    self.graph.add_node(node).map_err(ort_err(op))?;
                    self.recorded.push(out);
                }
                Ok(x.to_string())
            }
            ActivationQuant::Apply(ranges) => {
                let &(lo, hi) = ranges
                    .get(k)
                    .ok_or_else(|| format!("no calibrated range for activation {k} of {}", ranges.len()))?;
                self.activations += 1;
                let (scale, zero) = u16_scale(lo, hi);
                let sn = self.init_f32(&format!("act_{k}/scale"), &[], &[scale])?;
                let zn = self.init_bytes(
                    &format!("act_{k}/zero"),
                    TensorElementType::Uint16,
                    &[],
                    &zero.to_ne_bytes(),
                )?;
                let (q, dq) = (format!("act_{k}/q"), format!("act_{k}/dq"));
                for (op, input, out) in [("QuantizeLinear", x, &q), ("DequantizeLinear", q.as_str(), &dq)] {
                    let node = Node::new(
                        op,
                        ONNX_DOMAIN,
                        format!("{out}_node"),
                        [input, &sn, &zn],
                        [out.as_str()],
                        [],
                    )
                    .map_err(ort_err(op))?;
                    self.graph.add_node(node).map_err(ort_err(op))?;
                }
                Ok(dq)
            }
        }
    }

    /// Adds `op` over `inputs`; returns its `outputs` output names (`{op}_{n}:{i}`), each as
    /// [`activation`](Self::activation) hands it on.
    pub fn node_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<Attribute>,
        outputs: usize,
    ) -> GraphResult<Vec<String>> {
        let outs = self.add_node(op, inputs, attrs, outputs)?;
        outs.iter().map(|o| self.activation(o)).collect()
    }

    /// Adds `op` over `inputs` with `outputs` generated output names, and returns them.
    fn add_node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<Attribute>,
        outputs: usize,
    ) -> GraphResult<Vec<String>> {
        self.n += 1;
        let name = format!("{op}_{}", self.n);
        let outs: Vec<String> = (0..outputs).map(|i| format!("{name}:{i}")).collect();
        let node = Node::new(op, ONNX_DOMAIN, &name, inputs, &outs, attrs).map_err(ort_err(op))?;
        self.graph.add_node(node).map_err(ort_err(op))?;
        Ok(outs)
    }

    /// [`node`](Self::node) for a node whose output is a weight, not an activation: never
    /// quantized or recorded.
    pub fn weight_node(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attribute>) -> GraphResult<String> {
        Ok(self.add_node(op, inputs, attrs, 1)?.remove(0))
    }

    /// A number not used before in this graph, for unique initializer names.
    pub fn fresh(&mut self) -> usize {
        self.n += 1;
        self.n
    }

    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attribute>) -> GraphResult<String> {
        Ok(self.node_n(op, inputs, attrs, 1)?.remove(0))
    }

    /// A named output: an `Identity` from `from` to `name`.
    pub fn output(&mut self, from: &str, name: &str) -> GraphResult<()> {
        let node = Node::new("Identity", ONNX_DOMAIN, format!("out_{name}"), [from], [name], [])
            .map_err(ort_err("Identity"))?;
        self.graph.add_node(node).map_err(ort_err("Identity"))
    }

    /// An initializer of `ty` holding `bytes` (native endianness, as ONNX Runtime reads them).
    fn init_bytes(&mut self, name: &str, ty: TensorElementType, shape: &[i64], bytes: &[u8]) -> GraphResult<String> {
        let err = ort_err(name);
        let mut t = DynTensor::new(&self.allocator, ty, shape.to_vec()).map_err(&err)?;
        let size = t.size().unwrap_or(0);
        if size != bytes.len() {
            return Err(format!("{name}: {} bytes for a tensor of {size}", bytes.len()));
        }
        // SAFETY: the tensor was just allocated on the CPU with `size` bytes, checked equal to
        // `bytes.len()`, and nothing else refers to it yet.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), t.data_ptr_mut().cast::<u8>(), size) };
        self.graph.add_initializer(name, t, false).map_err(&err)?;
        Ok(name.to_string())
    }

    pub fn init_f32(&mut self, name: &str, shape: &[i64], v: &[f32]) -> GraphResult<String> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
        self.init_bytes(name, TensorElementType::Float32, shape, &bytes)
    }

    pub fn init_f16(&mut self, name: &str, shape: &[i64], v: &[f32]) -> GraphResult<String> {
        let bytes: Vec<u8> = v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_bits().to_ne_bytes())
            .collect();
        self.init_bytes(name, TensorElementType::Float16, shape, &bytes)
    }

    pub fn init_i8(&mut self, name: &str, shape: &[i64], v: &[i8]) -> GraphResult<String> {
        let bytes: Vec<u8> = v.iter().map(|&x| x as u8).collect();
        self.init_bytes(name, TensorElementType::Int8, shape, &bytes)
    }

    pub fn init_i64(&mut self, name: &str, v: &[i64]) -> GraphResult<String> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
        self.init_bytes(name, TensorElementType::Int64, &[v.len() as i64], &bytes)
    }
}

pub(crate) fn attr<T: ort::operator::ToAttribute>(name: &str, v: T) -> GraphResult<Attribute> {
    Attribute::new(name, v).map_err(ort_err(name))
}

/// A graph being built from CTranslate2 weights at a precision: the layers the encoder and
/// decoder graphs share.
pub(crate) struct Layers<'a> {
    pub b: Builder,
    pub w: &'a dyn TensorSource,
    pub p: GraphPrecision,
}

impl<'a> Layers<'a> {
    pub fn new(w: &'a dyn TensorSource, p: GraphPrecision) -> GraphResult<Layers<'a>> {
        Ok(Layers {
            b: Builder::new()?,
            w,
            p,
        })
    }

    /// A float initializer in the graph's float type.
    pub fn float(&mut self, name: &str, shape: &[i64], v: &[f32]) -> GraphResult<String> {
        match self.p {
            GraphPrecision::F16 => self.b.init_f16(name, shape, v),
            _ => self.b.init_f32(name, shape, v),
        }
    }

    /// A float32 graph input in the graph's float type.
    pub fn cast_in(&mut self, x: &str) -> GraphResult<String> {
        match self.p {
            GraphPrecision::F16 => self.b.node("Cast", &[x], vec![attr("to", 10i64)?]),
            _ => Ok(x.to_string()),
        }
    }

    /// A value in the graph's float type as float32 (for a graph output).
    pub fn cast_out(&mut self, x: &str) -> GraphResult<String> {
        match self.p {
            GraphPrecision::F16 => self.b.node("Cast", &[x], vec![attr("to", 1i64)?]),
            _ => Ok(x.to_string()),
        }
    }

    pub fn layer_norm(&mut self, x: &str, prefix: &str, d: usize) -> GraphResult<String> {
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

    /// `x·Wᵀ + b` with W stored `[n_out, n_in]` as CTranslate2 has it; with `quantize` and
    /// INT8 QDQ, W is int8 per output channel behind a `DequantizeLinear`.
    pub fn linear(&mut self, x: &str, prefix: &str, n_out: usize, n_in: usize, quantize: bool) -> GraphResult<String> {
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
            GraphPrecision::Int8Qdq if quantize => {
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
                    .weight_node("DequantizeLinear", &[&qn, &sn, &zn], vec![attr("axis", 1i64)?])?
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

    /// `[B, T, H·hd]` → `[B, H, T, hd]` (`perm` [0, 2, 1, 3]) or `[B, H, hd, T]` ([0, 2, 3, 1]).
    pub fn split_heads(&mut self, x: &str, heads: usize, head_dim: usize, perm: Vec<i64>) -> GraphResult<String> {
        let name = format!("heads_shape_{}", self.b.fresh());
        let shape = self.b.init_i64(&name, &[0, 0, heads as i64, head_dim as i64])?;
        let r = self.b.node("Reshape", &[x, &shape], vec![])?;
        self.b.node("Transpose", &[&r], vec![attr("perm", perm)?])
    }

    /// `[B, H, T, hd]` → `[B, T, H·hd]`.
    pub fn merge_heads(&mut self, x: &str, d: usize) -> GraphResult<String> {
        let t = self
            .b
            .node("Transpose", &[x], vec![attr("perm", vec![0i64, 2, 1, 3])?])?;
        let name = format!("merged_shape_{}", self.b.fresh());
        let shape = self.b.init_i64(&name, &[0, 0, d as i64])?;
        self.b.node("Reshape", &[&t, &shape], vec![])
    }
}
