//! The transcriber: windows one after another, the previous text as prompt, Whisper's
//! temperature fallback, the uncovered-tail and unprompted retries.

use std::sync::Arc;

use super::search::{SearchJob, SAMPLE_LEN};
use super::segments::{
    attach_words, clamp_long_words, compression_ratio, has_non_word, is_hallucination, longest_uncovered, phrases,
    set_word_probabilities, split_segments, text_only, UNCOVERED_RETRY_SECONDS,
};
use super::{alignment, DecodeError, DecodeOptions, WindowResult};
use crate::backend::CrossCache;
use crate::model::{Model, ENCODER_FRAMES, SECONDS_PER_TIMESTAMP};

/// Text ending this long before the window does is taken to have left speech out.
pub(super) const UNCOVERED_TAIL_SECONDS: f64 = 1.5;

pub(super) const MAX_TAIL_PASSES: usize = 2;

/// Text decoded this hot is too unsure to prompt the next window with (Whisper's rule).
pub(super) const PROMPT_RESET_TEMPERATURE: f32 = 0.5;

/// Decodes windows one after another, keeping the previous text as prompt.
pub struct Transcriber {
    pub(super) model: Arc<Model>,
    pub(super) options: DecodeOptions,
    pub(super) prompt: Vec<u32>,
    pub(super) initial_prompt: Vec<u32>,
    pub(super) rng: fastrand::Rng,
    /// Most tokens sampled per window per second of its audio, when bounded (live streams).
    pub(super) tokens_per_second: Option<f32>,
    /// Most tokens the searches of the window being decoded sample.
    pub(super) sample_len: usize,
    /// Windows encoded again over the full context (`transcribe_batch_refit`).
    pub(super) refits: usize,
}

/// Window `i`'s encoder states over the full context, for [`Transcriber::transcribe_batch_refit`];
/// `None` when they cannot be had.
pub type Refit<'a> = &'a (dyn Fn(usize) -> Option<Vec<f32>> + Sync);

/// Tokens a window may always sample, however short, when they are bounded per second.
const TOKENS_BASE: usize = 16;
/// Previous text a provisional pass is prompted with: the last 64 tokens (about 200
/// characters, whisper_streaming's choice), not the 223 of a complete window.
const PASS_PROMPT_TOKENS: usize = 64;

/// One search's outcome over a window.
pub(super) struct Decoded {
    pub(super) sot_sequence: Vec<u32>,
    pub(super) tokens: Vec<u32>,
    /// Log-probability of each of `tokens` when sampled (0 for forced ones).
    pub(super) token_logprobs: Vec<f32>,
    pub(super) sum_logprob: f32,
    pub(super) no_speech_prob: f32,
    pub(super) temperature: f32,
}

impl Decoded {
    /// Whisper's average: the end-of-text token counts as one more.
    pub(super) fn avg_logprob(&self) -> f32 {
        self.sum_logprob / (self.tokens.len() + 1) as f32
    }
}

impl Transcriber {
    pub fn new(model: Arc<Model>, options: DecodeOptions) -> Self {
        let initial_prompt = match options.initial_prompt.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() => model.tokenizer.encode(&format!(" {text}")),
            _ => Vec::new(),
        };
        Transcriber {
            model,
            options,
            prompt: initial_prompt.clone(),
            initial_prompt,
            rng: fastrand::Rng::with_seed(0x5eed),
            tokens_per_second: None,
            sample_len: SAMPLE_LEN,
            refits: 0,
        }
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Decodes one window's encoder states (`ENCODER_FRAMES × d_model`), whose audio
    /// lasts `content_seconds` (≤ 30). Segment times are clipped to the content.
    pub fn transcribe(&mut self, states: &[f32], content_seconds: f64) -> WindowResult {
        self.transcribe_batch(&[(states, content_seconds)])
            .pop()
            .expect("one result per window")
    }

    /// Decodes consecutive windows together: their first greedy pass runs as one batch, each
    /// token step one pass over the weights for all of them. Every window is prompted with the
    /// text before the batch (its predecessor in the batch is not decoded yet), then fallback,
    /// tail and alignment run per window.
    pub fn transcribe_batch(&mut self, windows: &[(&[f32], f64)]) -> Vec<WindowResult> {
        self.transcribe_batch_refit(windows, &|_| None)
    }

    /// [`transcribe_batch`](Self::transcribe_batch) for windows some of which were encoded over
    /// a fitted context (fewer than 1500 frames): when such a window's first greedy pass fails
    /// Whisper's checks (it repeats itself or is unlikely, the sign that the context cut too
    /// close: README, Encoder context), `refit(i)` gives window `i`'s states over the full
    /// context and the window is decoded again from them before any hotter pass.
    pub fn transcribe_batch_refit(&mut self, windows: &[(&[f32], f64)], refit: Refit<'_>) -> Vec<WindowResult> {
        // On the kernels' pool as a whole: a token step calls some 50 kernels, and each one's
        // hand-off from another thread (wake a worker, block, be woken) cost the decoder 15 %.
        npuwhisper_kernels::pool::install(|| self.transcribe_batch_on_pool(windows, refit))
    }

    /// How many windows of the batches so far were encoded again over the full context.
    pub fn refits(&self) -> usize {
        self.refits
    }

    pub(super) fn transcribe_batch_on_pool(
        &mut self,
        windows: &[(&[f32], f64)],
        refit: Refit<'_>,
    ) -> Vec<WindowResult> {
        let model = Arc::clone(&self.model);
        let crosses: Vec<Result<CrossCache, DecodeError>> = windows
            .iter()
            .map(|(states, _)| model.cross_cache(states).map_err(DecodeError::from))
            .collect();
        let languages: Vec<Option<String>> = crosses
            .iter()
            .map(|cross| cross.as_ref().ok().and_then(|c| self.window_language(&model, c)))
            .collect();
        let prompt = if self.options.condition_on_previous_text || self.prompt == self.initial_prompt {
            self.prompt.clone()
        } else {
            Vec::new()
        };
        self.sample_len = windows
            .iter()
            .map(|&(_, s)| self.token_budget(s))
            .max()
            .unwrap_or(SAMPLE_LEN);
        let first = {
            let jobs: Vec<SearchJob<'_>> = crosses
                .iter()
                .zip(&languages)
                .filter_map(|(c, l)| {
                    c.as_ref().ok().map(|cross| SearchJob {
                        cross,
                        language: l.as_deref(),
                    })
                })
                .collect();
            let mut searched = self.search_many(&model, &jobs, &prompt, &[], 0.0).into_iter();
            crosses
                .iter()
                .map(|c| match c {
                    Ok(_) => searched.next().expect("one search per window"),
                    Err(e) => Err(e.clone()),
                })
                .collect::<Vec<_>>()
        };
        let mut results = Vec::with_capacity(windows.len());
        let mut carried: Vec<u32> = Vec::new();
        let mut reset_prompt = false;
        let full_len = ENCODER_FRAMES * model.dims.d_model;
        for (i, (((cross, language), mut first), &(states, content_seconds))) in
            crosses.iter().zip(languages).zip(first).zip(windows).enumerate()
        {
            self.sample_len = self.token_budget(content_seconds);
            let refitted = match (cross, &first) {
                (Ok(_), Ok(f)) if states.len() < full_len && !self.judge(&model, f).0 => {
                    refit(i).and_then(|full| model.cross_cache(&full).ok()).inspect(|c| {
                        first = self.search(&model, c, language.as_deref(), &prompt, &[], 0.0);
                        self.refits += 1;
                    })
                }
                _ => None,
            };
            let cross = match &refitted {
                Some(c) => Ok(c),
                None => cross.as_ref(),
            };
            let decoded = cross.map_err(Clone::clone).and_then(|cross| {
                let d = self.decode_with_fallback(&model, cross, language.as_deref(), &prompt, first?)?;
                Ok((cross, d))
            });
            let (cross, decoded) = match decoded {
                Ok(decoded) => decoded,
                Err(error) => {
                    results.push(WindowResult {
                        language,
                        error: Some(error),
                        ..Default::default()
                    });
                    continue;
                }
            };
            let (mut result, mut decoded) =
                self.finish_window(&model, cross, language.clone(), &prompt, decoded, content_seconds);
            let gap = longest_uncovered(&result.segments, content_seconds);
            if !prompt.is_empty() && gap > UNCOVERED_RETRY_SECONDS {
                // Prompted with text like what it hears, Whisper jumps ahead and skips speech:
                // decode again without the prompt, keep whichever leaves less uncovered, and
                // start the prompt over after it.
                if let Some((retry, retry_decoded)) = self.decode_unprompted(&model, cross, language, content_seconds) {
                    if longest_uncovered(&retry.segments, content_seconds) < gap {
                        (result, decoded) = (retry, retry_decoded);
                        reset_prompt = true;
                        carried.clear();
                    }
                }
            }
            let silent =
                result.segments.is_empty() && self.options.is_silence(decoded.no_speech_prob, result.avg_logprob);
            if !silent {
                // Text decoded this hot is too unsure to prompt with: start over after it.
                if decoded.temperature > PROMPT_RESET_TEMPERATURE {
                    reset_prompt = true;
                    carried.clear();
                } else {
                    carried.extend(decoded.tokens.iter().filter(|&&t| t != model.tokenizer.eot));
                }
            }
            results.push(result);
        }
        if !self.options.condition_on_previous_text {
            if !carried.is_empty() || reset_prompt {
                self.prompt.clear();
            }
        } else {
            if reset_prompt {
                self.prompt.clear();
            }
            self.carry(carried);
        }
        results
    }

    /// Appends to the prompt, keeping the last half of the text context.
    fn carry(&mut self, tokens: Vec<u32>) {
        self.prompt.extend(tokens);
        let keep = self.model.dims.max_text_positions / 2 - 1;
        if self.prompt.len() > keep {
            self.prompt.drain(..self.prompt.len() - keep);
        }
    }

    /// The window's language: the one asked for, else detected (multilingual models only).
    pub(super) fn window_language(&self, model: &Model, cross: &CrossCache) -> Option<String> {
        if !model.is_multilingual() {
            return None;
        }
        Some(match &self.options.language {
            Some(code) if model.tokenizer.language_token(code).is_some() => code.clone(),
            _ => detect_language(model, cross).unwrap_or_else(|| "en".into()),
        })
    }

    /// Silence check, the uncovered tail, segments and word alignment of a decoded window.
    pub(super) fn finish_window(
        &mut self,
        model: &Model,
        cross: &CrossCache,
        language: Option<String>,
        prompt: &[u32],
        mut decoded: Decoded,
        content_seconds: f64,
    ) -> (WindowResult, Decoded) {
        let avg_logprob = decoded.avg_logprob();
        let silent = self.options.is_silence(decoded.no_speech_prob, avg_logprob);
        if silent {
            return (
                WindowResult {
                    language,
                    segments: Vec::new(),
                    no_speech_prob: decoded.no_speech_prob,
                    avg_logprob,
                    error: None,
                },
                decoded,
            );
        }
        self.decode_uncovered_tail(model, cross, language.as_deref(), prompt, &mut decoded, content_seconds);
        let mut segments = split_segments(model, &decoded.tokens, content_seconds, avg_logprob);
        segments.retain(|s| !has_non_word(&s.text));
        if self.options.word_timestamps {
            let text_tokens: Vec<u32> = segments.iter().flat_map(|s| s.words[0].tokens.clone()).collect();
            if let Ok(words) =
                alignment::align_words(model, cross, &decoded.sot_sequence, &text_tokens, content_seconds)
            {
                let mut attached = attach_words(segments, words);
                set_word_probabilities(model, &decoded, &mut attached);
                clamp_long_words(&mut attached);
                attached.retain(|seg| !is_hallucination(seg));
                segments = phrases(attached);
            }
        } else {
            for s in &mut segments {
                s.words.clear();
            }
        }
        (
            WindowResult {
                language,
                segments,
                no_speech_prob: decoded.no_speech_prob,
                avg_logprob,
                error: None,
            },
            decoded,
        )
    }

    /// A window decoded from scratch, without the previous text.
    pub(super) fn decode_unprompted(
        &mut self,
        model: &Model,
        cross: &CrossCache,
        language: Option<String>,
        content_seconds: f64,
    ) -> Option<(WindowResult, Decoded)> {
        let first = self.search(model, cross, language.as_deref(), &[], &[], 0.0).ok()?;
        let decoded = self
            .decode_with_fallback(model, cross, language.as_deref(), &[], first)
            .ok()?;
        Some(self.finish_window(model, cross, language, &[], decoded, content_seconds))
    }

    /// Whisper's checks on a decoded window: whether it passes (silence, or text that neither
    /// repeats itself nor is unlikely), and whether it repeats itself.
    pub(super) fn judge(&self, model: &Model, d: &Decoded) -> (bool, bool) {
        let o = &self.options;
        let avg = d.avg_logprob();
        let repeats =
            compression_ratio(&model.tokenizer.decode(&text_only(model, &d.tokens))) > o.compression_ratio_threshold;
        let silence = o.is_silence(d.no_speech_prob, avg);
        (silence || (!repeats && avg >= o.logprob_threshold), repeats)
    }

    /// Decodes a window that will be sent again with more audio (a live pass): prompted with
    /// the recent text only, its text does not become the prompt, and it is not decoded
    /// again hotter (the next pass is the retry).
    pub fn transcribe_provisional(&mut self, states: &[f32], content_seconds: f64) -> WindowResult {
        let prompt = self.prompt.clone();
        // Prompt tokens go through the decoder on every pass: the full context cost a pass of
        // base more than its sampling, and the latency kept has no room for it.
        let n = self.prompt.len().saturating_sub(PASS_PROMPT_TOKENS);
        self.prompt.drain(..n);
        let first = self.options.temperatures.first().copied().unwrap_or(0.0);
        let temperatures = std::mem::replace(&mut self.options.temperatures, vec![first]);
        let result = self.transcribe(states, content_seconds);
        self.prompt = prompt;
        self.options.temperatures = temperatures;
        result
    }

    /// Samples at most `TOKENS_BASE + rate` tokens per second of a window's audio (bounded
    /// work per window on live streams: a pass stuck in a loop would otherwise run to 224
    /// tokens and hold up the next pass by a second or more). Speech needs some 6 a second.
    pub fn limit_tokens_per_second(&mut self, rate: f32) {
        self.tokens_per_second = Some(rate);
    }

    /// Most tokens to sample for a window of `content_seconds`.
    pub(super) fn token_budget(&self, content_seconds: f64) -> usize {
        match self.tokens_per_second {
            Some(rate) => (TOKENS_BASE + (rate as f64 * content_seconds).ceil() as usize).min(SAMPLE_LEN),
            None => SAMPLE_LEN,
        }
    }

    /// Tries at most `n` temperatures per window (bounded work per window on live streams).
    pub fn limit_temperatures(&mut self, n: usize) {
        self.options.temperatures.truncate(n.max(1));
    }

    /// Forgets the previous text (after a flush or discontinuity); the initial prompt stays.
    pub fn reset(&mut self) {
        self.prompt = self.initial_prompt.clone();
    }

    /// Whisper's temperature fallback: decode at each temperature in turn until the text neither
    /// repeats itself (compression ratio) nor is unlikely (average log-probability). A window
    /// that is likely silence is not retried. When every temperature fails, the likeliest
    /// result that does not repeat itself is kept (as faster-whisper does).
    pub(super) fn decode_with_fallback(
        &mut self,
        model: &Model,
        cross: &CrossCache,
        language: Option<&str>,
        prompt: &[u32],
        first: Decoded,
    ) -> Result<Decoded, DecodeError> {
        let o = self.options.clone();
        let (good, repeats) = self.judge(model, &first);
        if good {
            return Ok(first);
        }
        let mut tried = vec![(first, repeats)];
        for &temperature in o.temperatures.iter().skip(1) {
            let decoded = self.search(model, cross, language, prompt, &[], temperature)?;
            let (good, repeats) = self.judge(model, &decoded);
            if good {
                return Ok(decoded);
            }
            tried.push((decoded, repeats));
        }
        let any_unrepeated = tried.iter().any(|(_, repeats)| !repeats);
        let best = tried
            .into_iter()
            .filter(|(_, repeats)| !any_unrepeated || !repeats)
            .map(|(d, _)| d)
            .max_by(|a, b| a.avg_logprob().total_cmp(&b.avg_logprob()));
        best.ok_or(DecodeError::NothingDecoded)
    }

    /// Whisper now and then stops before the end of the speech in its window (a habit learnt from
    /// 30 s training windows whose last sentence was cut). Windows here end at pauses, so text
    /// that ends well before the window does has left speech out: decode again from the last
    /// timestamp, with what was decoded as prompt, and keep what comes with confidence.
    pub(super) fn decode_uncovered_tail(
        &mut self,
        model: &Model,
        cross: &CrossCache,
        language: Option<&str>,
        prompt: &[u32],
        decoded: &mut Decoded,
        content_seconds: f64,
    ) {
        let tok = &model.tokenizer;
        let keep = model.dims.max_text_positions / 2 - 1;
        for _ in 0..MAX_TAIL_PASSES {
            let Some(&last) = decoded.tokens.last().filter(|&&t| tok.is_timestamp(t)) else {
                return;
            };
            let covered = (last - tok.timestamp_begin) as f64 * SECONDS_PER_TIMESTAMP;
            if content_seconds - covered < UNCOVERED_TAIL_SECONDS {
                return;
            }
            let mut context: Vec<u32> = prompt.iter().chain(&decoded.tokens).copied().collect();
            context.drain(..context.len().saturating_sub(keep));
            let Ok(more) = self.search(model, cross, language, &context, &[last], 0.0) else {
                return;
            };
            let texts = more.tokens.iter().filter(|&&t| t < tok.eot).count();
            if texts == 0 || more.avg_logprob() < self.options.logprob_threshold {
                return;
            }
            // The forced first timestamp is already the last of `decoded`.
            decoded.tokens.extend_from_slice(&more.tokens[1..]);
            decoded.token_logprobs.extend_from_slice(&more.token_logprobs[1..]);
            decoded.sum_logprob += more.sum_logprob;
        }
    }
}

/// The most likely language token after `<|startoftranscript|>`.
pub(super) fn detect_language(model: &Model, cross: &CrossCache) -> Option<String> {
    let tok = &model.tokenizer;
    let mut seq = model.sequence(cross).ok()?;
    let logits = model.step(&mut seq, &[tok.sot], &[0]).ok()?;
    let (code, _) = tok
        .languages
        .iter()
        .max_by(|a, b| logits[a.1 as usize].total_cmp(&logits[b.1 as usize]))?;
    Some(code.clone())
}
