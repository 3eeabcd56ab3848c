//! Compute kernels of npuwhisper. Every entry point is a plain function on row-major slices,
//! so an accelerator backend can replace it one kernel at a time.
//!
//! - [`gemm`]: f32 products (packed AVX2/FMA GEMM, streaming path for decoder steps).
//! - [`bgemm`]: bf16 linear layers on AMX tiles ([`bgemm::Bf16Weights`]).
//! - [`qgemm`]: INT8 linear layers, weights quantized once at load ([`qgemm::QuantizedWeights`]).
//! - [`attention`]: multi-head attention, fused for long queries.
//! - [`xattn`]: decoder cross-attention on f16 keys and values ([`xattn::HalfKv`]).
//! - [`ops`]: layer norm, GELU, softmax, sigmoid, tanh; [`mel`]: the log-mel front end.
//! - [`lstm`]: an LSTM over a sequence; [`stft`]: magnitude spectra (speech detection's Silero VAD).
//! - `amx`: Intel AMX tile instructions, the matrix unit of newer Xeons.
//! - [`store`]: weight arrays owned or mapped from the loader's weight cache.
//! - [`isa`]: which SIMD path runs, chosen at run time; [`pool`]: the threads kernels use.

mod amx;
pub mod attention;
pub mod bgemm;
pub mod gemm;
pub mod isa;
pub mod lstm;
pub mod mel;
pub mod ops;
pub mod pool;
pub mod qgemm;
mod sgemm;
pub mod stft;
pub mod store;
pub mod xattn;
