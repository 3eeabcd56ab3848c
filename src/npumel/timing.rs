//! npumel's arithmetic, apart from the element: sample times and window spans, timestamp
//! jumps, when a live pass is due or held back, and the clean-up of input samples.

use gst::prelude::*;
use npuwhisper_core::audio::{SAMPLE_RATE, WINDOW_SAMPLES};

/// Larger timestamp jumps are treated as a discontinuity; smaller ones as jitter.
pub const MAX_PTS_DRIFT: gst::ClockTime = gst::ClockTime::from_mseconds(40);

/// Time of sample `n` of a count starting at `base`.
pub fn sample_time(base: gst::ClockTime, n: u64) -> Option<gst::ClockTime> {
    gst::ClockTime::SECOND
        .mul_div_floor(n, SAMPLE_RATE as u64)
        .and_then(|off| base.checked_add(off))
}

/// Start and duration of a window of `len` samples from `start_sample`, cut at
/// [`WINDOW_SAMPLES`]. The end comes from the sample count rather than the length, so
/// consecutive windows abut exactly.
pub fn window_span(
    base: gst::ClockTime,
    start_sample: u64,
    len: usize,
) -> (Option<gst::ClockTime>, Option<gst::ClockTime>) {
    let start = sample_time(base, start_sample);
    let end = sample_time(base, start_sample + len.min(WINDOW_SAMPLES) as u64);
    (start, start.zip(end).map(|(s, e)| e.saturating_sub(s)))
}

/// Whether a buffer stamped `pts` leaves the timeline that expected it at `expected` by
/// more than [`MAX_PTS_DRIFT`] either way. Without both times nothing can be said: no.
pub fn jumped(pts: Option<gst::ClockTime>, expected: Option<gst::ClockTime>) -> bool {
    match (pts, expected) {
        (Some(p), Some(e)) => p.saturating_sub(e).max(e.saturating_sub(p)) > MAX_PTS_DRIFT,
        _ => false,
    }
}

/// Samples in `ms` milliseconds.
pub fn ms_samples(ms: u64) -> usize {
    ms as usize * SAMPLE_RATE as usize / 1000
}

/// Whether a live pass over the `pending` samples is due: at least `step` more than when
/// the last pass was sent (`pass_sent`), and at least `shortest` in all.
pub fn pass_due(pending: usize, pass_sent: usize, step: usize, shortest: usize) -> bool {
    pending >= (pass_sent + step).max(shortest)
}

/// Whether downstream is still decoding the last pass sent (ending at `sent`), by the end of
/// the last one it said is done. Until it says so at all, passes are not held back.
pub fn pass_in_flight(sent: Option<gst::ClockTime>, done: Option<gst::ClockTime>) -> bool {
    matches!((sent, done), (Some(sent), Some(done)) if done < sent)
}

/// Replaces NaN and infinite samples by silence (one would spread over a whole window's
/// spectrogram); returns how many there were.
pub fn silence_non_finite(samples: &mut [f32]) -> usize {
    let mut n = 0;
    for s in samples.iter_mut().filter(|s| !s.is_finite()) {
        *s = 0.0;
        n += 1;
    }
    n
}

/// Scales a window whose peak is beyond full scale down to full scale (a function of the
/// window alone, so still deterministic); returns that peak, or `None` if within range.
pub fn scale_to_full(samples: &mut [f32]) -> Option<f32> {
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    if peak <= 1.0 {
        return None;
    }
    samples.iter_mut().for_each(|s| *s /= peak);
    Some(peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(v)
    }

    #[test]
    fn sample_times_count_from_the_base() {
        assert_eq!(sample_time(ms(500), 0), Some(ms(500)));
        assert_eq!(sample_time(ms(500), 16_000), Some(ms(1500)));
        // 1 sample is 62.5 µs: floored to whole nanoseconds.
        assert_eq!(
            sample_time(gst::ClockTime::ZERO, 1),
            Some(gst::ClockTime::from_nseconds(62_500))
        );
        assert_eq!(sample_time(gst::ClockTime::MAX, 16_000), None, "overflow is no time");
    }

    #[test]
    fn window_spans_abut_and_stop_at_thirty_seconds() {
        let base = ms(1000);
        let (s1, d1) = window_span(base, 0, 24_001);
        let (s2, d2) = window_span(base, 24_001, 8_000);
        assert_eq!(s1, Some(ms(1000)));
        assert_eq!(
            s1.unwrap() + d1.unwrap(),
            s2.unwrap(),
            "the second starts where the first ends"
        );
        assert_eq!(d2, Some(ms(500)));
        let (_, long) = window_span(base, 0, WINDOW_SAMPLES + 16_000);
        assert_eq!(long, Some(gst::ClockTime::from_seconds(30)));
        let (start, empty) = window_span(base, 16_000, 0);
        assert_eq!((start, empty), (Some(ms(2000)), Some(gst::ClockTime::ZERO)));
    }

    #[test]
    fn jumps_beyond_the_drift_either_way_break_the_timeline() {
        let e = Some(ms(10_000));
        assert!(!jumped(Some(ms(10_000)), e));
        assert!(!jumped(Some(ms(10_040)), e), "40 ms is jitter");
        assert!(!jumped(Some(ms(9_960)), e));
        assert!(jumped(Some(ms(10_041)), e));
        assert!(jumped(Some(ms(9_959)), e), "a jump back counts too");
        assert!(!jumped(None, e), "a buffer without PTS follows on");
        assert!(!jumped(Some(ms(5)), None));
    }

    #[test]
    fn a_pass_is_due_after_a_step_and_not_while_one_is_in_flight() {
        let (step, shortest) = (ms_samples(1000), ms_samples(2000));
        assert_eq!(step, 16_000);
        assert!(!pass_due(31_999, 0, step, shortest), "shorter than the shortest pass");
        assert!(pass_due(32_000, 0, step, shortest));
        assert!(
            !pass_due(47_999, 32_000, step, shortest),
            "less than a step since the last"
        );
        assert!(pass_due(48_000, 32_000, step, shortest));
        assert!(!pass_in_flight(Some(ms(3000)), None), "no answer yet: not held");
        assert!(pass_in_flight(Some(ms(3000)), Some(ms(2000))));
        assert!(!pass_in_flight(Some(ms(3000)), Some(ms(3000))));
        assert!(!pass_in_flight(None, Some(ms(3000))));
    }

    #[test]
    fn non_finite_samples_become_silence() {
        let mut s = [0.5, f32::NAN, -0.25, f32::INFINITY, f32::NEG_INFINITY];
        assert_eq!(silence_non_finite(&mut s), 3);
        assert_eq!(s, [0.5, 0.0, -0.25, 0.0, 0.0]);
        assert_eq!(silence_non_finite(&mut []), 0);
    }

    #[test]
    fn windows_beyond_full_scale_are_scaled_to_it() {
        let mut within = [0.5, -1.0, 0.25];
        assert_eq!(scale_to_full(&mut within), None);
        assert_eq!(within, [0.5, -1.0, 0.25], "left alone");
        let mut over = [2.0, -4.0, 1.0];
        assert_eq!(scale_to_full(&mut over), Some(4.0));
        assert_eq!(over, [0.5, -1.0, 0.25]);
        assert_eq!(scale_to_full(&mut []), None);
    }
}
