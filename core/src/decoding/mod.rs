//! Decoding policy: greedy search with Whisper's timestamp rules, language detection,
//! splitting the tokens into timed segments. Knows nothing of GStreamer.

pub mod alignment;
#[cfg(test)]
mod policy_tests;
mod rules;
pub mod stream;

use std::sync::Arc;

use npuwhisper_kernels::ops::{log_softmax, softmax};

use crate::backend::{BackendError, CrossCache, Sequence, StepInput};
use crate::model::{Model, SECONDS_PER_TIMESTAMP};
pub use alignment::WordTiming;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    #[default]
    Transcribe,
    Translate,
}

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Language code ("en", "de", ...); `None` detects it per window (multilingual models only).
    pub language: Option<String>,
    pub task: Task,
    /// Feed the previous window's text as prompt.
    pub condition_on_previous_text: bool,
    /// Text given as if it had been said before the first window: names, spelling, style.
    pub initial_prompt: Option<String>,
    /// Hypotheses kept by beam search at temperature 0; 1 is greedy.
    pub beam_size: usize,
    /// Samples drawn at each temperature above 0; the likeliest is kept.
    pub best_of: usize,
    /// Temperatures tried in turn while a window's text looks wrong (Whisper: 0.0, 0.2, … 1.0).
    /// Only the first is tried when empty or of length one.
    pub temperatures: Vec<f32>,
    /// Text that gzip compresses better than this is a loop of repeats: decode again hotter.
    pub compression_ratio_threshold: f32,
    /// A window whose no-speech probability is above this and whose average log-probability is
    /// below `logprob_threshold` is taken as silence.
    pub no_speech_threshold: f32,
    /// Text whose average log-probability is below this is decoded again hotter.
    pub logprob_threshold: f32,
    /// Time every word by cross-attention alignment, and cut segments into phrases at
    /// punctuation and pauses, so that each piece of text starts where it is spoken.
    pub word_timestamps: bool,
}

/// Whisper's fallback temperatures.
pub const FALLBACK_TEMPERATURES: [f32; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];

impl DecodeOptions {
    /// Whisper's silence rule: likely no speech, and the text decoded is unlikely too.
    fn is_silence(&self, no_speech_prob: f32, avg_logprob: f32) -> bool {
        no_speech_prob > self.no_speech_threshold && avg_logprob < self.logprob_threshold
    }
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            language: None,
            task: Task::Transcribe,
            condition_on_previous_text: true,
            initial_prompt: None,
            beam_size: 1,
            best_of: 5,
            temperatures: FALLBACK_TEMPERATURES.to_vec(),
            compression_ratio_threshold: 2.4,
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
            word_timestamps: true,
        }
    }
}

/// Why a window could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// The backend failed.
    Backend(BackendError),
    /// A language the model has no token for.
    UnknownLanguage(String),
    /// No temperature gave a result (no temperatures, or no sample).
    NothingDecoded,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Backend(e) => write!(f, "{e}"),
            DecodeError::UnknownLanguage(code) => write!(f, "the model has no language {code:?}"),
            DecodeError::NothingDecoded => write!(f, "nothing decoded"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<BackendError> for DecodeError {
    fn from(e: BackendError) -> Self {
        DecodeError::Backend(e)
    }
}

/// One timed piece of text; times are seconds from the start of its window.
#[derive(Debug, Clone)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub avg_logprob: f32,
    /// The segment's words with their times, when word timestamps are on.
    pub words: Vec<WordTiming>,
}

#[derive(Debug, Clone, Default)]
pub struct WindowResult {
    /// Language the window was decoded in, if the model is multilingual.
    pub language: Option<String>,
    pub segments: Vec<Segment>,
    pub no_speech_prob: f32,
    pub avg_logprob: f32,
    /// Set when the window could not be decoded (its `segments` are then empty, but it was not
    /// silence): the caller reports it.
    pub error: Option<DecodeError>,
}

/// Most tokens sampled per window (Whisper: half the text context).
const SAMPLE_LEN: usize = 224;
/// Text ending this long before the window does is taken to have left speech out.
const UNCOVERED_TAIL_SECONDS: f64 = 1.5;
const MAX_TAIL_PASSES: usize = 2;
/// Text decoded this hot is too unsure to prompt the next window with (Whisper's rule).
const PROMPT_RESET_TEMPERATURE: f32 = 0.5;
/// Windows hold no pause longer than 2 s (the windower ends a window there) and start within
/// about 1 s of speech: text that leaves a longer stretch uncovered has skipped speech.
const UNCOVERED_RETRY_SECONDS: f64 = 3.0;

/// Speech runs at 10 to 20 characters a second: a segment this much slower has its
/// timestamps stretched over speech it left out.
const SPARSE_CHARS_PER_SECOND: f64 = 4.0;

/// Longest stretch of a window (content of `content_seconds`) that no segment covers, or that
/// a segment spans with too few characters to have said what was spoken there.
fn longest_uncovered(segments: &[Segment], content_seconds: f64) -> f64 {
    let mut longest: f64 = 0.0;
    let mut covered_to: f64 = 0.0;
    for s in segments {
        longest = longest.max(s.start - covered_to);
        let duration = s.end - s.start;
        if duration > UNCOVERED_RETRY_SECONDS
            && (s.text.trim().chars().count() as f64) < SPARSE_CHARS_PER_SECOND * duration
        {
            longest = longest.max(duration);
        }
        covered_to = covered_to.max(s.end);
    }
    longest.max(content_seconds - covered_to)
}

/// Decodes windows one after another, keeping the previous text as prompt.
pub struct Transcriber {
    model: Arc<Model>,
    options: DecodeOptions,
    prompt: Vec<u32>,
    initial_prompt: Vec<u32>,
    rng: fastrand::Rng,
}

/// One search's outcome over a window.
struct Decoded {
    sot_sequence: Vec<u32>,
    tokens: Vec<u32>,
    /// Log-probability of each of `tokens` when sampled (0 for forced ones).
    token_logprobs: Vec<f32>,
    sum_logprob: f32,
    no_speech_prob: f32,
    temperature: f32,
}

impl Decoded {
    /// Whisper's average: the end-of-text token counts as one more.
    fn avg_logprob(&self) -> f32 {
        self.sum_logprob / (self.tokens.len() + 1) as f32
    }
}

/// A search's result for one window: the sampled tokens, without the decoder cache.
struct Found {
    tokens: Vec<u32>,
    token_logprobs: Vec<f32>,
    sum_logprob: f32,
}

impl Found {
    fn of(h: &Hypothesis) -> Found {
        Found {
            tokens: h.tokens.clone(),
            token_logprobs: h.token_logprobs.clone(),
            sum_logprob: h.sum_logprob,
        }
    }

    /// Whisper's ranking: log-probability per token, end-of-text included.
    fn score(&self) -> f32 {
        self.sum_logprob / (self.tokens.len() + 1) as f32
    }
}

/// A window to search: its cross cache and language.
struct SearchJob<'a> {
    cross: &'a CrossCache,
    language: Option<&'a str>,
}

/// The tokens a search starts from over one window.
struct SearchStart {
    /// `<|startoftranscript|>`, language and task.
    sot_sequence: Vec<u32>,
    /// The previous text (if any), the sot sequence and the forced prefix.
    initial: Vec<u32>,
    /// Where the sot sequence starts in `initial` (its logits give the no-speech probability).
    sot_index: usize,
}

/// A hypothesis in a search: its cache, its sampled tokens and their summed log-probability.
#[derive(Clone)]
struct Hypothesis {
    seq: Sequence,
    tokens: Vec<u32>,
    token_logprobs: Vec<f32>,
    sum_logprob: f32,
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
        // On the kernels' pool as a whole: a token step calls some 50 kernels, and each one's
        // hand-off from another thread (wake a worker, block, be woken) cost the decoder 15 %.
        npuwhisper_kernels::pool::install(|| self.transcribe_batch_on_pool(windows))
    }

    fn transcribe_batch_on_pool(&mut self, windows: &[(&[f32], f64)]) -> Vec<WindowResult> {
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
        for (((cross, language), first), &(_, content_seconds)) in crosses.iter().zip(languages).zip(first).zip(windows)
        {
            let decoded = cross.as_ref().map_err(Clone::clone).and_then(|cross| {
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
            self.prompt.extend(carried);
            let keep = model.dims.max_text_positions / 2 - 1;
            if self.prompt.len() > keep {
                self.prompt.drain(..self.prompt.len() - keep);
            }
        }
        results
    }

    /// The window's language: the one asked for, else detected (multilingual models only).
    fn window_language(&self, model: &Model, cross: &CrossCache) -> Option<String> {
        if !model.is_multilingual() {
            return None;
        }
        Some(match &self.options.language {
            Some(code) if model.tokenizer.language_token(code).is_some() => code.clone(),
            _ => detect_language(model, cross).unwrap_or_else(|| "en".into()),
        })
    }

    /// Silence check, the uncovered tail, segments and word alignment of a decoded window.
    fn finish_window(
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
    fn decode_unprompted(
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

    /// Decodes a window that will be sent again with more audio (a live pass): its text does
    /// not become the prompt, and it is not decoded again hotter (the next pass is the retry).
    pub fn transcribe_provisional(&mut self, states: &[f32], content_seconds: f64) -> WindowResult {
        let prompt = self.prompt.clone();
        let first = self.options.temperatures.first().copied().unwrap_or(0.0);
        let temperatures = std::mem::replace(&mut self.options.temperatures, vec![first]);
        let result = self.transcribe(states, content_seconds);
        self.prompt = prompt;
        self.options.temperatures = temperatures;
        result
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
    fn decode_with_fallback(
        &mut self,
        model: &Model,
        cross: &CrossCache,
        language: Option<&str>,
        prompt: &[u32],
        first: Decoded,
    ) -> Result<Decoded, DecodeError> {
        let o = self.options.clone();
        let judge = |d: &Decoded| {
            let avg = d.avg_logprob();
            let repeats = compression_ratio(&model.tokenizer.decode(&text_only(model, &d.tokens)))
                > o.compression_ratio_threshold;
            let silence = o.is_silence(d.no_speech_prob, avg);
            (silence || (!repeats && avg >= o.logprob_threshold), repeats)
        };
        let (good, repeats) = judge(&first);
        if good {
            return Ok(first);
        }
        let mut tried = vec![(first, repeats)];
        for &temperature in o.temperatures.iter().skip(1) {
            let decoded = self.search(model, cross, language, prompt, &[], temperature)?;
            let (good, repeats) = judge(&decoded);
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
    fn decode_uncovered_tail(
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

    /// One search over a window after `prompt` (previous text), with `prefix` forced as the first
    /// tokens: beam search at temperature 0 when `beam_size` > 1, else greedy; at a temperature
    /// above 0, `best_of` samples of which the likeliest wins.
    fn search(
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
    fn search_many(
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
                    beam_search(model, root.clone(), logits.clone(), self.options.beam_size).map_err(DecodeError::from)
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
            match sample(model, starts, temperature, &mut self.rng) {
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
fn step(model: &Model, hyps: &mut [&mut Hypothesis]) -> Result<Vec<Vec<f32>>, BackendError> {
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
fn sample(
    model: &Model,
    starts: Vec<(Hypothesis, Vec<f32>)>,
    temperature: f32,
    rng: &mut fastrand::Rng,
) -> Result<Vec<Hypothesis>, BackendError> {
    let eot = model.tokenizer.eot;
    let rules = rules::Rules::new(model);
    let n = starts.len();
    let (mut hyps, mut logits): (Vec<Hypothesis>, Vec<Vec<f32>>) = starts.into_iter().unzip();
    let mut done = vec![false; n];
    let (mut logprobs, mut probs) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLE_LEN {
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
fn beam_search(model: &Model, root: Hypothesis, logits: Vec<f32>, beam: usize) -> Result<Found, BackendError> {
    let eot = model.tokenizer.eot;
    let rules = rules::Rules::new(model);
    let mut beams = vec![root];
    let mut beam_logits = vec![logits];
    let mut finished: Vec<Found> = Vec::new();
    let mut logprobs = Vec::new();
    for _ in 0..SAMPLE_LEN {
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
fn top_k(v: &[f32], k: usize) -> Vec<u32> {
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
fn draw(probs: &[f32], u: f32) -> u32 {
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

/// The text tokens of a sampled sequence (no timestamps, no specials).
fn text_only(model: &Model, tokens: &[u32]) -> Vec<u32> {
    tokens.iter().copied().filter(|&t| t < model.tokenizer.eot).collect()
}

/// Whisper's repetition measure: text bytes over zlib-compressed bytes.
pub fn compression_ratio(text: &str) -> f32 {
    use std::io::Write;
    if text.is_empty() {
        return 0.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(text.as_bytes()).expect("writing to memory");
    let compressed = z.finish().expect("writing to memory");
    text.len() as f32 / compressed.len() as f32
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The most likely language token after `<|startoftranscript|>`.
fn detect_language(model: &Model, cross: &CrossCache) -> Option<String> {
    let tok = &model.tokenizer;
    let mut seq = model.sequence(cross).ok()?;
    let logits = model.step(&mut seq, &[tok.sot], &[0]).ok()?;
    let &(ref code, _) = tok
        .languages
        .iter()
        .max_by(|a, b| logits[a.1 as usize].total_cmp(&logits[b.1 as usize]))?;
    Some(code.clone())
}

/// Cuts sampled tokens into segments at timestamp tokens; text after the last timestamp runs to
/// the end of the content. Segments that start after the content ends are dropped (they are
/// invented over the padding).
fn split_segments(model: &Model, tokens: &[u32], content_seconds: f64, avg_logprob: f32) -> Vec<Segment> {
    let tok = &model.tokenizer;
    let mut segments = Vec::new();
    let mut start = 0.0;
    let mut text: Vec<u32> = Vec::new();
    let mut push = |start: f64, end: f64, text: &mut Vec<u32>| {
        let s = tok.decode(text);
        let tokens = std::mem::take(text);
        let start = start.min(content_seconds);
        if !s.trim().is_empty() && start < content_seconds {
            let end = end.clamp(start, content_seconds);
            // Until words are aligned, the segment is one "word" holding all its tokens.
            let words = vec![WordTiming {
                text: s.clone(),
                tokens,
                start,
                end,
                probability: 1.0,
            }];
            segments.push(Segment {
                start,
                end,
                text: s,
                avg_logprob,
                words,
            });
        }
    };
    for &t in tokens {
        if tok.is_timestamp(t) {
            let time = (t - tok.timestamp_begin) as f64 * SECONDS_PER_TIMESTAMP;
            if text.is_empty() {
                start = time;
            } else {
                push(start, time, &mut text);
                start = time;
            }
        } else if t < tok.eot {
            text.push(t);
        }
    }
    if !text.is_empty() {
        push(start, content_seconds, &mut text);
    }
    segments
}

/// Replaces each segment's placeholder word by its aligned words (taken in order, by token count),
/// and its start and end by theirs.
fn attach_words(segments: Vec<Segment>, words: Vec<WordTiming>) -> Vec<Segment> {
    let mut words = words.into_iter().peekable();
    segments
        .into_iter()
        .map(|mut seg| {
            let mut need = seg.words[0].tokens.len();
            let mut mine = Vec::new();
            while need > 0 {
                let Some(w) = words.next() else { break };
                need = need.saturating_sub(w.tokens.len());
                mine.push(w);
            }
            if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
                seg.start = first.start;
                seg.end = last.end.max(first.start);
                seg.words = mine;
            }
            seg
        })
        .collect()
}

/// Whisper's remedy for words that swallow a pause, music or noise next to them (`timing.py`): a
/// segment's first word, or one after a sentence end, starts at most twice the median word
/// length before it ends; a word ending a sentence ends at most that long after it starts.
fn clamp_long_words(segments: &mut [Segment]) {
    let mut durations: Vec<f64> = segments
        .iter()
        .flat_map(|s| &s.words)
        .map(|w| w.end - w.start)
        .filter(|&d| d > 0.0)
        .collect();
    if durations.is_empty() {
        return;
    }
    durations.sort_by(f64::total_cmp);
    let max_duration = 2.0 * durations[durations.len() / 2].min(0.7);
    let ends_sentence = |w: &WordTiming| w.text.trim_end().ends_with(['.', '!', '?']);
    for seg in segments.iter_mut() {
        let mut after_sentence_end = true;
        for w in &mut seg.words {
            if w.end - w.start > max_duration {
                if after_sentence_end {
                    w.start = w.end - max_duration;
                } else if ends_sentence(w) {
                    w.end = w.start + max_duration;
                }
            }
            after_sentence_end = ends_sentence(w);
        }
        if let (Some(first), Some(last)) = (seg.words.first(), seg.words.last()) {
            seg.start = first.start;
            seg.end = last.end.max(first.start);
        }
    }
}

/// Gives each word the mean probability of its tokens (words hold the text tokens in order).
fn set_word_probabilities(model: &Model, decoded: &Decoded, segments: &mut [Segment]) {
    let eot = model.tokenizer.eot;
    let mut text_logprobs = decoded
        .tokens
        .iter()
        .zip(&decoded.token_logprobs)
        .filter(|(&t, _)| t < eot)
        .map(|(_, &lp)| lp);
    for w in segments.iter_mut().flat_map(|s| s.words.iter_mut()) {
        let probs: Vec<f32> = text_logprobs.by_ref().take(w.tokens.len()).map(f32::exp).collect();
        if !probs.is_empty() {
            w.probability = probs.iter().sum::<f32>() / probs.len() as f32;
        }
    }
}

/// Whisper's anomaly score of a segment (`transcribe.py`): its first eight words score for being
/// unlikely, implausibly short, or far too long (text spread over music or noise). Whisper only
/// acts on it next to silence; here a segment goes when its words score 1 on average (every word
/// suspect). Whisper's other trigger, a total of 3, also fires on real speech whose alignment
/// squeezed two words to 20 ms.
/// Text that is no word of any language: a letter held five times or more ("Aaaaahhhh",
/// what Whisper writes for noise) or a 40-character run without a space.
fn has_non_word(text: &str) -> bool {
    text.split_whitespace().any(|token| {
        let mut run = 0;
        let mut prev = None;
        for c in token.chars().flat_map(char::to_lowercase) {
            run = if c.is_alphabetic() && prev == Some(c) {
                run + 1
            } else {
                1
            };
            if run >= 5 {
                return true;
            }
            prev = Some(c);
        }
        token.chars().count() >= 40
    })
}

fn is_hallucination(seg: &Segment) -> bool {
    let words: Vec<&WordTiming> = seg
        .words
        .iter()
        .filter(|w| !w.text.trim().chars().all(|c| c.is_ascii_punctuation()))
        .take(8)
        .collect();
    if words.is_empty() {
        return false;
    }
    let score: f64 = words
        .iter()
        .map(|w| {
            let duration = w.end - w.start;
            let mut score = if w.probability < 0.15 { 1.0 } else { 0.0 };
            if duration < 0.133 {
                score += (0.133 - duration) * 15.0;
            }
            if duration > 2.0 {
                score += duration - 2.0;
            }
            score
        })
        .sum();
    score + 0.01 >= words.len() as f64
}

/// A word lasting longer than this has swallowed a pause.
const PAUSE_WORD_SECONDS: f64 = 1.0;

/// Cuts segments into phrases after words that end a clause (punctuation) or hold a pause, so
/// every phrase starts where it is spoken.
fn phrases(segments: Vec<Segment>) -> Vec<Segment> {
    let mut out = Vec::new();
    for seg in segments {
        let mut current: Vec<WordTiming> = Vec::new();
        let flush = |current: &mut Vec<WordTiming>, out: &mut Vec<Segment>| {
            if let (Some(first), Some(last)) = (current.first(), current.last()) {
                let text: String = current.iter().map(|w| w.text.as_str()).collect();
                out.push(Segment {
                    start: first.start,
                    end: last.end.max(first.start),
                    text,
                    avg_logprob: seg.avg_logprob,
                    words: std::mem::take(current),
                });
            }
        };
        for w in &seg.words {
            current.push(w.clone());
            let ends_clause = w.text.trim_end().ends_with(['.', ',', ';', ':', '?', '!']);
            if ends_clause || w.end - w.start > PAUSE_WORD_SECONDS {
                flush(&mut current, &mut out);
            }
        }
        flush(&mut current, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_ratio_flags_loops() {
        let normal = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
        let looped = "Thank you for watching. ".repeat(12);
        assert!(compression_ratio(normal) < 2.4, "{}", compression_ratio(normal));
        assert!(compression_ratio(&looped) > 2.4, "{}", compression_ratio(&looped));
        assert_eq!(compression_ratio(""), 0.0);
    }

    #[test]
    fn top_k_is_largest_first_and_skips_masked() {
        let v = [0.1, f32::NEG_INFINITY, 3.0, -1.0, 2.0, 3.0];
        assert_eq!(top_k(&v, 3), vec![2, 5, 4]);
        assert_eq!(top_k(&[f32::NEG_INFINITY, 1.0], 3), vec![1]);
    }

    #[test]
    fn draw_follows_the_distribution() {
        let p = [0.0, 0.25, 0.0, 0.75];
        assert_eq!(draw(&p, 0.0), 1);
        assert_eq!(draw(&p, 0.2499), 1);
        assert_eq!(draw(&p, 0.25), 3);
        assert_eq!(draw(&p, 0.99999), 3);
        let mut rng = fastrand::Rng::with_seed(1);
        let hits = (0..10_000).filter(|_| draw(&p, rng.f32()) == 3).count();
        assert!((7_000..8_000).contains(&hits), "{hits}");
    }

    fn word(text: &str, start: f64, end: f64, probability: f32) -> WordTiming {
        WordTiming {
            text: text.into(),
            tokens: vec![1],
            start,
            end,
            probability,
        }
    }

    fn segment(words: Vec<WordTiming>) -> Segment {
        Segment {
            start: words[0].start,
            end: words.last().unwrap().end,
            text: String::new(),
            avg_logprob: -0.2,
            words,
        }
    }

    #[test]
    fn uncovered_speech_is_measured() {
        let seg = |start: f64, end: f64, text: &str| Segment {
            start,
            end,
            text: text.into(),
            avg_logprob: 0.0,
            words: Vec::new(),
        };
        let full = [
            seg(0.3, 4.0, "And so my fellow Americans, ask not"),
            seg(4.2, 8.0, "what your country can do for you."),
        ];
        assert!((longest_uncovered(&full, 9.0) - 1.0).abs() < 1e-9);
        // Nothing from 4 to 9.5 s: the last 5.5 s are uncovered.
        assert!((longest_uncovered(&full[..1], 9.5) - 5.5).abs() < 1e-9);
        // Two words over 8 s: timestamps stretched over left-out speech.
        let sparse = [seg(0.0, 8.0, "Printing then."), seg(8.0, 9.0, "Yes.")];
        assert!((longest_uncovered(&sparse, 9.0) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn non_words_are_found() {
        assert!(has_non_word("Aaaaahhhhhhhhhhhh"));
        assert!(has_non_word("so ZZZZZ."));
        assert!(has_non_word(&"ha".repeat(20)));
        assert!(!has_non_word("Mississippi, a bookkeeper's 1000000 www."));
        assert!(!has_non_word("Äußerst schöne Straße"));
    }

    #[test]
    fn hallucination_needs_every_word_suspect() {
        let speech = segment(vec![
            word(" Printing", 0.0, 0.4, 0.8),
            word(" for", 1.2, 1.2, 0.99),
            word(" may", 2.6, 2.64, 0.7),
            word(" be", 2.64, 2.98, 0.99),
        ]);
        assert!(!is_hallucination(&speech));
        let over_music = segment(vec![word(" Maybe", 9.7, 17.3, 0.11)]);
        assert!(is_hallucination(&over_music));
        let squeezed_repeat = segment((0..10).map(|_| word(" art", 5.2, 5.2, 0.99)).collect());
        assert!(is_hallucination(&squeezed_repeat));
    }

    #[test]
    fn long_first_words_are_clamped() {
        let mut segs = vec![segment(vec![
            word(" Printing,", 0.0, 7.0, 0.5),
            word(" in", 7.0, 7.1, 0.9),
            word(" the", 7.1, 7.4, 0.9),
            word(" end.", 7.4, 12.0, 0.9),
        ])];
        clamp_long_words(&mut segs);
        let w = &segs[0].words;
        // Median word 4.6 s, capped at 0.7 s: words may last 1.4 s.
        assert!((w[0].start - 5.6).abs() < 1e-9 && w[0].end == 7.0, "{:?}", w[0]);
        assert!((w[3].end - 8.8).abs() < 1e-9, "{:?}", w[3]);
        assert_eq!((segs[0].start, segs[0].end), (w[0].start, w[3].end));
    }
}
