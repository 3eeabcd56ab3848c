//! Multi-head scaled dot-product attention on row-major Q, K, V views.

use rayon::prelude::*;

use crate::gemm::gemm_strided;
use crate::ops::softmax;

/// Shape of one attention call. Q is `tq` rows, K and V are `tk` rows; head `h` uses columns
/// `h·head_dim .. (h+1)·head_dim` of each row. Rows are `*_stride` floats apart, so Q, K and V
/// may be column ranges of one fused QKV matrix.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub tq: usize,
    pub tk: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub q_stride: usize,
    pub k_stride: usize,
    pub v_stride: usize,
    /// Query `i` sees keys `0..=tk−tq+i` only (decoder self-attention).
    pub causal: bool,
}

/// `out[tq × n_heads·head_dim] = softmax(Q Kᵀ / sqrt(head_dim)) V`, head by head, on the
/// kernels' pool.
pub fn attention(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    crate::pool::install(|| attention_on_pool(s, q, k, v, out));
}

fn attention_on_pool(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    let d = s.n_heads * s.head_dim;
    assert!(s.tq > 0 && s.tk > 0 && s.tk >= if s.causal { s.tq } else { 0 });
    assert!(q.len() >= (s.tq - 1) * s.q_stride + d, "attention: q too short");
    assert!(k.len() >= (s.tk - 1) * s.k_stride + d, "attention: k too short");
    assert!(v.len() >= (s.tk - 1) * s.v_stride + d, "attention: v too short");
    assert!(out.len() >= s.tq * d, "attention: out too short");
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let mut scores = vec![0f32; s.tq * s.tk];
    for h in 0..s.n_heads {
        let off = h * s.head_dim;
        // SAFETY: the asserts above bound every row and column addressed here.
        unsafe {
            gemm_strided(
                s.tq, s.tk, s.head_dim, scale,
                q.as_ptr().add(off), (s.q_stride as isize, 1),
                k.as_ptr().add(off), (1, s.k_stride as isize),
                0.0, scores.as_mut_ptr(), (s.tk as isize, 1),
            );
        }
        scores.par_chunks_mut(s.tk).enumerate().for_each(|(i, row)| {
            if s.causal {
                row[s.tk - s.tq + i + 1..].fill(f32::NEG_INFINITY);
            }
            softmax(row);
        });
        // SAFETY: as above; out rows are d wide.
        unsafe {
            gemm_strided(
                s.tq, s.head_dim, s.tk, 1.0,
                scores.as_ptr(), (s.tk as isize, 1),
                v.as_ptr().add(off), (s.v_stride as isize, 1),
                0.0, out.as_mut_ptr().add(off), (d as isize, 1),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(s: Shape, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f64> {
        let d = s.n_heads * s.head_dim;
        let mut out = vec![0f64; s.tq * d];
        for h in 0..s.n_heads {
            for i in 0..s.tq {
                let limit = if s.causal { s.tk - s.tq + i + 1 } else { s.tk };
                let sc: Vec<f64> = (0..limit)
                    .map(|j| {
                        (0..s.head_dim)
                            .map(|c| q[i * s.q_stride + h * s.head_dim + c] as f64 * k[j * s.k_stride + h * s.head_dim + c] as f64)
                            .sum::<f64>()
                            / (s.head_dim as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..s.head_dim {
                    out[i * d + h * s.head_dim + c] =
                        (0..limit).map(|j| e[j] / z * v[j * s.v_stride + h * s.head_dim + c] as f64).sum();
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_on_fused_qkv_and_causal_shapes() {
        let mut seed = 3u64;
        let mut r = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for &(tq, tk, heads, hd, causal) in &[(7, 7, 3, 5, false), (1, 9, 2, 8, true), (4, 11, 2, 3, true), (13, 13, 1, 64, true)] {
            let d = heads * hd;
            // Q, K, V interleaved in one [t × 3d] matrix, as the fused projection makes them.
            let qkv: Vec<f32> = (0..tk * 3 * d).map(|_| r() * 4.0).collect();
            let s = Shape { tq, tk, n_heads: heads, head_dim: hd, q_stride: 3 * d, k_stride: 3 * d, v_stride: 3 * d, causal };
            let q = &qkv[(tk - tq) * 3 * d..];
            let mut out = vec![0f32; tq * d];
            attention(s, q, &qkv[d..], &qkv[2 * d..], &mut out);
            let expect = naive(s, q, &qkv[d..], &qkv[2 * d..]);
            for (a, b) in out.iter().zip(&expect) {
                assert!((*a as f64 - b).abs() < 1e-4, "{tq}x{tk} causal {causal}: {a} vs {b}");
            }
        }
    }
}
