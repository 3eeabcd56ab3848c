//! One search over windows: greedy, sampling at a temperature or beam search, with Whisper's
//! timestamp rules, all hypotheses stepped through the backend together.

use npuwhisper_kernels::ops::{log_softmax, softmax};

use super::transcriber::Decoded;
use super::{rules, DecodeError, Task, Transcriber};
use crate::backend::{BackendError, CrossCache, Sequence, StepInput};
use crate::model::Model;

/// Most tokens sampled per window (Whisper: half the text context).
pub(super) const SAMPLE_LEN: usize = 224;

/// A search's result for one window: the sampled tokens, without the decoder cache.
pub(super) struct Found {
    pub(super) tokens: Vec<u32>,
    pub(super) token_logprobs: Vec<f32>,
    pub(super) sum_logprob: f32,
}

impl Found {
    pub(super) fn of(h: &Hypothesis) -> Found {
        Found {
            tokens: h.tokens.clone(),
            token_logprobs: h.token_logprobs.clone(),
            sum_logprob: h.sum_logprob,
        }
    }

    /// Whisper's ranking: log-probability per token, end-of-text included.
    pub(super) fn score(&self) -> f32 {
        self.sum_logprob / (self.tokens.len() + 1) as f32
    }
}

/// A window to search: its cross cache and language.
pub(super) struct SearchJob<'a> {
    pub(super) cross: &'a CrossCache,
    pub(super) language: Option<&'a str>,
}

/// The tokens a search starts from over one window.
pub(super) struct SearchStart {
    /// `<|startoftranscript|>`, language and task.
    pub(super) sot_sequence: Vec<u32>,
    /// The previous text (if any), the sot sequence and the forced prefix.
    pub(super) initial: Vec<u32>,
    /// Where the sot sequence starts in `initial` (its logits give the no-speech probability).
    pub(super) sot_index: usize,
}

/// A hypothesis in a search: its cache, its sampled tokens and their summed log-probability.
#[derive(Clone)]
pub(super) struct Hypothesis {
    pub(super) seq: Sequence,
    pub(super) tokens: Vec<u32>,
    pub(super) token_logprobs: Vec<f32>,
    pub(super) sum_logprob: f32,
}

impl Transcriber {
    /// One search over a window after `prompt` (previous text), with `prefix` forced as the first
    /// tokens: beam search at temperature 0 when `beam_size` > 1, else greedy; at a temperature
    /// above 0, `best_of` samples of which the likeliest wins.
    pub(super) fn search(
        &mut self,
        model: &Model,
        cross: &CrossCache,
        language: Option<&str>,
        prompt: &[u32],
        prefix: &[u32],
        temperature: f32,
    ) -> Result<Decoded, DecodeError> {
        self.search_many(model, &[SearchJob { cross, language }], prompt, prefix, temperature)
            .pop()
            .expect("one result per window")
    }

    /// [`Transcriber::search`] over several windows `(cross K/V, language)` at once: the prompts
    /// run through the decoder as one batch, and so does every greedy or sampling step.
    pub(super) fn search_many(
        &mut self,
        model: &Model,
        windows: &[SearchJob<'_>],
        prompt: &[u32],
        prefix: &[u32],
        temperature: f32,
    ) -> Vec<Result<Decoded, DecodeError>> {
        let tok = &model.tokenizer;
        let mut starts: Vec<Result<SearchStart, DecodeError>> = Vec::new();
        for &SearchJob { language, .. } in windows {
            let mut sot_sequence = vec![tok.sot];
            if let Some(code) = language {
                match tok.language_token(code) {
                    Some(id) => sot_sequence.push(id),
                    None => {
                        starts.push(Err(DecodeError::UnknownLanguage(code.to_string())));
                        continue;
                    }
                }
                sot_sequence.push(if self.options.task == Task::Translate {
                    tok.translate
                } else {
                    tok.transcribe
                });
            }
            let mut initial = Vec::new();
            if !prompt.is_empty() {
                initial.push(tok.sot_prev);
                initial.extend_from_slice(prompt);
            }
            let sot_index = initial.len();
            initial.extend_from_slice(&sot_sequence);
            initial.extend_from_slice(prefix);
            starts.push(Ok(SearchStart {
                sot_sequence,
                initial,
                sot_index,
            }));
        }
        let ok: Vec<usize> = (0..windows.len()).filter(|&i| starts[i].is_ok()).collect();
        let seqs: Result<Vec<Sequence>, BackendError> = ok.iter().map(|&i| model.sequence(windows[i].cross)).collect();
        // Per window: the no-speech row (at <|startoftranscript|>) and the last row, in one step.
        let logit_rows: Vec<[usize; 2]> = ok
            .iter()
            .map(|&i| {
                let s = starts[i].as_ref().expect("started");
                [s.sot_index, s.initial.len() - 1]
            })
            .collect();
        let inputs: Vec<StepInput<'_>> = ok
            .iter()
            .zip(&logit_rows)
            .map(|(&i, rows)| StepInput {
                tokens: &starts[i].as_ref().expect("started").initial,
                logits_at: rows,
            })
            .collect();
        let stepped = seqs.and_then(|mut seqs| {
            let mut refs: Vec<&mut Sequence> = seqs.iter_mut().collect();
            let out = model.decode(&mut refs, &inputs, None)?;
            Ok((seqs, out.logits))
        });
        let (seqs, logits) = match stepped {
            Ok(s) => s,
            Err(e) => return windows.iter().map(|_| Err(DecodeError::Backend(e.clone()))).collect(),
        };
        let vocab = model.dims.vocab_size;
        let mut roots = Vec::new();
        for (k, seq) in seqs.into_iter().enumerate() {
            let no_speech_prob = match tok.no_speech {
                Some(ns) => {
                    let mut p = logits[2 * k * vocab..(2 * k + 1) * vocab].to_vec();
                    softmax(&mut p);
                    p[ns as usize]
                }
                None => 0.0,
            };
            let last = logits[(2 * k + 1) * vocab..(2 * k + 2) * vocab].to_vec();
            let root = Hypothesis {
                seq,
                tokens: prefix.to_vec(),
                token_logprobs: vec![0.0; prefix.len()],
                sum_logprob: 0.0,
            };
            roots.push((root, last, no_speech_prob));
        }

        let found: Vec<Result<Found, DecodeError>> = if temperature == 0.0 && self.options.beam_size > 1 {
            roots
                .iter()
                .map(|(root, logits, _)| {
                    beam_search(
                        model,
                        root.clone(),
                        logits.clone(),
                        self.options.beam_size,
                        self.sample_len,
                    )
                    .map_err(DecodeError::from)
                })
                .collect()
        } else {
            let n = if temperature > 0.0 {
                self.options.best_of.max(1)
            } else {
                1
            };
            let starts: Vec<(Hypothesis, Vec<f32>)> = roots
                .iter()
                .flat_map(|(root, logits, _)| std::iter::repeat_n((root.clone(), logits.clone()), n))
                .collect();
            match sample(model, starts, temperature, self.sample_len, &mut self.rng) {
                Ok(all) => all
                    .chunks(n)
                    .map(|samples| {
                        samples
                            .iter()
                            .map(Found::of)
                            .max_by(|a, b| a.score().total_cmp(&b.score()))
                            .ok_or(DecodeError::NothingDecoded)
                    })
                    .collect(),
                Err(e) => roots.iter().map(|_| Err(DecodeError::Backend(e.clone()))).collect(),
            }
        };
        let mut found = found.into_iter().zip(roots.into_iter().map(|r| r.2));
        starts
            .into_iter()
            .map(|start| {
                let SearchStart { sot_sequence, .. } = start?;
                let (best, no_speech_prob) = found.next().expect("one result per started window");
                let best = best?;
                Ok(Decoded {
                    tokens: best.tokens,
                    token_logprobs: best.token_logprobs,
                    sum_logprob: best.sum_logprob,
                    no_speech_prob,
                    sot_sequence,
                    temperature,
                })
            })
            .collect()
    }
}

/// Runs each hypothesis's last token through the decoder, all in one batch; returns their logits.
pub(super) fn step(model: &Model, hyps: &mut [&mut Hypothesis]) -> Result<Vec<Vec<f32>>, BackendError> {
    let last: Vec<[u32; 1]> = hyps
        .iter()
        .map(|h| [*h.tokens.last().expect("a token was just sampled")])
        .collect();
    let inputs: Vec<StepInput<'_>> = last
        .iter()
        .map(|t| StepInput {
            tokens: &t[..],
            logits_at: &[0],
        })
        .collect();
    let mut seqs: Vec<&mut Sequence> = hyps.iter_mut().map(|h| &mut h.seq).collect();
    let logits = model.decode(&mut seqs, &inputs, None)?.logits;
    Ok(logits.chunks(model.dims.vocab_size).map(<[f32]>::to_vec).collect())
}

/// Greedy decoding (temperature 0) or sampling at `temperature` of every hypothesis, each from
/// its own logits, all stepped through the decoder together; returns them finished, in order.
pub(super) fn sample(
    model: &Model,
    starts: Vec<(Hypothesis, Vec<f32>)>,
    temperature: f32,
    max_tokens: usize,
    rng: &mut fastrand::Rng,
) -> Result<Vec<Hypothesis>, BackendError> {
    let eot = model.tokenizer.eot;
    let rules = rules::Rules::new(model);
    let n = starts.len();
    let (mut hyps, mut logits): (Vec<Hypothesis>, Vec<Vec<f32>>) = starts.into_iter().unzip();
    let mut done = vec![false; n];
    let (mut logprobs, mut probs) = (Vec::new(), Vec::new());
    for _ in 0..max_tokens {
        for (i, h) in hyps.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            rules.apply(&h.tokens, &mut logits[i]);
            log_softmax(&logits[i], &mut logprobs);
            let next = if temperature > 0.0 {
                probs.clear();
                probs.extend(logits[i].iter().map(|&l| l / temperature));
                softmax(&mut probs);
                draw(&probs, rng.f32())
            } else {
                argmax(&logits[i])
            };
            h.sum_logprob += logprobs[next as usize];
            if next == eot || h.seq.remaining() == 0 {
                done[i] = true;
            } else {
                h.tokens.push(next);
                h.token_logprobs.push(logprobs[next as usize]);
            }
        }
        let mut live: Vec<&mut Hypothesis> = hyps
            .iter_mut()
            .zip(&done)
            .filter(|(_, d)| !**d)
            .map(|(h, _)| h)
            .collect();
        if live.is_empty() {
            break;
        }
        let next_logits = step(model, &mut live)?;
        let live_index: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
        for (i, l) in live_index.into_iter().zip(next_logits) {
            logits[i] = l;
        }
    }
    Ok(hyps)
}

/// Beam search as Whisper's: each step keeps the `beam` likeliest continuations of all beams,
/// until `beam` hypotheses have ended; the winner has the best log-probability per token.
pub(super) fn beam_search(
    model: &Model,
    root: Hypothesis,
    logits: Vec<f32>,
    beam: usize,
    max_tokens: usize,
) -> Result<Found, BackendError> {
    let eot = model.tokenizer.eot;
    let rules = rules::Rules::new(model);
    let mut beams = vec![root];
    let mut beam_logits = vec![logits];
    let mut finished: Vec<Found> = Vec::new();
    let mut logprobs = Vec::new();
    for _ in 0..max_tokens {
        // (summed log-probability, parent beam, token, token log-probability)
        let mut candidates: Vec<(f32, usize, u32, f32)> = Vec::new();
        for (i, h) in beams.iter().enumerate() {
            rules.apply(&h.tokens, &mut beam_logits[i]);
            log_softmax(&beam_logits[i], &mut logprobs);
            for t in top_k(&logprobs, beam + 1) {
                candidates.push((h.sum_logprob + logprobs[t as usize], i, t, logprobs[t as usize]));
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut kept: Vec<(f32, usize, u32, f32)> = Vec::new();
        for (sum, parent, t, lp) in candidates {
            if sum == f32::NEG_INFINITY {
                break;
            }
            if t == eot || beams[parent].seq.remaining() == 0 {
                if finished.len() < beam {
                    finished.push(Found {
                        sum_logprob: sum,
                        ..Found::of(&beams[parent])
                    });
                }
            } else {
                kept.push((sum, parent, t, lp));
                if kept.len() == beam {
                    break;
                }
            }
        }
        if finished.len() >= beam || kept.is_empty() {
            break;
        }
        // A parent's cache moves to its last child and is copied for the others.
        let mut uses = vec![0usize; beams.len()];
        kept.iter().for_each(|&(_, p, _, _)| uses[p] += 1);
        let mut parents: Vec<Option<Hypothesis>> = beams.into_iter().map(Some).collect();
        beams = kept
            .iter()
            .map(|&(sum, p, t, lp)| {
                uses[p] -= 1;
                let mut h = if uses[p] == 0 {
                    parents[p].take().expect("parent still held")
                } else {
                    parents[p].clone().expect("parent still held")
                };
                h.tokens.push(t);
                h.token_logprobs.push(lp);
                h.sum_logprob = sum;
                h
            })
            .collect();
        let mut refs: Vec<&mut Hypothesis> = beams.iter_mut().collect();
        beam_logits = step(model, &mut refs)?;
    }
    if finished.is_empty() {
        finished = beams.iter().map(Found::of).collect();
    }
    Ok(finished
        .into_iter()
        .max_by(|a, b| a.score().total_cmp(&b.score()))
        .expect("a beam finished"))
}

/// Indices of the `k` largest finite values, largest first.
pub(super) fn top_k(v: &[f32], k: usize) -> Vec<u32> {
    let mut best: Vec<u32> = Vec::with_capacity(k + 1);
    for (i, &x) in v.iter().enumerate() {
        if x == f32::NEG_INFINITY || (best.len() == k && x <= v[best[k - 1] as usize]) {
            continue;
        }
        let at = best.partition_point(|&j| v[j as usize] >= x);
        best.insert(at, i as u32);
        best.truncate(k);
    }
    best
}

/// The index where the cumulative sum of `probs` passes `u` ∈ [0, 1).
pub(super) fn draw(probs: &[f32], u: f32) -> u32 {
    let mut acc = 0.0;
    let mut last_nonzero = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            acc += p;
            last_nonzero = i;
            if acc > u {
                return i as u32;
            }
        }
    }
    last_nonzero as u32
}

pub(super) fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}
