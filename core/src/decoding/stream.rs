//! Live streams: a window is decoded again each time it has grown ("passes"), and a word is
//! emitted once two consecutive passes agree on it (local agreement, as in whisper_streaming),
//! or once it is too old to wait longer. Emitted words are never taken back nor repeated.
//! Knows nothing of GStreamer: times are seconds on the stream's timeline.

use serde::{Deserialize, Serialize};

use super::WindowResult;

/// Longest phrase (words) checked for a loop.
const LONGEST_LOOP: usize = 8;

/// Where the words start to loop: the second of three copies in a row of a phrase, or of two
/// copies of a phrase of three words or more (a repeat that long is not a speaker's stumble);
/// `words.len()` if they do not.
fn loop_start(words: &[StreamWord]) -> usize {
    let keys: Vec<String> = words.iter().map(|w| key(&w.text)).collect();
    let copies =
        |i: usize, n: usize, k: usize| (1..k).all(|c| keys.get(i + c * n..i + (c + 1) * n) == Some(&keys[i..i + n]));
    (0..keys.len())
        .find_map(|i| {
            (1..=LONGEST_LOOP.min((keys.len() - i) / 2))
                .find(|&n| copies(i, n, if n >= 3 { 2 } else { 3 }))
                .map(|n| i + n)
        })
        .unwrap_or(keys.len())
}

/// A word of a pass, timed on the stream's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamWord {
    /// As decoded, with its leading space if it had one.
    pub text: String,
    pub start: f64,
    pub end: f64,
    /// Index of the phrase of its pass it belongs to: words of one phrase go out together.
    pub phrase: usize,
    pub avg_logprob: f32,
}

impl StreamWord {
    /// Words of a decoded window that starts at `window_start` seconds.
    pub fn of_window(result: &WindowResult, window_start: f64) -> Vec<StreamWord> {
        result
            .segments
            .iter()
            .enumerate()
            .flat_map(|(phrase, seg)| {
                seg.words.iter().map(move |w| StreamWord {
                    text: w.text.clone(),
                    start: window_start + w.start,
                    end: window_start + w.end.max(w.start),
                    phrase,
                    avg_logprob: seg.avg_logprob,
                })
            })
            .filter(|w| !key(&w.text).is_empty())
            .collect()
    }
}

/// One input of a stream's agreement. The decoder logs each as JSON (LOG level) so that a live
/// run can be replayed offline through the policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "pass", rename_all = "lowercase")]
pub enum Pass {
    /// A window that will be sent again with more audio.
    Provisional { emit_before: f64, words: Vec<StreamWord> },
    /// The last pass over a window.
    Final { words: Vec<StreamWord> },
    /// A discontinuity or flush.
    Reset,
}

impl Pass {
    /// Feeds the pass to `agreement`; returns the words it releases.
    pub fn apply(self, agreement: &mut LocalAgreement) -> Vec<StreamWord> {
        match self {
            Pass::Provisional { emit_before, words } => agreement.provisional(words, emit_before),
            Pass::Final { words } => agreement.finalize(words),
            Pass::Reset => {
                agreement.reset();
                Vec::new()
            }
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What two passes compare: the word without case and punctuation ("Country," = "country").
fn key(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric() || *c == '\'')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Longest run of committed words that a new pass says again at its start.
const MAX_REPEAT_CHECK: usize = 5;
/// A new word starting this long (s) before the end of the last word emitted overlaps it.
const OVERLAP: f64 = 0.1;
/// How far (s) two passes may place the start of one word apart and still be taken to hear the
/// same word there.
const ANCHOR_SLACK: f64 = 0.4;

/// Longest a word is taken to last (s) when judging whether the audio it needs is in: Whisper
/// stretches the end of a word before a pause over the pause (by a second or more), and the
/// word would wait for the pause to end before its hold runs out.
const LONGEST_WORD: f64 = 1.0;

/// Whether the previous pass heard the word at `i` of `words` as a longer word at the same
/// place, longer by more than an inflection ("there" for "therefore", not "form" for "forms"),
/// and not as this word and the next written together ("42" "line" for "42-line").
fn heard_longer(words: &[StreamWord], i: usize, previous: Option<&StreamWord>) -> bool {
    previous.is_some_and(|p| {
        let (w, p) = (key(&words[i].text), key(&p.text));
        let joined = words.get(i + 1).map(|next| format!("{w}{}", key(&next.text)));
        p.len() >= w.len() + 3 && p.starts_with(&w) && !w.is_empty() && joined.as_deref() != Some(p.as_str())
    })
}

/// When a word's audio is surely over: its end, or [`LONGEST_WORD`] after its start.
fn settled_end(w: &StreamWord) -> f64 {
    w.end.min(w.start + LONGEST_WORD)
}

/// Whether two keys are one word heard two ways ("fella" / "fellow", "american" /
/// "americans"): the same first three letters, or one the start of the other.
fn same_word(a: &str, b: &str) -> bool {
    let prefix = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    prefix >= 3 || (prefix > 0 && prefix == a.chars().count().min(b.chars().count()))
}

/// The last of the words from `i` on that together spell `emitted`, when a pass splits the
/// word emitted in two ("42" "line" for "42-line"): the rest of it is not a new word.
fn through_split(words: &[StreamWord], mut i: usize, emitted: &str) -> usize {
    let mut spelled = key(&words[i].text);
    while spelled.len() < emitted.len() {
        let Some(next) = words.get(i + 1) else { break };
        let longer = format!("{spelled}{}", key(&next.text));
        if !emitted.starts_with(&longer) {
            break;
        }
        spelled = longer;
        i += 1;
    }
    i
}

/// The stable-prefix policy of one stream.
#[derive(Debug, Default)]
pub struct LocalAgreement {
    /// End of the last word emitted: words of later passes centred before it are already out.
    committed_end: f64,
    /// Start of the last word emitted: where a later pass should hear it again.
    last_start: f64,
    /// Keys of the last words emitted, to drop them when a pass times them a little later.
    committed_tail: Vec<String>,
    /// Words of the last pass not emitted yet, to be confirmed by the next.
    unconfirmed: Vec<StreamWord>,
}

impl LocalAgreement {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything (flush, discontinuity).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// End (s) of the last word emitted.
    pub fn committed_end(&self) -> f64 {
        self.committed_end
    }

    /// Every word heard before this time (s) has been emitted: the start of the last word
    /// emitted (its end may be stretched over words not out yet). `None` before the first.
    pub fn released_until(&self) -> Option<f64> {
        (!self.committed_tail.is_empty()).then_some(self.last_start)
    }

    /// Words not emitted yet, from the last pass.
    pub fn unconfirmed(&self) -> &[StreamWord] {
        &self.unconfirmed
    }

    /// A pass over a window that will be sent again with more audio: returns the words the
    /// previous pass agrees on, then any later word that ends before `emit_before` (it cannot
    /// wait for another pass without coming out late).
    pub fn provisional(&mut self, mut words: Vec<StreamWord>, emit_before: f64) -> Vec<StreamWord> {
        // A pass over audio cut mid-phrase may loop ("the art of the art of the art of"); two
        // such passes agree on the loop, and old words are forced out: neither may release it.
        // The words from the loop on wait for a later pass, or for the complete window.
        words.truncate(loop_start(&words));
        let mut fresh = self.fresh(words);
        let agreed = fresh
            .iter()
            .zip(&self.unconfirmed)
            .take_while(|(a, b)| key(&a.text) == key(&b.text))
            .count();
        // The last word of the previous pass may be the first part of a word its audio cut in
        // two ("there" of "therefore"): the pass after that one has to agree on it too.
        let agreed = if agreed == self.unconfirmed.len() {
            agreed.saturating_sub(1)
        } else {
            agreed
        };
        // Words too old to wait are forced out, but not one the previous pass heard longer
        // ("there" where it heard "therefore"): the audio that completes it may be in now.
        let mut n = agreed;
        while n < fresh.len()
            && settled_end(&fresh[n]) <= emit_before
            && !heard_longer(&fresh, n, self.unconfirmed.get(n))
        {
            n += 1;
        }
        self.unconfirmed = fresh.split_off(n);
        self.commit(&fresh);
        fresh
    }

    /// The last pass over a window (its audio is complete): every new word goes out.
    pub fn finalize(&mut self, words: Vec<StreamWord>) -> Vec<StreamWord> {
        let fresh = self.fresh(words);
        self.unconfirmed.clear();
        self.commit(&fresh);
        fresh
    }

    /// The words of a pass that are not out yet: those after the last emitted word where this
    /// pass hears it again; else those centred after its end, less a repeat of the last
    /// emitted words at their start.
    fn fresh(&self, mut words: Vec<StreamWord>) -> Vec<StreamWord> {
        // The end of the last word of a pass is often stretched over the silence or the word
        // that follows: by time alone, that next word would count as out already.
        if let Some(i) = self.anchor(&words) {
            return words.split_off(i + 1);
        }
        let mut fresh: Vec<StreamWord> = words
            .into_iter()
            .filter(|w| (w.start + w.end) / 2.0 > self.committed_end)
            .collect();
        let keys: Vec<String> = fresh.iter().take(MAX_REPEAT_CHECK).map(|w| key(&w.text)).collect();
        let tail = &self.committed_tail;
        let repeat = (1..=keys.len().min(tail.len()))
            .rev()
            .find(|&n| tail[tail.len() - n..] == keys[..n]);
        if let Some(n) = repeat {
            fresh.drain(..n);
        }
        // The last word emitted, heard another way by this pass over the same time.
        let heard_again = match (fresh.first(), tail.last()) {
            (Some(first), Some(last)) => {
                first.start < self.committed_end - OVERLAP && same_word(&key(&first.text), last)
            }
            _ => false,
        };
        if heard_again {
            fresh.remove(0);
        }
        fresh
    }

    /// Index of the last emitted word in a pass that hears it again: a word like it that starts
    /// within [`ANCHOR_SLACK`] of the emitted one's start (the nearest such) and before its end,
    /// preceded by a word like the one emitted before it, when both exist.
    fn anchor(&self, words: &[StreamWord]) -> Option<usize> {
        let tail = &self.committed_tail;
        let last = tail.last()?;
        let before = tail.len().checked_sub(2).map(|i| &tail[i]);
        words
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                (w.start - self.last_start).abs() <= ANCHOR_SLACK
                    && w.start < self.committed_end - OVERLAP
                    && same_word(&key(&w.text), last)
            })
            .filter(|&(i, _)| match (i.checked_sub(1), before) {
                (Some(j), Some(b)) => same_word(&key(&words[j].text), b),
                _ => true,
            })
            .min_by(|(_, a), (_, b)| {
                let (da, db) = ((a.start - self.last_start).abs(), (b.start - self.last_start).abs());
                da.total_cmp(&db)
            })
            .map(|(i, _)| through_split(words, i, last))
    }

    fn commit(&mut self, words: &[StreamWord]) {
        if let Some(last) = words.last() {
            self.committed_end = self.committed_end.max(last.end);
            self.last_start = last.start;
        }
        self.committed_tail.extend(words.iter().map(|w| key(&w.text)));
        let excess = self.committed_tail.len().saturating_sub(MAX_REPEAT_CHECK);
        self.committed_tail.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words of `text` spoken one every 0.5 s from `start`.
    fn pass(text: &str, start: f64) -> Vec<StreamWord> {
        text.split_whitespace()
            .enumerate()
            .map(|(i, w)| StreamWord {
                text: format!(" {w}"),
                start: start + i as f64 * 0.5,
                end: start + i as f64 * 0.5 + 0.4,
                phrase: 0,
                avg_logprob: -0.1,
            })
            .collect()
    }

    fn texts(words: &[StreamWord]) -> String {
        words.iter().map(|w| w.text.trim()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn words_go_out_once_two_passes_agree() {
        let mut la = LocalAgreement::new();
        // First pass: nothing agreed yet, nothing old enough to force.
        assert!(la.provisional(pass("and so my fell", 0.0), -1.0).is_empty());
        // Second pass agrees on three words; "fellow" differs from "fell".
        assert_eq!(
            texts(&la.provisional(pass("and so my fellow americans", 0.0), -1.0)),
            "and so my"
        );
        // Third: "fellow" agrees; "americans" ended the last pass, so it waits for one more.
        assert_eq!(
            texts(&la.provisional(pass("And so my fellow Americans, ask", 0.0), -1.0)),
            "fellow"
        );
        assert_eq!(texts(la.unconfirmed()), "Americans, ask");
        // The window is complete: everything left goes out, once.
        assert_eq!(
            texts(&la.finalize(pass("and so my fellow americans ask not", 0.0))),
            "americans ask not"
        );
        assert!(la.finalize(pass("and so my fellow americans ask not", 0.0)).is_empty());
    }

    #[test]
    fn old_words_go_out_without_agreement() {
        let mut la = LocalAgreement::new();
        assert!(la.provisional(pass("one two three four", 0.0), 0.5).len() == 1);
        // Passes keep disagreeing on "three": it is forced out once it ends before 1.5 s.
        let out = la.provisional(pass("two tree four five", 0.5), 1.5);
        assert_eq!(texts(&out), "two tree");
        assert_eq!(la.committed_end(), 1.4);
    }

    #[test]
    fn a_word_stretched_over_a_pause_is_not_held_for_the_pause() {
        let mut la = LocalAgreement::new();
        // "typography," starts at 1.0 s; Whisper ends it at 3.5 s, where the next word starts.
        let mut words = pass("fine typography,", 0.5);
        words[1].end = 3.5;
        assert_eq!(texts(&la.provisional(words.clone(), 1.0)), "fine");
        // A pass whose words before 2.5 s cannot wait for another: its audio was over by 2 s.
        assert_eq!(texts(&la.provisional(words, 2.5)), "typography,");
    }

    #[test]
    fn a_word_heard_longer_by_the_last_pass_is_not_forced_out() {
        let mut la = LocalAgreement::new();
        la.provisional(pass("natural therefore", 0.0), -1.0);
        // "therefore" heard as "there" "for": "there" is old enough to force, but the last
        // pass heard more of it, so it waits for the next pass.
        assert_eq!(texts(&la.provisional(pass("natural there for", 0.0), 0.95)), "natural");
        assert_eq!(
            texts(&la.provisional(pass("natural therefore that", 0.0), 1.3)),
            "therefore"
        );
        // A plural is no longer word, and "42" "line" is "42-line" heard in two.
        let mut la = LocalAgreement::new();
        la.provisional(pass("beautiful forms", 0.0), -1.0);
        assert_eq!(
            texts(&la.provisional(pass("beautiful form should", 0.0), 0.95)),
            "beautiful form"
        );
        let mut la = LocalAgreement::new();
        la.provisional(pass("or 42-line bible", 0.0), -1.0);
        assert_eq!(texts(&la.provisional(pass("or 42 line", 0.0), 0.95)), "or 42");
    }

    #[test]
    fn a_pass_that_times_emitted_words_later_does_not_repeat_them() {
        let mut la = LocalAgreement::new();
        la.provisional(pass("ask not what", 0.0), -1.0);
        assert_eq!(texts(&la.provisional(pass("ask not what your", 0.0), -1.0)), "ask not");
        assert_eq!(texts(&la.provisional(pass("ask not what your", 0.0), -1.0)), "what");
        // Next window: "not what" again, timed after the committed end, then new words.
        let next = pass("not what your country", 1.3);
        assert_eq!(texts(&la.finalize(next)), "your country");
    }

    #[test]
    fn a_word_emitted_then_heard_another_way_is_not_emitted_again() {
        let mut la = LocalAgreement::new();
        // "fella" is old enough to go out unconfirmed.
        assert_eq!(
            texts(&la.provisional(pass("and so my fella", 0.0), 2.0)),
            "and so my fella"
        );
        // The next pass hears "fellow", a little later over the same sound, then new words.
        let next = pass("fellow Americans ask", 1.75);
        assert_eq!(texts(&la.finalize(next)), "Americans ask");
        // A new word right after the last one stays, however it starts.
        la.finalize(pass("for", 3.0));
        assert_eq!(texts(&la.finalize(pass("forward", 3.4))), "forward");
    }

    #[test]
    fn a_word_after_one_whose_end_was_stretched_is_not_lost() {
        let mut la = LocalAgreement::new();
        // Two passes end on "considered." and stretch it over the silence after it; the second
        // comes late enough to force it out.
        let mut first = pass("may justly be considered", 0.0);
        first[3].end = 2.3;
        la.provisional(first.clone(), -1.0);
        assert_eq!(texts(&la.provisional(first, 2.5)), "may justly be considered");
        assert_eq!(la.committed_end(), 2.3);
        // The next pass times it right and hears "as" inside the stretch.
        let next = pass("may justly be considered as the", 0.0);
        assert_eq!(texts(&la.finalize(next)), "as the");
    }

    #[test]
    fn a_word_cut_by_the_end_of_a_pass_is_not_confirmed_by_the_next() {
        let mut la = LocalAgreement::new();
        // The first pass's audio ends inside "therefore": it hears "there".
        la.provisional(pass("it was natural there", 0.0), -1.0);
        // The next hears the word split in two: "natural" agrees, "there" needs another pass.
        assert_eq!(
            texts(&la.provisional(pass("it was natural there for", 0.0), -1.0)),
            "it was natural"
        );
        // The whole window hears the word whole.
        assert_eq!(
            texts(&la.finalize(pass("it was natural therefore that", 0.0))),
            "therefore that"
        );
    }

    #[test]
    fn a_word_emitted_whole_then_heard_in_two_parts_is_not_emitted_again() {
        let mut la = LocalAgreement::new();
        la.provisional(pass("or 42-line", 0.0), -1.0);
        assert_eq!(texts(&la.provisional(pass("or 42-line", 0.0), 1.0)), "or 42-line");
        // The next pass hears "42" and "line" over the same sound, then the next word.
        let next = pass("or 42 line Bible", 0.0);
        assert_eq!(texts(&la.finalize(next)), "Bible");
    }

    #[test]
    fn a_pass_that_loops_releases_nothing_of_the_loop() {
        let looping = "considered as the art of the art of the art of the art";
        assert_eq!(
            texts(&pass(looping, 0.0)[..loop_start(&pass(looping, 0.0))]),
            "considered as the art of"
        );
        // Two passes that loop alike agree on the words before the loop only, and old words
        // are not forced out past it.
        let mut la = LocalAgreement::new();
        la.provisional(pass(looping, 0.0), 0.0);
        assert_eq!(
            texts(&la.provisional(pass(looping, 0.0), 100.0)),
            "considered as the art of"
        );
        // The complete window's words after it still come out.
        assert_eq!(
            texts(&la.finalize(pass("considered as the art of making books", 0.0))),
            "making books"
        );
    }

    #[test]
    fn repeats_a_speaker_makes_are_not_loops() {
        for text in [
            "I I think",
            "no no we",
            "that that is it",
            "I think I think so",
            "very very very good",
        ] {
            let words = pass(text, 0.0);
            let cut = loop_start(&words);
            let kept = texts(&words[..cut]);
            match text {
                "very very very good" => assert_eq!(kept, "very", "{text}"),
                _ => assert_eq!(cut, words.len(), "{text}: cut to {kept:?}"),
            }
        }
    }

    #[test]
    fn repeated_words_that_are_new_stay() {
        let mut la = LocalAgreement::new();
        la.finalize(pass("it is", 0.0));
        // "is" said again later is a new word when it is not a repeat of the committed tail start.
        assert_eq!(texts(&la.finalize(pass("what it is is", 2.0))), "what it is is");
    }
}
