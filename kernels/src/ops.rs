//! Row-wise operations: layer norm, GELU, softmax, residual add.

use rayon::prelude::*;

/// `y = (x − mean) / sqrt(var + eps) · gamma + beta`, per row of width `gamma.len()`, in place.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let d = gamma.len();
    x.par_chunks_mut(d * 16).for_each(|rows| {
        for row in rows.chunks_mut(d) {
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    });
}

/// Layer norm into a new buffer, leaving `x` (the residual stream) untouched.
pub fn layer_norm_into(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut Vec<f32>) {
    out.clear();
    out.extend_from_slice(x);
    layer_norm(out, gamma, beta, eps);
}

/// Exact (erf) GELU, as Whisper's `nn.GELU()`, in place.
pub fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(gelu_slice);
}

/// [`gelu`] on the calling thread, for callers (fused epilogues) that already split the work.
pub fn gelu_slice(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
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
                            + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    (if x >= 0.0 { 1.0 - y } else { y - 1.0 }) as f32
}

/// Softmax of each row of width `d`, in place; rows of only −∞ become all zeros.
pub fn softmax_rows(x: &mut [f32], d: usize) {
    for row in x.chunks_mut(d) {
        softmax(row);
    }
}

pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// `log_softmax` of one row into `out`.
pub fn log_softmax(row: &[f32], out: &mut Vec<f32>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
    out.clear();
    out.extend(row.iter().map(|v| v - lse));
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
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for &(x, e) in &[(0.0f32, 0.0f64), (0.5, 0.5204998778), (1.0, 0.8427007929), (-1.5, -0.9661051465), (3.0, 0.9999779095)] {
            assert!((erf(x) as f64 - e).abs() < 2e-7, "erf({x})");
        }
    }

    #[test]
    fn layer_norm_normalises_rows() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, -1.0, -1.0, 5.0, 7.0];
        layer_norm(&mut x, &[1.0; 4], &[0.5; 4], 1e-5);
        for row in x.chunks(4) {
            let mean: f32 = row.iter().sum::<f32>() / 4.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!((mean - 0.5).abs() < 1e-5 && (var - 1.0).abs() < 1e-3);
        }
    }

    #[test]
    fn softmax_and_log_softmax_agree() {
        let row = vec![1.0f32, -2.0, 0.5, f32::NEG_INFINITY, 3.0];
        let mut p = row.clone();
        softmax(&mut p);
        let mut lp = Vec::new();
        log_softmax(&row, &mut lp);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        for (a, b) in p.iter().zip(&lp) {
            assert!((a - b.exp()).abs() < 1e-6);
        }
        let mut masked = vec![f32::NEG_INFINITY; 3];
        softmax(&mut masked);
        assert_eq!(masked, vec![0.0; 3]);
    }

    #[test]
    fn gelu_matches_definition() {
        let mut x = vec![-3.0f32, -1.0, 0.0, 0.7, 2.5];
        let expect: Vec<f32> = x.iter().map(|&v| 0.5 * v * (1.0 + erf(v / 2f32.sqrt()))).collect();
        gelu(&mut x);
        assert_eq!(x, expect);
        assert!((x[1] - (-0.158655)).abs() < 1e-5);
    }
}
