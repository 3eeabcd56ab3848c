//! Bringing quiet speech up to the level of the loudest speech beside it: in a window, each
//! stretch of speech (a run of speech frames) quieter than the window's loudest stretch is
//! amplified to that stretch's peak (at most -6 dBFS), by at most 40 dB. Louder stretches and
//! everything between stretches keep their level, so a quiet talker between loud ones is heard
//! and pauses are not made into noise. A window whose speech is all at one level keeps it: the
//! log-mel's own range handles a quiet recording (faster-whisper, which levels nothing, loses
//! no word at -50 dB), while lifting it by 40 dB lifts the 16-bit noise floor with it and cost
//! words there. Gains change over one frame.

use super::FRAME;

/// Highest peak (-6 dBFS) that quieter speech is brought up to.
const TARGET_PEAK: f32 = 0.5;
/// Most gain (40 dB).
const MAX_GAIN: f32 = 100.0;

/// Levels `samples` in place; `speech` says which 10 ms frames are speech.
pub fn level_speech(samples: &mut [f32], speech: &[bool]) {
    let frames = samples.len().div_ceil(FRAME);
    let mut gains = vec![1.0f32; frames];
    // (first frame, end frame, gain) of each stretch of speech.
    let mut runs = Vec::new();
    let mut i = 0;
    while i < frames {
        if !speech.get(i).copied().unwrap_or(false) {
            i += 1;
            continue;
        }
        let start = i;
        while i < frames && speech.get(i).copied().unwrap_or(false) {
            i += 1;
        }
        let run = &samples[start * FRAME..(i * FRAME).min(samples.len())];
        let peak = run.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        if peak > 0.0 {
            runs.push((start, i, peak));
        }
    }
    let loudest = runs.iter().fold(0.0f32, |m, r| m.max(r.2)).min(TARGET_PEAK);
    for r in &mut runs {
        r.2 = (loudest / r.2).clamp(1.0, MAX_GAIN);
    }
    // Speech gets its stretch's gain; what lies between two stretches the lesser of theirs,
    // what lies before the first or after the last that stretch's: a quiet recording is
    // amplified as a whole, and the pauses of a loud talker are not.
    let mut from = 0;
    for (k, &(start, end, gain)) in runs.iter().enumerate() {
        let before = if k == 0 { gain } else { gain.min(runs[k - 1].2) };
        gains[from..start].fill(before);
        gains[start..end].fill(gain);
        from = end;
    }
    if let Some(&(_, _, gain)) = runs.last() {
        gains[from..].fill(gain);
    }
    let mut previous = gains.first().copied().unwrap_or(1.0);
    for (frame, &gain) in samples.chunks_mut(FRAME).zip(&gains) {
        if gain == previous {
            frame.iter_mut().for_each(|s| *s *= gain);
        } else {
            // A linear ramp over the frame: no click where the gain changes.
            let step = (gain - previous) / FRAME as f32;
            for (k, s) in frame.iter_mut().enumerate() {
                *s *= previous + step * (k + 1) as f32;
            }
        }
        previous = gain;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, amplitude: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.07).sin() * amplitude).collect()
    }

    fn peak(s: &[f32]) -> f32 {
        s.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }

    #[test]
    fn quiet_speech_is_brought_up_and_loud_speech_left_alone() {
        // Loud speech, a pause, quiet speech (-40 dB), a pause.
        let mut samples = tone(16000, 0.8);
        samples.extend(vec![0.001; 8000]);
        samples.extend(tone(16000, 0.008));
        samples.extend(vec![0.001; 8000]);
        let speech: Vec<bool> = (0..300).map(|f| f < 100 || (150..250).contains(&f)).collect();
        let original = samples.clone();
        level_speech(&mut samples, &speech);
        assert_eq!(&samples[..16000], &original[..16000]);
        let quiet = &samples[24000 + 160..40000];
        assert!((peak(quiet) - TARGET_PEAK).abs() < 0.01, "quiet peak {}", peak(quiet));
        // The pause after loud speech keeps its level (the lesser gain of its neighbours); what
        // follows the last stretch takes its gain, as a quiet recording is amplified whole.
        assert!(samples[16000 + 160..24000 - 160]
            .iter()
            .all(|&s| (s - 0.001).abs() < 1e-6));
        let gain = TARGET_PEAK / 0.008;
        assert!(
            samples[40000 + 160..].iter().all(|&s| (s - 0.001 * gain).abs() < 1e-3),
            "trailing pause"
        );
    }

    #[test]
    fn quiet_speech_is_brought_up_to_its_loudest_neighbour() {
        // Speech at -20 dB, then at -50 dB: the quiet stretch comes up to the louder one's peak,
        // not to -6 dBFS, and the louder one keeps its level.
        let mut samples = tone(16000, 0.1);
        samples.extend(tone(16000, 0.003));
        let mut speech = vec![true; 200];
        speech[100] = false;
        level_speech(&mut samples, &speech);
        assert!(
            (peak(&samples[16160..]) - 0.1).abs() < 1e-3,
            "{}",
            peak(&samples[16160..])
        );
        assert!((peak(&samples[..16000]) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn speech_at_one_level_keeps_it() {
        // A quiet recording (-50 dB), two stretches at one level: nothing to bring up.
        let mut samples = tone(16000, 0.003);
        samples.extend(vec![0.0; 1600]);
        samples.extend(tone(16000, 0.003));
        let speech: Vec<bool> = (0..210).map(|f| !(100..110).contains(&f)).collect();
        let original = samples.clone();
        level_speech(&mut samples, &speech);
        assert_eq!(samples, original);
    }

    #[test]
    fn gain_is_bounded_and_silence_untouched() {
        let mut samples = tone(3200, 0.5);
        samples.extend(tone(3200, 1e-6));
        let speech: Vec<bool> = (0..40).map(|f| f != 20).collect();
        level_speech(&mut samples, &speech);
        assert!((peak(&samples[3360..]) - 1e-6 * MAX_GAIN).abs() < 1e-6);
        let mut zeros = vec![0.0; 1000];
        level_speech(&mut zeros, &[true; 7]);
        assert!(zeros.iter().all(|&s| s == 0.0));
    }
}
