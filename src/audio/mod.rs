//! Cutting a 16 kHz mono sample stream into Whisper windows (≤ 30 s) at pauses, the way a
//! voice-activity detector would: a window ends in the first pause after some speech, so every
//! utterance starts a window (its timestamps then start near the words), and stretches with no
//! speech are marked so that nothing is decoded over them.

pub const SAMPLE_RATE: u32 = 16000;
/// Samples in one 30 s window.
pub const WINDOW_SAMPLES: usize = 480_000;
/// Energy is measured over 10 ms frames.
const FRAME: usize = 160;
const FRAMES_PER_WINDOW: usize = WINDOW_SAMPLES / FRAME;
/// Speech needed in a window before a pause may end it (200 ms).
const MIN_SPEECH_FRAMES: usize = 20;
/// A stretch of silence this long is closed as a window of its own (5 s), so time keeps moving.
const MAX_SILENT_FRAMES: usize = 500;
/// Where a full window without pauses is cut: the quietest 100 ms between 18 s and 29.5 s.
const CUT_SEARCH: std::ops::Range<usize> = 1800..2950;
const SMOOTH_FRAMES: usize = 10;

/// What counts as speech and as a pause.
#[derive(Debug, Clone, Copy)]
pub struct WindowerSettings {
    /// Frames below this level (dBFS) are silence.
    pub silence_threshold_db: f32,
    /// Silence this long (ms) after speech ends a window.
    pub min_pause_ms: u32,
}

impl Default for WindowerSettings {
    fn default() -> Self {
        WindowerSettings { silence_threshold_db: -45.0, min_pause_ms: 500 }
    }
}

/// A stretch of audio to transcribe as one window.
#[derive(Debug, Clone)]
pub struct AudioWindow {
    /// Offset of the first sample, counted from the start of the stream given to the [`Windower`].
    pub start_sample: u64,
    pub samples: Vec<f32>,
    /// False when no frame rose above the silence threshold: nothing to decode.
    pub has_speech: bool,
}

/// Accumulates samples and emits windows cut at pauses.
#[derive(Default)]
pub struct Windower {
    settings: WindowerSettings,
    pending: Vec<f32>,
    pending_start: u64,
    /// Speech flag of every complete frame of `pending`.
    speech: Vec<bool>,
}

fn frame_is_speech(frame: &[f32], threshold_db: f32) -> bool {
    let mean_square = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
    10.0 * mean_square.max(1e-12).log10() >= threshold_db
}

impl Windower {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_settings(settings: WindowerSettings) -> Self {
        Windower { settings, ..Default::default() }
    }

    /// Samples waiting for the next window.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds samples; returns every window that is complete.
    pub fn push(&mut self, samples: &[f32]) -> Vec<AudioWindow> {
        let mut out = Vec::new();
        // Feed in pieces so a huge buffer still gets every pause looked at.
        for piece in samples.chunks(FRAME * 100) {
            self.pending.extend_from_slice(piece);
            while let Some(cut) = self.next_cut() {
                out.push(self.take(cut));
            }
        }
        out
    }

    /// Returns what is left as a last window (at EOS), if anything.
    pub fn flush(&mut self) -> Option<AudioWindow> {
        if self.pending.is_empty() {
            return None;
        }
        self.scan_frames();
        let tail = &self.pending[self.speech.len() * FRAME..];
        let tail_speech = !tail.is_empty() && frame_is_speech(tail, self.settings.silence_threshold_db);
        let mut window = self.take(self.speech.len());
        window.has_speech |= tail_speech;
        window.samples.extend(std::mem::take(&mut self.pending));
        self.pending_start = window.start_sample + window.samples.len() as u64;
        Some(window)
    }

    /// Drops everything pending and restarts the sample count at zero.
    pub fn reset(&mut self) {
        *self = Windower { settings: self.settings, ..Default::default() };
    }

    fn scan_frames(&mut self) {
        let done = self.speech.len();
        let threshold = self.settings.silence_threshold_db;
        let new = self.pending[done * FRAME..].chunks_exact(FRAME).map(|f| frame_is_speech(f, threshold));
        self.speech.extend(new);
    }

    /// Frame index to cut `pending` at, if a window is complete.
    fn next_cut(&mut self) -> Option<usize> {
        self.scan_frames();
        let min_pause = (self.settings.min_pause_ms as usize / 10).max(1);
        let mut speech_frames = 0;
        let mut quiet_run = 0;
        for (i, &is_speech) in self.speech.iter().enumerate().take(FRAMES_PER_WINDOW) {
            if is_speech {
                speech_frames += 1;
                quiet_run = 0;
                continue;
            }
            quiet_run += 1;
            if speech_frames >= MIN_SPEECH_FRAMES && quiet_run >= min_pause {
                // Cut in the middle of the pause: both windows keep a little silence at the edge.
                return Some(i + 1 - quiet_run / 2);
            }
            if speech_frames == 0 && quiet_run >= MAX_SILENT_FRAMES {
                return Some(i + 1 - min_pause / 2);
            }
        }
        (self.speech.len() >= FRAMES_PER_WINDOW).then(|| self.quietest_frame())
    }

    /// Centre of the quietest 100 ms in the cut search span of a full window; the latest on a tie.
    fn quietest_frame(&self) -> usize {
        let energy: Vec<f32> =
            self.pending[..WINDOW_SAMPLES].chunks(FRAME).map(|f| f.iter().map(|s| s * s).sum::<f32>()).collect();
        let (first, last) = (CUT_SEARCH.start, CUT_SEARCH.end - SMOOTH_FRAMES);
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

    fn take(&mut self, frames: usize) -> AudioWindow {
        let has_speech = self.speech[..frames].iter().any(|&s| s);
        let rest = self.pending.split_off(frames * FRAME);
        let samples = std::mem::replace(&mut self.pending, rest);
        self.speech.drain(..frames);
        let window = AudioWindow { start_sample: self.pending_start, samples, has_speech };
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
            windows.extend(w.push(piece));
        }
        windows.extend(w.flush());
        assert!(w.flush().is_none());
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
    fn every_utterance_starts_a_window() {
        // 3 s speech, 0.8 s pause, 4 s speech, 0.3 s pause (too short), 2 s speech.
        let mut audio = tone(48000);
        audio.extend(vec![0.0; 12800]);
        audio.extend(tone(64000));
        audio.extend(vec![0.0; 4800]);
        audio.extend(tone(32000));
        let windows = run(&audio, 1000);
        assert_tiles(&windows, &audio);
        assert_eq!(windows.len(), 2);
        // The cut lies inside the first pause: 48000..60800.
        assert!((48000..60800).contains(&(windows[1].start_sample as usize)));
        assert!(windows.iter().all(|w| w.has_speech));
    }

    #[test]
    fn long_speech_without_pauses_is_cut_at_30_s_at_the_quietest_point() {
        let mut audio = tone(24 * 16000);
        // A dip too short to be a pause (80 ms), where the 30 s cut should land.
        audio.extend(vec![0.0; 1280]);
        audio.extend(tone(20 * 16000));
        let windows = run(&audio, 4096);
        assert_tiles(&windows, &audio);
        assert_eq!(windows.len(), 2);
        let cut = windows[0].samples.len();
        assert!((24 * 16000 - 800..24 * 16000 + 2080).contains(&cut), "cut at {cut}");
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
    fn a_single_sample_is_one_window() {
        let windows = run(&[0.25], 1);
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].samples, vec![0.25]);
    }
}
