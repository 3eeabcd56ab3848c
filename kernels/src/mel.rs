//! Whisper's log-mel front end: STFT (n_fft 400, hop 160, periodic Hann), Slaney mel filters,
//! log10 with a 1e-10 floor, clamp to max − 8, then (x + 4) / 4.

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;

pub struct LogMel {
    n_mels: usize,
}

impl LogMel {
    pub fn new(n_mels: usize) -> Self {
        LogMel { n_mels }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Log-mel of `audio` (16 kHz) zero-padded or cut to `n_samples`; returns
    /// `n_mels × (n_samples / HOP)` values, mel-major.
    pub fn compute(&self, audio: &[f32], n_samples: usize) -> Vec<f32> {
        todo!()
    }
}
