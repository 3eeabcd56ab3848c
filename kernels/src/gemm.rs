//! Matrix products. Large products go through our packed, cache-blocked, threaded SGEMM
//! (`sgemm.rs`: 6×16 AVX2/FMA micro-kernel chosen at run time, portable fallback); products
//! with few rows (decoder steps) are memory-bound, so they stream each weight row once through
//! a vectorised dot product, split across threads. Everything runs on the kernels' pool.
//!
//! The packed GEMM replaced `matrixmultiply` (0.3 with its FMA kernel; its AVX-512 kernel is
//! off, as the reference machine has none) after measuring both on the encoder's shapes with
//! `BENCH_TIME=cpu cargo bench -p npuwhisper-kernels -- sgemm`: ours was ahead on every shape,
//! so it serves them all (README, Benchmarks, has the table).

use rayon::prelude::*;

use crate::isa::Isa;
use crate::pool;
pub use crate::sgemm::PackedLinear;
use crate::sgemm::{self, View};

/// Row counts at or below this take the streaming path.
const SMALL_M: usize = 8;

/// `c[m×n] = a[m×k] · b[n×k]ᵀ` (b holds one output per row, like a linear layer's weight).
pub fn gemm_nt(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(
        a.len() >= m * k && b.len() >= n * k && c.len() >= m * n,
        "gemm_nt: slices too short"
    );
    if m <= SMALL_M {
        pool::install(|| small_m_nt(m, n, k, a, b, c));
        return;
    }
    // SAFETY: the asserts above keep every strided access inside the slices.
    unsafe {
        gemm_strided(
            m,
            n,
            k,
            1.0,
            a.as_ptr(),
            (k as isize, 1),
            b.as_ptr(),
            (1, k as isize),
            0.0,
            c.as_mut_ptr(),
            (n as isize, 1),
        );
    }
}

/// `c[m×n] = a[m×k] · b[k×n]`.
pub fn gemm_nn(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm_nn: slices too short"
    );
    // SAFETY: as in gemm_nt.
    unsafe {
        gemm_strided(
            m,
            n,
            k,
            1.0,
            a.as_ptr(),
            (k as isize, 1),
            b.as_ptr(),
            (n as isize, 1),
            0.0,
            c.as_mut_ptr(),
            (n as isize, 1),
        );
    }
}

/// A general strided product `C = alpha·A·B + beta·C` on raw row/column strides, for views such
/// as one attention head inside a wider matrix. `beta == 0` never reads C.
///
/// # Safety
/// Every element addressed through the strides must lie inside the given allocations, and C
/// must not overlap A or B.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    sa: (isize, isize),
    b: *const f32,
    sb: (isize, isize),
    beta: f32,
    c: *mut f32,
    sc: (isize, isize),
) {
    // SAFETY: the same contract, passed on.
    unsafe { gemm_strided_with(Isa::detect(), m, n, k, alpha, a, sa, b, sb, beta, c, sc) }
}

/// [`gemm_strided`] on a chosen SIMD path (downgraded if the CPU lacks it), for tests and
/// benchmarks that compare paths.
///
/// # Safety
/// As [`gemm_strided`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_strided_with(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    (rsa, csa): (isize, isize),
    b: *const f32,
    (rsb, csb): (isize, isize),
    beta: f32,
    c: *mut f32,
    (rsc, csc): (isize, isize),
) {
    let (a, b, c) = (
        View {
            ptr: a,
            rs: rsa,
            cs: csa,
        },
        View {
            ptr: b,
            rs: rsb,
            cs: csb,
        },
        sgemm::Shared(c),
    );
    // SAFETY: the views and strides are this function's, valid and non-overlapping by its
    // contract; `sgemm` only reads A and B and writes C's `m × n` elements.
    pool::install(move || unsafe { sgemm::sgemm(isa, m, n, k, alpha, a, b, beta, c.get(), rsc, csc) })
}

/// Linear layer: `y[m×n] = x[m×k] · w[n×k]ᵀ + bias`.
pub fn linear(m: usize, n: usize, k: usize, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    gemm_nt(m, n, k, x, w, y);
    if let Some(bias) = bias {
        for row in y[..m * n].chunks_mut(n) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

fn small_m_nt(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    const COLS_PER_TASK: usize = 256;
    let mut out_t = vec![0f32; n * m];
    out_t
        .par_chunks_mut(COLS_PER_TASK * m)
        .enumerate()
        .for_each(|(task, out)| {
            let j0 = task * COLS_PER_TASK;
            for (jj, col) in out.chunks_mut(m).enumerate() {
                let w = &b[(j0 + jj) * k..(j0 + jj + 1) * k];
                for (i, v) in col.iter_mut().enumerate() {
                    *v = dot(&a[i * k..(i + 1) * k], w);
                }
            }
        });
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = out_t[j * m + i];
        }
    }
}

/// Dot product, AVX2/FMA when the CPU has it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at run time.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// [`dot_portable`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

/// Sixteen independent accumulators let the compiler keep two vector registers busy.
#[inline(always)]
pub(crate) fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Uniform in [−0.5, 0.5), from a 64-bit LCG: test data that is the same every run.
    pub(crate) fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    fn reference_nt(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[j * k + p] as f64).sum();
            }
        }
        c
    }

    #[test]
    fn gemm_nt_matches_reference_on_odd_shapes() {
        let mut seed = 7;
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 51, 37),
            (3, 300, 17),
            (4, 5, 129),
            (5, 7, 3),
            (33, 65, 129),
            (130, 17, 384),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            let b: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
            let mut c = vec![f32::NAN; m * n];
            gemm_nt(m, n, k, &a, &b, &mut c);
            let r = reference_nt(m, n, k, &a, &b);
            for (x, y) in c.iter().zip(&r) {
                assert!(
                    (*x as f64 - y).abs() < 1e-4 * (k as f64).sqrt(),
                    "{m}x{n}x{k}: {x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn packed_rows_do_not_depend_on_the_batch_or_the_threads() {
        let mut seed = 13;
        // 300×258×387: past the threshold where the pool splits it, k past one KC block.
        let (m, n, k) = (300, 258, 387);
        let a: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
        let b: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
        let packed = PackedLinear::new(n, k, &b);
        let mut whole = vec![0f32; m * n];
        crate::pool::install(|| packed.apply(m, &a, &mut whole));
        let r = reference_nt(m, n, k, &a, &b);
        for (x, y) in whole.iter().zip(&r) {
            assert!((*x as f64 - y).abs() < 1e-4 * (k as f64).sqrt());
        }
        let mut start = 0;
        for rows in [1, 4, 7, 100, 188] {
            let mut part = vec![0f32; rows * n];
            packed.apply(rows, &a[start * k..], &mut part);
            assert_eq!(
                part,
                whole[start * n..(start + rows) * n],
                "rows {start}..{}",
                start + rows
            );
            start += rows;
        }
        // Rows further apart than their length, in and out.
        let (sx, sy) = (k + 5, n + 3);
        let wide: Vec<f32> = (0..m * sx)
            .map(|i| if i % sx < k { a[i / sx * k + i % sx] } else { f32::NAN })
            .collect();
        let mut out = vec![-1f32; m * sy];
        crate::pool::install(|| packed.apply_strided(m, (&wide, sx), (&mut out, sy)));
        for (i, row) in out.chunks(sy).enumerate() {
            assert_eq!(row[..n], whole[i * n..(i + 1) * n], "strided row {i}");
            assert!(row[n..].iter().all(|&v| v == -1.0), "strided row {i} wrote past its n");
        }
    }

    #[test]
    fn gemm_nn_and_linear_match_reference() {
        let mut seed = 11;
        let (m, n, k) = (9, 13, 31);
        let a: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
        let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
        let mut wt = vec![0f32; k * n];
        for j in 0..n {
            for p in 0..k {
                wt[p * n + j] = w[j * k + p];
            }
        }
        let r = reference_nt(m, n, k, &a, &w);
        let mut c = vec![0f32; m * n];
        gemm_nn(m, n, k, &a, &wt, &mut c);
        let mut y = vec![0f32; m * n];
        linear(m, n, k, &a, &w, Some(&bias), &mut y);
        for i in 0..m * n {
            assert!((c[i] as f64 - r[i]).abs() < 1e-4);
            assert!((y[i] as f64 - r[i] - bias[i % n] as f64).abs() < 1e-4);
        }
    }
}
