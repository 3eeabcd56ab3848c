//! Cutting a 16 kHz mono sample stream into Whisper windows (≤ 30 s), at pauses where it can.

pub const SAMPLE_RATE: u32 = 16000;
/// Samples in one 30 s window.
pub const WINDOW_SAMPLES: usize = 480_000;

/// A stretch of audio to transcribe as one window.
#[derive(Debug, Clone)]
pub struct AudioWindow {
    /// Offset of the first sample, counted from the start of the stream given to the [`Windower`].
    pub start_sample: u64,
    pub samples: Vec<f32>,
}

/// Accumulates samples and emits windows cut at the quietest point near their end.
#[derive(Default)]
pub struct Windower {
    pending: Vec<f32>,
    pending_start: u64,
}

impl Windower {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds samples; returns every window that is complete.
    pub fn push(&mut self, samples: &[f32]) -> Vec<AudioWindow> {
        todo!()
    }

    /// Returns what is left as a last window (at EOS), if anything.
    pub fn flush(&mut self) -> Option<AudioWindow> {
        todo!()
    }

    /// Drops everything pending and restarts the sample count at zero.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}
