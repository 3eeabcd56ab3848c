//! Decoding policy: greedy search with Whisper's timestamp rules, language detection,
//! splitting the tokens into timed segments. Knows nothing of GStreamer.

pub mod alignment;
mod error;
mod options;
#[cfg(test)]
mod policy_tests;
mod rules;
mod search;
mod segments;
pub mod stream;
mod transcriber;

pub use alignment::WordTiming;
pub use error::DecodeError;
pub use options::{
    choose_language, DecodeOptions, IgnoredRequest, LanguageChoice, Task, UnknownLanguage, FALLBACK_TEMPERATURES,
};
pub use segments::compression_ratio;
pub use transcriber::{Refit, Transcriber};

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

#[cfg(test)]
mod tests {
    use super::search::{draw, top_k};
    use super::segments::*;
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
