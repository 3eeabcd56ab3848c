//! Subtitle cue layout: groups a window's timed words into cues a viewer can read, and breaks
//! each cue into lines. No GStreamer here: the decoder applies it where it pushes phrases.
//!
//! A cue holds at most `max_lines` lines of `max_line_chars` characters and lasts at most
//! `max_duration`; it ends preferably at a sentence end, else after other punctuation or at a
//! pause, else before a conjunction, never inside a word. Cues shorter than `min_duration`, or
//! read faster than `max_cps` characters per second, are merged with their neighbours or shown
//! longer, into the silence after them, where the speech allows it.

/// A word with its times (seconds, any origin), as decoded: `text` keeps its leading space.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub text: String,
    pub start: f64,
    pub end: f64,
    /// The decoder ended a phrase after this word (a timestamp token).
    pub phrase_end: bool,
}

/// The limits of a cue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    pub max_line_chars: usize,
    pub max_lines: usize,
    /// Seconds.
    pub min_duration: f64,
    /// Seconds.
    pub max_duration: f64,
    /// Characters per second (spaces and line breaks included); 0 = no limit.
    pub max_cps: f64,
}

impl Default for Layout {
    /// BBC and Netflix style guides: 2 lines of 42 characters, 1 to 7 s, 17 characters a second.
    fn default() -> Self {
        Layout {
            max_line_chars: 42,
            max_lines: 2,
            min_duration: 1.0,
            max_duration: 7.0,
            max_cps: 17.0,
        }
    }
}

/// One laid-out cue: lines joined by "\n", `words` the range of input words it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    pub text: String,
    pub start: f64,
    pub end: f64,
    pub words: std::ops::Range<usize>,
}

/// Words that start a clause: a line or cue break before them reads naturally.
const CLAUSE_STARTS: &[&str] = &[
    "and", "but", "or", "nor", "so", "yet", "because", "although", "though", "while", "whereas", "which", "who",
    "whom", "whose", "that", "what", "how", "why", "when", "where", "if", "unless", "until", "since", "as", "than",
    "to", "of", "in", "on", "for", "with", "from", "by", "at", "into", "und", "oder", "aber", "denn", "weil", "dass",
    "wenn", "als", "ob", "sondern", "damit", "um", "mit", "für", "von", "zu", "et", "ou", "mais", "que", "qui", "y",
    "pero", "porque",
];

/// Words that bind to the word after them: a line or cue never ends on one if it can help it.
const BINDS_FORWARD: &[&str] = &[
    "the", "a", "an", "of", "to", "my", "your", "his", "her", "its", "our", "their", "this", "these", "those", "der",
    "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer", "zu", "le", "la", "les", "un", "une",
    "el", "los", "las",
];

/// Cost of a break after `before` and ahead of `after` (lower is better).
fn break_cost(before: &str, after: Option<&str>) -> f64 {
    let b = before.trim_end_matches(['"', '\'', ')', ']', '»', '”', '’']);
    if BINDS_FORWARD.contains(&b.to_lowercase().as_str()) {
        8.0
    } else if b.ends_with(['.', '?', '!', '…']) {
        0.0
    } else if b.ends_with([',', ';', ':', '—', '–']) {
        1.0
    } else if after.is_some_and(|a| {
        let a = a.trim().trim_start_matches(['"', '\'', '(', '«', '“']).to_lowercase();
        CLAUSE_STARTS.contains(&a.as_str())
    }) {
        2.0
    } else {
        4.0
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Breaks `words` (trimmed, in order) into the fewest lines of at most `max_chars` characters,
/// at most `max_lines` of them, at the best places: after punctuation or where the decoder
/// ended a phrase (`phrase_ends[i]`: after word i), before a conjunction, lines of even length.
/// `None` when they do not fit. A word longer than a line gets its own.
pub fn break_lines(words: &[&str], phrase_ends: &[bool], max_chars: usize, max_lines: usize) -> Option<Vec<String>> {
    let n = words.len();
    if n == 0 {
        return Some(Vec::new());
    }
    let len = |i: usize, j: usize| words[i..j].iter().map(|w| chars(w)).sum::<usize>() + (j - i - 1);
    let fits = |i: usize, j: usize| j == i + 1 || len(i, j) <= max_chars;
    for lines in 1..=max_lines.max(1).min(n) {
        // best[k][j]: cost of words[..j] in k lines, and where the last line starts.
        let mut best = vec![vec![(f64::INFINITY, 0usize); n + 1]; lines + 1];
        best[0][0].0 = 0.0;
        let ideal = len(0, n) as f64 / lines as f64;
        for k in 1..=lines {
            for j in 1..=n {
                for i in (k - 1)..j {
                    if !fits(i, j) || best[k - 1][i].0.is_infinite() {
                        continue;
                    }
                    let mut brk = if i > 0 {
                        break_cost(words[i - 1], Some(words[i]))
                    } else {
                        0.0
                    };
                    if i > 0 && phrase_ends.get(i - 1).copied().unwrap_or(false) {
                        brk = brk.min(0.5);
                    }
                    let ragged = (len(i, j) as f64 - ideal).abs() / max_chars.max(1) as f64;
                    let cost = best[k - 1][i].0 + brk + 2.0 * ragged;
                    if cost < best[k][j].0 {
                        best[k][j] = (cost, i);
                    }
                }
            }
        }
        if best[lines][n].0.is_finite() {
            let mut out = Vec::with_capacity(lines);
            let (mut k, mut j) = (lines, n);
            while k > 0 {
                let i = best[k][j].1;
                out.push(words[i..j].join(" "));
                (k, j) = (k - 1, i);
            }
            out.reverse();
            return Some(out);
        }
    }
    None
}

/// Lays the words of one stretch of speech (a window) out as cues. `limit_end` is the latest a
/// cue may be shown to (the end of the window).
pub fn layout(words: &[Word], limit_end: f64, layout: &Layout) -> Vec<Cue> {
    let words: Vec<&Word> = words.iter().filter(|w| !w.text.trim().is_empty()).collect();
    let n = words.len();
    if n == 0 {
        return Vec::new();
    }
    let trimmed: Vec<&str> = words.iter().map(|w| w.text.trim()).collect();
    let next_start = |j: usize| {
        if j < n {
            words[j].start
        } else {
            limit_end.max(words[n - 1].end)
        }
    };
    // The text of a cue over words[i..j], if it fits.
    let phrase_ends: Vec<bool> = words.iter().map(|w| w.phrase_end).collect();
    let lines = |i: usize, j: usize| {
        break_lines(
            &trimmed[i..j],
            &phrase_ends[i..j],
            layout.max_line_chars,
            layout.max_lines,
        )
    };

    // best[j]: the cheapest layout of words[..j] and where its last cue starts.
    let mut best = vec![(f64::INFINITY, 0usize); n + 1];
    best[0].0 = 0.0;
    for j in 1..=n {
        for i in (0..j).rev() {
            let span = words[j - 1].end - words[i].start;
            if j - i > 1 && span > layout.max_duration {
                break;
            }
            let Some(text) = lines(i, j) else {
                if j - i > 1 {
                    break;
                }
                continue;
            };
            if best[i].0.is_infinite() {
                continue;
            }
            let mut cost = best[i].0 + 1.0;
            if j < n {
                let mut end_cost = break_cost(trimmed[j - 1], Some(trimmed[j]));
                if words[j - 1].phrase_end {
                    end_cost = end_cost.min(0.5);
                }
                if words[j].start - words[j - 1].end >= 0.5 {
                    end_cost = end_cost.min(0.5);
                }
                cost += end_cost;
            }
            // A long silence inside a cue leaves stale text on screen.
            cost += (i..j - 1).filter(|&k| words[k + 1].start - words[k].end > 1.5).count() as f64 * 3.0;
            let shown = (next_start(j) - words[i].start).min(layout.max_duration);
            if shown < layout.min_duration {
                cost += 5.0 + 10.0 * (layout.min_duration - shown) / layout.min_duration;
            }
            if layout.max_cps > 0.0 {
                let cps = text.iter().map(|l| chars(l)).sum::<usize>() as f64 / shown.max(0.001);
                if cps > layout.max_cps {
                    cost += 2.0 * (cps / layout.max_cps - 1.0);
                }
            }
            if cost < best[j].0 {
                best[j] = (cost, i);
            }
        }
    }

    let mut bounds = Vec::new();
    let mut j = n;
    while j > 0 {
        let i = best[j].1;
        bounds.push(i..j);
        j = i;
    }
    bounds.reverse();
    bounds
        .into_iter()
        .map(|r| {
            let text = lines(r.start, r.end)
                .unwrap_or_else(|| vec![trimmed[r.clone()].join(" ")])
                .join("\n");
            let start = words[r.start].start;
            let spoken_end = words[r.end - 1].end.max(start);
            // Shown long enough to read, into the silence before the next cue.
            let read = if layout.max_cps > 0.0 {
                chars(&text) as f64 / layout.max_cps
            } else {
                0.0
            };
            let wanted = start + read.max(layout.min_duration).min(layout.max_duration);
            let end = spoken_end.max(wanted.min(next_start(r.end)));
            Cue {
                text,
                start,
                end,
                words: r,
            }
        })
        .collect()
}

/// Words that are written in lower case inside an English sentence.
const LOWER_IN_SENTENCE: &[&str] = &[
    "the", "a", "an", "and", "but", "or", "so", "of", "in", "on", "at", "to", "for", "with", "from", "by", "as",
    "that", "which", "who", "when", "where", "while", "if", "it", "its", "this", "these", "those", "there", "their",
    "they", "he", "she", "we", "you", "his", "her", "our", "your", "my", "is", "was", "were", "are", "be", "been",
    "not", "no", "than", "then", "because", "although", "though", "into", "upon", "also", "all", "some", "any",
];

/// Keeps sentence case across a window boundary: `text` follows text that ended with
/// `previous` (its last character, `None` at the start). After a sentence end the first letter
/// is made upper case; inside a sentence an English function word capitalised only because a
/// window started there is made lower case.
pub fn continue_sentence(previous: Option<char>, text: &str, english: bool) -> String {
    let Some(prev) = previous else { return text.to_string() };
    let lead = text.len() - text.trim_start().len();
    let (space, rest) = text.split_at(lead);
    let Some(first) = rest.chars().next() else {
        return text.to_string();
    };
    let sentence_end = matches!(prev, '.' | '?' | '!' | '…' | '。' | '？' | '！');
    if sentence_end && first.is_lowercase() {
        return format!("{space}{}{}", first.to_uppercase(), &rest[first.len_utf8()..]);
    }
    let word: String = rest.chars().take_while(|c| c.is_alphabetic()).collect();
    if !sentence_end
        && english
        && first.is_uppercase()
        && LOWER_IN_SENTENCE.contains(&word.to_lowercase().as_str())
        && word.chars().skip(1).all(char::is_lowercase)
    {
        return format!("{space}{}{}", first.to_lowercase(), &rest[first.len_utf8()..]);
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(spec: &[(&str, f64, f64)]) -> Vec<Word> {
        spec.iter()
            .map(|&(t, s, e)| Word {
                text: format!(" {t}"),
                start: s,
                end: e,
                phrase_end: false,
            })
            .collect()
    }

    /// Evenly spoken words, `per_second` a second from 0 s.
    fn speech(text: &str, per_second: f64) -> Vec<Word> {
        text.split(' ')
            .enumerate()
            .map(|(k, t)| Word {
                text: format!(" {t}"),
                start: k as f64 / per_second,
                end: (k as f64 + 0.8) / per_second,
                phrase_end: false,
            })
            .collect()
    }

    const LONG: &str = "Printing, in the only sense with which we are at present concerned, differs from most if not from all the arts and crafts represented in the Exhibition in being comparatively modern. For although the Chinese took impressions from wood blocks engraved in relief for centuries before the woodcutters of the Netherlands, by a similar process, produced the block books.";

    #[test]
    fn one_line_when_it_fits() {
        assert_eq!(
            break_lines(&["Ask", "not", "what"], &[], 42, 2).unwrap(),
            vec!["Ask not what"]
        );
    }

    #[test]
    fn lines_break_after_punctuation_and_fit() {
        let w: Vec<&str> = "And so, my fellow Americans, ask not what your country can do for you"
            .split(' ')
            .collect();
        let lines = break_lines(&w, &[], 42, 2).unwrap();
        assert_eq!(
            lines,
            vec![
                "And so, my fellow Americans,",
                "ask not what your country can do for you"
            ]
        );
        assert!(
            break_lines(&w, &[], 20, 2).is_none(),
            "69 characters do not fit in 2 lines of 20"
        );
    }

    #[test]
    fn lines_break_before_a_conjunction_rather_than_anywhere() {
        let w: Vec<&str> = "we took the old road through the village and walked on to the river bank"
            .split(' ')
            .collect();
        let lines = break_lines(&w, &[], 42, 2).unwrap();
        assert!(lines.iter().all(|l| chars(l) <= 42), "{lines:?}");
        let second = lines[1].split(' ').next().unwrap();
        assert!(
            CLAUSE_STARTS.contains(&second),
            "second line starts with {second:?}: {lines:?}"
        );
    }

    #[test]
    fn lines_break_where_the_decoder_ended_a_phrase() {
        let w: Vec<&str> = "your country can do for you ask what you can do for your country."
            .split(' ')
            .collect();
        let mut ends = vec![false; w.len()];
        ends[5] = true; // "you"
        assert_eq!(
            break_lines(&w, &ends, 42, 2).unwrap(),
            vec!["your country can do for you", "ask what you can do for your country."]
        );
    }

    #[test]
    fn an_overlong_word_gets_its_own_line_and_is_never_cut() {
        let long = "Donaudampfschifffahrtsgesellschaftskapitänswitwenrentenversicherung";
        let lines = break_lines(&["die", long, "zahlt"], &[], 42, 3).unwrap();
        assert_eq!(lines, vec!["die", long, "zahlt"]);
    }

    #[test]
    fn cues_respect_lines_durations_and_reading_speed() {
        let w = speech(LONG, 2.5);
        let end = w.last().unwrap().end + 2.0;
        let layout = Layout::default();
        let cues = layout_cues(&w, end, &layout);
        let rebuilt: Vec<String> = cues
            .iter()
            .flat_map(|c| c.text.split(['\n', ' ']).map(str::to_string).collect::<Vec<_>>())
            .collect();
        assert_eq!(rebuilt.join(" "), LONG, "every word once, in order, none cut");
        for (k, c) in cues.iter().enumerate() {
            let lines: Vec<&str> = c.text.split('\n').collect();
            assert!(
                lines.len() <= 2 && lines.iter().all(|l| chars(l) <= 42),
                "cue {k}: {:?}",
                c.text
            );
            let d = c.end - c.start;
            assert!((1.0..=7.0).contains(&d), "cue {k} lasts {d:.2} s: {:?}", c.text);
            assert!(
                chars(&c.text) as f64 / d <= 20.0,
                "cue {k} read at {:.1} chars/s",
                chars(&c.text) as f64 / d
            );
            if k > 0 {
                assert!(c.start >= cues[k - 1].end, "cue {k} overlaps the previous one");
            }
        }
        // Sentence ends close cues.
        assert!(cues.iter().any(|c| c.text.ends_with("modern.")), "{cues:#?}");
    }

    fn layout_cues(w: &[Word], end: f64, l: &Layout) -> Vec<Cue> {
        layout(w, end, l)
    }

    #[test]
    fn short_fragments_merge_with_their_neighbours() {
        // "copy," and "modify," alone would be cues under a second.
        let mut w = words(&[
            ("You", 0.0, 0.2),
            ("may", 0.2, 0.4),
            ("copy,", 0.5, 0.9),
            ("modify,", 1.2, 1.6),
            ("and", 1.7, 1.8),
            ("share", 1.8, 2.1),
            ("it.", 2.1, 2.4),
        ]);
        w[2].phrase_end = true;
        w[3].phrase_end = true;
        let cues = layout(&w, 2.6, &Layout::default());
        assert_eq!(cues.len(), 1, "{cues:#?}");
        assert_eq!(cues[0].text, "You may copy, modify, and share it.");
    }

    #[test]
    fn a_lone_short_phrase_is_shown_for_the_minimum_into_the_silence_after_it() {
        let w = words(&[("Yes.", 1.0, 1.3)]);
        let cues = layout(&w, 5.0, &Layout::default());
        assert_eq!(cues.len(), 1);
        assert!((cues[0].end - 2.0).abs() < 1e-9, "{cues:?}");
        // No silence after it: it keeps its spoken length.
        let cues = layout(&w, 1.3, &Layout::default());
        assert!((cues[0].end - 1.3).abs() < 1e-9, "{cues:?}");
    }

    #[test]
    fn cues_never_exceed_the_longest_duration() {
        let w = speech(LONG, 1.0); // slow speech: 60 words over a minute
        let cues = layout(&w, 70.0, &Layout::default());
        assert!(cues.iter().all(|c| c.end - c.start <= 7.0 + 1e-9), "{cues:#?}");
    }

    #[test]
    fn sentence_case_is_kept_across_windows() {
        assert_eq!(continue_sentence(Some(','), " The earliest", true), " the earliest");
        assert_eq!(continue_sentence(Some('.'), " The earliest", true), " The earliest");
        assert_eq!(continue_sentence(Some('.'), " and then", true), " And then");
        assert_eq!(
            continue_sentence(Some(','), " London", true),
            " London",
            "names keep their capital"
        );
        assert_eq!(continue_sentence(Some(','), " I think", true), " I think");
        assert_eq!(
            continue_sentence(Some(','), " Die Katze", false),
            " Die Katze",
            "German nouns are capitalised"
        );
        assert_eq!(continue_sentence(None, " The start", true), " The start");
    }
}
