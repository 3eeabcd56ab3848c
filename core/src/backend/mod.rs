//! The interface of the model's forward passes, so that decoding does not know what runs them.
//!
//! A [`Backend`] runs the encoder (a batch of log-mel windows → encoder states) and the decoder
//! step (tokens after a cache → logits, optionally the cross-attention weights word alignment
//! needs). Its caches are its own types behind [`CrossCache`] and [`SequenceCache`], so a
//! backend on a device keeps them there. Backends are trait objects (`Box<dyn Backend>` in
//! [`Model`](crate::model::Model)) so that one can be chosen at run time, by an element property.
//!
//! Backends: [`cpu`] (the kernels of `npuwhisper_kernels`, the default) and [`onnxruntime`]
//! (the encoder, and optionally the decoder step, as ONNX graphs on an ONNX Runtime execution
//! provider; what it does not run goes to the CPU backend). A new one is a module here implementing [`Backend`] and a [`BackendKind`] variant
//! (see ARCHITECTURE.md).

pub mod cpu;
pub mod onnxruntime;

use std::any::Any;
use std::sync::Arc;

/// What a backend could not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// The tokens do not fit the decoder's positions left in the cache.
    ContextFull { tokens: usize, remaining: usize },
    /// A token id outside the vocabulary.
    TokenOutOfVocabulary(u32),
    /// An input whose size is not what the model takes.
    BadInput(String),
    /// A cache made by another backend.
    ForeignCache,
    /// The backend itself failed (a device or runtime error), with its message.
    Failed(String),
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::ContextFull { tokens, remaining } => {
                write!(f, "{tokens} tokens do not fit the {remaining} positions left")
            }
            BackendError::TokenOutOfVocabulary(id) => write!(f, "token {id} is outside the vocabulary"),
            BackendError::BadInput(why) => write!(f, "bad input: {why}"),
            BackendError::ForeignCache => write!(f, "a cache made by another backend"),
            BackendError::Failed(why) => write!(f, "backend failed: {why}"),
        }
    }
}

impl std::error::Error for BackendError {}

/// Which backend runs the forward passes (an element property names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    /// `npuwhisper_kernels` on the CPU.
    #[default]
    Cpu,
    /// ONNX Runtime on an execution provider.
    Onnxruntime,
}

impl BackendKind {
    pub const ALL: &'static [BackendKind] = &[BackendKind::Cpu, BackendKind::Onnxruntime];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Onnxruntime => "onnxruntime",
        }
    }
}

/// A backend with its options: what a model is loaded on (and shared by, in the model cache).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum BackendChoice {
    #[default]
    Cpu,
    Onnxruntime(onnxruntime::OrtOptions),
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BackendKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown backend {s:?}"))
    }
}

/// A window's cache derived from its encoder states (the cross-attention keys and values),
/// shared by every hypothesis decoded over that window. Cheap to clone.
#[derive(Clone)]
pub struct CrossCache(Arc<dyn Any + Send + Sync>);

impl CrossCache {
    pub fn new<T: Any + Send + Sync>(cache: Arc<T>) -> CrossCache {
        CrossCache(cache)
    }

    /// The backend's own type, or `None` if another backend made this cache.
    pub fn downcast<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        Arc::clone(&self.0).downcast::<T>().ok()
    }
}

/// One hypothesis's decoder state over a window (its self-attention cache), the backend's own
/// type. Cloning forks a beam.
pub trait SequenceCache: Any + Send + Sync {
    /// Tokens decoded so far.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Positions left before the decoder's context is full.
    fn remaining(&self) -> usize;
    /// Forgets the tokens, keeping the window's cross cache.
    fn reset(&mut self);
    fn fork(&self) -> Box<dyn SequenceCache>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A hypothesis's cache, as decoding holds it.
pub struct Sequence(Box<dyn SequenceCache>);

impl Sequence {
    pub fn new(cache: Box<dyn SequenceCache>) -> Sequence {
        Sequence(cache)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    pub fn remaining(&self) -> usize {
        self.0.remaining()
    }

    pub fn reset(&mut self) {
        self.0.reset()
    }

    /// The backend's own type, or `None` if another backend made this cache.
    pub fn downcast_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.0.as_any_mut().downcast_mut::<T>()
    }
}

impl Clone for Sequence {
    fn clone(&self) -> Sequence {
        Sequence(self.0.fork())
    }
}

/// One sequence's part of a decoder step: the tokens to run after its cache, and which of
/// them (indices into `tokens`, in order) need logits.
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    pub tokens: &'a [u32],
    pub logits_at: &'a [usize],
}

/// A request for the cross-attention weights of chosen `(layer, head)` pairs over the first
/// `n_frames` encoder frames (softmax over those frames only), for word alignment.
#[derive(Debug, Clone, Copy)]
pub struct AlignmentRequest<'a> {
    pub heads: &'a [(usize, usize)],
    pub n_frames: usize,
}

/// What a decoder step returns.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Logits of the requested rows, sequence after sequence (`rows × vocab`).
    pub logits: Vec<f32>,
    /// With an [`AlignmentRequest`], per head in request order, `tokens × n_frames` weights.
    pub attention: Vec<Vec<f32>>,
}

/// What every backend's `decode` checks first: one input per sequence, alignment for one
/// sequence, logits only of rows that exist.
pub(crate) fn check_step(sequences: usize, inputs: &[StepInput<'_>], aligned: bool) -> Result<(), BackendError> {
    if sequences != inputs.len() || (aligned && sequences != 1) {
        return Err(BackendError::BadInput(
            "one input per sequence, and alignment for one sequence".into(),
        ));
    }
    if let Some(i) = inputs.iter().find(|i| i.logits_at.iter().any(|&r| r >= i.tokens.len())) {
        return Err(BackendError::BadInput(format!(
            "logits of rows {:?} of {} tokens",
            i.logits_at,
            i.tokens.len()
        )));
    }
    Ok(())
}

/// The forward passes of one loaded model.
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Encodes log-mel windows, each `n_mels × MEL_FRAMES` (mel-major); returns one
    /// `ENCODER_FRAMES × d_model` state matrix per window.
    fn encode(&self, mels: &[&[f32]]) -> Result<Vec<Vec<f32>>, BackendError>;

    /// [`encode`](Self::encode) over a shorter context: `frames × d_model` states per window
    /// from the first `2 · frames` mel frames (whisper.cpp's `audio_ctx`). A backend that
    /// cannot shorten it encodes the full window (the default); callers take the frames from
    /// the length of what comes back.
    fn encode_frames(&self, mels: &[&[f32]], frames: usize) -> Result<Vec<Vec<f32>>, BackendError> {
        let _ = frames;
        self.encode(mels)
    }

    /// The cross-attention cache of one window's encoder states (`frames × d_model`, any
    /// `frames` up to `ENCODER_FRAMES`).
    fn cross_cache(&self, states: &[f32]) -> Result<CrossCache, BackendError>;

    /// An empty hypothesis over a window.
    fn sequence(&self, cross: &CrossCache) -> Result<Sequence, BackendError>;

    /// Runs `inputs[i].tokens` after `seqs[i]`'s cache for every sequence together (one pass over
    /// the weights for all), appending them to the caches. `alignment` is for one sequence only.
    fn decode(
        &self,
        seqs: &mut [&mut Sequence],
        inputs: &[StepInput<'_>],
        alignment: Option<AlignmentRequest<'_>>,
    ) -> Result<StepOutput, BackendError>;
}
