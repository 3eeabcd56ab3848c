//! Whisper model: CTranslate2 directory loading, the tokenizer, and the forward passes through
//! its [`Backend`]: `Model::load(dir)?.encode_batch(&[&mel])?`, then per window a
//! [`CrossCache`] and a [`Sequence`] per hypothesis.

mod cache;
pub(crate) mod ct2;
pub(crate) mod decoder;
pub(crate) mod encoder;
mod layers;
mod load;
mod registry;
pub mod tokenizer;

use std::path::PathBuf;

use crate::backend::{AlignmentRequest, Backend, BackendError, CrossCache, Sequence, StepInput, StepOutput};
pub use cache::{CacheOutcome, WeightCache};
pub(crate) use layers::{LayerNorm, Linear};
pub(crate) use load::Weights;
pub use registry::{load_shared, load_shared_on, load_shared_with, models_dir, resolve_model_path, DEFAULT_MODEL};
use tokenizer::Tokenizer;

/// Frames of log-mel per 30 s window (10 ms hop).
pub const MEL_FRAMES: usize = 3000;
/// Encoder positions per window (the conv stem halves the frames).
pub const ENCODER_FRAMES: usize = 1500;
/// Seconds of audio per encoder position / timestamp token step.
pub const SECONDS_PER_TIMESTAMP: f64 = 0.02;
/// Margin past a window's audio that a fitted encoder context keeps (4 s): with 2 s, Whisper
/// looped on a 2.6 s clip of the long-form set when prompted with the text before it (README,
/// Benchmarks).
pub const FIT_MARGIN_FRAMES: usize = 200;
/// A fitted context is a multiple of this many frames (2.56 s).
pub const FIT_STEP_FRAMES: usize = 128;
/// The default (`context=auto`) fits a window's context with this margin (6 s)...
pub const AUTO_MARGIN_FRAMES: usize = 300;
/// ...where that gives at most this many frames (20.48 s; audio up to 14.5 s), and keeps the
/// full context for longer windows: on the project's sets, fitting those saved a quarter of
/// their frames and cost base 4 words of 378 (README, Encoder context).
pub const AUTO_CAP_FRAMES: usize = 1024;

/// Encoder frames for a window of `samples` under `context=auto`: fitted with a 6 s margin
/// when that stays within [`AUTO_CAP_FRAMES`], else the full context.
pub fn auto_frames(samples: usize) -> usize {
    fitted_frames_within(samples, FIT_STEP_FRAMES, AUTO_MARGIN_FRAMES, AUTO_CAP_FRAMES)
}

/// [`fitted_frames`] where that is at most `cap` frames, else the full context.
pub fn fitted_frames_within(samples: usize, step: usize, margin: usize, cap: usize) -> usize {
    match fitted_frames(samples, step, margin) {
        n if n <= cap => n,
        _ => ENCODER_FRAMES,
    }
}

/// Encoder frames (20 ms each) for a window of `samples` audio samples at 16 kHz: its audio plus
/// `margin` frames, rounded up to a multiple of `step`, at most `ENCODER_FRAMES`.
pub fn fitted_frames(samples: usize, step: usize, margin: usize) -> usize {
    // 20 ms at 16 kHz.
    let audio = samples.div_ceil(320);
    ((audio + margin).div_ceil(step.max(1)) * step.max(1)).min(ENCODER_FRAMES)
}
/// Most mel bins and widest model the elements' caps carry.
pub const MAX_N_MELS: usize = 256;
pub const MAX_D_MODEL: usize = 4096;

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

/// Options of `config.json` that decoding needs.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub alignment_heads: Vec<(usize, usize)>,
    pub suppress_ids: Vec<u32>,
    pub suppress_ids_begin: Vec<u32>,
}

/// Arithmetic of the linear layers and the vocabulary projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// The weights as shipped, widened to f32.
    F32,
    /// Weights quantized per output channel at load, activations per row at run time: a quarter
    /// of the weight memory to read per decoded token. On CPUs with AMX, also the encoder's
    /// attention products and the cross-attention K/V projection in bf16 (f32 sums).
    #[default]
    Int8,
}

pub struct Model {
    pub dims: Dims,
    pub precision: Precision,
    pub dir: PathBuf,
    pub config: Config,
    pub tokenizer: Tokenizer,
    /// Where the INT8 weights came from: mapped from the weight cache, or made from `model.bin`.
    pub weight_cache: CacheOutcome,
    backend: Box<dyn Backend>,
}

impl Model {
    /// A model from its parts, on any backend (another backend over loaded weights, or a
    /// scripted one in tests).
    pub fn from_parts(dims: Dims, config: Config, tokenizer: Tokenizer, backend: Box<dyn Backend>) -> Model {
        Model {
            dims,
            precision: Precision::default(),
            dir: PathBuf::new(),
            config,
            tokenizer,
            weight_cache: CacheOutcome::Unused,
            backend,
        }
    }

    /// The model with its backend replaced by what `f` makes of it (a backend wrapping the
    /// current one, say).
    pub fn wrap_backend<E>(self, f: impl FnOnce(Box<dyn Backend>) -> Result<Box<dyn Backend>, E>) -> Result<Model, E> {
        let Model {
            dims,
            precision,
            dir,
            config,
            tokenizer,
            weight_cache,
            backend,
        } = self;
        Ok(Model {
            backend: f(backend)?,
            dims,
            precision,
            dir,
            config,
            tokenizer,
            weight_cache,
        })
    }

    /// Runs the forward passes on `backend` from now on.
    pub fn set_backend(&mut self, backend: Box<dyn Backend>) {
        self.backend = backend;
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    pub fn n_mels(&self) -> usize {
        self.dims.n_mels
    }

    pub fn d_model(&self) -> usize {
        self.dims.d_model
    }

    /// Whisper's rule: multilingual vocabularies have 51865 tokens or more.
    pub fn is_multilingual(&self) -> bool {
        self.dims.vocab_size >= 51865
    }

    /// Encodes a batch of log-mel windows, each `n_mels × MEL_FRAMES` (mel-major).
    /// Returns one `ENCODER_FRAMES × d_model` state matrix per window.
    pub fn encode_batch(&self, mels: &[&[f32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.backend.encode(mels)
    }

    /// [`encode_batch`](Self::encode_batch) over the first `frames` encoder positions only
    /// (`2 · frames` mel frames; whisper.cpp's `audio_ctx`): `frames × d_model` per window, or
    /// the full `ENCODER_FRAMES` on a backend that cannot shorten it (the ONNX Runtime one).
    pub fn encode_batch_frames(&self, mels: &[&[f32]], frames: usize) -> Result<Vec<Vec<f32>>, BackendError> {
        self.backend.encode_frames(mels, frames)
    }

    /// The cross-attention cache of one window's encoder states (`frames × d_model`, any
    /// `frames` up to `ENCODER_FRAMES`),
    /// shared by every hypothesis decoded over it.
    pub fn cross_cache(&self, states: &[f32]) -> Result<CrossCache, BackendError> {
        self.backend.cross_cache(states)
    }

    /// An empty hypothesis over one window.
    pub fn sequence(&self, cross: &CrossCache) -> Result<Sequence, BackendError> {
        self.backend.sequence(cross)
    }

    /// A decoder step of several sequences at once: see [`Backend::decode`].
    pub fn decode(
        &self,
        seqs: &mut [&mut Sequence],
        inputs: &[StepInput<'_>],
        alignment: Option<AlignmentRequest<'_>>,
    ) -> Result<StepOutput, BackendError> {
        self.backend.decode(seqs, inputs, alignment)
    }

    /// Runs `tokens` after `seq`'s cache; returns the logits of the rows `logits_at`
    /// (`logits_at.len() × vocab_size`).
    pub fn step(&self, seq: &mut Sequence, tokens: &[u32], logits_at: &[usize]) -> Result<Vec<f32>, BackendError> {
        let input = StepInput { tokens, logits_at };
        Ok(self.backend.decode(&mut [seq], &[input], None)?.logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitted_frames_cover_the_audio_and_the_margin() {
        // jfk.wav, 11 s: 550 frames + 200 = 750, up to 768.
        assert_eq!(fitted_frames(176_000, FIT_STEP_FRAMES, FIT_MARGIN_FRAMES), 768);
        assert_eq!(fitted_frames(176_000, 128, 100), 768);
        assert_eq!(fitted_frames(176_000, 64, 50), 640);
        // One sample more than 20 ms is two frames.
        assert_eq!(fitted_frames(321, 1, 0), 2);
        assert_eq!(fitted_frames(0, 64, 0), 0);
        // 27.5 s + 2 s does not fit under 30 s rounded to 128: capped at the full context.
        assert_eq!(
            fitted_frames(440_000, FIT_STEP_FRAMES, FIT_MARGIN_FRAMES),
            ENCODER_FRAMES
        );
        assert_eq!(fitted_frames(480_000, 64, 50), ENCODER_FRAMES);
    }
}
