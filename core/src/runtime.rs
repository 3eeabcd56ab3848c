//! ONNX Runtime, loaded at run time (the `ort` crate's `load-dynamic`): nothing is linked or
//! downloaded at build time. The set-up (`scripts/fetch-models.sh`) puts the library from the
//! `onnxruntime` PyPI wheel into the models directory; `ORT_DYLIB_PATH` names another one.
//! One environment serves the whole process.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::model::models_dir;

/// Where the library is looked for: `ORT_DYLIB_PATH`, else `onnxruntime/libonnxruntime.so`
/// in the models directory.
pub fn library_path() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => models_dir().join("onnxruntime/libonnxruntime.so"),
    }
}

/// The process's ONNX Runtime environment, loading the library on first use. The error says
/// which file was tried and how to get it; it is kept, so a missing library is reported the
/// same way every time without trying again.
pub fn environment() -> Result<&'static ort::environment::Environment, String> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = library_path();
        if !path.exists() {
            return Err(format!(
                "ONNX Runtime library {} not found: run scripts/fetch-models.sh (it installs the one from the \
                 onnxruntime wheel), or set ORT_DYLIB_PATH to a libonnxruntime.so of version 1.22 or later",
                path.display()
            ));
        }
        let builder =
            ort::init_from(&path).map_err(|e| format!("Could not load ONNX Runtime from {}: {e}", path.display()))?;
        builder
            .with_name("npuwhisper")
            .build()
            .map_err(|e| format!("Could not start ONNX Runtime from {}: {e}", path.display()))
    })
    .as_ref()
    .map_err(Clone::clone)
}
