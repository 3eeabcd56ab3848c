//! The ONNX Runtime backend: Whisper's encoder, and on request its decoder step, as ONNX graphs
//! built in Rust from the CTranslate2 weights, run by any execution provider ONNX Runtime has.
//! What stays off ONNX Runtime ([`OrtStages`]) runs on the backend it wraps (the CPU one).

mod calibration;
mod decoder;
mod encoder;
mod graph;
pub mod providers;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::TensorRef;

pub use calibration::{calibration_mels, encoder_activation_ranges};
pub use decoder::{build_cross, build_step, DecoderDims, OrtDecoder, CHUNK};
pub use encoder::{build_encoder, EncoderDims, GraphPrecision, TensorSource, ENCODER_FRAMES, MEL_FRAMES};

use super::{AlignmentRequest, Backend, BackendError, BackendKind, CrossCache, Sequence, StepInput, StepOutput};
use crate::model::{ct2, Model, ModelError};

/// The tensors of a CTranslate2 `model.bin`, read as f32 when the graph asks for them.
pub struct ModelBinSource(ct2::ModelBin);

impl ModelBinSource {
    pub fn open(model_dir: &Path) -> Result<ModelBinSource, String> {
        let path = model_dir.join("model.bin");
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
        Ok(ModelBinSource(
            ct2::parse(file).map_err(|e| format!("{}: {e}", path.display()))?,
        ))
    }
}

impl TensorSource for ModelBinSource {
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let t = self.0.get(name).ok_or_else(|| format!("tensor {name} is missing"))?;
        if t.shape != shape {
            return Err(format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape));
        }
        self.0.read(name, t)
    }

    fn has(&self, name: &str) -> bool {
        self.0.get(name).is_some()
    }
}

impl From<&crate::model::Dims> for EncoderDims {
    fn from(d: &crate::model::Dims) -> Self {
        EncoderDims {
            n_mels: d.n_mels,
            d_model: d.d_model,
            n_heads: d.n_heads,
            layers: d.encoder_layers,
        }
    }
}

impl From<crate::model::Precision> for GraphPrecision {
    /// The graph for a model precision: INT8 is int8 QDQ weights.
    fn from(p: crate::model::Precision) -> Self {
        match p {
            crate::model::Precision::F32 => GraphPrecision::F32,
            crate::model::Precision::Int8 => GraphPrecision::Int8Qdq,
        }
    }
}

impl From<&crate::model::Dims> for DecoderDims {
    fn from(d: &crate::model::Dims) -> Self {
        DecoderDims {
            d_model: d.d_model,
            n_heads: d.n_heads,
            layers: d.decoder_layers,
            vocab: d.vocab_size,
            max_positions: d.max_text_positions,
        }
    }
}

/// Which stages run on ONNX Runtime (the rest on the wrapped backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OrtStages {
    /// The encoder only.
    #[default]
    Encoder,
    /// The encoder and the decoder step (static-shape graphs, as NPUs need).
    EncoderDecoder,
}

impl OrtStages {
    pub fn parse(s: &str) -> Option<OrtStages> {
        match s {
            "encoder" => Some(OrtStages::Encoder),
            "encoder-decoder" | "all" => Some(OrtStages::EncoderDecoder),
            _ => None,
        }
    }
}

/// Where and how the graphs run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrtOptions {
    /// An `execution-provider` name ([`providers::PROVIDERS`]).
    pub provider: String,
    pub precision: GraphPrecision,
    /// ONNX Runtime's intra-op threads; 0 lets it choose (one per core).
    pub threads: usize,
    pub stages: OrtStages,
    /// Audio (16 kHz WAV) whose encoder activations set the ranges of static uint16 activation
    /// quantization in the int8 encoder graph (A16W8 QDQ, the form NPU providers run); none:
    /// the int8 graph quantizes weights only.
    pub calibration: Option<PathBuf>,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            provider: "cpu".into(),
            precision: GraphPrecision::F32,
            threads: 0,
            stages: OrtStages::Encoder,
            calibration: None,
        }
    }
}

/// A session builder on `opts.provider` with `opts.threads`; `what` names the graph in errors.
pub fn session_builder(opts: &OrtOptions, what: &str) -> Result<SessionBuilder, String> {
    let ep = providers::resolve(&opts.provider)?;
    let env = crate::runtime::environment()?;
    let err = |e: ort::Error| format!("ONNX Runtime session for the {what}: {e}");
    let mut builder = Session::builder(env)
        .map_err(err)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| err(e.into()))?;
    if opts.threads > 0 {
        builder = builder.with_intra_threads(opts.threads).map_err(|e| err(e.into()))?;
    }
    if let Some(ep) = ep {
        builder = builder
            .with_execution_providers([ep])
            .map_err(|e| format!("execution provider {} could not start: {e}", opts.provider))?;
    }
    Ok(builder)
}

impl OrtDecoder {
    /// [`new`](Self::new) from the `model.bin` of a CTranslate2 directory, on `opts`.
    pub fn from_model_dir(dir: &Path, dims: DecoderDims, opts: &OrtOptions) -> Result<OrtDecoder, String> {
        let builder = session_builder(opts, "decoder")?;
        OrtDecoder::new(&ModelBinSource::open(dir)?, dims, opts.precision, &builder)
    }
}

/// The encoder on ONNX Runtime: mel windows in, encoder states out.
pub struct OrtEncoder {
    session: Mutex<Session>,
    pub dims: EncoderDims,
}

impl OrtEncoder {
    /// Builds the graph from `w` and a session for it on `opts.provider`.
    pub fn new(w: &dyn TensorSource, dims: EncoderDims, opts: &OrtOptions) -> Result<OrtEncoder, String> {
        match (&opts.calibration, opts.precision) {
            (None, _) => Self::with_ranges(w, dims, opts, None),
            (Some(audio), GraphPrecision::Int8Qdq) => {
                let mels = calibration_mels(audio, dims.n_mels)?;
                let ranges = encoder_activation_ranges(w, dims, &mels)?;
                Self::with_ranges(w, dims, opts, Some(ranges))
            }
            (Some(_), p) => Err(format!(
                "a calibration file quantizes the activations of the int8 graph; the {p:?} graph has none to quantize (set precision=int8)"
            )),
        }
    }

    /// [`new`](Self::new) with the activations quantized to uint16 over the given ranges, one
    /// per activation in [`encoder_activation_ranges`]' order (weights at `opts.precision`);
    /// `None`: activations in float.
    pub fn with_ranges(
        w: &dyn TensorSource,
        dims: EncoderDims,
        opts: &OrtOptions,
        ranges: Option<Vec<(f32, f32)>>,
    ) -> Result<OrtEncoder, String> {
        // The session builder first: it loads ONNX Runtime, which building the graph needs.
        let builder = session_builder(opts, "encoder")?;
        let quant = ranges.map_or(graph::ActivationQuant::None, graph::ActivationQuant::Apply);
        let model = encoder::build_encoder_quant(w, dims, opts.precision, quant)?;
        let session = model
            .into_session(&builder)
            .map_err(|e| format!("ONNX Runtime session for the encoder: {e}"))?;
        Ok(OrtEncoder {
            session: Mutex::new(session),
            dims,
        })
    }

    /// [`new`](Self::new) from the `model.bin` of a CTranslate2 directory.
    pub fn from_model_dir(dir: &Path, dims: EncoderDims, opts: &OrtOptions) -> Result<OrtEncoder, String> {
        OrtEncoder::new(&ModelBinSource::open(dir)?, dims, opts)
    }

    /// Each mel is `n_mels × MEL_FRAMES`; returns `ENCODER_FRAMES × d_model` per window. The
    /// windows go in one run.
    pub fn encode_batch(&self, mels: &[&[f32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        let (n_mels, d) = (self.dims.n_mels, self.dims.d_model);
        let per = n_mels * MEL_FRAMES;
        if let Some(m) = mels.iter().find(|m| m.len() != per) {
            return Err(BackendError::BadInput(format!(
                "a mel window of {} values, not {n_mels} × {MEL_FRAMES}",
                m.len()
            )));
        }
        if mels.is_empty() {
            return Ok(Vec::new());
        }
        let input: Vec<f32> = mels.iter().flat_map(|m| m.iter().copied()).collect();
        let err = |e: ort::Error| BackendError::Failed(format!("ONNX Runtime encoder run: {e}"));
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(ort::inputs![
                "mel" => TensorRef::from_array_view(([mels.len(), n_mels, MEL_FRAMES], input.as_slice())).map_err(err)?
            ])
            .map_err(err)?;
        let (_, states) = outputs["states"].try_extract_tensor::<f32>().map_err(err)?;
        let per_out = ENCODER_FRAMES * d;
        if states.len() != per_out * mels.len() {
            return Err(BackendError::Failed(format!(
                "the encoder graph returned {} values for {} windows",
                states.len(),
                mels.len()
            )));
        }
        Ok(states.chunks(per_out).map(<[f32]>::to_vec).collect())
    }
}

/// The encoder on ONNX Runtime, the decoder too with [`OrtStages::EncoderDecoder`], the rest on
/// the backend it wraps.
pub struct OrtBackend {
    encoder: OrtEncoder,
    decoder: Option<OrtDecoder>,
    inner: Box<dyn Backend>,
}

impl OrtBackend {
    /// `model` with `opts.stages` on ONNX Runtime per `opts` (the graphs built from its
    /// `model.bin`), the rest on the backend it had.
    pub fn wrap(model: Model, opts: &OrtOptions) -> Result<Model, ModelError> {
        let error = |stage: &str, reason: String| ModelError {
            file: model.dir.join("model.bin"),
            reason: format!("ONNX Runtime {stage}: {reason}"),
        };
        let source = ModelBinSource::open(&model.dir).map_err(|r| error("encoder", r))?;
        let encoder =
            OrtEncoder::new(&source, EncoderDims::from(&model.dims), opts).map_err(|r| error("encoder", r))?;
        let decoder = match opts.stages {
            OrtStages::Encoder => None,
            OrtStages::EncoderDecoder => {
                let builder = session_builder(opts, "decoder").map_err(|r| error("decoder", r))?;
                Some(
                    OrtDecoder::new(&source, DecoderDims::from(&model.dims), opts.precision, &builder)
                        .map_err(|r| error("decoder", r))?,
                )
            }
        };
        drop(source);
        model.wrap_backend(|inner| {
            Ok(Box::new(OrtBackend {
                encoder,
                decoder,
                inner,
            }))
        })
    }
}

impl Backend for OrtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Onnxruntime
    }

    fn encode(&self, mels: &[&[f32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.encoder.encode_batch(mels)
    }

    fn cross_cache(&self, states: &[f32]) -> Result<CrossCache, BackendError> {
        match &self.decoder {
            Some(d) => d.cross_cache(states),
            None => self.inner.cross_cache(states),
        }
    }

    fn sequence(&self, cross: &CrossCache) -> Result<Sequence, BackendError> {
        match &self.decoder {
            Some(d) => d.sequence(cross),
            None => self.inner.sequence(cross),
        }
    }

    fn decode(
        &self,
        seqs: &mut [&mut Sequence],
        inputs: &[StepInput<'_>],
        alignment: Option<AlignmentRequest<'_>>,
    ) -> Result<StepOutput, BackendError> {
        match &self.decoder {
            Some(d) => d.decode(seqs, inputs, alignment),
            None => self.inner.decode(seqs, inputs, alignment),
        }
    }
}
