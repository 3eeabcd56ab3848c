//! Which 10 ms frames of a stream hold speech: Silero VAD (the default in the elements), or a
//! plain energy gate. Decisions come out in stream order, each once it is final, so the same
//! samples give the same decisions whatever the buffer sizes.

use std::collections::VecDeque;

use super::vad::{ChunkGate, SileroVad, Speech, VadError, VadSettings, CHUNK};
use super::FRAME;

/// Frame decisions from one of the detectors.
pub enum Detector {
    /// Frames at or above a level (dBFS) are speech.
    Energy(EnergyGate),
    Silero(Box<SileroFrames>),
}

impl Default for Detector {
    fn default() -> Self {
        Detector::Energy(EnergyGate::default())
    }
}

impl Detector {
    /// Adds samples; returns the decisions for the frames that became final.
    pub fn push(&mut self, samples: &[f32], threshold_db: f32) -> Result<Vec<Speech>, VadError> {
        match self {
            Detector::Energy(g) => Ok(g.push(samples, threshold_db)),
            Detector::Silero(s) => s.push(samples),
        }
    }

    /// End of stream: decisions for the rest of the complete frames, and for the last partial
    /// frame if there is one.
    pub fn finish(&mut self, threshold_db: f32) -> Result<(Vec<Speech>, Option<Speech>), VadError> {
        match self {
            Detector::Energy(g) => Ok((Vec::new(), g.finish(threshold_db))),
            Detector::Silero(s) => s.finish(),
        }
    }

    /// Runs Silero VAD on at least `chunks` chunks at a time (see [`SileroVad::set_batch`]);
    /// the energy gate has nothing to batch.
    pub fn set_batch(&mut self, chunks: usize) {
        if let Detector::Silero(s) = self {
            s.vad.set_batch(chunks);
        }
    }

    /// Back to the start of a stream (a loaded model is kept).
    pub fn reset(&mut self) {
        match self {
            Detector::Energy(g) => g.partial.clear(),
            Detector::Silero(s) => s.reset(),
        }
    }
}

/// The energy gate is sure of whatever it calls speech.
pub(crate) fn frame_is_speech(frame: &[f32], threshold_db: f32) -> Speech {
    let mean_square = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
    let speech = 10.0 * mean_square.max(1e-12).log10() >= threshold_db;
    Speech {
        speech,
        confident: speech,
    }
}

#[derive(Default)]
pub struct EnergyGate {
    partial: Vec<f32>,
}

impl EnergyGate {
    fn push(&mut self, samples: &[f32], threshold_db: f32) -> Vec<Speech> {
        let mut out = Vec::with_capacity((self.partial.len() + samples.len()) / FRAME);
        let mut rest = samples;
        if !self.partial.is_empty() {
            let need = (FRAME - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..need]);
            rest = &rest[need..];
            if self.partial.len() < FRAME {
                return out;
            }
            out.push(frame_is_speech(&self.partial, threshold_db));
            self.partial.clear();
        }
        let mut frames = rest.chunks_exact(FRAME);
        out.extend(frames.by_ref().map(|f| frame_is_speech(f, threshold_db)));
        self.partial.extend_from_slice(frames.remainder());
        out
    }

    fn finish(&mut self, threshold_db: f32) -> Option<Speech> {
        let partial = std::mem::take(&mut self.partial);
        (!partial.is_empty()).then(|| frame_is_speech(&partial, threshold_db))
    }
}

/// Silero's chunk decisions spread onto 10 ms frames, widened by the padding (a frame is
/// speech, or confident, if a chunk within the padding of it is).
pub struct SileroFrames {
    vad: SileroVad,
    settings: VadSettings,
    gate: ChunkGate,
    pad_samples: u64,
    /// Decisions of chunks `chunk_base..`.
    chunks: VecDeque<Speech>,
    chunk_base: u64,
    samples_seen: u64,
    next_frame: u64,
    /// Chunks in all once the stream has ended.
    total_chunks: Option<u64>,
}

impl SileroFrames {
    pub fn new(vad: SileroVad, settings: VadSettings) -> Self {
        SileroFrames {
            vad,
            settings,
            gate: ChunkGate::new(settings),
            pad_samples: settings.pad_ms as u64 * 16,
            chunks: VecDeque::new(),
            chunk_base: 0,
            samples_seen: 0,
            next_frame: 0,
            total_chunks: None,
        }
    }

    fn reset(&mut self) {
        self.vad.reset();
        self.gate = ChunkGate::new(self.settings);
        self.chunks.clear();
        self.chunk_base = 0;
        self.samples_seen = 0;
        self.next_frame = 0;
        self.total_chunks = None;
    }

    fn push(&mut self, samples: &[f32]) -> Result<Vec<Speech>, VadError> {
        for p in self.vad.push(samples)? {
            self.chunks.push_back(self.gate.decide(p));
        }
        self.samples_seen += samples.len() as u64;
        Ok(self.frames(self.samples_seen / FRAME as u64))
    }

    fn finish(&mut self) -> Result<(Vec<Speech>, Option<Speech>), VadError> {
        for p in self.vad.finish()? {
            self.chunks.push_back(self.gate.decide(p));
        }
        self.total_chunks = Some(self.samples_seen.div_ceil(CHUNK as u64));
        let complete = self.samples_seen / FRAME as u64;
        let frames = self.frames(complete);
        let partial = if !self.samples_seen.is_multiple_of(FRAME as u64) {
            self.frames(complete + 1).pop()
        } else {
            None
        };
        Ok((frames, partial))
    }

    /// Decisions for frames from `next_frame` up to `end` (exclusive), as far as they are final.
    fn frames(&mut self, end: u64) -> Vec<Speech> {
        let chunk = CHUNK as u64;
        let known = self.chunk_base + self.chunks.len() as u64;
        let mut out = Vec::new();
        while self.next_frame < end {
            let f = self.next_frame * FRAME as u64;
            let lo = f.saturating_sub(self.pad_samples) / chunk;
            let mut hi = (f + FRAME as u64 + self.pad_samples - 1) / chunk;
            if let Some(total) = self.total_chunks {
                hi = hi.min(total.saturating_sub(1));
            } else if hi >= known {
                break;
            }
            let from = lo.max(self.chunk_base) - self.chunk_base;
            let to = (hi + 1).min(known).saturating_sub(self.chunk_base);
            let near = self.chunks.range(from as usize..to as usize);
            out.push(near.fold(Speech::default(), |a, c| Speech {
                speech: a.speech || c.speech,
                confident: a.confident || c.confident,
            }));
            self.next_frame += 1;
            // Chunks before the next frame's reach are no longer needed.
            let next_lo = (self.next_frame * FRAME as u64).saturating_sub(self.pad_samples) / chunk;
            while self.chunk_base < next_lo && !self.chunks.is_empty() {
                self.chunks.pop_front();
                self.chunk_base += 1;
            }
        }
        out
    }
}
