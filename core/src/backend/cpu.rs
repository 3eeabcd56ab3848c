//! The CPU backend: the encoder and decoder of [`crate::model`] on `npuwhisper_kernels`.

use super::{AlignmentRequest, Backend, BackendError, BackendKind, CrossCache, Sequence, StepInput, StepOutput};
use crate::model::decoder::{CrossKv, Decoder, Sequence as CpuSequence};
use crate::model::encoder::Encoder;
use crate::model::{ENCODER_FRAMES, MEL_FRAMES};

pub struct CpuBackend {
    pub(crate) encoder: Encoder,
    pub(crate) decoder: Decoder,
    n_mels: usize,
    d_model: usize,
}

impl CpuBackend {
    pub(crate) fn new(encoder: Encoder, decoder: Decoder, n_mels: usize, d_model: usize) -> CpuBackend {
        CpuBackend {
            encoder,
            decoder,
            n_mels,
            d_model,
        }
    }
}

fn cpu_sequence(seq: &mut Sequence) -> Result<&mut CpuSequence, BackendError> {
    seq.downcast_mut::<CpuSequence>().ok_or(BackendError::ForeignCache)
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn encode(&self, mels: &[&[f32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.encode_frames(mels, ENCODER_FRAMES)
    }

    fn encode_frames(&self, mels: &[&[f32]], frames: usize) -> Result<Vec<Vec<f32>>, BackendError> {
        if !(1..=ENCODER_FRAMES).contains(&frames) {
            return Err(BackendError::BadInput(format!(
                "an encoder context of {frames} frames, not 1 to {ENCODER_FRAMES}"
            )));
        }
        if let Some(bad) = mels.iter().find(|m| m.len() != self.n_mels * MEL_FRAMES) {
            return Err(BackendError::BadInput(format!(
                "a mel window of {} values, not {} × {MEL_FRAMES}",
                bad.len(),
                self.n_mels
            )));
        }
        Ok(self.encoder.forward_batch(mels, frames))
    }

    fn cross_cache(&self, states: &[f32]) -> Result<CrossCache, BackendError> {
        let frames = states.len() / self.d_model;
        if !states.len().is_multiple_of(self.d_model) || !(1..=ENCODER_FRAMES).contains(&frames) {
            return Err(BackendError::BadInput(format!(
                "encoder states of {} values, not 1 to {ENCODER_FRAMES} frames × {}",
                states.len(),
                self.d_model
            )));
        }
        Ok(CrossCache::new(self.decoder.cross_kv(states)))
    }

    fn sequence(&self, cross: &CrossCache) -> Result<Sequence, BackendError> {
        let cross = cross.downcast::<CrossKv>().ok_or(BackendError::ForeignCache)?;
        Ok(Sequence::new(Box::new(self.decoder.sequence(&cross))))
    }

    fn decode(
        &self,
        seqs: &mut [&mut Sequence],
        inputs: &[StepInput<'_>],
        alignment: Option<AlignmentRequest<'_>>,
    ) -> Result<StepOutput, BackendError> {
        super::check_step(seqs.len(), inputs, alignment.is_some())?;
        let tokens: Vec<&[u32]> = inputs.iter().map(|i| i.tokens).collect();
        let mut cpu: Vec<&mut CpuSequence> = seqs.iter_mut().map(|s| cpu_sequence(s)).collect::<Result<_, _>>()?;
        let mut attention = Vec::new();
        let hidden = match alignment {
            Some(a) => {
                let n_frames = a.n_frames.clamp(1, cpu[0].cross_frames());
                self.decoder
                    .forward(&mut cpu, &tokens, Some((a.heads, n_frames, &mut attention)))?
            }
            None => self.decoder.forward(&mut cpu, &tokens, None)?,
        };
        let d = self.d_model;
        let every_row = inputs
            .iter()
            .all(|i| i.logits_at.len() == i.tokens.len() && i.logits_at.iter().enumerate().all(|(k, &r)| k == r));
        let logits = if every_row {
            // Most steps: one token per sequence, all rows wanted, no gathering.
            let rows = hidden.len() / d;
            self.decoder.logits(rows, &hidden)
        } else {
            let mut rows = Vec::new();
            let mut offset = 0;
            for input in inputs {
                for &r in input.logits_at {
                    rows.extend_from_slice(&hidden[(offset + r) * d..(offset + r + 1) * d]);
                }
                offset += input.tokens.len();
            }
            if rows.is_empty() {
                Vec::new()
            } else {
                self.decoder.logits(rows.len() / d, &rows)
            }
        };
        Ok(StepOutput { logits, attention })
    }
}
