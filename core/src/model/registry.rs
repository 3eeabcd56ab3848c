//! Process-wide model state: where models are, the registry sharing one loaded model between
//! elements, and glibc's malloc tuning for the per-window buffers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::{Model, ModelError, Precision};
use crate::backend::BackendChoice;

/// Bytes from which glibc's malloc serves an allocation with its own mapping.
const MMAP_THRESHOLD: usize = 1 << 20;

/// Makes glibc's malloc give buffers of [`MMAP_THRESHOLD`] or more straight back to the system
/// when they are freed. By default the threshold grows to the size of any mapped block freed
/// (up to 32 MiB), after which the per-window buffers (encoder activations, cross-attention
/// keys and values, states: MBs each, freed after every window, on several threads) come
/// from per-thread arenas that keep them, a large part of the peak resident set. 1 MiB rather
/// than more because one f16 cross-attention layer is a few MB: a threshold above it keeps
/// those in the arenas again (README, Benchmarks, has the peaks of both). Per-token
/// allocations (a step's logits) stay in the arenas.
/// Process-wide and done once; left alone when the user set `MALLOC_MMAP_THRESHOLD_`.
pub(super) fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
                // SAFETY: mallopt only sets a malloc tunable; it is thread-safe in glibc.
                unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) };
            }
        });
    }
}

/// Directory holding the models fetched by the set-up: `$NPUWHISPER_MODELS_DIR`, else
/// `$XDG_DATA_HOME/npuwhisper/models` (`~/.local/share/npuwhisper/models`).
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NPUWHISPER_MODELS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(".local/share"));
    data.join("npuwhisper/models")
}

/// The `model` property value: a directory path, or a model name inside [`models_dir`].
pub fn resolve_model_path(name_or_path: &str) -> PathBuf {
    let p = Path::new(name_or_path);
    if p.is_absolute() || name_or_path.contains('/') {
        p.to_path_buf()
    } else {
        models_dir().join(name_or_path)
    }
}

/// Default `model` property value.
pub const DEFAULT_MODEL: &str = "tiny.en";

/// Loads a model once per process: every element naming the same directory and precision
/// shares it while any of them holds it.
pub fn load_shared(dir: &Path) -> Result<Arc<Model>, ModelError> {
    load_shared_with(dir, Precision::default())
}

pub fn load_shared_with(dir: &Path, precision: Precision) -> Result<Arc<Model>, ModelError> {
    load_shared_on(dir, precision, &BackendChoice::Cpu)
}

/// [`load_shared_with`] on a chosen backend: shared by the elements naming the same directory,
/// precision and backend options.
pub fn load_shared_on(dir: &Path, precision: Precision, backend: &BackendChoice) -> Result<Arc<Model>, ModelError> {
    type Key = (PathBuf, Precision, BackendChoice);
    static CACHE: LazyLock<Mutex<HashMap<Key, Weak<Model>>>> = LazyLock::new(Default::default);
    let key = (
        dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
        precision,
        backend.clone(),
    );
    // Loading under the lock makes a second element wait for the first load instead of repeating it.
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(model) = cache.get(&key).and_then(Weak::upgrade) {
        return Ok(model);
    }
    let model = Model::load_with(dir, precision)?;
    let model = Arc::new(match backend {
        BackendChoice::Cpu => model,
        BackendChoice::Onnxruntime(opts) => crate::backend::onnxruntime::OrtBackend::wrap(model, opts)?,
    });
    cache.retain(|_, m| m.strong_count() > 0);
    cache.insert(key, Arc::downgrade(&model));
    Ok(model)
}
