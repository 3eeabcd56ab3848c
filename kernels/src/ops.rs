//! Row-wise operations: layer norm, GELU, softmax, residual add.
//!
//! GELU and softmax spend their time in erf and exp; libm's are scalar calls, so both use the
//! branch-free polynomial forms below, written in plain Rust that LLVM vectorises: once
//! compiled for AVX2/FMA (chosen at run time) and once for the build's baseline.

use rayon::prelude::*;

use crate::isa::Isa;

/// `y = (x − mean) / sqrt(var + eps) · gamma + beta`, per row of width `gamma.len()`, in place.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let d = gamma.len();
    crate::pool::install(|| {
        x.par_chunks_mut(d * 16).for_each(|rows| {
            for row in rows.chunks_mut(d) {
                let mean = row.iter().sum::<f32>() / d as f32;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                let inv = 1.0 / (var + eps).sqrt();
                for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                    *v = (*v - mean) * inv * g + b;
                }
            }
        })
    });
}

/// Layer norm into a new buffer, leaving `x` (the residual stream) untouched.
pub fn layer_norm_into(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut Vec<f32>) {
    out.clear();
    out.extend_from_slice(x);
    layer_norm(out, gamma, beta, eps);
}

/// Exact (erf) GELU, as Whisper's `nn.GELU()`, in place, on the kernels' pool.
pub fn gelu(x: &mut [f32]) {
    crate::pool::install(|| x.par_chunks_mut(4096).for_each(gelu_slice));
}

/// [`gelu`] on the calling thread, for callers (fused epilogues) that already split the work.
pub fn gelu_slice(x: &mut [f32]) {
    gelu_with(Isa::detect(), x);
}

/// [`gelu_slice`] on a chosen SIMD path, for tests.
pub fn gelu_with(isa: Isa, x: &mut [f32]) {
    dispatch(
        isa,
        x,
        gelu_inline,
        #[cfg(target_arch = "x86_64")]
        gelu_avx2,
    );
}

/// Runs a slice operation's AVX2 version when `isa` asks for it and the CPU has it, else its
/// portable version.
fn dispatch<R>(
    isa: Isa,
    x: &mut [f32],
    portable: fn(&mut [f32]) -> R,
    #[cfg(target_arch = "x86_64")] avx2: unsafe fn(&mut [f32]) -> R,
) -> R {
    #[cfg(target_arch = "x86_64")]
    if isa.or_below() >= Isa::Avx2 {
        // SAFETY: `or_below` checked that the CPU has AVX2 and FMA.
        return unsafe { avx2(x) };
    }
    let _ = isa;
    portable(x)
}

/// GELU on AVX2, 8 lanes at a time ([`avx2::erf`]); a short tail goes through a padded vector.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gelu_avx2(x: &mut [f32]) {
    let (chunks, tail) = x.as_chunks_mut::<8>();
    for c in chunks {
        // SAFETY: AVX2 and FMA are this function's precondition too.
        unsafe { avx2::gelu8(c) };
    }
    if !tail.is_empty() {
        let mut buf = [0f32; 8];
        buf[..tail.len()].copy_from_slice(tail);
        // SAFETY: as above.
        unsafe { avx2::gelu8(&mut buf) };
        tail.copy_from_slice(&buf[..tail.len()]);
    }
}

/// GELU with [`erf_fast`], element by element (the portable path).
#[inline(always)]
fn gelu_inline(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf_fast(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// erf as a rational function, x·P(x²)/Q(x²) on [−4, 4] (±1 beyond, where f32 erf rounds to
/// ±1); the single-precision fit used by Eigen and XLA. Absolute error < 1e-6 (tested).
#[allow(clippy::excessive_precision)] // the coefficients as published
#[inline(always)]
pub fn erf_fast(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.72614225801306e-10 + 2.77068142495902e-08;
    p = x2 * p + -2.10102402082508e-06;
    p = x2 * p + -5.69250639462346e-05;
    p = x2 * p + -7.34990630326855e-04;
    p = x2 * p + -2.95459980854025e-03;
    p = x2 * p + -1.60960333262415e-02;
    let mut q = x2 * -1.45660718464996e-05 + -2.13374055278905e-04;
    q = x2 * q + -1.68282697438203e-03;
    q = x2 * q + -7.37332916720468e-03;
    q = x2 * q + -1.42647390514189e-02;
    x * p / q
}

/// eˣ (Cephes' expf scheme): x = n·ln 2 + r with |r| ≤ ln2/2, a degree-6 polynomial for eʳ,
/// 2ⁿ put straight into the exponent bits. Relative error < 3e-7 (tested); 0 below −87.3
/// (so −∞ gives 0, as softmax's masks need), overflow clamped at e⁸⁸.
#[allow(clippy::excessive_precision)] // the coefficients as published
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    let xc = x.clamp(-87.3, 88.0);
    // Round to nearest without SSE4.1: adding 1.5·2²³ drops the fraction bits.
    let n = (xc * std::f32::consts::LOG2_E + 12582912.0) - 12582912.0;
    let r = xc - n * 0.693359375 + n * 2.12194440e-4;
    let mut p = 1.9875691500e-4 * r + 1.3981999507e-3;
    p = p * r + 8.3334519073e-3;
    p = p * r + 4.1665795894e-2;
    p = p * r + 1.6666665459e-1;
    p = p * r + 5.0000001201e-1;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    if x < -87.3 {
        0.0
    } else {
        e * scale
    }
}

/// The logistic function 1 / (1 + e⁻ˣ) with [`exp_fast`]: absolute error < 1e-7 (tested);
/// branch-free, so loops over it vectorise.
#[inline(always)]
pub fn sigmoid_fast(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

/// tanh as 2·sigmoid(2x) − 1: absolute error < 2e-7 (tested; relative error near 0 is larger).
#[inline(always)]
pub fn tanh_fast(x: f32) -> f32 {
    2.0 / (1.0 + exp_fast(-2.0 * x)) - 1.0
}

/// erf with |error| < 1.2e-7 (W. J. Cody's rational approximations via erfc for large |x|).
pub fn erf(x: f32) -> f32 {
    let x = x as f64;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    // Numerical Recipes erfc Chebyshev fit, relative error < 1.2e-7.
    let y = t
        * (-x * x - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    (if x >= 0.0 { 1.0 - y } else { y - 1.0 }) as f32
}

/// Softmax of each row of width `d`, in place; rows of only −∞ become all zeros.
pub fn softmax_rows(x: &mut [f32], d: usize) {
    for row in x.chunks_mut(d) {
        softmax(row);
    }
}

/// Softmax of one row in place; a row of only −∞ becomes all zeros.
pub fn softmax(row: &mut [f32]) {
    softmax_with(Isa::detect(), row);
}

/// [`softmax`] on a chosen SIMD path, for tests.
pub fn softmax_with(isa: Isa, row: &mut [f32]) {
    let sum = exp_shifted_with(isa, row);
    if sum > 0.0 {
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// Softmax without the normalisation: `row ← exp(row − max)`, returning the sum (0 for a row
/// of only −∞, which becomes zeros). Lets fused attention scale its 64-wide output rows by
/// 1/sum instead of making another pass over the 1500-wide scores.
pub fn exp_shifted_with(isa: Isa, row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa.or_below() >= Isa::Avx512Vnni {
        // SAFETY: `or_below` checked that the CPU has AVX-512F.
        return unsafe { exp_shifted_avx512(row) };
    }
    dispatch(
        isa,
        row,
        exp_shifted_inline,
        #[cfg(target_arch = "x86_64")]
        exp_shifted_avx2,
    )
}

/// [`exp_shifted_avx2`] 16 lanes at a time: each exp is the same operations as
/// [`avx2::exp`] (the same bits); only the sum's order differs. The encoder's softmax over
/// 1500 keys (per row, head and layer) made this 8 % of a long-form run.
///
/// # Safety
/// The CPU must have AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_shifted_avx512(row: &mut [f32]) -> f32 {
    // SAFETY: the CPU has AVX-512F, AVX2 and FMA (the caller's, which `avx512_exp` also needs);
    // every 16-float load and store is at `i` with `i + 16 <= n16 <= row.len()`.
    unsafe {
        use std::arch::x86_64::*;
        let n16 = row.len() / 16 * 16;
        let p = row.as_mut_ptr();
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..n16).step_by(16) {
            vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(p.add(i)));
        }
        let max = row[n16..]
            .iter()
            .fold(_mm512_reduce_max_ps(vmax), |a, &b| if b > a { b } else { a });
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            return 0.0;
        }
        let (vm, mut vsum) = (_mm512_set1_ps(max), _mm512_setzero_ps());
        for i in (0..n16).step_by(16) {
            let e = avx512_exp(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), vm));
            _mm512_storeu_ps(p.add(i), e);
            vsum = _mm512_add_ps(vsum, e);
        }
        let mut sum = _mm512_reduce_add_ps(vsum);
        for v in &mut row[n16..] {
            *v = exp_fast(*v - max);
            sum += *v;
        }
        sum
    }
}

/// [`avx2::exp`] on 16 lanes.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::excessive_precision)]
unsafe fn avx512_exp(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3)), _mm512_set1_ps(88.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        xc,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375), xc);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4), r);
    let mut poly = _mm512_set1_ps(1.9875691500e-4);
    for c in [
        1.3981999507e-3,
        8.3334519073e-3,
        4.1665795894e-2,
        1.6666665459e-1,
        5.0000001201e-1,
    ] {
        poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(c));
    }
    let e = _mm512_add_ps(_mm512_fmadd_ps(poly, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
    let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    )));
    // Below the range (−∞ included) the answer is 0, as in the other versions.
    _mm512_maskz_mov_ps(
        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-87.3)),
        _mm512_mul_ps(e, scale),
    )
}

/// [`exp_shifted_with`] on AVX2: vector max, then exp and sum 8 lanes at a time ([`avx2::exp`]).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_avx2(row: &mut [f32]) -> f32 {
    // SAFETY: the CPU has AVX2 and FMA (the caller's, which `avx2::exp` also needs); every
    // 8-float load and store is at `i` with `i + 8 <= n8 <= row.len()`, or into `lanes` (8).
    unsafe {
        use std::arch::x86_64::*;
        let n8 = row.len() / 8 * 8;
        let p = row.as_mut_ptr();
        let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..n8).step_by(8) {
            vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(p.add(i)));
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
        let max = lanes
            .iter()
            .chain(&row[n8..])
            .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            return 0.0;
        }
        let (vm, mut vsum) = (_mm256_set1_ps(max), _mm256_setzero_ps());
        for i in (0..n8).step_by(8) {
            let e = avx2::exp(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vm));
            _mm256_storeu_ps(p.add(i), e);
            vsum = _mm256_add_ps(vsum, e);
        }
        _mm256_storeu_ps(lanes.as_mut_ptr(), vsum);
        let mut sum: f32 = lanes.iter().sum();
        for v in &mut row[n8..] {
            *v = exp_fast(*v - max);
            sum += *v;
        }
        sum
    }
}

/// The largest value of `row` (−∞ if empty): eight partial maxima, so that it can vectorise.
#[inline(always)]
fn max_of(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    max
}

/// The portable [`exp_shifted_with`].
#[inline(always)]
fn exp_shifted_inline(row: &mut [f32]) -> f32 {
    let max = max_of(row);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return 0.0;
    }
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = exp_fast(*v - max);
        sum += *v;
    }
    sum
}

/// 8-lane AVX2/FMA versions of [`exp_fast`], [`erf_fast`] and GELU: the same polynomials.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::excessive_precision)] // the coefficients as published
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// Horner's rule, `coeffs[0]` the highest power.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn poly(x: __m256, coeffs: &[f32]) -> __m256 {
        let mut p = _mm256_set1_ps(coeffs[0]);
        for &c in &coeffs[1..] {
            p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(c));
        }
        p
    }

    /// [`super::exp_fast`] on 8 lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp(x: __m256) -> __m256 {
        let xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3)), _mm256_set1_ps(88.0));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            xc,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375), xc);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4), r);
        // SAFETY: `poly` needs AVX2 and FMA, which this function's caller guarantees.
        let p = unsafe {
            poly(
                r,
                &[
                    1.9875691500e-4,
                    1.3981999507e-3,
                    8.3334519073e-3,
                    4.1665795894e-2,
                    1.6666665459e-1,
                    5.0000001201e-1,
                ],
            )
        };
        let e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        // Below the range (−∞ included) the answer is 0, as in the scalar version.
        _mm256_and_ps(
            _mm256_mul_ps(e, scale),
            _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(-87.3)),
        )
    }

    /// [`super::erf_fast`] on 8 lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn erf(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-4.0)), _mm256_set1_ps(4.0));
        let x2 = _mm256_mul_ps(x, x);
        // SAFETY: `poly` needs AVX2 and FMA, which this function's caller guarantees.
        let (p, q) = unsafe {
            (
                poly(
                    x2,
                    &[
                        -2.72614225801306e-10,
                        2.77068142495902e-08,
                        -2.10102402082508e-06,
                        -5.69250639462346e-05,
                        -7.34990630326855e-04,
                        -2.95459980854025e-03,
                        -1.60960333262415e-02,
                    ],
                ),
                poly(
                    x2,
                    &[
                        -1.45660718464996e-05,
                        -2.13374055278905e-04,
                        -1.68282697438203e-03,
                        -7.37332916720468e-03,
                        -1.42647390514189e-02,
                    ],
                ),
            )
        };
        _mm256_div_ps(_mm256_mul_ps(x, p), q)
    }

    /// [`gelu`] in place on 8 floats.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu8(x: &mut [f32; 8]) {
        // SAFETY: the load and store cover exactly the 8 floats of `x`; `gelu` needs AVX2 and
        // FMA, this function's precondition.
        unsafe { _mm256_storeu_ps(x.as_mut_ptr(), gelu(_mm256_loadu_ps(x.as_ptr()))) }
    }

    /// Exact-erf GELU on 8 lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu(x: __m256) -> __m256 {
        // SAFETY: `erf` needs AVX2 and FMA, which this function's caller guarantees.
        let e = unsafe { erf(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2))) };
        _mm256_mul_ps(
            _mm256_mul_ps(_mm256_set1_ps(0.5), x),
            _mm256_add_ps(_mm256_set1_ps(1.0), e),
        )
    }
}

/// `log_softmax` of one row into `out`.
pub fn log_softmax(row: &[f32], out: &mut Vec<f32>) {
    log_softmax_with(Isa::detect(), row, out);
}

/// [`log_softmax`] on a chosen SIMD path, for tests.
pub fn log_softmax_with(isa: Isa, row: &[f32], out: &mut Vec<f32>) {
    let lse = log_sum_exp_with(isa, row);
    out.clear();
    out.extend(row.iter().map(|v| v - lse));
}

/// `ln Σ exp(row)`, as `max + ln Σ exp(row − max)` with the vector exp of [`exp_shifted_with`];
/// −∞ for an empty row or a row of only −∞. The decoder calls it per token over the whole
/// vocabulary (timestamp rule and log-probabilities), where libm's scalar expf was 2–3 % of a
/// long-form run.
pub fn log_sum_exp(row: &[f32]) -> f32 {
    log_sum_exp_with(Isa::detect(), row)
}

/// [`log_sum_exp`] on a chosen SIMD path, for tests.
pub fn log_sum_exp_with(isa: Isa, row: &[f32]) -> f32 {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let max = max_of(row);
    if max == f32::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.clear();
        s.extend_from_slice(row);
        max + exp_shifted_with(isa, &mut s).ln()
    })
}

/// `x += y`.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Adds `bias` to every row of `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_mut(bias.len()) {
        add_in_place(row, bias);
    }
}

#[cfg(test)]
mod tests;
