//! Compute kernels of npuwhisper. Every entry point is a plain function on slices, so an
//! accelerator backend can replace it one kernel at a time.

pub mod mel;
