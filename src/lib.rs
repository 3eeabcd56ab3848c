//! npuwhisper: Whisper speech recognition as GStreamer elements.
//!
//! The crate is layered so that each layer is usable without the ones above it:
//! - [`model`]: Whisper weights and forward passes (encoder, decoder with KV cache), on `npuwhisper_kernels`;
//! - [`decoding`]: decoding policy (greedy search, timestamp rules, language detection, segments);
//! - [`audio`]: cutting a sample stream into Whisper windows at pauses;
//! - the element folders: GStreamer glue only.

pub mod audio;
pub mod decoding;
pub mod model;
