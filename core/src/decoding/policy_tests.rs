//! The decoding policy against a scripted backend, with no model file: each window's searches
//! get, in turn, the token sequences its script lists (a peaked logit on the scripted token),
//! so fallback, timestamp rules, silence, segments and failures can be checked exactly.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{DecodeError, DecodeOptions, Transcriber};
use crate::backend::{
    AlignmentRequest, Backend, BackendError, BackendKind, CrossCache, Sequence, SequenceCache, StepInput, StepOutput,
};
use crate::model::tokenizer::Tokenizer;
use crate::model::{Config, Dims, Model, ENCODER_FRAMES};

const TEXT: [&str; 5] = ["Ġa", "Ġhello", "Ġworld", "Ġhi", "Ġthere"];
const SPECIALS: [&str; 9] = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
];
const D: usize = 4;

fn tokenizer() -> Tokenizer {
    let mut lines: Vec<String> = TEXT.iter().chain(&SPECIALS).map(|s| s.to_string()).collect();
    lines.extend((0..=1500).map(|k| format!("<|{:.2}|>", k as f64 * 0.02)));
    Tokenizer::new(&lines.join("\n"), &[]).expect("the scripted vocabulary is valid")
}

/// One search's script: the tokens to sample (after the sot sequence) and how sure of them.
#[derive(Clone)]
struct Attempt {
    tokens: Vec<u32>,
    /// Logit of the scripted token; every other token has 0.
    confidence: f32,
    /// Logit of `<|nospeech|>` at `<|startoftranscript|>`.
    no_speech: f32,
}

struct Script {
    /// Per window (the first state value), its searches' attempts; the last repeats.
    windows: HashMap<u32, Vec<Attempt>>,
    /// Windows whose decoder step fails.
    failing: Vec<u32>,
}

impl Attempt {
    /// Text the model is sure of, over speech.
    fn confident(tokens: Vec<u32>) -> Self {
        Attempt {
            tokens,
            confidence: 10.0,
            no_speech: 0.0,
        }
    }
}

impl Script {
    /// One window's attempts, and no failing step.
    fn window(id: u32, attempts: Vec<Attempt>) -> Self {
        Script {
            windows: HashMap::from([(id, attempts)]),
            failing: vec![],
        }
    }
}

struct Fake {
    script: Script,
    vocab: usize,
    sot: u32,
    no_speech: u32,
    /// Searches started per window.
    searches: Arc<Mutex<HashMap<u32, usize>>>,
    /// Tokens before `<|startoftranscript|>` (the prompt) in each search's first step.
    prompts: Arc<Mutex<Vec<usize>>>,
}

struct FakeCross(u32);

#[derive(Clone)]
struct FakeSeq {
    window: u32,
    attempt: usize,
    tokens: Vec<u32>,
}

impl SequenceCache for FakeSeq {
    fn len(&self) -> usize {
        self.tokens.len()
    }
    fn remaining(&self) -> usize {
        448 - self.tokens.len()
    }
    fn reset(&mut self) {
        self.tokens.clear();
    }
    fn fork(&self) -> Box<dyn SequenceCache> {
        Box::new(self.clone())
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Fake {
    fn row(&self, seq: &FakeSeq, context: &[u32]) -> Vec<f32> {
        let attempts = &self.script.windows[&seq.window];
        let a = &attempts[seq.attempt.min(attempts.len() - 1)];
        let sot_at = context.iter().rposition(|&t| t == self.sot).expect("a sot sequence");
        let generated = context.len() - sot_at - 1;
        let mut logits = vec![0f32; self.vocab];
        if let Some(&next) = a.tokens.get(generated) {
            logits[next as usize] = a.confidence;
        }
        if generated == 0 {
            logits[self.no_speech as usize] = a.no_speech;
        }
        logits
    }
}

impl Backend for Fake {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn encode(&self, _: &[&[f32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        unreachable!("decoding never encodes")
    }

    fn cross_cache(&self, states: &[f32]) -> Result<CrossCache, BackendError> {
        Ok(CrossCache::new(Arc::new(FakeCross(states[0] as u32))))
    }

    fn sequence(&self, cross: &CrossCache) -> Result<Sequence, BackendError> {
        let window = cross.downcast::<FakeCross>().ok_or(BackendError::ForeignCache)?.0;
        let mut searches = self.searches.lock().unwrap();
        let attempt = searches.entry(window).or_default();
        *attempt += 1;
        Ok(Sequence::new(Box::new(FakeSeq {
            window,
            attempt: *attempt - 1,
            tokens: Vec::new(),
        })))
    }

    fn decode(
        &self,
        seqs: &mut [&mut Sequence],
        inputs: &[StepInput<'_>],
        alignment: Option<AlignmentRequest<'_>>,
    ) -> Result<StepOutput, BackendError> {
        assert!(alignment.is_none(), "word timestamps are off in these tests");
        let mut logits = Vec::new();
        for (seq, input) in seqs.iter_mut().zip(inputs) {
            let seq = seq.downcast_mut::<FakeSeq>().ok_or(BackendError::ForeignCache)?;
            if self.script.failing.contains(&seq.window) {
                return Err(BackendError::Failed("scripted failure".into()));
            }
            if seq.tokens.is_empty() {
                let before_sot = input.tokens.iter().position(|&t| t == self.sot).unwrap_or(0);
                self.prompts.lock().unwrap().push(before_sot);
            }
            for &r in input.logits_at {
                let context: Vec<u32> = seq.tokens.iter().chain(&input.tokens[..=r]).copied().collect();
                logits.extend(self.row(seq, &context));
            }
            seq.tokens.extend_from_slice(input.tokens);
        }
        Ok(StepOutput {
            logits,
            attention: Vec::new(),
        })
    }
}

struct Setup {
    transcriber: Transcriber,
    searches: Arc<Mutex<HashMap<u32, usize>>>,
    prompts: Arc<Mutex<Vec<usize>>>,
}

impl Setup {
    fn searches(&self, window: u32) -> usize {
        self.searches.lock().unwrap().get(&window).copied().unwrap_or(0)
    }
}

fn setup(script: Script, options: DecodeOptions) -> Setup {
    let tok = tokenizer();
    let searches = Arc::new(Mutex::new(HashMap::new()));
    let prompts = Arc::new(Mutex::new(Vec::new()));
    let fake = Box::new(Fake {
        vocab: tok.vocab_size(),
        sot: tok.sot,
        no_speech: tok.no_speech.expect("scripted vocabulary has <|nospeech|>"),
        script,
        searches: Arc::clone(&searches),
        prompts: Arc::clone(&prompts),
    });
    let dims = Dims {
        n_mels: 80,
        d_model: D,
        n_heads: 1,
        encoder_layers: 1,
        decoder_layers: 1,
        vocab_size: tok.vocab_size(),
        max_text_positions: 448,
    };
    let model = Arc::new(Model::from_parts(dims, Config::default(), tok, fake));
    Setup {
        transcriber: Transcriber::new(model, options),
        searches,
        prompts,
    }
}

fn states(window: u32) -> Vec<f32> {
    let mut s = vec![0f32; ENCODER_FRAMES * D];
    s[0] = window as f32;
    s
}

fn ts(tok: &Tokenizer, seconds: f64) -> u32 {
    tok.timestamp_begin + (seconds / 0.02).round() as u32
}

fn text(tok: &Tokenizer, t: &str) -> u32 {
    tok.token_id(t).expect("a scripted token")
}

/// Greedy text that repeats itself (compression ratio far over 2.4), over 1.9 s.
fn looping(tok: &Tokenizer) -> Vec<u32> {
    let mut t = vec![ts(tok, 0.0)];
    t.extend(std::iter::repeat_n(text(tok, "Ġa"), 60));
    t.extend([ts(tok, 1.9), tok.eot]);
    t
}

fn options() -> DecodeOptions {
    DecodeOptions {
        word_timestamps: false,
        ..Default::default()
    }
}

#[test]
fn greedy_text_becomes_timed_segments() {
    let tok = tokenizer();
    let hello = vec![
        ts(&tok, 0.0),
        text(&tok, "Ġhello"),
        text(&tok, "Ġworld"),
        ts(&tok, 1.0),
        ts(&tok, 1.0),
        text(&tok, "Ġhi"),
        ts(&tok, 1.8),
        tok.eot,
    ];
    let script = Script::window(1, vec![Attempt::confident(hello)]);
    let mut s = setup(script, options());
    let r = s.transcriber.transcribe(&states(1), 2.0);
    assert_eq!(r.error, None);
    let got: Vec<(f64, f64, &str)> = r.segments.iter().map(|g| (g.start, g.end, g.text.as_str())).collect();
    assert_eq!(got, vec![(0.0, 1.0, " hello world"), (1.0, 1.8, " hi")]);
    assert_eq!(s.searches(1), 1, "confident text is not decoded again");
}

#[test]
fn repeated_text_falls_back_to_a_higher_temperature() {
    let tok = tokenizer();
    let loop_text = looping(&tok);
    let good = vec![
        ts(&tok, 0.0),
        text(&tok, "Ġhello"),
        text(&tok, "Ġworld"),
        ts(&tok, 1.9),
        tok.eot,
    ];
    let script = Script::window(7, vec![Attempt::confident(loop_text), Attempt::confident(good)]);
    let mut s = setup(script, options());
    let r = s.transcriber.transcribe(&states(7), 2.0);
    let texts: Vec<&str> = r.segments.iter().map(|g| g.text.as_str()).collect();
    assert_eq!(texts, vec![" hello world"]);
    assert_eq!(s.searches(7), 2, "greedy, then one search at 0.2");
}

/// On live streams a window that loops stops at its token budget (16 + 10 a second of audio)
/// instead of Whisper's 224: the next pass is not held up by a second of looping.
#[test]
fn a_looping_window_stops_at_its_token_budget() {
    let tok = tokenizer();
    let mut looping = vec![ts(&tok, 0.0)];
    looping.extend(std::iter::repeat_n(text(&tok, "Ġa"), 400));
    let words = |limit: Option<f32>| {
        let script = Script::window(3, vec![Attempt::confident(looping.clone())]);
        let mut s = setup(
            script,
            DecodeOptions {
                temperatures: vec![0.0],
                ..options()
            },
        );
        if let Some(rate) = limit {
            s.transcriber.limit_tokens_per_second(rate);
        }
        let r = s.transcriber.transcribe(&states(3), 2.0);
        r.segments
            .iter()
            .map(|g| g.text.split_whitespace().count())
            .sum::<usize>()
    };
    let (unbounded, bounded) = (words(None), words(Some(10.0)));
    assert!(unbounded > 200, "Whisper's bound: {unbounded} words");
    assert!((30..=36).contains(&bounded), "16 + 10 x 2 s tokens: {bounded} words");
}

/// A live pass is prompted with the last 64 tokens of the previous text, a complete window
/// with all of it (up to 223), and a pass leaves the prompt as it was.
#[test]
fn a_pass_is_prompted_with_the_recent_text_only() {
    let tok = tokenizer();
    let good = vec![ts(&tok, 0.0), text(&tok, "Ġhello"), ts(&tok, 1.0), tok.eot];
    let mut s = setup(Script::window(4, vec![Attempt::confident(good)]), options());
    let previous: Vec<u32> = (0..200).map(|i| text(&tok, TEXT[i % TEXT.len()])).collect();
    s.transcriber.prompt = previous.clone();
    s.transcriber.transcribe_provisional(&states(4), 1.0);
    assert_eq!(s.transcriber.prompt, previous, "a pass does not change the prompt");
    s.transcriber.transcribe(&states(4), 1.0);
    // <|startofprev|> and the prompt.
    assert_eq!(*s.prompts.lock().unwrap(), vec![1 + 64, 1 + 200]);
}

#[test]
fn timestamps_never_go_back() {
    let tok = tokenizer();
    // The script asks for <|0.50|> after <|1.00|>: the rules forbid it, and the likeliest
    // allowed token is the first timestamp after 1.00.
    let back = vec![
        ts(&tok, 0.0),
        text(&tok, "Ġhi"),
        ts(&tok, 1.0),
        ts(&tok, 1.0),
        text(&tok, "Ġthere"),
        ts(&tok, 0.5),
        tok.eot,
    ];
    let script = Script::window(2, vec![Attempt::confident(back)]);
    let mut s = setup(
        script,
        DecodeOptions {
            temperatures: vec![0.0],
            ..options()
        },
    );
    let r = s.transcriber.transcribe(&states(2), 1.2);
    let got: Vec<(f64, f64, &str)> = r.segments.iter().map(|g| (g.start, g.end, g.text.as_str())).collect();
    assert_eq!(got, vec![(0.0, 1.0, " hi"), (1.0, 1.02, " there")]);
}

#[test]
fn unsure_text_over_likely_silence_is_silence_and_not_retried() {
    let tok = tokenizer();
    let mumble = vec![ts(&tok, 0.0), text(&tok, "Ġa"), ts(&tok, 1.0), tok.eot];
    let script = Script::window(
        3,
        vec![Attempt {
            tokens: mumble,
            confidence: 0.5,
            no_speech: 12.0,
        }],
    );
    let mut s = setup(script, options());
    let r = s.transcriber.transcribe(&states(3), 1.0);
    assert!(r.segments.is_empty() && r.error.is_none());
    assert!(r.no_speech_prob > 0.6, "no-speech probability {}", r.no_speech_prob);
    assert_eq!(s.searches(3), 1);
}

#[test]
fn a_failing_backend_is_an_error_not_silence() {
    let tok = tokenizer();
    let ok = vec![ts(&tok, 0.0), text(&tok, "Ġhi"), ts(&tok, 1.0), tok.eot];
    let script = Script {
        windows: HashMap::from([
            (4, vec![Attempt::confident(ok.clone())]),
            (5, vec![Attempt::confident(ok)]),
        ]),
        failing: vec![4],
    };
    let mut s = setup(script, options());
    let r = s.transcriber.transcribe(&states(4), 1.0);
    assert!(r.segments.is_empty());
    assert!(
        matches!(r.error, Some(DecodeError::Backend(BackendError::Failed(_)))),
        "{:?}",
        r.error
    );
    // The next window decodes.
    let r = s.transcriber.transcribe(&states(5), 1.0);
    assert_eq!(r.error, None);
    assert_eq!(r.segments.len(), 1);
}

/// A model over the scripted vocabulary; `multilingual` claims Whisper's multilingual
/// vocabulary size (the rule `is_multilingual` goes by), with `en` its one language.
fn bare_model(multilingual: bool) -> Model {
    let tok = tokenizer();
    let vocab_size = if multilingual { 51865 } else { tok.vocab_size() };
    let dims = Dims {
        n_mels: 80,
        d_model: D,
        n_heads: 1,
        encoder_layers: 1,
        decoder_layers: 1,
        vocab_size,
        max_text_positions: 448,
    };
    let script = Script {
        windows: HashMap::new(),
        failing: vec![],
    };
    let fake = Box::new(Fake {
        vocab: tok.vocab_size(),
        sot: tok.sot,
        no_speech: tok.no_speech.unwrap(),
        script,
        searches: Arc::default(),
        prompts: Arc::default(),
    });
    Model::from_parts(dims, Config::default(), tok, fake)
}

#[test]
fn languages_are_checked_against_the_model() {
    use super::{choose_language, IgnoredRequest, Task};
    let multi = bare_model(true);
    let chosen = |m: &Model, lang: &str, task| choose_language(m, lang, task);
    assert_eq!(
        chosen(&multi, " EN ", Task::Transcribe).unwrap().language.as_deref(),
        Some("en")
    );
    assert_eq!(chosen(&multi, "auto", Task::Translate).unwrap().language, None);
    assert_eq!(chosen(&multi, "", Task::Transcribe).unwrap().language, None);
    let err = chosen(&multi, "xx", Task::Transcribe).unwrap_err();
    assert_eq!(
        (err.requested.as_str(), err.known.clone()),
        ("xx", vec!["en".to_string()])
    );
    assert!(err.to_string().contains("one of: en"), "{err}");

    let english = bare_model(false);
    let c = chosen(&english, "de", Task::Translate).unwrap();
    assert_eq!(c.language, None);
    assert_eq!(
        c.ignored,
        vec![IgnoredRequest::Language("de".into()), IgnoredRequest::Translate]
    );
    assert!(chosen(&english, "en", Task::Transcribe).unwrap().ignored.is_empty());
}

/// Window `window`'s states over a fitted context: fewer than the full 1500 frames.
fn fitted_states(window: u32, frames: usize) -> Vec<f32> {
    let mut s = vec![0f32; frames * D];
    s[0] = window as f32;
    s
}

/// A fitted window whose greedy pass repeats itself is decoded from the full-context states
/// `refit` gives, before any hotter pass; one that decodes cleanly, and a full-context window
/// that loops, are not refitted (the latter falls back to a higher temperature as before).
#[test]
fn a_fitted_window_that_loops_is_decoded_again_from_the_full_context() {
    let tok = tokenizer();
    let loop_text = looping(&tok);
    let good = |word: &str| vec![ts(&tok, 0.0), text(&tok, word), ts(&tok, 1.9), tok.eot];
    let script = Script {
        windows: HashMap::from([
            // 5 fitted loops; 6 is its full context; 8 fitted is clean; 9 full loops, then not.
            (5, vec![Attempt::confident(loop_text.clone())]),
            (6, vec![Attempt::confident(good("Ġhello"))]),
            (8, vec![Attempt::confident(good("Ġworld"))]),
            (
                9,
                vec![Attempt::confident(loop_text), Attempt::confident(good("Ġthere"))],
            ),
        ]),
        failing: vec![],
    };
    let mut s = setup(script, options());
    let (w5, w8, w9) = (fitted_states(5, 640), fitted_states(8, 640), states(9));
    let asked = Mutex::new(Vec::new());
    let refit = |i: usize| {
        asked.lock().unwrap().push(i);
        Some(states(6))
    };
    let windows = [(w5.as_slice(), 2.0), (w8.as_slice(), 2.0), (w9.as_slice(), 2.0)];
    let results = s.transcriber.transcribe_batch_refit(&windows, &refit);
    let texts: Vec<Vec<&str>> = results
        .iter()
        .map(|r| r.segments.iter().map(|g| g.text.as_str()).collect())
        .collect();
    assert_eq!(texts, vec![vec![" hello"], vec![" world"], vec![" there"]]);
    assert_eq!(*asked.lock().unwrap(), vec![0], "only the fitted window that failed");
    assert_eq!(s.transcriber.refits(), 1);
    assert_eq!(
        (s.searches(5), s.searches(6), s.searches(8), s.searches(9)),
        (1, 1, 1, 2),
        "no hotter pass over the fitted states; the full-context loop falls back"
    );
}

/// Without full-context states to be had (`refit` gives none), the fitted window falls back to
/// a higher temperature as any other.
#[test]
fn a_fitted_window_without_full_states_falls_back_as_before() {
    let tok = tokenizer();
    let loop_text = looping(&tok);
    let good = vec![ts(&tok, 0.0), text(&tok, "Ġhi"), ts(&tok, 1.9), tok.eot];
    let script = Script::window(4, vec![Attempt::confident(loop_text), Attempt::confident(good)]);
    let mut s = setup(script, options());
    let w = fitted_states(4, 640);
    let results = s.transcriber.transcribe_batch_refit(&[(w.as_slice(), 2.0)], &|_| None);
    let texts: Vec<&str> = results[0].segments.iter().map(|g| g.text.as_str()).collect();
    assert_eq!(texts, vec![" hi"]);
    assert_eq!((s.transcriber.refits(), s.searches(4)), (0, 2));
}
