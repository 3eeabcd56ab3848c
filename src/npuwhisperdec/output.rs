//! What a decoded window becomes on the stream, as pure functions: its pieces of text timed on
//! the stream, the clipping that keeps text from overlapping or going back, and the gap when
//! there is no text.

use gst::prelude::*;
use npuwhisper_core::cues::{self, Layout};
use npuwhisper_core::decoding::stream::StreamWord;
use npuwhisper_core::decoding::WindowResult;

/// Whisper windows never exceed 30 s; also the length assumed when a buffer has none.
pub const MAX_WINDOW: gst::ClockTime = gst::ClockTime::from_seconds(30);
/// Shortest text buffer pushed.
pub const MIN_DURATION: gst::ClockTime = gst::ClockTime::from_mseconds(1);

/// Seconds from the start of a window as a time, clamped to `[0, max]`.
pub fn offset(seconds: f64, max: f64) -> gst::ClockTime {
    let s = if seconds.is_nan() { 0.0 } else { seconds.clamp(0.0, max) };
    gst::ClockTime::try_from_seconds_f64(s).unwrap_or(gst::ClockTime::ZERO)
}

pub fn content_seconds(duration: gst::ClockTime) -> f64 {
    duration.seconds_f64().min(MAX_WINDOW.seconds_f64())
}

/// A piece of text to push, timed on the stream.
pub struct Piece {
    pub text: String,
    pub start: gst::ClockTime,
    pub end: gst::ClockTime,
    pub avg_logprob: f32,
    /// The words of a laid-out cue: text, start, end, probability.
    pub words: Vec<(String, gst::ClockTime, gst::ClockTime, f32)>,
}

/// Phrases of a window laid out as cues (or its words, one by one), timed inside it.
pub fn window_pieces(
    result: &WindowResult,
    window_pts: gst::ClockTime,
    content_seconds: f64,
    words: bool,
    layout: &Layout,
) -> Vec<Piece> {
    let at = |seconds: f64| window_pts.saturating_add(offset(seconds, content_seconds));
    let piece = |text: &str, start: f64, end: f64, avg_logprob: f32| Piece {
        text: text.to_string(),
        start: at(start),
        end: at(end),
        avg_logprob,
        words: Vec::new(),
    };
    if !words && result.segments.iter().all(|seg| !seg.words.is_empty()) {
        // Each word with the log-probability of its phrase.
        let timed: Vec<(cues::Word, f32, f32)> = result
            .segments
            .iter()
            .flat_map(|seg| {
                let last = seg.words.len() - 1;
                seg.words.iter().enumerate().map(move |(k, w)| {
                    (
                        cues::Word {
                            text: w.text.clone(),
                            start: w.start,
                            end: w.end,
                            phrase_end: k == last,
                        },
                        seg.avg_logprob,
                        w.probability,
                    )
                })
            })
            .filter(|(w, _, _)| !w.text.trim().is_empty())
            .collect();
        let plain: Vec<cues::Word> = timed.iter().map(|(w, _, _)| w.clone()).collect();
        return cues::layout(&plain, content_seconds, layout)
            .into_iter()
            .map(|cue| {
                let held = &timed[cue.words.clone()];
                let avg_logprob = held.iter().map(|(_, lp, _)| lp).sum::<f32>() / held.len().max(1) as f32;
                let mut p = piece(&cue.text, cue.start, cue.end, avg_logprob);
                p.words = held
                    .iter()
                    .map(|(w, _, prob)| (w.text.trim().to_string(), at(w.start), at(w.end), *prob))
                    .collect();
                p
            })
            .collect();
    }
    result
        .segments
        .iter()
        .flat_map(|seg| {
            if words && !seg.words.is_empty() {
                seg.words
                    .iter()
                    .map(|w| piece(&w.text, w.start, w.end, seg.avg_logprob))
                    .collect()
            } else {
                vec![piece(&seg.text, seg.start, seg.end, seg.avg_logprob)]
            }
        })
        .collect()
}

/// A time on the stream from the seconds the agreement works in.
pub fn stream_time(seconds: f64) -> gst::ClockTime {
    gst::ClockTime::try_from_seconds_f64(seconds.max(0.0)).unwrap_or(gst::ClockTime::ZERO)
}

/// Words released by the agreement, grouped by the phrase of their pass unless each word is
/// wanted on its own.
pub fn stream_pieces(words: &[StreamWord], one_per_word: bool) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut last_phrase = None;
    for w in words {
        match pieces.last_mut() {
            Some(p) if !one_per_word && last_phrase == Some(w.phrase) => {
                p.text.push_str(&w.text);
                p.end = stream_time(w.end);
            }
            _ => pieces.push(Piece {
                text: w.text.clone(),
                start: stream_time(w.start),
                end: stream_time(w.end),
                avg_logprob: w.avg_logprob,
                words: Vec::new(),
            }),
        }
        last_phrase = Some(w.phrase);
    }
    pieces
}

/// The bus message of a piece of text (`npuwhisper-word` or `npuwhisper-phrase`), with the
/// words of a laid-out cue.
pub fn text_structure(
    name: &str,
    text: &str,
    (start, end): (gst::ClockTime, gst::ClockTime),
    avg_logprob: f32,
    language: &str,
    words: &[(String, gst::ClockTime, gst::ClockTime, f32)],
) -> gst::Structure {
    let mut s = gst::Structure::builder(name)
        .field("text", text)
        .field("start", start)
        .field("end", end)
        .field("avg-logprob", avg_logprob as f64)
        .field("language", language);
    if !words.is_empty() {
        let words = words.iter().map(|(text, start, end, probability)| {
            gst::Structure::builder("word")
                .field("text", text)
                .field("start", *start)
                .field("end", *end)
                .field("probability", *probability as f64)
                .build()
                .to_send_value()
        });
        s = s.field("words", gst::List::new(words));
    }
    s.build()
}

/// A piece's times once clipped: it starts no earlier than the end of what was pushed
/// (`last_end`) and ends within the window, and lasts at least [`MIN_DURATION`] (passing the
/// window end only if the previous text already reached it).
pub fn clip(
    start: gst::ClockTime,
    end: gst::ClockTime,
    last_end: Option<gst::ClockTime>,
    window_end: gst::ClockTime,
) -> (gst::ClockTime, gst::ClockTime) {
    let start = last_end.map_or(start, |last| start.max(last));
    let end = end.min(window_end).max(start.saturating_add(MIN_DURATION));
    (start, end)
}

/// The gap to announce when a window gives no text: from the end of what was pushed (or the
/// window start) to `gap_until`, within the window; `None` when that is empty.
pub fn gap(
    last_end: Option<gst::ClockTime>,
    window_pts: gst::ClockTime,
    window_end: gst::ClockTime,
    gap_until: gst::ClockTime,
) -> Option<(gst::ClockTime, gst::ClockTime)> {
    let start = last_end.map_or(window_pts, |e| e.max(window_pts));
    let end = gap_until.min(window_end);
    (end > start).then_some((start, end))
}

/// A piece's text as pushed: trimmed, cased to follow what came before, clipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// Which of the window's pieces it is.
    pub piece: usize,
    pub text: String,
    pub start: gst::ClockTime,
    pub end: gst::ClockTime,
}

/// Places a window's `pieces` after the text already pushed (which ended at `last_end`, on
/// `last_char`) and inside the window (up to `window_end`), with [`clip`]: none overlaps the
/// one before. Empty pieces are left out. With `continues`, the window's first piece is
/// cased as the rest of the sentence before it ([`cues::continue_sentence`], `english` rules).
pub fn place_pieces(
    pieces: &[Piece],
    mut last_end: Option<gst::ClockTime>,
    mut last_char: Option<char>,
    window_end: gst::ClockTime,
    continues: bool,
    english: bool,
) -> Vec<Placed> {
    let mut placed = Vec::with_capacity(pieces.len());
    for (i, piece) in pieces.iter().enumerate() {
        let (start, end) = clip(piece.start, piece.end, last_end, window_end);
        let text = if continues && i == 0 {
            cues::continue_sentence(last_char, piece.text.trim(), english)
        } else {
            piece.text.trim().to_string()
        };
        if text.is_empty() {
            continue;
        }
        last_end = Some(end);
        last_char = text.chars().last();
        placed.push(Placed {
            piece: i,
            text,
            start,
            end,
        });
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use npuwhisper_core::decoding::{Segment, WordTiming};

    fn ms(v: u64) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(v)
    }

    #[test]
    fn text_never_overlaps_nor_leaves_the_window() {
        // Starts inside the last text: moved to its end.
        assert_eq!(clip(ms(900), ms(2000), Some(ms(1200)), ms(5000)), (ms(1200), ms(2000)));
        // Ends after the window: cut at the window end.
        assert_eq!(clip(ms(4000), ms(6000), None, ms(5000)), (ms(4000), ms(5000)));
        // Wholly before the last end: a minimal buffer after it, even past the window end.
        assert_eq!(clip(ms(100), ms(200), Some(ms(5000)), ms(5000)), (ms(5000), ms(5001)));
    }

    #[test]
    fn gaps_cover_the_silent_part_of_the_window() {
        assert_eq!(gap(None, ms(1000), ms(4000), ms(4000)), Some((ms(1000), ms(4000))));
        assert_eq!(
            gap(Some(ms(2500)), ms(1000), ms(4000), ms(3000)),
            Some((ms(2500), ms(3000)))
        );
        assert_eq!(gap(Some(ms(4000)), ms(1000), ms(4000), ms(4000)), None);
        // A pass that wants the gap only up to before its unconfirmed words.
        assert_eq!(gap(Some(ms(500)), ms(0), ms(4000), ms(300)), None);
    }

    fn word(text: &str, start: f64, end: f64) -> WordTiming {
        WordTiming {
            text: text.into(),
            tokens: vec![],
            start,
            end,
            probability: 0.9,
        }
    }

    #[test]
    fn window_pieces_are_phrases_or_words_on_the_stream_clock() {
        let result = WindowResult {
            segments: vec![Segment {
                start: 0.5,
                end: 2.0,
                text: " Hello there.".into(),
                avg_logprob: -0.2,
                words: vec![word(" Hello", 0.5, 1.0), word(" there.", 1.1, 2.0)],
            }],
            ..Default::default()
        };
        let at = ms(10_000);
        let words = window_pieces(&result, at, 3.0, true, &Layout::default());
        let got: Vec<(&str, gst::ClockTime, gst::ClockTime)> =
            words.iter().map(|p| (p.text.as_str(), p.start, p.end)).collect();
        assert_eq!(
            got,
            vec![(" Hello", ms(10_500), ms(11_000)), (" there.", ms(11_100), ms(12_000))]
        );
        let cues = window_pieces(&result, at, 3.0, false, &Layout::default());
        assert_eq!(cues.len(), 1);
        assert_eq!((cues[0].start, cues[0].end), (ms(10_500), ms(12_000)));
        assert_eq!(cues[0].words.len(), 2);
        // Times beyond the content are clamped to it.
        let late = WindowResult {
            segments: vec![Segment {
                start: 2.5,
                end: 9.0,
                text: " late".into(),
                avg_logprob: -0.2,
                words: vec![],
            }],
            ..Default::default()
        };
        let p = window_pieces(&late, at, 3.0, false, &Layout::default());
        assert_eq!((p[0].start, p[0].end), (ms(12_500), ms(13_000)));
    }

    #[test]
    fn stream_words_join_by_phrase_unless_one_per_word() {
        let w = |text: &str, start: f64, end: f64, phrase: usize| StreamWord {
            text: text.into(),
            start,
            end,
            phrase,
            avg_logprob: -0.1,
        };
        let words = [w(" a", 0.0, 0.5, 1), w(" b", 0.5, 1.0, 1), w(" c", 1.2, 1.5, 2)];
        let joined: Vec<String> = stream_pieces(&words, false).into_iter().map(|p| p.text).collect();
        assert_eq!(joined, vec![" a b", " c"]);
        assert_eq!(stream_pieces(&words, true).len(), 3);
    }

    fn piece(text: &str, start: u64, end: u64) -> Piece {
        Piece {
            text: text.into(),
            start: ms(start),
            end: ms(end),
            avg_logprob: -0.3,
            words: vec![],
        }
    }

    fn spans(placed: &[Placed]) -> Vec<(usize, &str, u64, u64)> {
        placed
            .iter()
            .map(|p| (p.piece, p.text.as_str(), p.start.mseconds(), p.end.mseconds()))
            .collect()
    }

    #[test]
    fn pieces_follow_each_other_inside_the_window() {
        let pieces = [
            piece(" The first.", 1000, 2500),
            piece("   ", 2500, 2600),
            // Overlaps the first and runs past the window.
            piece(" The second", 2000, 7000),
        ];
        let placed = place_pieces(&pieces, Some(ms(1200)), Some('.'), ms(6000), false, true);
        assert_eq!(
            spans(&placed),
            [(0, "The first.", 1200, 2500), (2, "The second", 2500, 6000)],
            "starts moved past the last end, the blank piece left out, the end cut at the window"
        );
        assert!(place_pieces(&[], Some(ms(1200)), None, ms(6000), true, true).is_empty());
        let blank = [piece(" ", 0, 100)];
        assert!(place_pieces(&blank, None, None, ms(6000), true, true).is_empty());
    }

    #[test]
    fn a_window_continuing_a_sentence_starts_in_lower_case() {
        let pieces = [piece(" The earliest", 0, 800), piece(" The next", 900, 1500)];
        let placed = place_pieces(&pieces, None, Some(','), ms(30_000), true, true);
        assert_eq!(placed[0].text, "the earliest");
        assert_eq!(placed[1].text, "The next", "only the window's first piece");
        let passes = place_pieces(&pieces, None, Some(','), ms(30_000), false, true);
        assert_eq!(passes[0].text, "The earliest", "live passes keep their own text");
        let after_stop = place_pieces(&pieces[..1], None, Some('.'), ms(30_000), true, true);
        assert_eq!(after_stop[0].text, "The earliest");
    }

    #[test]
    fn text_wholly_before_the_last_end_still_moves_forward() {
        let pieces = [piece(" late", 100, 200), piece(" later", 150, 300)];
        let placed = place_pieces(&pieces, Some(ms(5000)), None, ms(5000), false, true);
        assert_eq!(spans(&placed), [(0, "late", 5000, 5001), (1, "later", 5001, 5002)]);
    }
}
