//! Cutting a 16 kHz mono sample stream into Whisper windows (≤ 30 s) at pauses. Windows are kept
//! long (Whisper is most accurate with the most context) and cut at the latest pause before 30 s;
//! silence before and after speech is split off and marked, so nothing is decoded over it and
//! speech windows start at the words. What is speech is decided per 10 ms frame by a
//! [`Detector`]: Silero VAD in the elements, an energy gate otherwise. Cuts are decided frame by
//! frame as the decisions become final, so the windows depend only on the samples, not on how
//! they arrive.

mod detector;
mod level;
pub mod vad;

pub use level::level_speech;

pub use detector::{Detector, SileroFrames};
use vad::{Speech, VadError};

pub const SAMPLE_RATE: u32 = 16000;
/// Samples in one 30 s window.
pub const WINDOW_SAMPLES: usize = 480_000;
/// Energy is measured over 10 ms frames.
pub(crate) const FRAME: usize = 160;
const FRAMES_PER_WINDOW: usize = WINDOW_SAMPLES / FRAME;
/// Silence before speech longer than this (1 s) is cut off into a window of its own.
const LEAD_SILENCE_FRAMES: usize = 100;
/// Silence after speech longer than this (2 s) ends a window.
const END_SILENCE_FRAMES: usize = 200;
/// A full window without pauses is cut at the quietest 100 ms of its last 10 s (of its second
/// half for windows shorter than 20 s).
const CUT_SEARCH_FRAMES: usize = 1000;
/// Shortest `max_window_ms` honoured (1 s): below, Whisper has too little context to work with.
const MIN_MAX_FRAMES: usize = 100;
const SMOOTH_FRAMES: usize = 10;

/// What counts as speech and as a pause.
#[derive(Debug, Clone, Copy)]
pub struct WindowerSettings {
    /// Frames below this level (dBFS) are silence.
    pub silence_threshold_db: f32,
    /// Silence this long (ms) counts as a pause, where a window may end.
    pub min_pause_ms: u32,
    /// Longest window (ms, 1 000 to 30 000). Whisper tends to leave out speech in the last
    /// seconds of a full 30 s window, so windows stop short of it. Live streams set it low
    /// (a few seconds) so that text comes out within the promised latency; silence is then
    /// also closed at this length.
    pub max_window_ms: u32,
    /// Silence is closed as a window of its own once this long (ms), so time keeps moving
    /// downstream; live streams set it short.
    pub max_silence_ms: u32,
}

impl Default for WindowerSettings {
    fn default() -> Self {
        WindowerSettings {
            silence_threshold_db: -45.0,
            min_pause_ms: 300,
            max_window_ms: 28_000,
            max_silence_ms: 5_000,
        }
    }
}

/// A stretch of audio to transcribe as one window.
#[derive(Debug, Clone)]
pub struct AudioWindow {
    /// Offset of the first sample, counted from the start of the stream given to the [`Windower`].
    pub start_sample: u64,
    pub samples: Vec<f32>,
    /// False when the detector was confident of no speech in it: nothing to decode.
    pub has_speech: bool,
    /// Whether each 10 ms frame is speech (frames past the end of the list are not).
    pub speech: Vec<bool>,
}

/// Accumulates samples and emits windows cut at pauses.
#[derive(Default)]
pub struct Windower {
    settings: WindowerSettings,
    detector: Detector,
    /// Samples not yet in a window: `pending[taken..]` (windows advance `taken`; the front is
    /// dropped when more samples come, so a whole file pushed at once is not moved per window).
    pending: Vec<f32>,
    taken: usize,
    pending_start: u64,
    /// Speech decision of the first frames of `pending`, as far as they are final.
    speech: Vec<Speech>,
    /// First and last speech frame in `speech`.
    first_speech: Option<usize>,
    last_speech: Option<usize>,
}

impl Windower {
    /// Energy gate: frames above `silence_threshold_db` are speech.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_settings(settings: WindowerSettings) -> Self {
        Windower {
            settings,
            ..Default::default()
        }
    }

    pub fn with_detector(settings: WindowerSettings, detector: Detector) -> Self {
        Windower {
            settings,
            detector,
            ..Default::default()
        }
    }

    /// Changes the settings; windows already cut stay as they are.
    pub fn set_settings(&mut self, settings: WindowerSettings) {
        self.settings = settings;
    }

    /// Runs speech detection on at least `chunks` VAD chunks at a time: what files want (see
    /// [`SileroVad::set_batch`](vad::SileroVad::set_batch)); the windows are the same.
    pub fn set_detection_batch(&mut self, chunks: usize) {
        self.detector.set_batch(chunks);
    }

    /// Samples waiting for the next window.
    pub fn pending(&self) -> usize {
        self.pending.len() - self.taken
    }

    /// The audio pending so far as a window, if it holds speech: what a live stream decodes
    /// before the window is complete.
    pub fn pending_window(&self) -> Option<AudioWindow> {
        self.speech.iter().any(|s| s.confident).then(|| AudioWindow {
            start_sample: self.pending_start,
            samples: self.pending[self.taken..].to_vec(),
            has_speech: true,
            speech: self.speech.iter().map(|s| s.speech).collect(),
        })
    }

    /// Adds samples; returns every window that is complete.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<AudioWindow>, VadError> {
        if self.taken > 0 {
            self.pending.drain(..self.taken);
            self.taken = 0;
        }
        self.pending.extend_from_slice(samples);
        let decisions = self.detector.push(samples, self.settings.silence_threshold_db)?;
        Ok(self.add_frames(decisions))
    }

    /// End of the stream: the windows still to come, the last one holding what is left.
    /// The detector then starts afresh; the sample count goes on.
    pub fn flush(&mut self) -> Result<Vec<AudioWindow>, VadError> {
        let (decisions, partial) = self.detector.finish(self.settings.silence_threshold_db)?;
        self.detector.reset();
        let mut out = self.add_frames(decisions);
        if self.pending() > 0 {
            let mut window = self.take(self.speech.len());
            window.has_speech |= partial.is_some_and(|p| p.confident);
            window.speech.extend(partial.map(|p| p.speech));
            window.samples.extend_from_slice(&self.pending[self.taken..]);
            self.pending.clear();
            self.taken = 0;
            self.pending_start = window.start_sample + window.samples.len() as u64;
            out.push(window);
        }
        Ok(out)
    }

    /// Drops everything pending and restarts the sample count at zero.
    pub fn reset(&mut self) {
        self.detector.reset();
        self.pending.clear();
        self.taken = 0;
        self.pending_start = 0;
        self.speech.clear();
        self.first_speech = None;
        self.last_speech = None;
    }

    /// Takes final frame decisions one by one, cutting wherever a window completes.
    fn add_frames(&mut self, decisions: Vec<Speech>) -> Vec<AudioWindow> {
        let mut out = Vec::new();
        for d in decisions {
            let i = self.speech.len();
            self.speech.push(d);
            if d.speech {
                self.first_speech.get_or_insert(i);
                self.last_speech = Some(i);
            }
            if let Some(cut) = self.next_cut() {
                out.push(self.take(cut));
            }
        }
        out
    }

    /// Frame index to cut `pending` at, if a window is complete.
    fn next_cut(&self) -> Option<usize> {
        let min_pause = (self.settings.min_pause_ms as usize / 10).max(1);
        let speech = &self.speech;
        match self.first_speech {
            // Only silence so far: close it once it is long, so time keeps moving.
            None => {
                let longest = (self.settings.max_silence_ms as usize / 10).clamp(MIN_MAX_FRAMES, self.max_frames());
                return (speech.len() >= longest).then(|| speech.len() - min_pause.min(longest) / 2);
            }
            // Silence before speech becomes a window of its own: the speech window then starts
            // at the words, where Whisper's timestamps are most accurate.
            Some(f) if f >= LEAD_SILENCE_FRAMES => return Some(f - min_pause / 2),
            Some(_) => {}
        }
        let last_speech = self.last_speech.unwrap_or(0);
        if speech.len() - 1 - last_speech >= END_SILENCE_FRAMES {
            // A long silence after speech ends the talk for now.
            return Some(last_speech + 1 + min_pause / 2);
        }
        let max_frames = self.max_frames();
        if speech.len() < max_frames {
            return None;
        }
        // A full window: cut in the middle of its longest pause in the second half (the latest
        // of equals): the longer the pause, the likelier it falls between sentences.
        let mut quiet_run = 0;
        let mut best: Option<(usize, usize)> = None;
        for (i, is_speech) in speech[..max_frames].iter().map(|s| s.speech).enumerate() {
            if is_speech {
                let middle = i - quiet_run / 2;
                if quiet_run >= min_pause && middle >= max_frames / 2 && best.is_none_or(|(len, _)| quiet_run >= len) {
                    best = Some((quiet_run, middle));
                }
                quiet_run = 0;
            } else {
                quiet_run += 1;
            }
        }
        Some(best.map_or_else(|| self.quietest_frame(max_frames), |(_, middle)| middle))
    }

    fn max_frames(&self) -> usize {
        (self.settings.max_window_ms as usize / 10).clamp(MIN_MAX_FRAMES, FRAMES_PER_WINDOW)
    }

    /// Centre of the quietest 100 ms in the last part of a full window; the latest on a tie.
    fn quietest_frame(&self, max_frames: usize) -> usize {
        let energy: Vec<f32> = self.pending[self.taken..self.taken + max_frames * FRAME]
            .chunks(FRAME)
            .map(|f| f.iter().map(|s| s * s).sum::<f32>())
            .collect();
        let search = CUT_SEARCH_FRAMES.min(max_frames / 2);
        let (first, last) = (max_frames - search, max_frames - SMOOTH_FRAMES);
        let mut sum: f32 = energy[first..first + SMOOTH_FRAMES].iter().sum();
        let mut best = (sum, first);
        for start in first + 1..=last {
            sum += energy[start + SMOOTH_FRAMES - 1] - energy[start - 1];
            if sum <= best.0 {
                best = (sum, start);
            }
        }
        best.1 + SMOOTH_FRAMES / 2
    }

    /// Cuts the first `frames` off as a window; it is to be transcribed if the detector was
    /// confident of speech somewhere in it.
    fn take(&mut self, frames: usize) -> AudioWindow {
        let has_speech = self.speech[..frames].iter().any(|s| s.confident);
        let samples = self.pending[self.taken..self.taken + frames * FRAME].to_vec();
        self.taken += frames * FRAME;
        let speech = self.speech.drain(..frames).map(|s| s.speech).collect();
        self.first_speech = self.speech.iter().position(|s| s.speech);
        self.last_speech = self.speech.iter().rposition(|s| s.speech);
        let window = AudioWindow {
            start_sample: self.pending_start,
            samples,
            has_speech,
            speech,
        };
        self.pending_start += (frames * FRAME) as u64;
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.07).sin() * 0.5).collect()
    }

    fn run(audio: &[f32], chunk: usize) -> Vec<AudioWindow> {
        let mut w = Windower::new();
        let mut windows = Vec::new();
        for piece in audio.chunks(chunk) {
            windows.extend(w.push(piece).unwrap());
        }
        windows.extend(w.flush().unwrap());
        assert!(w.flush().unwrap().is_empty());
        windows
    }

    fn assert_tiles(windows: &[AudioWindow], audio: &[f32]) {
        let mut next = 0u64;
        for w in windows {
            assert_eq!(w.start_sample, next);
            assert!(w.samples.len() <= WINDOW_SAMPLES);
            next += w.samples.len() as u64;
        }
        let joined: Vec<f32> = windows.iter().flat_map(|w| w.samples.clone()).collect();
        assert_eq!(joined, audio);
    }

    #[test]
    fn full_windows_end_at_their_latest_pause() {
        // 10 s speech, 0.5 s pause, 12 s speech, 0.6 s pause, 10 s speech.
        let mut audio = tone(160000);
        audio.extend(vec![0.0; 8000]);
        audio.extend(tone(192000));
        audio.extend(vec![0.0; 9600]);
        audio.extend(tone(160000));
        let windows = run(&audio, 1000);
        assert_tiles(&windows, &audio);
        assert_eq!(windows.len(), 2);
        // Cut inside the second pause: 360000..369600.
        assert!(
            (360000..369600).contains(&(windows[1].start_sample as usize)),
            "cut at {}",
            windows[1].start_sample
        );
        assert!(windows.iter().all(|w| w.has_speech));
    }

    #[test]
    fn silence_around_speech_is_split_off() {
        // 3 s silence, 4 s speech, 3 s silence, 2 s speech.
        let mut audio = vec![0.0; 48000];
        audio.extend(tone(64000));
        audio.extend(vec![0.0; 48000]);
        audio.extend(tone(32000));
        let windows = run(&audio, 3000);
        assert_tiles(&windows, &audio);
        let speech: Vec<bool> = windows.iter().map(|w| w.has_speech).collect();
        let spans: Vec<(u64, usize)> = windows.iter().map(|w| (w.start_sample, w.samples.len())).collect();
        assert_eq!(speech, vec![false, true, false, true], "{spans:?}");
        assert!((44000..48000).contains(&(windows[1].start_sample as usize)));
    }

    #[test]
    fn long_speech_without_pauses_is_cut_at_the_quietest_point() {
        let mut audio = tone(20 * 16000);
        // A dip too short to be a pause (80 ms), where the cut should land.
        audio.extend(vec![0.0; 1280]);
        audio.extend(tone(20 * 16000));
        let windows = run(&audio, 4096);
        assert_tiles(&windows, &audio);
        assert_eq!(windows.len(), 2);
        let cut = windows[0].samples.len();
        assert!((20 * 16000 - 800..20 * 16000 + 2080).contains(&cut), "cut at {cut}");
    }

    #[test]
    fn silence_comes_out_as_windows_without_speech() {
        let mut audio = vec![0.0; 12 * 16000];
        audio.extend(tone(16000));
        let windows = run(&audio, 16000 * 7);
        assert_tiles(&windows, &audio);
        assert!(windows.len() >= 2);
        assert!(!windows[0].has_speech);
        assert!(windows.last().unwrap().has_speech);
        let silent = run(&vec![0.0; 30 * 16000], 3000);
        assert!(silent.iter().all(|w| !w.has_speech));
        assert_tiles(&silent, &vec![0.0; 30 * 16000]);
    }

    #[test]
    fn short_max_windows_cut_at_pauses_and_close_silence_early() {
        // Live: 2 s windows. 1.5 s speech, 0.4 s pause, 1.5 s speech, 4 s silence.
        let mut audio = tone(24000);
        audio.extend(vec![0.0; 6400]);
        audio.extend(tone(24000));
        audio.extend(vec![0.0; 64000]);
        let mut w = Windower::with_settings(WindowerSettings {
            max_window_ms: 2000,
            max_silence_ms: 2000,
            ..Default::default()
        });
        let mut windows = Vec::new();
        for piece in audio.chunks(1600) {
            windows.extend(w.push(piece).unwrap());
        }
        // Only the last partial window is left for EOS.
        assert!(w.pending() <= 32000, "{} samples held back", w.pending());
        windows.extend(w.flush().unwrap());
        assert_tiles(&windows, &audio);
        assert!(windows.iter().all(|w| w.samples.len() <= 32000));
        // The first cut falls in the pause.
        assert!(
            (24000..30400).contains(&windows[1].start_sample),
            "cut at {}",
            windows[1].start_sample
        );
        assert!(windows
            .iter()
            .filter(|w| w.start_sample >= 56000)
            .all(|w| !w.has_speech || w.start_sample < 60000));
    }

    #[test]
    fn windows_do_not_depend_on_buffer_sizes() {
        // Speech and pauses of many lengths, with a 25 s stretch that needs a forced cut.
        let mut audio = Vec::new();
        for (i, secs) in [3.0f32, 0.2, 7.5, 0.45, 25.0, 2.5, 1.0, 0.31, 12.0].iter().enumerate() {
            let n = (secs * 16000.0) as usize;
            audio.extend(if i % 2 == 0 { tone(n) } else { vec![0.0; n] });
        }
        let reference: Vec<(u64, usize, bool)> = run(&audio, audio.len())
            .iter()
            .map(|w| (w.start_sample, w.samples.len(), w.has_speech))
            .collect();
        assert!(reference.len() >= 3, "{reference:?}");
        for chunk in [1, 160, 441, 1152, 4096, 16000, 72_000] {
            let windows: Vec<(u64, usize, bool)> = run(&audio, chunk)
                .iter()
                .map(|w| (w.start_sample, w.samples.len(), w.has_speech))
                .collect();
            assert_eq!(windows, reference, "buffers of {chunk} samples");
        }
    }

    #[test]
    fn a_single_sample_is_one_window() {
        let windows = run(&[0.25], 1);
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].samples, vec![0.25]);
    }
}
