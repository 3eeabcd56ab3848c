//! Activations quantized per row for the INT8 products: u8 with a zero point, packed for the
//! register tiles or row-major for AMX.

use super::*;

/// x quantized per row: packed in MR-row tiles `[tile][kp/4][rows][4]` (u8) for the register
/// tiles, or row-major `[rows][kp]` with the rows padded to a multiple of 16 for AMX.
pub(super) struct QuantizedRows {
    pub(super) data: Vec<u8>,
    pub(super) scales: Vec<f32>,
    pub(super) zero_points: Vec<i32>,
    pub(super) kp: usize,
    pub(super) row_major: bool,
}

thread_local! {
    /// The bytes of this thread's last [`QuantizedRows`], reused by the next: a fresh buffer of
    /// a megabyte or more would be new pages from the system, a page fault per 4 KiB.
    static ROWS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Drop for QuantizedRows {
    fn drop(&mut self) {
        ROWS.set(std::mem::take(&mut self.data));
    }
}

impl QuantizedRows {
    pub(super) fn new(isa: Isa, x: &[f32], m: usize, k: usize, kp: usize, row_major: bool) -> QuantizedRows {
        let qmax = if isa >= Isa::Avx512Vnni { 255.0 } else { 127.0 };
        let mut scales = vec![0f32; m];
        let mut zero_points = vec![0i32; m];
        if row_major {
            let mut data = pool::reused_zeroed(&ROWS, m.next_multiple_of(amx::ROWS) * kp);
            data.par_chunks_mut(kp)
                .zip(scales.par_iter_mut())
                .zip(zero_points.par_iter_mut())
                .enumerate()
                .for_each(|(r, ((q, s), z))| {
                    (*s, *z) = quantize_row(isa, &x[r * k..(r + 1) * k], qmax, &mut q[..k]);
                });
            return QuantizedRows {
                data,
                scales,
                zero_points,
                kp,
                row_major,
            };
        }
        let mut data = pool::reused_zeroed(&ROWS, m * kp);
        data.par_chunks_mut(MR * kp)
            .zip(scales.par_chunks_mut(MR))
            .zip(zero_points.par_chunks_mut(MR))
            .enumerate()
            .for_each(|(tile, ((dst, scales), zps))| {
                let rows = scales.len();
                let mut q = vec![0u8; kp];
                for i in 0..rows {
                    let r = tile * MR + i;
                    (scales[i], zps[i]) = quantize_row(isa, &x[r * k..(r + 1) * k], qmax, &mut q[..k]);
                    for (g, four) in q.chunks_exact(4).enumerate() {
                        dst[(g * rows + i) * 4..][..4].copy_from_slice(four);
                    }
                }
            });
        QuantizedRows {
            data,
            scales,
            zero_points,
            kp,
            row_major,
        }
    }

    /// Rows `i0..i0+rows` (a whole tile, as `i0` is a multiple of MR).
    pub(super) fn tile(&self, i0: usize) -> *const u8 {
        debug_assert!(!self.row_major);
        self.data[i0 * self.kp..].as_ptr()
    }

    /// Row `i`'s quantized feature `p`, in either layout.
    #[cfg(test)]
    pub(super) fn value(&self, i: usize, p: usize) -> u8 {
        if self.row_major {
            return self.data[i * self.kp + p];
        }
        let (t, r) = (i / MR * MR, i % MR);
        let rows = MR.min(self.scales.len() - t);
        self.data[t * self.kp + (p / 4) * rows * 4 + r * 4 + p % 4]
    }
}

pub(super) fn quantize_row(isa: Isa, x: &[f32], qmax: f32, q: &mut [u8]) -> (f32, i32) {
    // The vector path stores 32 bytes at a time up to x's length.
    assert!(q.len() >= x.len(), "quantize_row: q shorter than x");
    #[cfg(target_arch = "x86_64")]
    if isa.or_below() >= Isa::Avx2 {
        // SAFETY: `or_below` checked that the CPU has AVX2 and FMA; q is long enough (asserted).
        return unsafe { quantize_row_avx2(x, qmax, q) };
    }
    let _ = isa;
    quantize_row_portable(x, qmax, q)
}

/// [`quantize_row_portable`] in intrinsics (LLVM does not vectorise the rounding and clamping
/// well): the same arithmetic, `cvtps` rounding half to even like `round_ties_even`, so the two
/// paths give the same bytes.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `q` must be at least as long as `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn quantize_row_avx2(x: &[f32], qmax: f32, q: &mut [u8]) -> (f32, i32) {
    // SAFETY: the features are the caller's; the loads read `x[i..i + 8]` with `i + 8 <=
    // x.len()`, the stores write `q[i..i + 32]` with `i + 32 <= n32 <= x.len() <= q.len()` (the
    // caller's), or the 8-float arrays `l` and `h`.
    unsafe {
        use std::arch::x86_64::*;
        let n32 = x.len() / 32 * 32;
        let p = x.as_ptr();
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..x.len() / 8 * 8).step_by(8) {
            let v = _mm256_loadu_ps(p.add(i));
            lo = _mm256_min_ps(lo, v);
            hi = _mm256_max_ps(hi, v);
        }
        let (mut l, mut h) = ([0f32; 8], [0f32; 8]);
        _mm256_storeu_ps(l.as_mut_ptr(), lo);
        _mm256_storeu_ps(h.as_mut_ptr(), hi);
        let tail = &x[x.len() / 8 * 8..];
        let lo = l.iter().chain(tail).fold(0f32, |a, &b| if b < a { b } else { a });
        let hi = h.iter().chain(tail).fold(0f32, |a, &b| if b > a { b } else { a });
        let (scale, zp) = scale_and_zero_point(lo, hi, qmax);
        let (inv, zpv) = (_mm256_set1_ps(1.0 / scale), _mm256_set1_ps(zp));
        let (zero, top) = (_mm256_setzero_si256(), _mm256_set1_epi32(qmax as i32));
        let quant = |i: usize| {
            let v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(p.add(i)), inv), zpv);
            _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(v), zero), top)
        };
        for i in (0..n32).step_by(32) {
            // 4 × 8 int32 → 32 bytes; the packs work per 128-bit lane, the permute restores order.
            let ab = _mm256_packs_epi32(quant(i), quant(i + 8));
            let cd = _mm256_packs_epi32(quant(i + 16), quant(i + 24));
            let bytes =
                _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(q.as_mut_ptr().add(i) as *mut __m256i, bytes);
        }
        quantize_with(&x[n32..], 1.0 / scale, zp, qmax, &mut q[n32..]);
        (scale, zp as i32)
    }
}

/// Scale and zero point for a row spanning `lo ≤ 0 ≤ hi`.
#[inline(always)]
pub(super) fn scale_and_zero_point(lo: f32, hi: f32, qmax: f32) -> (f32, f32) {
    let scale = if hi > lo { (hi - lo) / qmax } else { 1.0 };
    (scale, (-lo / scale).round().clamp(0.0, qmax))
}

#[inline(always)]
pub(super) fn quantize_with(x: &[f32], inv: f32, zp: f32, qmax: f32, q: &mut [u8]) {
    for (d, &v) in q.iter_mut().zip(x) {
        *d = (v * inv + zp).round_ties_even().clamp(0.0, qmax) as u8;
    }
}

/// Asymmetric per-row quantization with 0 exactly representable.
pub(super) fn quantize_row_portable(x: &[f32], qmax: f32, q: &mut [u8]) -> (f32, i32) {
    let (mut lo, mut hi) = ([0f32; 8], [0f32; 8]);
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            lo[l] = if c[l] < lo[l] { c[l] } else { lo[l] };
            hi[l] = if c[l] > hi[l] { c[l] } else { hi[l] };
        }
    }
    for &v in chunks.remainder() {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
    }
    let lo = lo.iter().fold(0f32, |a, &b| a.min(b));
    let hi = hi.iter().fold(0f32, |a, &b| a.max(b));
    let (scale, zp) = scale_and_zero_point(lo, hi, qmax);
    quantize_with(x, 1.0 / scale, zp, qmax, q);
    (scale, zp as i32)
}
