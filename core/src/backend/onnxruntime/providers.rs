//! Execution providers by name: which ones npuwhisper knows, which need a cargo feature, and
//! errors that say what is missing and how to get it.

#[allow(unused_imports)]
use ort::ep::{self, ExecutionProviderDispatch};

/// Names accepted by the `execution-provider` property.
pub const PROVIDERS: &[&str] = &[
    "cpu", "cuda", "tensorrt", "openvino", "vitisai", "qnn", "coreml", "xnnpack",
];

/// How a provider can be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    Unknown(String),
    /// Known, but this build of npuwhisper was made without its cargo feature.
    NotCompiledIn {
        name: &'static str,
        feature: &'static str,
    },
    /// Known and compiled in, but the loaded ONNX Runtime library was built without it.
    NotInLibrary {
        name: &'static str,
        ort_name: &'static str,
        library: String,
        how: &'static str,
    },
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderError::Unknown(n) => write!(
                f,
                "unknown execution provider {n:?}: expected one of {}",
                PROVIDERS.join(", ")
            ),
            ProviderError::NotCompiledIn { name, feature } => write!(
                f,
                "execution provider {name} is not compiled into this build of npuwhisper: rebuild with \
                 `cargo build --release --features {feature}`"
            ),
            ProviderError::NotInLibrary {
                name,
                ort_name,
                library,
                how,
            } => write!(
                f,
                "execution provider {name} is not in the ONNX Runtime library {library} (it lacks {ort_name}): {how}, \
                 and set ORT_DYLIB_PATH to its libonnxruntime.so"
            ),
        }
    }
}

impl std::error::Error for ProviderError {}

struct Known {
    name: &'static str,
    ort_name: &'static str,
    /// The cargo feature that compiles it in (`ort`'s provider modules are behind features).
    feature: &'static str,
    how: &'static str,
}

const KNOWN: &[Known] = &[
    Known {
        name: "cuda",
        ort_name: "CUDAExecutionProvider",
        feature: "cuda",
        how: "install the onnxruntime-gpu wheel (with CUDA 12 and cuDNN 9)",
    },
    Known {
        name: "tensorrt",
        ort_name: "TensorrtExecutionProvider",
        feature: "tensorrt",
        how: "install the onnxruntime-gpu wheel and TensorRT 10",
    },
    Known {
        name: "openvino",
        ort_name: "OpenVINOExecutionProvider",
        feature: "openvino",
        how: "install the onnxruntime-openvino wheel (Intel CPUs, GPUs and NPUs)",
    },
    Known {
        name: "vitisai",
        ort_name: "VitisAIExecutionProvider",
        feature: "vitisai",
        how: "install AMD's Ryzen AI software, whose ONNX Runtime carries the Vitis AI provider",
    },
    Known {
        name: "qnn",
        ort_name: "QNNExecutionProvider",
        feature: "qnn",
        how: "install the onnxruntime-qnn wheel (Qualcomm NPUs; it ships the QNN libraries)",
    },
    Known {
        name: "coreml",
        ort_name: "CoreMLExecutionProvider",
        feature: "coreml",
        how: "use ONNX Runtime's macOS build (CoreML exists only on Apple platforms)",
    },
    Known {
        name: "xnnpack",
        ort_name: "XnnpackExecutionProvider",
        feature: "xnnpack",
        how: "use an ONNX Runtime built with --use_xnnpack",
    },
];

/// The provider to register, where this build has it. Registration fails when the provider
/// cannot start (no device, missing libraries): an error, not a silent fall back to the CPU.
fn dispatch(name: &str) -> Option<ExecutionProviderDispatch> {
    let d: Option<ExecutionProviderDispatch> = match name {
        #[cfg(feature = "cuda")]
        "cuda" => Some(ep::CUDA::default().build()),
        #[cfg(feature = "tensorrt")]
        "tensorrt" => Some(ep::TensorRT::default().build()),
        #[cfg(feature = "openvino")]
        "openvino" => Some(ep::OpenVINO::default().build()),
        #[cfg(feature = "vitisai")]
        "vitisai" => Some(ep::Vitis::default().build()),
        #[cfg(feature = "qnn")]
        "qnn" => Some(ep::QNN::default().build()),
        #[cfg(feature = "coreml")]
        "coreml" => Some(ep::CoreML::default().build()),
        #[cfg(feature = "xnnpack")]
        "xnnpack" => Some(ep::XNNPACK::default().build()),
        _ => None,
    };
    d.map(ExecutionProviderDispatch::error_on_failure)
}

/// Checks `name` against this build and the loaded library (loading it), and returns the
/// provider to register; `cpu` registers nothing, as ONNX Runtime always has it.
pub fn resolve(name: &str) -> Result<Option<ExecutionProviderDispatch>, String> {
    if name == "cpu" {
        crate::runtime::environment()?;
        return Ok(None);
    }
    let k = KNOWN
        .iter()
        .find(|k| k.name == name)
        .ok_or_else(|| ProviderError::Unknown(name.to_string()).to_string())?;
    let Some(d) = dispatch(k.name) else {
        return Err(ProviderError::NotCompiledIn {
            name: k.name,
            feature: k.feature,
        }
        .to_string());
    };
    crate::runtime::environment()?;
    let available = available_providers()?;
    if !available.iter().any(|a| a == k.ort_name) {
        return Err(ProviderError::NotInLibrary {
            name: k.name,
            ort_name: k.ort_name,
            library: crate::runtime::library_path().display().to_string(),
            how: k.how,
        }
        .to_string());
    }
    Ok(Some(d))
}

/// The providers the loaded library was built with (ONNX Runtime's names).
pub fn available_providers() -> Result<Vec<String>, String> {
    crate::runtime::environment()?;
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut n = 0i32;
    // SAFETY: GetAvailableProviders fills `list` with `n` C strings that stay valid until the
    // ReleaseAvailableProviders call below; the library was loaded by `environment()`.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut list, &mut n);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
            return Err("cannot list ONNX Runtime's execution providers".into());
        }
        let names = (0..n as usize)
            .map(|i| std::ffi::CStr::from_ptr(*list.add(i)).to_string_lossy().into_owned())
            .collect();
        let _ = (api.ReleaseAvailableProviders)(list, n);
        Ok(names)
    }
}
