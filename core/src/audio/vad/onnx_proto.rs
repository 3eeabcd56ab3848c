//! The part of ONNX's protobuf schema (`onnx.proto`, messages `ModelProto` … `TensorProto`) that
//! reading Silero VAD's weights and layer settings needs; fields not declared here are skipped
//! by the decoder. Tags as in `onnx.proto`.

use std::collections::HashMap;

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    pub g: Option<GraphProto>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    #[prost(message, repeated, tag = "11")]
    pub graphs: Vec<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

/// `TensorProto.DataType` values read here.
const FLOAT: i32 = 1;
const INT64: i32 = 7;
/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

/// A tensor's values, as f32 (FLOAT) or i64 (INT64).
#[derive(Debug, Clone)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub values: Values,
}

impl Tensor {
    fn from_proto(t: &TensorProto) -> Result<Tensor, String> {
        if t.data_location == EXTERNAL {
            return Err(format!("tensor {} is stored outside the file", t.name));
        }
        let dims = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("tensor {} has dimension {d}", t.name)))
            .collect::<Result<Vec<_>, _>>()?;
        let count: usize = dims.iter().product();
        let raw = &t.raw_data;
        let values = match t.data_type {
            FLOAT if !raw.is_empty() => Values::F32(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            FLOAT => Values::F32(t.float_data.clone()),
            INT64 if !raw.is_empty() => Values::I64(
                raw.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
            ),
            INT64 => Values::I64(t.int64_data.clone()),
            other => return Err(format!("tensor {} has data type {other}", t.name)),
        };
        let len = match &values {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
        };
        if len != count {
            return Err(format!("tensor {} holds {len} values for dimensions {dims:?}", t.name));
        }
        Ok(Tensor { dims, values })
    }

    pub fn f32s(&self) -> Option<&[f32]> {
        match &self.values {
            Values::F32(v) => Some(v),
            Values::I64(_) => None,
        }
    }

    pub fn i64s(&self) -> Option<&[i64]> {
        match &self.values {
            Values::I64(v) => Some(v),
            Values::F32(_) => None,
        }
    }
}

/// A decoded model: its graph, and every named constant of it and of its subgraphs (the
/// initializers, and the outputs of `Constant` nodes, which some exports use for weights).
pub struct Model {
    pub graph: GraphProto,
    pub tensors: HashMap<String, Tensor>,
}

impl Model {
    pub fn decode(bytes: &[u8]) -> Result<Model, String> {
        let model = ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
        let graph = model.graph.ok_or("the ONNX model has no graph")?;
        let mut tensors = HashMap::new();
        collect(&graph, &mut tensors)?;
        Ok(Model { graph, tensors })
    }

    pub fn tensor(&self, name: &str) -> Result<&Tensor, String> {
        self.tensors
            .get(name)
            .ok_or_else(|| format!("no constant tensor named {name:?}"))
    }
}

fn collect(graph: &GraphProto, tensors: &mut HashMap<String, Tensor>) -> Result<(), String> {
    for t in &graph.initializer {
        tensors.insert(t.name.clone(), Tensor::from_proto(t)?);
    }
    for node in &graph.node {
        if node.op_type == "Constant" {
            if let (Some(out), Some(t)) = (node.output.first(), node.attribute("value").and_then(|a| a.t.as_ref())) {
                tensors.insert(out.clone(), Tensor::from_proto(t)?);
            }
        }
        for g in node.subgraphs() {
            collect(g, tensors)?;
        }
    }
    Ok(())
}

impl NodeProto {
    pub fn attribute(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute.iter().find(|a| a.name == name)
    }

    /// An integer attribute, or `default` when the node leaves it out.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.attribute(name).map_or(default, |a| a.i)
    }

    /// An integer-list attribute, or `default` when the node leaves it out.
    pub fn ints(&self, name: &str, default: &[i64]) -> Vec<i64> {
        self.attribute(name)
            .map_or_else(|| default.to_vec(), |a| a.ints.clone())
    }

    /// The graphs held by the node's attributes (an `If`'s branches, a `Loop`'s body).
    pub fn subgraphs(&self) -> impl Iterator<Item = &GraphProto> {
        self.attribute.iter().flat_map(|a| a.g.iter().chain(&a.graphs))
    }
}
