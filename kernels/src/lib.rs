//! Compute kernels of npuwhisper. Every entry point is a plain function on row-major slices,
//! so an accelerator backend can replace it one kernel at a time.

pub mod attention;
pub mod gemm;
pub mod isa;
pub mod mel;
pub mod ops;
pub mod pool;
pub mod qgemm;
mod sgemm;
