//! The CPU backend's layers: linear layers in the weight representation the precision and the
//! CPU call for, and layer norm.

use npuwhisper_kernels::bgemm::Bf16Weights;
use npuwhisper_kernels::qgemm::QuantizedWeights;
use npuwhisper_kernels::store::Store;

use super::Precision;

const LN_EPS: f32 = 1e-5;

/// How a linear layer's weights are stored (each with its own kernel).
pub(crate) enum LinearWeights {
    /// `[n_out, n_in]` f32.
    F32(Store<f32>),
    /// Quantized per output channel (INT8 models).
    Int8(QuantizedWeights),
    /// Packed for the AMX tiles in bf16 (INT8 models' f32 layers, where the CPU has AMX).
    Bf16(Bf16Weights),
}

/// `y = x·Wᵀ + b`, W `[n_out, n_in]`.
pub(crate) struct Linear {
    pub weights: LinearWeights,
    pub b: Option<Store<f32>>,
    pub n_out: usize,
    pub n_in: usize,
}

impl Linear {
    pub fn new(w: Store<f32>, b: Option<Store<f32>>, n_out: usize, n_in: usize) -> Linear {
        Linear {
            weights: LinearWeights::F32(w),
            b,
            n_out,
            n_in,
        }
    }

    pub fn new_quantized(q: QuantizedWeights, b: Option<Store<f32>>) -> Linear {
        Linear {
            n_out: q.n_out(),
            n_in: q.k(),
            weights: LinearWeights::Int8(q),
            b,
        }
    }

    /// An f32 layer in bf16 on the AMX tiles when `precision` is INT8 and the CPU has them;
    /// otherwise unchanged.
    pub fn with_precision(self, precision: Precision) -> Linear {
        let LinearWeights::F32(w) = &self.weights else {
            return self;
        };
        if precision != Precision::Int8 {
            return self;
        }
        match Bf16Weights::pack(w, self.n_out, self.n_in) {
            Some(h) => Linear {
                weights: LinearWeights::Bf16(h),
                ..self
            },
            None => self,
        }
    }

    pub fn forward(&self, m: usize, x: &[f32], y: &mut Vec<f32>) {
        y.resize(m * self.n_out, 0.0);
        let b = self.b.as_deref();
        match &self.weights {
            LinearWeights::Int8(q) => npuwhisper_kernels::qgemm::qlinear(x, m, self.n_in, q, b, y),
            LinearWeights::Bf16(h) => npuwhisper_kernels::bgemm::linear_bf16(x, m, self.n_in, h, b, y),
            LinearWeights::F32(w) => npuwhisper_kernels::gemm::linear(m, self.n_out, self.n_in, x, w, b, y),
        }
    }
}

pub(crate) struct LayerNorm {
    pub gamma: Store<f32>,
    pub beta: Store<f32>,
}

impl LayerNorm {
    pub fn forward_into(&self, x: &[f32], out: &mut Vec<f32>) {
        npuwhisper_kernels::ops::layer_norm_into(x, &self.gamma, &self.beta, LN_EPS, out);
    }
}
