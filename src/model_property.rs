//! The model properties that the encoder, the decoder and the bin share (`model`, `precision`,
//! `threads`, `backend`, `execution-provider`): their specs, their values, and loading the model
//! they name as an element error ready to post.

use std::path::PathBuf;
use std::sync::Arc;

use gst::glib;
use gst::prelude::*;

use npuwhisper_core::backend::onnxruntime::{providers, OrtOptions, OrtStages};
use npuwhisper_core::backend::BackendChoice;
use npuwhisper_core::model::{self, Model, Precision};

pub const BLURB: &str = "Whisper model: a CTranslate2 model directory, or a model name in the models \
directory (NPUWHISPER_MODELS_DIR, default ~/.local/share/npuwhisper/models)";

/// Arithmetic of the model's layers.
#[derive(Debug, Default, Eq, PartialEq, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstNpuWhisperPrecision")]
pub enum NpuWhisperPrecision {
    #[enum_value(name = "F32: the weights as shipped, in single precision", nick = "f32")]
    F32 = 0,
    #[default]
    #[enum_value(
        name = "INT8: weights quantized per channel at load, activations per row; bf16 attention on AMX CPUs (fastest)",
        nick = "int8"
    )]
    Int8 = 1,
}

impl From<NpuWhisperPrecision> for Precision {
    fn from(p: NpuWhisperPrecision) -> Self {
        match p {
            NpuWhisperPrecision::F32 => Precision::F32,
            NpuWhisperPrecision::Int8 => Precision::Int8,
        }
    }
}

/// What runs the forward passes.
#[derive(Debug, Default, Eq, PartialEq, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstNpuWhisperBackend")]
pub enum NpuWhisperBackend {
    #[default]
    #[enum_value(name = "CPU: npuwhisper's own kernels", nick = "cpu")]
    Cpu = 0,
    #[enum_value(
        name = "ONNX Runtime: the encoder (and with onnxruntime-stages=encoder-decoder the decoder) as ONNX graphs on the execution-provider",
        nick = "onnxruntime"
    )]
    Onnxruntime = 1,
}

/// Which stages `backend=onnxruntime` runs on ONNX Runtime.
#[derive(Debug, Default, Eq, PartialEq, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstNpuWhisperOrtStages")]
pub enum NpuWhisperOrtStages {
    #[default]
    #[enum_value(
        name = "Encoder: the encoder graph; the decoder step on the CPU kernels",
        nick = "encoder"
    )]
    Encoder = 0,
    #[enum_value(
        name = "Encoder and decoder: the decoder step as static-shape graphs too (as NPUs need)",
        nick = "encoder-decoder"
    )]
    EncoderDecoder = 1,
}

impl From<NpuWhisperOrtStages> for OrtStages {
    fn from(s: NpuWhisperOrtStages) -> Self {
        match s {
            NpuWhisperOrtStages::Encoder => OrtStages::Encoder,
            NpuWhisperOrtStages::EncoderDecoder => OrtStages::EncoderDecoder,
        }
    }
}

/// Values of the model properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSettings {
    pub model: String,
    pub precision: NpuWhisperPrecision,
    /// Kernel threads; 0 = every core.
    pub threads: u32,
    pub backend: NpuWhisperBackend,
    /// An ONNX Runtime execution provider name (used with `backend=onnxruntime`).
    pub execution_provider: String,
    pub onnxruntime_stages: NpuWhisperOrtStages,
    /// 16 kHz WAV that calibrates the int8 ONNX graph's activation quantization; empty: none.
    pub onnxruntime_calibration: Option<String>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            model: model::DEFAULT_MODEL.to_string(),
            precision: NpuWhisperPrecision::default(),
            threads: 0,
            backend: NpuWhisperBackend::default(),
            execution_provider: DEFAULT_PROVIDER.to_string(),
            onnxruntime_stages: NpuWhisperOrtStages::default(),
            onnxruntime_calibration: None,
        }
    }
}

impl ModelSettings {
    /// Sets the property `name` if it is one of these; false if it is not.
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        match name {
            "model" => {
                self.model = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| model::DEFAULT_MODEL.to_string())
            }
            "precision" => self.precision = value.get().expect("type checked upstream"),
            "threads" => self.threads = value.get().expect("type checked upstream"),
            "backend" => self.backend = value.get().expect("type checked upstream"),
            "execution-provider" => {
                self.execution_provider = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| DEFAULT_PROVIDER.to_string())
            }
            "onnxruntime-stages" => self.onnxruntime_stages = value.get().expect("type checked upstream"),
            "onnxruntime-calibration" => {
                self.onnxruntime_calibration = value.get::<Option<String>>().ok().flatten().filter(|p| !p.is_empty())
            }
            _ => return false,
        }
        true
    }

    pub fn get(&self, name: &str) -> Option<glib::Value> {
        match name {
            "model" => Some(self.model.to_value()),
            "precision" => Some(self.precision.to_value()),
            "threads" => Some(self.threads.to_value()),
            "backend" => Some(self.backend.to_value()),
            "execution-provider" => Some(self.execution_provider.to_value()),
            "onnxruntime-stages" => Some(self.onnxruntime_stages.to_value()),
            "onnxruntime-calibration" => Some(self.onnxruntime_calibration.to_value()),
            _ => None,
        }
    }
}

const DEFAULT_PROVIDER: &str = "cpu";

/// Names of the properties [`ModelSettings`] holds (the bin forwards them to the encoder too).
pub const NAMES: &[&str] = &[
    "model",
    "precision",
    "threads",
    "backend",
    "execution-provider",
    "onnxruntime-stages",
    "onnxruntime-calibration",
];

/// The specs of `model`, `precision`, `threads`, `backend`, `execution-provider`,
/// `onnxruntime-stages` and `onnxruntime-calibration`.
pub fn param_specs() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecString::builder("model")
            .nick("Model")
            .blurb(BLURB)
            .default_value(Some(model::DEFAULT_MODEL))
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("precision", NpuWhisperPrecision::default())
            .nick("Precision")
            .blurb("Arithmetic of the model's layers: int8 (fastest, within 0.3 WER points of f32) or f32")
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("threads")
            .nick("Threads")
            .blurb("Threads of the compute kernels, shared by every npuwhisper element in the process; 0 = every core")
            .maximum(1024)
            .default_value(0)
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("backend", NpuWhisperBackend::default())
            .nick("Backend")
            .blurb("What runs the model: cpu (npuwhisper's kernels) or onnxruntime (the stages onnxruntime-stages names as ONNX graphs on execution-provider; precision int8 gives int8 QDQ weights there)")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("execution-provider")
            .nick("Execution provider")
            .blurb("ONNX Runtime execution provider for backend=onnxruntime: cpu, cuda, tensorrt, openvino, vitisai, qnn, coreml, xnnpack (all but cpu need a cargo feature and an ONNX Runtime built with it; see README)")
            .default_value(Some(DEFAULT_PROVIDER))
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("onnxruntime-stages", NpuWhisperOrtStages::default())
            .nick("ONNX Runtime stages")
            .blurb("What backend=onnxruntime runs on ONNX Runtime: encoder (the decoder step on the CPU kernels) or encoder-decoder (both, the decoder as static-shape graphs)")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("onnxruntime-calibration")
            .nick("ONNX Runtime calibration audio")
            .blurb("16 kHz WAV of speech like what will be transcribed: with backend=onnxruntime and precision=int8, the encoder graph's activations are quantized too (uint16, static scales from this audio: the A16W8 QDQ form NPU providers run); unset: int8 weights only")
            .mutable_ready()
            .build(),
    ]
}

impl ModelSettings {
    /// The backend these settings ask for, with its options.
    pub fn backend_choice(&self) -> BackendChoice {
        match self.backend {
            NpuWhisperBackend::Cpu => BackendChoice::Cpu,
            NpuWhisperBackend::Onnxruntime => BackendChoice::Onnxruntime(OrtOptions {
                provider: self.execution_provider.clone(),
                precision: Precision::from(self.precision).into(),
                threads: self.threads as usize,
                stages: self.onnxruntime_stages.into(),
                calibration: self.onnxruntime_calibration.as_ref().map(PathBuf::from),
            }),
        }
    }
}

/// Sizes the kernels' thread pool, then resolves the model and loads it on the backend asked
/// for, shared with every element that names the same directory, precision and backend. With
/// `backend=onnxruntime` the execution provider is checked first: a missing library or
/// provider is that error.
pub fn load(settings: &ModelSettings) -> Result<Arc<Model>, gst::ErrorMessage> {
    npuwhisper_kernels::pool::set_threads(settings.threads as usize);
    if settings.backend == NpuWhisperBackend::Onnxruntime {
        providers::resolve(&settings.execution_provider).map_err(|err| {
            gst::error_msg!(
                gst::LibraryError::Init,
                ("Could not use ONNX Runtime: {}", err),
                ["execution-provider property: {:?}", settings.execution_provider]
            )
        })?;
    }
    let dir = model::resolve_model_path(&settings.model);
    let model = model::load_shared_on(&dir, settings.precision.into(), &settings.backend_choice()).map_err(|err| {
        gst::error_msg!(
            gst::ResourceError::OpenRead,
            ("Could not load Whisper model: {}", err),
            ["model property: {:?}", settings.model]
        )
    })?;
    if let model::CacheOutcome::Built { note, .. } = &model.weight_cache {
        if !note.is_empty() {
            gst::warning!(CAT, "weight cache {note}: the weights were made from model.bin");
        }
    }
    Ok(model)
}

static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "npuwhisper-model",
        gst::DebugColorFlags::empty(),
        Some("Whisper model loading and weight cache"),
    )
});
