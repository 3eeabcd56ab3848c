//! From sampled tokens to timed segments: cutting at timestamps, words attached, the
//! hallucination filter, phrases, and the measures the transcriber judges text by.

use super::transcriber::Decoded;
use super::{Segment, WordTiming};
use crate::model::{Model, SECONDS_PER_TIMESTAMP};

/// Windows hold no pause longer than 2 s (the windower ends a window there) and start within
/// about 1 s of speech: text that leaves a longer stretch uncovered has skipped speech.
pub(super) const UNCOVERED_RETRY_SECONDS: f64 = 3.0;

/// Speech runs at 10 to 20 characters a second: a segment this much slower has its
/// timestamps stretched over speech it left out.
pub(super) const SPARSE_CHARS_PER_SECOND: f64 = 4.0;

/// Longest stretch of a window (content of `content_seconds`) that no segment covers, or that
/// a segment spans with too few characters to have said what was spoken there.
pub(super) fn longest_uncovered(segments: &[Segment], content_seconds: f64) -> f64 {
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

/// The text tokens of a sampled sequence (no timestamps, no specials).
pub(super) fn text_only(model: &Model, tokens: &[u32]) -> Vec<u32> {
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

/// Cuts sampled tokens into segments at timestamp tokens; text after the last timestamp runs to
/// the end of the content. Segments that start after the content ends are dropped (they are
/// invented over the padding).
pub(super) fn split_segments(model: &Model, tokens: &[u32], content_seconds: f64, avg_logprob: f32) -> Vec<Segment> {
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
pub(super) fn attach_words(segments: Vec<Segment>, words: Vec<WordTiming>) -> Vec<Segment> {
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
pub(super) fn clamp_long_words(segments: &mut [Segment]) {
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
pub(super) fn set_word_probabilities(model: &Model, decoded: &Decoded, segments: &mut [Segment]) {
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
pub(super) fn has_non_word(text: &str) -> bool {
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

pub(super) fn is_hallucination(seg: &Segment) -> bool {
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
pub(super) const PAUSE_WORD_SECONDS: f64 = 1.0;

/// Cuts segments into phrases after words that end a clause (punctuation) or hold a pause, so
/// every phrase starts where it is spoken.
pub(super) fn phrases(segments: Vec<Segment>) -> Vec<Segment> {
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
