//! A small builder over ONNX Runtime's Model Editor API: nodes with generated output names and
//! initializers copied from host slices, so graph code reads as the forward pass it mirrors.

use ort::editor::{Graph, Node, ONNX_DOMAIN};
use ort::memory::Allocator;
use ort::operator::Attribute;
use ort::value::{DynTensor, TensorElementType};

pub(crate) type GraphResult<T> = Result<T, String>;

pub(crate) fn ort_err(what: &str) -> impl Fn(ort::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

pub(crate) struct Builder {
    pub graph: Graph,
    allocator: Allocator,
    n: usize,
}

impl Builder {
    pub fn new() -> GraphResult<Builder> {
        Ok(Builder {
            graph: Graph::new().map_err(ort_err("cannot create an ONNX graph"))?,
            allocator: Allocator::default(),
            n: 0,
        })
    }

    /// Adds `op` over `inputs`; returns its `outputs` output names (`{op}_{n}:{i}`).
    pub fn node_n(
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
