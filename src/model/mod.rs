//! Whisper model: CTranslate2 directory loading, encoder and decoder forward passes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Frames of log-mel per 30 s window (10 ms hop).
pub const MEL_FRAMES: usize = 3000;
/// Encoder positions per window (the conv stem halves the frames).
pub const ENCODER_FRAMES: usize = 1500;
/// Seconds of audio per encoder position / timestamp token step.
pub const SECONDS_PER_TIMESTAMP: f64 = 0.02;

/// A model file that could not be used: names the file and what is wrong with it.
#[derive(Debug, Clone)]
pub struct ModelError {
    pub file: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

impl std::error::Error for ModelError {}

/// Architecture, derived from the tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub n_mels: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub vocab_size: usize,
    pub max_text_positions: usize,
}

pub struct Model {
    pub dims: Dims,
    pub dir: PathBuf,
}

impl Model {
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        todo!()
    }

    pub fn n_mels(&self) -> usize {
        self.dims.n_mels
    }

    pub fn d_model(&self) -> usize {
        self.dims.d_model
    }

    pub fn is_multilingual(&self) -> bool {
        todo!()
    }

    /// Encodes a batch of log-mel windows, each `n_mels × MEL_FRAMES` (mel-major).
    /// Returns one `ENCODER_FRAMES × d_model` state matrix per window.
    pub fn encode_batch(&self, mels: &[&[f32]]) -> Vec<Vec<f32>> {
        todo!()
    }
}

/// Directory holding the models fetched by the set-up: `$NPUWHISPER_MODELS_DIR`, else
/// `$XDG_DATA_HOME/npuwhisper/models` (`~/.local/share/npuwhisper/models`).
pub fn models_dir() -> PathBuf {
    todo!()
}

/// The `model` property value: a directory path, or a model name inside [`models_dir`].
pub fn resolve_model_path(name_or_path: &str) -> PathBuf {
    todo!()
}

/// Default `model` property value.
pub const DEFAULT_MODEL: &str = "tiny.en";

/// Loads a model once per process: every element naming the same directory shares it.
pub fn load_shared(dir: &Path) -> Result<Arc<Model>, ModelError> {
    todo!()
}
