//! Magnitude spectra of windowed frames through a real FFT: what a strided convolution with a
//! windowed-DFT basis computes (Silero VAD's STFT), at a fraction of the multiply-adds.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

pub struct MagnitudeSpectrum {
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl MagnitudeSpectrum {
    /// For frames as long as `window`.
    pub fn new(window: Vec<f32>) -> MagnitudeSpectrum {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(window.len());
        MagnitudeSpectrum { window, fft }
    }

    /// Frequency bins per frame: `n / 2 + 1`.
    pub fn bins(&self) -> usize {
        self.window.len() / 2 + 1
    }

    /// `|DFT(window · frame)|` of each frame of `frames` (`m × n`, row-major) into `out`
    /// (`m × bins`).
    pub fn apply(&self, frames: &[f32], out: &mut [f32]) {
        let (n, bins) = (self.window.len(), self.bins());
        let m = frames.len() / n;
        assert!(
            frames.len() == m * n && out.len() >= m * bins,
            "MagnitudeSpectrum: slice lengths"
        );
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        for (frame, out) in frames.chunks_exact(n).zip(out.chunks_exact_mut(bins)) {
            for ((x, &s), &w) in input.iter_mut().zip(frame).zip(&self.window) {
                *x = s * w;
            }
            self.fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .expect("buffers from the plan");
            for (o, c) in out.iter_mut().zip(&spectrum) {
                *o = (c.re * c.re + c.im * c.im).sqrt();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::tests::lcg;

    #[test]
    fn matches_a_direct_dft() {
        let n = 256;
        let mut seed = 21;
        let window: Vec<f32> = (0..n).map(|_| lcg(&mut seed) + 0.5).collect();
        let frames: Vec<f32> = (0..3 * n).map(|_| lcg(&mut seed)).collect();
        let stft = MagnitudeSpectrum::new(window.clone());
        let mut out = vec![0f32; 3 * stft.bins()];
        stft.apply(&frames, &mut out);
        for (frame, got) in frames.chunks(n).zip(out.chunks(stft.bins())) {
            for (f, &g) in got.iter().enumerate() {
                let (mut re, mut im) = (0f64, 0f64);
                for (u, (&x, &w)) in frame.iter().zip(&window).enumerate() {
                    let a = 2.0 * std::f64::consts::PI * (f * u) as f64 / n as f64;
                    re += (x * w) as f64 * a.cos();
                    im -= (x * w) as f64 * a.sin();
                }
                assert!(
                    (g as f64 - re.hypot(im)).abs() < 1e-5,
                    "bin {f}: {g} vs {}",
                    re.hypot(im)
                );
            }
        }
    }
}
