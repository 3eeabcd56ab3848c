//! Logit filters applied before each greedy pick: suppressed tokens and Whisper's timestamp rules.

use crate::model::Model;

pub(super) struct Rules {
    suppress: Vec<u32>,
    suppress_begin: Vec<u32>,
    eot: u32,
    no_timestamps: u32,
    timestamp_begin: u32,
    /// Last timestamp allowed as the first token (1 s into the window).
    max_initial_timestamp: u32,
}

impl Rules {
    pub fn new(model: &Model) -> Rules {
        let tok = &model.tokenizer;
        let mut suppress = model.config.suppress_ids.clone();
        suppress.extend([tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm]);
        suppress.extend(tok.no_speech);
        // Language tokens are never text.
        suppress.extend(tok.languages.iter().map(|&(_, id)| id));
        let suppress_begin = if model.config.suppress_ids_begin.is_empty() {
            [tok.token_id("Ġ"), Some(tok.eot)].into_iter().flatten().collect()
        } else {
            model.config.suppress_ids_begin.clone()
        };
        Rules {
            suppress,
            suppress_begin,
            eot: tok.eot,
            no_timestamps: tok.no_timestamps,
            timestamp_begin: tok.timestamp_begin,
            max_initial_timestamp: tok.timestamp_begin + 50,
        }
    }

    /// `sampled` are the tokens sampled so far in this window (after the prompt).
    pub fn apply(&self, sampled: &[u32], logits: &mut [f32]) {
        const NEG: f32 = f32::NEG_INFINITY;
        for &id in &self.suppress {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = NEG;
            }
        }
        if sampled.is_empty() {
            for &id in &self.suppress_begin {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = NEG;
                }
            }
        }
        logits[self.no_timestamps as usize] = NEG;
        let tb = self.timestamp_begin as usize;
        let is_ts = |t: u32| t >= self.timestamp_begin;
        let last_was_ts = sampled.last().is_some_and(|&t| is_ts(t));
        let penultimate_was_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
        // Timestamps come in pairs, except right before end of text.
        if last_was_ts {
            if penultimate_was_ts {
                logits[tb..].fill(NEG);
            } else {
                logits[..self.eot as usize].fill(NEG);
            }
        }
        // Timestamps never go back; a segment lasts at least one step.
        if let Some(&last_ts) = sampled.iter().rev().find(|&&t| is_ts(t)) {
            let first_allowed = if last_was_ts && !penultimate_was_ts {
                last_ts
            } else {
                last_ts + 1
            };
            let end = (first_allowed as usize).min(logits.len());
            logits[tb..end].fill(NEG);
        }
        if sampled.is_empty() {
            // The first token is a timestamp within the first second.
            logits[..tb].fill(NEG);
            let last = (self.max_initial_timestamp as usize + 1).min(logits.len());
            logits[last..].fill(NEG);
        }
        // If the timestamps together are likelier than any text token, take a timestamp.
        let max = logits.iter().copied().fold(NEG, f32::max);
        if max == NEG {
            return;
        }
        let lse = npuwhisper_kernels::ops::log_sum_exp;
        let total = lse(logits);
        let ts_logprob = lse(&logits[tb..]) - total;
        let max_text_logprob = logits[..tb].iter().copied().fold(NEG, f32::max) - total;
        if ts_logprob > max_text_logprob {
            logits[..tb].fill(NEG);
        }
    }
}
