//! Whisper's log-mel front end: STFT (n_fft 400, hop 160, periodic Hann, reflect-padded centre),
//! Slaney-normalised mel filters, log10 with a 1e-10 floor, clamp to max − 8, then (x + 4) / 4.

use std::sync::Arc;

use rayon::prelude::*;
use realfft::{RealFftPlanner, RealToComplex};

use crate::gemm;

pub const SAMPLE_RATE: usize = 16000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_FREQS: usize = N_FFT / 2 + 1;

pub struct LogMel {
    n_mels: usize,
    /// `n_mels × N_FREQS`, row-major.
    filters: Vec<f32>,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl LogMel {
    pub fn new(n_mels: usize) -> Self {
        let window = (0..N_FFT)
            .map(|n| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()) as f32)
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        LogMel {
            n_mels,
            filters: mel_filters(n_mels, N_FFT, SAMPLE_RATE),
            window,
            fft,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Power spectrum of every frame, `n_frames × N_FREQS`; frame `t` is centred on sample `t·HOP`
    /// of `audio` (reflect-padded at both ends). Whisper drops the last frame, so
    /// `n_frames = len / HOP`.
    pub fn power_spectrum(&self, audio: &[f32]) -> Vec<f32> {
        let n_frames = audio.len() / HOP;
        let half = N_FFT / 2;
        let sample = |i: isize| -> f32 {
            let n = audio.len() as isize;
            let j = if i < 0 {
                -i
            } else if i >= n {
                2 * (n - 1) - i
            } else {
                i
            };
            audio.get(j.clamp(0, n - 1) as usize).copied().unwrap_or(0.0)
        };
        let mut power = vec![0f32; n_frames * N_FREQS];
        crate::pool::install(|| {
            power
                .par_chunks_mut(N_FREQS * 64)
                .enumerate()
                .for_each(|(chunk_idx, out)| {
                    let mut input = self.fft.make_input_vec();
                    let mut spectrum = self.fft.make_output_vec();
                    let mut scratch = self.fft.make_scratch_vec();
                    for (i, row) in out.chunks_mut(N_FREQS).enumerate() {
                        let t = chunk_idx * 64 + i;
                        let start = (t * HOP) as isize - half as isize;
                        for (n, x) in input.iter_mut().enumerate() {
                            *x = sample(start + n as isize) * self.window[n];
                        }
                        self.fft
                            .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                            .expect("fft sizes match the plan");
                        for (p, c) in row.iter_mut().zip(&spectrum) {
                            *p = c.re * c.re + c.im * c.im;
                        }
                    }
                })
        });
        power
    }

    /// Log-mel of `audio` zero-padded or cut to `n_samples`: `n_mels × (n_samples / HOP)`, mel-major.
    pub fn compute(&self, audio: &[f32], n_samples: usize) -> Vec<f32> {
        let mut padded = vec![0f32; n_samples];
        let n = audio.len().min(n_samples);
        padded[..n].copy_from_slice(&audio[..n]);
        let power = self.power_spectrum(&padded);
        let n_frames = n_samples / HOP;
        // mel = filters · powerᵀ : (n_mels × N_FREQS) · (N_FREQS × n_frames)
        let mut mel = vec![0f32; self.n_mels * n_frames];
        gemm::gemm_nt(self.n_mels, n_frames, N_FREQS, &self.filters, &power, &mut mel);
        let mut max = f32::NEG_INFINITY;
        for v in mel.iter_mut() {
            *v = v.max(1e-10).log10();
            max = max.max(*v);
        }
        let floor = max - 8.0;
        for v in mel.iter_mut() {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        mel
    }
}

fn hz_to_mel(f: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    let min_log_mel = 1000.0 / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= 1000.0 {
        min_log_mel + (f / 1000.0).ln() / logstep
    } else {
        f / F_SP
    }
}

fn mel_to_hz(m: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    let min_log_mel = 1000.0 / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        1000.0 * (logstep * (m - min_log_mel)).exp()
    } else {
        F_SP * m
    }
}

/// librosa's `filters.mel(sr, n_fft, n_mels)` with Slaney scale and norm, fmin 0, fmax sr/2.
pub fn mel_filters(n_mels: usize, n_fft: usize, sample_rate: usize) -> Vec<f32> {
    let n_freqs = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_freqs)
        .map(|k| k as f64 * sample_rate as f64 / n_fft as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sample_rate as f64 / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut weights = vec![0f32; n_mels * n_freqs];
    for i in 0..n_mels {
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - mel_f[i]) / (mel_f[i + 1] - mel_f[i]);
            let upper = (mel_f[i + 2] - f) / (mel_f[i + 2] - mel_f[i + 1]);
            weights[i * n_freqs + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain DFT power spectrum of one frame, to check the FFT path against.
    fn dft_power(frame: &[f32]) -> Vec<f64> {
        (0..N_FREQS)
            .map(|k| {
                let (mut re, mut im) = (0f64, 0f64);
                for (n, &x) in frame.iter().enumerate() {
                    let a = -2.0 * std::f64::consts::PI * (k * n) as f64 / N_FFT as f64;
                    re += x as f64 * a.cos();
                    im += x as f64 * a.sin();
                }
                re * re + im * im
            })
            .collect()
    }

    #[test]
    fn power_spectrum_matches_dft_with_reflect_padding() {
        let audio: Vec<f32> = (0..1600).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let mel = LogMel::new(80);
        let power = mel.power_spectrum(&audio);
        assert_eq!(power.len(), 10 * N_FREQS);
        for t in [0usize, 1, 5, 9] {
            let frame: Vec<f32> = (0..N_FFT)
                .map(|n| {
                    let i = (t * HOP + n) as isize - 200;
                    let j = if i < 0 {
                        -i
                    } else if i >= 1600 {
                        2 * 1599 - i
                    } else {
                        i
                    };
                    audio[j as usize] * mel.window[n]
                })
                .collect();
            let expect = dft_power(&frame);
            for k in 0..N_FREQS {
                let got = power[t * N_FREQS + k] as f64;
                assert!(
                    (got - expect[k]).abs() <= 1e-3 * expect[k].abs().max(1.0),
                    "t {t} k {k}: {got} vs {}",
                    expect[k]
                );
            }
        }
    }

    #[test]
    fn filters_are_slaney_triangles() {
        let f = mel_filters(80, N_FFT, SAMPLE_RATE);
        // Every filter is non-negative and covers some bins; Slaney norm makes each
        // filter's area (in Hz) equal to 1: sum(w)·Δf ≈ 1 for the wider filters.
        for i in 0..80 {
            let row = &f[i * N_FREQS..(i + 1) * N_FREQS];
            assert!(row.iter().all(|&w| w >= 0.0));
            assert!(row.iter().any(|&w| w > 0.0), "filter {i} empty");
        }
        let top = &f[79 * N_FREQS..];
        let area: f32 = top.iter().sum::<f32>() * (SAMPLE_RATE as f32 / N_FFT as f32);
        assert!((area - 1.0).abs() < 0.05, "area {area}");
    }

    #[test]
    fn silence_gives_the_floor_everywhere() {
        let mel = LogMel::new(80).compute(&[], 480_000);
        assert_eq!(mel.len(), 80 * 3000);
        assert!(mel.iter().all(|&v| (v - (-10.0 + 4.0) / 4.0).abs() < 1e-6));
    }
}
