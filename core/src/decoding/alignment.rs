//! Word timestamps: the cross-attention of the model's alignment heads, normalised and
//! median-filtered, aligned to the tokens by dynamic time warping (as Whisper's `timing.py`).

use crate::backend::{AlignmentRequest, BackendError, CrossCache, StepInput};
use crate::model::{Model, ENCODER_FRAMES};

/// Encoder frames per second (a timestamp step is 20 ms).
const FRAMES_PER_SECOND: f64 = 50.0;
const MEDIAN_WIDTH: usize = 7;

/// One word with its time in the window, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    /// The word as decoded, with its leading space if it had one.
    pub text: String,
    pub tokens: Vec<u32>,
    pub start: f64,
    pub end: f64,
    /// Mean probability of its tokens when sampled (1 until known).
    pub probability: f32,
}

/// Groups text tokens into words: a word starts at a token that begins with a space; punctuation
/// joins the word before it; tokens that only together form valid UTF-8 stay together.
pub fn split_words(model: &Model, tokens: &[u32]) -> Vec<(String, Vec<u32>)> {
    let tok = &model.tokenizer;
    let mut words: Vec<(String, Vec<u32>)> = Vec::new();
    let mut pending: Vec<u32> = Vec::new();
    for &t in tokens {
        pending.push(t);
        let piece = tok.decode(&pending);
        if piece.contains('\u{FFFD}') && pending.len() < 4 {
            continue;
        }
        let punctuation = !piece.trim().is_empty() && piece.trim().chars().all(|c| c.is_ascii_punctuation());
        let starts_word = piece.starts_with(' ') && !punctuation;
        match words.last_mut() {
            Some(last) if !starts_word => {
                last.0.push_str(&piece);
                last.1.append(&mut pending);
            }
            _ => words.push((piece, std::mem::take(&mut pending))),
        }
        pending.clear();
    }
    words
}

/// Times of the words of `text_tokens` (no timestamp tokens), decoded after `sot_sequence`,
/// over the first `content_seconds` of the window.
pub fn align_words(
    model: &Model,
    cross: &CrossCache,
    sot_sequence: &[u32],
    text_tokens: &[u32],
    content_seconds: f64,
) -> Result<Vec<WordTiming>, BackendError> {
    let tok = &model.tokenizer;
    let heads = if model.config.alignment_heads.is_empty() {
        // No table: Whisper's fallback is every head of the second half of the decoder.
        let layers = model.dims.decoder_layers;
        (layers / 2..layers)
            .flat_map(|l| (0..model.dims.n_heads).map(move |h| (l, h)))
            .collect()
    } else {
        model.config.alignment_heads.clone()
    };
    let words = split_words(model, text_tokens);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    let mut tokens = sot_sequence.to_vec();
    tokens.push(tok.no_timestamps);
    tokens.extend_from_slice(text_tokens);
    tokens.push(tok.eot);
    let n_frames = ((content_seconds * FRAMES_PER_SECOND).ceil() as usize).max(1);
    let mut seq = model.sequence(cross)?;
    let request = AlignmentRequest {
        heads: &heads,
        n_frames: n_frames.clamp(1, ENCODER_FRAMES),
    };
    let input = StepInput {
        tokens: &tokens,
        logits_at: &[],
    };
    let weights = model.decode(&mut [&mut seq], &[input], Some(request))?.attention;
    let n_frames = weights.first().map_or(n_frames, |w| w.len() / tokens.len());
    let rows = tokens.len();

    // Per head: standardise each frame over the tokens, median-filter along time; then average.
    let mut matrix = vec![0f32; rows * n_frames];
    for w in &weights {
        let mut w = w.clone();
        for j in 0..n_frames {
            let mean = (0..rows).map(|i| w[i * n_frames + j]).sum::<f32>() / rows as f32;
            let var = (0..rows).map(|i| (w[i * n_frames + j] - mean).powi(2)).sum::<f32>() / (rows.max(2) - 1) as f32;
            let std = var.sqrt().max(1e-10);
            for i in 0..rows {
                w[i * n_frames + j] = (w[i * n_frames + j] - mean) / std;
            }
        }
        for (row, out) in w.chunks(n_frames).zip(matrix.chunks_mut(n_frames)) {
            for (o, v) in out.iter_mut().zip(median_filter(row, MEDIAN_WIDTH)) {
                *o += v / weights.len() as f32;
            }
        }
    }
    // Rows from <|notimestamps|> up to the last text token: the row of token i predicts token i+1.
    let first = sot_sequence.len();
    let n = text_tokens.len() + 1;
    let cost: Vec<f32> = matrix[first * n_frames..(first + n) * n_frames]
        .iter()
        .map(|v| -v)
        .collect();
    let path = dtw(&cost, n, n_frames);
    // Time at which the path first reaches each token row.
    let mut jump_times = vec![0f64; n];
    let mut seen = vec![false; n];
    for &(i, j) in &path {
        if !seen[i] {
            seen[i] = true;
            jump_times[i] = j as f64 / FRAMES_PER_SECOND;
        }
    }
    let mut out = Vec::with_capacity(words.len());
    let mut boundary = 0;
    for (text, word_tokens) in words {
        let start = jump_times[boundary];
        boundary += word_tokens.len();
        let end = jump_times[boundary.min(n - 1)].max(start);
        out.push(WordTiming {
            text,
            tokens: word_tokens,
            start,
            end: end.min(content_seconds),
            probability: 1.0,
        });
    }
    Ok(out)
}

/// Median of each `width`-wide neighbourhood, reflecting at the edges (as Whisper's filter).
fn median_filter(row: &[f32], width: usize) -> Vec<f32> {
    let n = row.len();
    if n <= width / 2 {
        return row.to_vec();
    }
    let half = (width / 2) as isize;
    let at = |i: isize| -> f32 {
        let j = if i < 0 {
            -i
        } else if i >= n as isize {
            2 * (n as isize - 1) - i
        } else {
            i
        };
        row[j.clamp(0, n as isize - 1) as usize]
    };
    if width == 7 {
        // The width Whisper uses: a sorting network on the values' total-order keys (the order
        // of `f32::total_cmp`, so the same element as the sort below), branch-free. The sort
        // was 3 % of a long-form run's samples, on the decoder's thread.
        let mut out = Vec::with_capacity(n);
        let window = |i: isize| -> [f32; 7] { std::array::from_fn(|k| at(i - 3 + k as isize)) };
        for i in 0..n {
            let w = if i >= 3 && i + 3 < n {
                row[i - 3..i + 4].try_into().expect("7 values")
            } else {
                window(i as isize)
            };
            out.push(median7(w));
        }
        return out;
    }
    let mut buf = Vec::with_capacity(width);
    (0..n as isize)
        .map(|i| {
            buf.clear();
            buf.extend((i - half..=i + half).map(at));
            buf.sort_by(f32::total_cmp);
            buf[buf.len() / 2]
        })
        .collect()
}

/// The median of seven values in `f32::total_cmp` order.
#[inline]
fn median7(w: [f32; 7]) -> f32 {
    // `total_cmp`'s key: negative values get their magnitude bits flipped; an involution.
    let key = |v: f32| {
        let b = v.to_bits() as i32;
        b ^ (((b >> 31) as u32) >> 1) as i32
    };
    let mut k = w.map(key);
    // Odd-even transposition sort: seven rounds sort seven values.
    for round in 0..7 {
        let mut j = round % 2;
        while j + 1 < 7 {
            let (a, b) = (k[j], k[j + 1]);
            k[j] = a.min(b);
            k[j + 1] = a.max(b);
            j += 2;
        }
    }
    f32::from_bits(key(f32::from_bits(k[3] as u32)) as u32)
}

/// Minimum-cost monotonic path through an `n × m` cost matrix from (0, 0) to (n−1, m−1);
/// returns the visited `(row, column)` cells in order.
fn dtw(cost: &[f32], n: usize, m: usize) -> Vec<(usize, usize)> {
    let w = m + 1;
    let mut acc = vec![f32::INFINITY; (n + 1) * w];
    let mut trace = vec![0u8; (n + 1) * w];
    acc[0] = 0.0;
    for j in 1..=m {
        for i in 1..=n {
            let (c0, c1, c2) = (acc[(i - 1) * w + j - 1], acc[(i - 1) * w + j], acc[i * w + j - 1]);
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            acc[i * w + j] = cost[(i - 1) * m + j - 1] + c;
            trace[i * w + j] = t;
        }
    }
    let (mut i, mut j) = (n, m);
    let mut path = Vec::new();
    while i > 0 || j > 0 {
        path.push((i.saturating_sub(1), j.saturating_sub(1)));
        let t = if i == 0 {
            2
        } else if j == 0 {
            1
        } else {
            trace[i * w + j]
        };
        match t {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtw_follows_the_cheap_diagonal_blocks() {
        // Three tokens over nine frames; token k is cheap on frames 3k..3k+3.
        let (n, m) = (3, 9);
        let cost: Vec<f32> = (0..n * m)
            .map(|x| if (x % m) / 3 == x / m { -1.0 } else { 1.0 })
            .collect();
        let path = dtw(&cost, n, m);
        assert_eq!(path.first(), Some(&(0, 0)));
        assert_eq!(path.last(), Some(&(2, 8)));
        let first_frame = |row: usize| path.iter().find(|p| p.0 == row).unwrap().1;
        assert_eq!((first_frame(0), first_frame(1), first_frame(2)), (0, 3, 6));
        assert!(path.windows(2).all(|p| p[1].0 >= p[0].0 && p[1].1 >= p[0].1));
    }

    /// The plain median filter (sort each reflected window), the reference for the network.
    fn median_filter_by_sorting(row: &[f32], width: usize) -> Vec<f32> {
        let n = row.len() as isize;
        if row.len() <= width / 2 {
            return row.to_vec();
        }
        let half = (width / 2) as isize;
        (0..n)
            .map(|i| {
                let mut buf: Vec<f32> = (i - half..=i + half)
                    .map(|j| {
                        row[(if j < 0 {
                            -j
                        } else if j >= n {
                            2 * (n - 1) - j
                        } else {
                            j
                        })
                        .clamp(0, n - 1) as usize]
                    })
                    .collect();
                buf.sort_by(f32::total_cmp);
                buf[buf.len() / 2]
            })
            .collect()
    }

    #[test]
    fn median_of_seven_matches_sorting() {
        let mut rng = fastrand::Rng::with_seed(7);
        let specials = [0.0f32, -0.0, 1.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, 1e-30, -1e-30];
        for len in [0, 1, 3, 4, 5, 7, 8, 13, 1500] {
            for _ in 0..20 {
                // Few distinct values (ties), ±0, infinities and ordinary numbers.
                let row: Vec<f32> = (0..len)
                    .map(|_| match rng.u32(0..4) {
                        0 => specials[rng.usize(0..specials.len())],
                        1 => rng.i32(-3..4) as f32,
                        _ => rng.f32() * 20.0 - 10.0,
                    })
                    .collect();
                let (got, want) = (median_filter(&row, 7), median_filter_by_sorting(&row, 7));
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "len {len}: {row:?}"
                );
            }
        }
        // Every 0/1 input sorts correctly, so the network sorts any seven values.
        for bits in 0u32..128 {
            let w: [f32; 7] = std::array::from_fn(|k| (bits >> k & 1) as f32);
            assert_eq!(median7(w), if bits.count_ones() >= 4 { 1.0 } else { 0.0 }, "{bits:07b}");
        }
    }

    #[test]
    fn median_filter_removes_spikes_and_keeps_steps() {
        let row = [0.0, 0.0, 9.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let f = median_filter(&row, 3);
        assert_eq!(f[2], 0.0);
        assert_eq!(&f[6..], &[1.0; 4]);
    }
}
