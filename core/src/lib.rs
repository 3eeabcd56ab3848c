//! npuwhisper's GStreamer-free core, layered so that each layer is usable without the ones above it:
//! - [`model`]: Whisper weights (CTranslate2 directories), the tokenizer and the model registry;
//! - [`backend`]: the forward passes (encoder, decoder step) behind one interface, and the CPU
//!   backend on `npuwhisper_kernels`;
//! - [`decoding`]: decoding policy (search, temperature fallback, timestamp rules, language
//!   detection, segments), on any backend;
//! - [`audio`]: cutting a sample stream into Whisper windows at pauses (Silero VAD through
//!   [`runtime`], the process-wide ONNX Runtime environment);
//! - [`cues`]: subtitle cues from timed text.
//!
//! The GStreamer elements (crate `gst-plugin-npuwhisper`) and the `npuwhisper` command are glue
//! on top of it.

pub mod audio;
pub mod backend;
pub mod cues;
pub mod decoding;
pub mod model;
pub mod runtime;
