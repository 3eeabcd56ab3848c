//! Decoder cross-attention on keys and values stored in f16.
//!
//! Every decoder step of every hypothesis attends over its window's 1500 encoder frames in
//! every layer: in f32 that is 1500 × 2d × 4 bytes read per layer per token (18 MB a step
//! on tiny.en), the largest memory stream of decoding. [`HalfKv`] holds them in f16, half
//! the bytes, laid out for the two products of one query row:
//!
//! - K transposed per head, `[head][head_dim][tk_padded]`: the scores of 8 frames are one
//!   vector, accumulated over the head's dimensions with a broadcast of the query, so no
//!   horizontal sums (the f32 path does one per frame);
//! - V per head, `[head][tk][head_dim]`: each frame's values are contiguous vectors, summed
//!   with the frame's weight broadcast.
//!
//! Arithmetic is f32 (F16C widens on load); only the storage rounds, to f16's 11-bit
//! significand. `tk` is padded to a multiple of 8 with zero keys, never read as scores.

use half::f16;
use rayon::prelude::*;

use crate::isa::Isa;
use crate::ops::exp_shifted_with;
use crate::sgemm::Shared;

/// Frames per padded block of the transposed keys.
const LANES: usize = 8;

/// One window's cross-attention keys and values in f16 (see the module comment).
pub struct HalfKv {
    n_heads: usize,
    head_dim: usize,
    tk: usize,
    /// `tk` rounded up to a multiple of [`LANES`].
    tkp: usize,
    /// `[head][head_dim][tkp]`, zero past `tk`.
    kt: Vec<f16>,
    /// `[head][tk][head_dim]`.
    v: Vec<f16>,
}

impl HalfKv {
    /// Rounds K and V (`tk` rows each, `n_heads · head_dim` wide, rows `k_stride`/`v_stride`
    /// floats apart: they may be the two halves of one projection) to f16.
    pub fn new(
        k: &[f32],
        k_stride: usize,
        v: &[f32],
        v_stride: usize,
        tk: usize,
        n_heads: usize,
        head_dim: usize,
    ) -> HalfKv {
        let d = n_heads * head_dim;
        assert!(tk > 0 && d > 0, "HalfKv: empty");
        assert!(
            k.len() >= (tk - 1) * k_stride + d && v.len() >= (tk - 1) * v_stride + d,
            "HalfKv: K or V too short"
        );
        let tkp = tk.next_multiple_of(LANES);
        let mut kt = vec![f16::ZERO; n_heads * head_dim * tkp];
        let mut vh = vec![f16::ZERO; n_heads * tk * head_dim];
        let isa = Isa::detect();
        crate::pool::install(|| {
            // Per head: its K columns transposed, its V columns copied; rows in f16.
            kt.par_chunks_mut(head_dim * tkp)
                .zip(vh.par_chunks_mut(tk * head_dim))
                .enumerate()
                .for_each(|(h, (kt, vh))| {
                    let mut row = vec![f16::ZERO; head_dim];
                    for j in 0..tk {
                        to_f16(isa, &k[j * k_stride + h * head_dim..][..head_dim], &mut row);
                        for (c, &x) in row.iter().enumerate() {
                            kt[c * tkp + j] = x;
                        }
                        to_f16(
                            isa,
                            &v[j * v_stride + h * head_dim..][..head_dim],
                            &mut vh[j * head_dim..][..head_dim],
                        );
                    }
                });
        });
        HalfKv {
            n_heads,
            head_dim,
            tk,
            tkp,
            kt,
            v: vh,
        }
    }

    pub fn frames(&self) -> usize {
        self.tk
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        2 * (self.kt.len() + self.v.len())
    }

    /// Scaled scores `q·k_j / sqrt(head_dim)` of head `h` for frames `0..out.len()`, before
    /// the softmax (for alignment weights over a prefix of the frames).
    pub fn scores(&self, h: usize, q: &[f32], out: &mut [f32]) {
        assert!(
            h < self.n_heads && q.len() >= self.head_dim && out.len() <= self.tk,
            "HalfKv::scores: bad head, query or length"
        );
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let mut all = vec![0f32; self.tkp];
        scores_with(Isa::detect(), self.head(h), &q[..self.head_dim], scale, &mut all);
        out.copy_from_slice(&all[..out.len()]);
    }

    fn head(&self, h: usize) -> Head<'_> {
        let (hd, tkp, tk) = (self.head_dim, self.tkp, self.tk);
        Head {
            kt: &self.kt[h * hd * tkp..][..hd * tkp],
            v: &self.v[h * tk * hd..][..tk * hd],
            hd,
            tk,
            tkp,
        }
    }
}

/// One head's keys and values.
#[derive(Clone, Copy)]
struct Head<'a> {
    kt: &'a [f16],
    v: &'a [f16],
    hd: usize,
    tk: usize,
    tkp: usize,
}

/// The query rows of one window for [`cross_attention`]: `tq` rows `q_stride` floats apart,
/// each `n_heads · head_dim` wide, into `out` (`tq` rows of that width, contiguous).
pub struct CrossQuery<'a> {
    pub q: &'a [f32],
    pub tq: usize,
    pub q_stride: usize,
    pub kv: &'a HalfKv,
    pub out: &'a mut [f32],
}

/// `out = softmax(q Kᵀ / sqrt(head_dim)) V` per head for every query of every window, all
/// (window, head, row) triples in one parallel loop on the kernels' pool.
pub fn cross_attention(queries: &mut [CrossQuery<'_>]) {
    cross_attention_with(Isa::detect(), queries)
}

/// [`cross_attention`] on a chosen SIMD path (downgraded if the CPU lacks it).
pub fn cross_attention_with(isa: Isa, queries: &mut [CrossQuery<'_>]) {
    let isa = isa.or_below();
    let mut tasks = Vec::new();
    for (w, cq) in queries.iter().enumerate() {
        let (d, hd) = (cq.kv.n_heads * cq.kv.head_dim, cq.kv.head_dim);
        assert!(
            cq.tq == 0 || cq.q.len() >= (cq.tq - 1) * cq.q_stride + d,
            "cross_attention: q too short"
        );
        assert!(cq.out.len() >= cq.tq * d, "cross_attention: out too short");
        for h in 0..cq.kv.n_heads {
            for i in 0..cq.tq {
                tasks.push((w, h, i, hd, d));
            }
        }
    }
    let outs: Vec<Shared<*mut f32>> = queries.iter_mut().map(|cq| Shared(cq.out.as_mut_ptr())).collect();
    let queries = &*queries;
    let run = |&(w, h, i, hd, d): &(usize, usize, usize, usize, usize)| {
        let cq = &queries[w];
        let q = &cq.q[i * cq.q_stride + h * hd..][..hd];
        // SAFETY: `out` holds tq rows of d (asserted); (window, row i, head h) is this task's alone.
        let o = unsafe { std::slice::from_raw_parts_mut(outs[w].get().add(i * d + h * hd), hd) };
        SCORES.with(|buf| {
            let mut sc = buf.borrow_mut();
            sc.resize(cq.kv.tkp, 0.0);
            row(isa, cq.kv.head(h), q, &mut sc, o);
        });
    };
    let work: usize = queries
        .iter()
        .map(|cq| cq.tq * cq.kv.n_heads * cq.kv.tk * cq.kv.head_dim)
        .sum();
    if work < 1 << 16 {
        tasks.iter().for_each(run);
    } else {
        crate::pool::install(|| tasks.par_iter().for_each(run));
    }
}

thread_local! {
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One query row of one head: scores, softmax, weighted sum of V. `sc` is `tkp` long.
fn row(isa: Isa, hd: Head<'_>, q: &[f32], sc: &mut [f32], o: &mut [f32]) {
    let scale = 1.0 / (hd.hd as f32).sqrt();
    scores_with(isa, hd, q, scale, sc);
    let sc = &mut sc[..hd.tk];
    let sum = exp_shifted_with(isa, sc);
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    weighted_sum_with(isa, hd, sc, inv, o);
}

fn scores_with(isa: Isa, hd: Head<'_>, q: &[f32], scale: f32, sc: &mut [f32]) {
    // The vector paths read K for each of q's dimensions and write `tkp` scores.
    assert!(
        q.len() <= hd.hd && sc.len() >= hd.tkp,
        "scores: q or scores do not fit the head"
    );
    let isa = isa.or_below();
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512Vnni {
        // SAFETY: `or_below` checked AVX-512F and the AVX2 set (AVX2, FMA, F16C); lengths asserted.
        return unsafe { avx512::scores(hd, q, scale, sc) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        // SAFETY: `or_below` checked AVX2, FMA and F16C; lengths asserted.
        return unsafe { avx2::scores(hd, q, scale, sc) };
    }
    let _ = isa;
    scores_portable(hd, q, scale, sc)
}

fn weighted_sum_with(isa: Isa, hd: Head<'_>, p: &[f32], inv: f32, o: &mut [f32]) {
    // The vector paths read V's rows `0..p.len()` and write `head_dim` outputs.
    assert!(
        p.len() <= hd.tk && o.len() >= hd.hd,
        "weighted_sum: p or o do not fit the head"
    );
    let isa = isa.or_below();
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512Vnni && hd.hd.is_multiple_of(16) && hd.hd <= 128 {
        // SAFETY: `or_below` checked AVX-512F and the AVX2 set; head_dim is a multiple of 16 and
        // at most 8 vectors (the accumulator array); lengths asserted.
        return unsafe { avx512::weighted_sum(hd, p, inv, o) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 && hd.hd.is_multiple_of(LANES) && hd.hd <= 128 {
        // SAFETY: `or_below` checked AVX2, FMA and F16C; head_dim is a multiple of 8 and at most
        // 16 vectors (the accumulator array); lengths asserted.
        return unsafe { avx2::weighted_sum(hd, p, inv, o) };
    }
    let _ = isa;
    weighted_sum_portable(hd, p, inv, o)
}

fn scores_portable(hd: Head<'_>, q: &[f32], scale: f32, sc: &mut [f32]) {
    sc[..hd.tkp].fill(0.0);
    for (c, &qc) in q.iter().enumerate() {
        for (s, k) in sc.iter_mut().zip(&hd.kt[c * hd.tkp..][..hd.tkp]) {
            *s += qc * k.to_f32();
        }
    }
    sc[..hd.tkp].iter_mut().for_each(|s| *s *= scale);
}

fn weighted_sum_portable(hd: Head<'_>, p: &[f32], inv: f32, o: &mut [f32]) {
    o.fill(0.0);
    for (j, &pj) in p.iter().enumerate() {
        for (acc, v) in o.iter_mut().zip(&hd.v[j * hd.hd..][..hd.hd]) {
            *acc += pj * v.to_f32();
        }
    }
    o.iter_mut().for_each(|x| *x *= inv);
}

fn to_f16(isa: Isa, x: &[f32], out: &mut [f16]) {
    assert!(out.len() >= x.len(), "to_f16: out shorter than x");
    #[cfg(target_arch = "x86_64")]
    if isa.or_below() >= Isa::Avx2 {
        // SAFETY: `or_below` checked AVX2, FMA and F16C; out is long enough (asserted).
        return unsafe { avx2::to_f16(x, out) };
    }
    let _ = isa;
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = f16::from_f32(v));
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{Head, LANES};

    /// 8 f16 widened to f32.
    ///
    /// # Safety
    /// Inlined into F16C code only; `p` must point at 8 readable f16.
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: the caller's: the CPU has AVX and F16C and `p` points at 8 readable f16.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }

    /// Scores in blocks of 32 frames (4 accumulators), then of 8.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `q.len() <= hd.hd` and `sc.len() >= hd.tkp`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores(hd: Head<'_>, q: &[f32], scale: f32, sc: &mut [f32]) {
        // SAFETY: the features are the caller's; `q.len() <= hd` and `sc.len() >= tkp` (the caller's),
        // so each load reads 8 f16 at `c · tkp + j` with `j + 8 <= tkp` (tkp a multiple of 8) inside
        // the head's `hd × tkp` keys, and each store writes `sc[j..j + 8]`.
        unsafe {
            let (kt, tkp) = (hd.kt.as_ptr(), hd.tkp);
            let s = _mm256_set1_ps(scale);
            let out = sc.as_mut_ptr();
            let mut j = 0;
            while j + 4 * LANES <= tkp {
                let mut acc = [_mm256_setzero_ps(); 4];
                for (c, &qc) in q.iter().enumerate() {
                    let qv = _mm256_set1_ps(qc);
                    let row = kt.add(c * tkp + j);
                    for (b, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(qv, load8(row.add(b * LANES)), *a);
                    }
                }
                for (b, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(out.add(j + b * LANES), _mm256_mul_ps(*a, s));
                }
                j += 4 * LANES;
            }
            while j < tkp {
                let mut acc = _mm256_setzero_ps();
                for (c, &qc) in q.iter().enumerate() {
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(qc), load8(kt.add(c * tkp + j)), acc);
                }
                _mm256_storeu_ps(out.add(j), _mm256_mul_ps(acc, s));
                j += LANES;
            }
        }
    }

    /// `o = inv · Σ_j p_j v_j`, head_dim a multiple of 8 up to 128: the output in registers.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `p.len() <= hd.tk`, `o.len() >= hd.hd`, head_dim a multiple of the vector width and at most 128.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn weighted_sum(hd: Head<'_>, p: &[f32], inv: f32, o: &mut [f32]) {
        // SAFETY: the features are the caller's; `p.len() <= tk`, `o.len() >= hd` with hd a multiple of
        // 8 up to 128 (the caller's): loads read row `j < tk` of the head's `tk × hd` values, `n <= 16`
        // vectors fit `acc`, and the stores write `o[..hd]`.
        unsafe {
            let n = hd.hd / LANES;
            let mut acc = [_mm256_setzero_ps(); 16];
            let v = hd.v.as_ptr();
            for (j, &pj) in p.iter().enumerate() {
                let pv = _mm256_set1_ps(pj);
                let row = v.add(j * hd.hd);
                for (b, a) in acc[..n].iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(pv, load8(row.add(b * LANES)), *a);
                }
            }
            let s = _mm256_set1_ps(inv);
            for (b, a) in acc[..n].iter().enumerate() {
                _mm256_storeu_ps(o.as_mut_ptr().add(b * LANES), _mm256_mul_ps(*a, s));
            }
        }
    }

    /// Round to nearest even, as `f16::from_f32`.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `out.len() >= x.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn to_f16(x: &[f32], out: &mut [f16]) {
        // SAFETY: the features are the caller's; loads and stores cover `i..i + 8` with `i + 8 <= n8 <=
        // x.len() <= out.len()` (the caller's).
        unsafe {
            let n8 = x.len() / LANES * LANES;
            for i in (0..n8).step_by(LANES) {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.as_ptr().add(i)));
                _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, h);
            }
            for (o, &v) in out[n8..].iter_mut().zip(&x[n8..]) {
                *o = f16::from_f32(v);
            }
        }
    }
}

/// The two products on 16 lanes. Scores: each frame's lane sums over the dimensions in the
/// same order as [`avx2::scores`], so they match it bit for bit. Weighted sums: even and odd
/// frames in separate accumulators, added at the end, to keep two FMA chains per register in
/// flight (one chain per output vector would leave the units waiting on latency).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{Head, LANES};

    /// 16 f16 widened to f32.
    ///
    /// # Safety
    /// Inlined into AVX-512F code only; `p` must point at 16 readable f16.
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> __m512 {
        // SAFETY: the caller's: the CPU has AVX-512F and `p` points at 16 readable f16.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }

    /// Scores in blocks of 64 frames (4 accumulators), then 16, then the last 8 on AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX2, FMA and F16C; `q.len() <= hd.hd` and `sc.len() >= hd.tkp`.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn scores(hd: Head<'_>, q: &[f32], scale: f32, sc: &mut [f32]) {
        // SAFETY: as `avx2::scores`: frames `j..j + 64`, `j..j + 16` or the last 8 (tkp is a multiple
        // of 8), all `<= tkp`, for each of q's `<= hd` dimensions; stores into `sc[..tkp]`.
        unsafe {
            let (kt, tkp) = (hd.kt.as_ptr(), hd.tkp);
            let s = _mm512_set1_ps(scale);
            let out = sc.as_mut_ptr();
            let mut j = 0;
            while j + 64 <= tkp {
                let mut acc = [_mm512_setzero_ps(); 4];
                for (c, &qc) in q.iter().enumerate() {
                    let qv = _mm512_set1_ps(qc);
                    let row = kt.add(c * tkp + j);
                    for (b, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(qv, load16(row.add(b * 16)), *a);
                    }
                }
                for (b, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(out.add(j + b * 16), _mm512_mul_ps(*a, s));
                }
                j += 64;
            }
            while j + 16 <= tkp {
                let mut acc = _mm512_setzero_ps();
                for (c, &qc) in q.iter().enumerate() {
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(qc), load16(kt.add(c * tkp + j)), acc);
                }
                _mm512_storeu_ps(out.add(j), _mm512_mul_ps(acc, s));
                j += 16;
            }
            if j < tkp {
                // The last 8 frames (tkp is a multiple of 8).
                let mut acc = _mm256_setzero_ps();
                for (c, &qc) in q.iter().enumerate() {
                    acc = _mm256_fmadd_ps(
                        _mm256_set1_ps(qc),
                        _mm256_cvtph_ps(_mm_loadu_si128(kt.add(c * tkp + j) as *const __m128i)),
                        acc,
                    );
                }
                debug_assert_eq!(tkp - j, LANES);
                _mm256_storeu_ps(out.add(j), _mm256_mul_ps(acc, _mm256_set1_ps(scale)));
            }
        }
    }

    /// `o = inv · Σ_j p_j v_j`, head_dim a multiple of 16 up to 128.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX2, FMA and F16C; `p.len() <= hd.tk`, `o.len() >= hd.hd`, head_dim a multiple of the vector width and at most 128.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn weighted_sum(hd: Head<'_>, p: &[f32], inv: f32, o: &mut [f32]) {
        // SAFETY: as `avx2::weighted_sum`, with `n <= 8` vectors of 16 (hd a multiple of 16 up to 128)
        // and rows `2t, 2t + 1 < p.len() <= tk`.
        unsafe {
            let n = hd.hd / 16;
            let (mut even, mut odd) = ([_mm512_setzero_ps(); 8], [_mm512_setzero_ps(); 8]);
            let v = hd.v.as_ptr();
            let pairs = p.len() / 2;
            for t in 0..pairs {
                let (p0, p1) = (_mm512_set1_ps(p[2 * t]), _mm512_set1_ps(p[2 * t + 1]));
                let (r0, r1) = (v.add(2 * t * hd.hd), v.add((2 * t + 1) * hd.hd));
                for b in 0..n {
                    even[b] = _mm512_fmadd_ps(p0, load16(r0.add(b * 16)), even[b]);
                    odd[b] = _mm512_fmadd_ps(p1, load16(r1.add(b * 16)), odd[b]);
                }
            }
            if p.len() % 2 == 1 {
                let (pj, row) = (_mm512_set1_ps(p[p.len() - 1]), v.add((p.len() - 1) * hd.hd));
                #[allow(clippy::needless_range_loop)] // b also offsets the row
                for b in 0..n {
                    even[b] = _mm512_fmadd_ps(pj, load16(row.add(b * 16)), even[b]);
                }
            }
            let s = _mm512_set1_ps(inv);
            for b in 0..n {
                _mm512_storeu_ps(
                    o.as_mut_ptr().add(b * 16),
                    _mm512_mul_ps(_mm512_add_ps(even[b], odd[b]), s),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    /// Plain attention in f64 on f16-rounded K and V (what `HalfKv` stores).
    #[allow(clippy::too_many_arguments)]
    fn naive(
        q: &[f32],
        tq: usize,
        q_stride: usize,
        k: &[f32],
        v: &[f32],
        stride: usize,
        tk: usize,
        heads: usize,
        hd: usize,
    ) -> Vec<f64> {
        let r = |x: f32| f16::from_f32(x).to_f32() as f64;
        let d = heads * hd;
        let mut out = vec![0f64; tq * d];
        for h in 0..heads {
            for i in 0..tq {
                let sc: Vec<f64> = (0..tk)
                    .map(|j| {
                        (0..hd)
                            .map(|c| q[i * q_stride + h * hd + c] as f64 * r(k[j * stride + h * hd + c]))
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..hd {
                    out[i * d + h * hd + c] = (0..tk).map(|j| e[j] / z * r(v[j * stride + h * hd + c])).sum();
                }
            }
        }
        out
    }

    #[test]
    fn matches_plain_attention_on_f16_keys_and_values() {
        let mut seed = 41;
        // (tq, tk, heads, head_dim): Whisper's 1500 frames, odd frame counts (padding), a head
        // width the vector path does not take (12), one frame.
        for &(tq, tk, heads, hd) in &[
            (1, 1500, 6, 64),
            (3, 1500, 8, 64),
            (2, 37, 2, 64),
            (5, 9, 3, 16),
            (1, 1, 1, 8),
            (2, 13, 2, 12),
            (1, 200, 1, 136),
        ] {
            let d = heads * hd;
            // K and V as the two halves of one [tk × 2d] projection, as the decoder has them.
            let kv: Vec<f32> = (0..tk * 2 * d).map(|_| lcg(&mut seed) * 4.0).collect();
            let q: Vec<f32> = (0..tq * d).map(|_| lcg(&mut seed) * 4.0).collect();
            let half = HalfKv::new(&kv, 2 * d, &kv[d..], 2 * d, tk, heads, hd);
            assert_eq!(
                (half.frames(), half.bytes()),
                (tk, 2 * heads * hd * (tk.next_multiple_of(8) + tk))
            );
            let expect = naive(&q, tq, d, &kv, &kv[d..], 2 * d, tk, heads, hd);
            for isa in Isa::all_available() {
                let mut out = vec![f32::NAN; tq * d];
                cross_attention_with(
                    isa,
                    &mut [CrossQuery {
                        q: &q,
                        tq,
                        q_stride: d,
                        kv: &half,
                        out: &mut out,
                    }],
                );
                for (a, b) in out.iter().zip(&expect) {
                    assert!(
                        (*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()),
                        "{isa:?} {tq}x{tk} {heads}x{hd}: {a} vs {b}"
                    );
                }
            }
            // The scores of a prefix, against the same plain definition.
            let n = tk.div_ceil(2);
            let mut sc = vec![f32::NAN; n];
            half.scores(heads - 1, &q[(heads - 1) * hd..], &mut sc);
            for (j, s) in sc.iter().enumerate() {
                let want: f64 = (0..hd)
                    .map(|c| {
                        q[(heads - 1) * hd + c] as f64
                            * f16::from_f32(kv[j * 2 * d + (heads - 1) * hd + c]).to_f32() as f64
                    })
                    .sum::<f64>()
                    / (hd as f64).sqrt();
                assert!(
                    (*s as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "scores {tk} frame {j}: {s} vs {want}"
                );
            }
        }
    }

    #[test]
    fn several_windows_in_one_call_equal_one_call_each() {
        let mut seed = 43;
        let (heads, hd) = (6, 64);
        let d = heads * hd;
        let kvs: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..1500 * 2 * d).map(|_| lcg(&mut seed)).collect())
            .collect();
        let halves: Vec<HalfKv> = kvs
            .iter()
            .map(|kv| HalfKv::new(kv, 2 * d, &kv[d..], 2 * d, 1500, heads, hd))
            .collect();
        let tqs = [1, 4, 2];
        let q: Vec<Vec<f32>> = tqs
            .iter()
            .map(|&t| (0..t * 3 * d).map(|_| lcg(&mut seed) * 3.0).collect())
            .collect();
        let mut together: Vec<Vec<f32>> = tqs.iter().map(|&t| vec![f32::NAN; t * d]).collect();
        let mut queries: Vec<CrossQuery> = together
            .iter_mut()
            .enumerate()
            .map(|(w, out)| CrossQuery {
                q: &q[w],
                tq: tqs[w],
                q_stride: 3 * d,
                kv: &halves[w],
                out,
            })
            .collect();
        cross_attention(&mut queries);
        for w in 0..3 {
            let mut alone = vec![f32::NAN; tqs[w] * d];
            cross_attention(&mut [CrossQuery {
                q: &q[w],
                tq: tqs[w],
                q_stride: 3 * d,
                kv: &halves[w],
                out: &mut alone,
            }]);
            assert_eq!(alone, together[w], "window {w}");
        }
    }

    #[test]
    fn f16_rounding_is_the_same_on_every_path() {
        let mut seed = 47;
        let x: Vec<f32> = (0..1003)
            .map(|i| {
                lcg(&mut seed)
                    * if i % 7 == 0 {
                        1e5
                    } else if i % 5 == 0 {
                        1e-6
                    } else {
                        10.0
                    }
            })
            .collect();
        let mut want = vec![f16::ZERO; x.len()];
        to_f16(Isa::Portable, &x, &mut want);
        for isa in Isa::all_available() {
            let mut got = vec![f16::ZERO; x.len()];
            to_f16(isa, &x, &mut got);
            assert_eq!(
                got.iter().map(|h| h.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|h| h.to_bits()).collect::<Vec<_>>(),
                "{isa:?}"
            );
        }
    }
}
