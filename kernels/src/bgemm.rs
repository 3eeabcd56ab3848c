//! bf16 linear layers on the AMX tiles: `y = x·Wᵀ + b` with W rounded to bf16 once at load
//! time and x per call, products summed in f32 by `tdpbf16ps`.
//!
//! For the layers that stay out of INT8 because their inputs are the most sensitive (the conv
//! stem on raw log-mel, the cross-attention key/value projection every decoded token reads):
//! bf16 keeps each value's own exponent, so its error is relative (≤ 2⁻⁹ per operand) instead
//! of relative to a row's largest value.
//!
//! Weights: `[n/16 panels][kp/32 steps][16 k pairs][16 channels][2]` (u16), k padded to a
//! multiple of 32 and n to a multiple of 16 with zeros. Only on CPUs with AMX:
//! [`Bf16Weights::pack`] returns `None` elsewhere and callers keep f32.

use rayon::prelude::*;

use crate::amx::{self, bf16, BF16_TILE};
use crate::isa::Isa;
use crate::pool;
use crate::sgemm::Shared;

/// Output channels per panel (one tile's columns).
const NR: usize = 16;
/// Depth of one tile step (32 bf16 = 64 bytes).
const KR: usize = 32;

/// A linear layer's weight `[n_out × k]` in bf16, packed for the tiles.
pub struct Bf16Weights {
    n: usize,
    k: usize,
    kp: usize,
    packed: Vec<u16>,
}

impl Bf16Weights {
    /// Rounds `w` (`n_out` rows of `k`, one output channel per row) to bf16 and packs it, or
    /// `None` when this CPU has no AMX (or `NPUWHISPER_ISA` asks for less).
    pub fn pack(w: &[f32], n_out: usize, k: usize) -> Option<Bf16Weights> {
        if Isa::detect() != Isa::Amx {
            return None;
        }
        assert!(w.len() >= n_out * k, "Bf16Weights::pack: w too short");
        let kp = k.next_multiple_of(KR);
        let np = n_out.next_multiple_of(NR);
        let mut packed = vec![0u16; np * kp];
        packed.par_chunks_mut(NR * kp).enumerate().for_each(|(panel, dst)| {
            for c in 0..NR.min(n_out.saturating_sub(panel * NR)) {
                let row = &w[(panel * NR + c) * k..][..k];
                for (p, &x) in row.iter().enumerate() {
                    let (step, pair, e) = (p / KR, (p % KR) / 2, p % 2);
                    dst[step * BF16_TILE + pair * 2 * NR + c * 2 + e] = bf16(x);
                }
            }
        });
        Some(Bf16Weights {
            n: n_out,
            k,
            kp,
            packed,
        })
    }

    pub fn n_out(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// The weight as the tiles see it, `[n_out × k]`: for tests.
    #[cfg(test)]
    fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        for (j, row) in w.chunks_mut(self.k).enumerate() {
            for (p, v) in row.iter_mut().enumerate() {
                let (step, pair, e) = (p / KR, (p % KR) / 2, p % 2);
                *v = amx::f32_of_bf16(
                    self.packed[(j / NR) * NR * self.kp + step * BF16_TILE + pair * 2 * NR + (j % NR) * 2 + e],
                );
            }
        }
        w
    }
}

/// `out[m×n] = x[m×k] · Wᵀ + bias` on the AMX tiles, on the kernels' pool.
pub fn linear_bf16(x: &[f32], m: usize, k: usize, w: &Bf16Weights, bias: Option<&[f32]>, out: &mut [f32]) {
    let (n, kp) = (w.n, w.kp);
    assert_eq!(k, w.k, "linear_bf16: x has {k} features, the weight {}", w.k);
    assert!(x.len() >= m * k && out.len() >= m * n, "linear_bf16: slices too short");
    assert!(bias.is_none_or(|b| b.len() >= n), "linear_bf16: bias too short");
    // The whole `Amx` set, not only the tiles: `to_bf16` needs AVX-512BW.
    assert!(Isa::Amx.available(), "linear_bf16 without AMX");
    if m == 0 || n == 0 {
        return;
    }
    pool::install(|| {
        // x in bf16, row-major, rows padded to a multiple of 16 and k to kp with zeros.
        let mut xb = pool::reused_zeroed(&ROWS, m.next_multiple_of(amx::ROWS) * kp);
        xb.par_chunks_mut(kp)
            .zip(x.par_chunks(k))
            // SAFETY: the CPU has the `Amx` set (asserted), which includes AVX-512F and BW.
            .for_each(|(dst, row)| unsafe { to_bf16(row, &mut dst[..k]) });
        let out = Shared(out.as_mut_ptr());
        let panel = |j: usize| w.packed[(j / NR) * NR * kp..].as_ptr();
        #[cfg(target_arch = "x86_64")]
        let dot = |i0: usize, two_rows: bool, j0: usize, two_panels: bool, acc: &mut [[f32; 256]; 4]| {
            // SAFETY: `par_blocks` configured the tiles on this thread; the rows of `xb` are padded
            // to a multiple of 16 and the channels to whole panels, each `kp` deep, and
            // `par_blocks` asks for the second row block or panel only when it starts inside them.
            unsafe {
                amx::dot_bf16(
                    kp / KR,
                    xb[i0 * kp..].as_ptr(),
                    kp * 2,
                    two_rows,
                    panel(j0),
                    two_panels.then(|| panel(j0 + NR)),
                    acc,
                )
            }
        };
        let store = |i: usize, rows: usize, j: usize, cols: usize, acc: &[f32; 256]| {
            for r in 0..rows {
                // SAFETY: row `i + r < m` and columns `j..j + cols <= n` of `out` (`m × n`,
                // asserted), a part no other `par_blocks` task writes.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add((i + r) * n + j), cols) };
                let sums = &acc[r * NR..][..cols];
                match bias {
                    Some(b) => dst
                        .iter_mut()
                        .zip(sums)
                        .zip(&b[j..j + cols])
                        .for_each(|((y, &s), &b)| *y = s + b),
                    None => dst.copy_from_slice(sums),
                }
            }
        };
        // SAFETY: the `Amx` set was asserted, so the tiles are available.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            amx::par_blocks(m, n, dot, store)
        };
        ROWS.set(xb);
    });
}

thread_local! {
    /// This thread's rows in bf16 from the last call ([`pool::reused_zeroed`]).
    static ROWS: std::cell::Cell<Vec<u16>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `out ← bf16(x)`, compiled for AVX-512 (LLVM vectorises the rounding there).
///
/// # Safety
/// The CPU must have AVX2, FMA, AVX-512F and AVX-512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw")]
unsafe fn to_bf16(x: &[f32], out: &mut [u16]) {
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = bf16(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::gemm_nt;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    #[test]
    fn matches_a_bf16_reference_and_stays_close_to_f32() {
        if Isa::detect() != Isa::Amx {
            eprintln!("no AMX here: nothing to test");
            return;
        }
        let mut seed = 7;
        // Rows and channels around the tiles (16, 32, 64) and tasks (128), k off the 32 step,
        // and the model's shapes (conv stem, cross-attention K/V).
        for (m, k, n) in [
            (1, 32, 16),
            (15, 31, 17),
            (33, 64, 40),
            (70, 100, 130),
            (3000, 240, 384),
            (1500, 384, 768),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed) * 4.0).collect();
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
            let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let packed = Bf16Weights::pack(&w, n, k).expect("AMX");
            let mut y = vec![f32::NAN; m * n];
            linear_bf16(&x, m, k, &packed, Some(&bias), &mut y);
            let wb = packed.dequantize();
            let r = |v: f32| amx::f32_of_bf16(bf16(v)) as f64;
            for (i, j) in (0..m).step_by(m / 7 + 1).flat_map(|i| (0..n).map(move |j| (i, j))) {
                let want: f64 = (0..k).map(|p| r(x[i * k + p]) * wb[j * k + p] as f64).sum::<f64>() + bias[j] as f64;
                let bound: f64 = (0..k).map(|p| (r(x[i * k + p]) * wb[j * k + p] as f64).abs()).sum();
                assert!(
                    (y[i * n + j] as f64 - want).abs() <= 1e-5 * bound + 1e-6,
                    "{m}x{k}x{n} ({i},{j}): {} vs {want}",
                    y[i * n + j]
                );
            }
            let mut f = vec![0f32; m * n];
            gemm_nt(m, n, k, &x, &w, &mut f);
            let rms = |v: &mut dyn Iterator<Item = f64>| {
                let (s, c) = v.fold((0.0, 0), |(s, c), x| (s + x * x, c + 1));
                (s / c as f64).sqrt()
            };
            let err = rms(&mut y
                .iter()
                .zip(&f)
                .enumerate()
                .map(|(i, (a, b))| (*a - *b - bias[i % n]) as f64))
                / rms(&mut f.iter().map(|&v| v as f64));
            eprintln!("{m}x{k}x{n}: error vs f32 {:.3} % of the output RMS", err * 100.0);
            assert!(err < 0.005, "{m}x{k}x{n}: {:.3} %", err * 100.0);
        }
    }
}
