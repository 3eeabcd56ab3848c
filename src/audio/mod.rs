//! Cutting a 16 kHz mono sample stream into Whisper windows (≤ 30 s) at pauses. Windows are kept
//! long (Whisper is most accurate with the most context) and cut at the latest pause before 30 s;
//! silence before and after speech is split off and marked, so nothing is decoded over it and
//! speech windows start at the words.

pub const SAMPLE_RATE: u32 = 16000;
/// Samples in one 30 s window.
pub const WINDOW_SAMPLES: usize = 480_000;
/// Energy is measured over 10 ms frames.
const FRAME: usize = 160;
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
        WindowerSettings { silence_threshold_db: -45.0, min_pause_ms: 300, max_window_ms: 28_000, max_silence_ms: 5_000 }
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

    /// Changes the settings; windows already cut stay as they are.
    pub fn set_settings(&mut self, settings: WindowerSettings) {
        self.settings = settings;
    }

    /// Samples waiting for the next window.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The audio pending so far as a window, if it holds speech: what a live stream decodes
    /// before the window is complete.
    pub fn pending_window(&self) -> Option<AudioWindow> {
        let has_speech = self.speech.iter().any(|&s| s);
        has_speech.then(|| AudioWindow { start_sample: self.pending_start, samples: self.pending.clone(), has_speech })
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
        let speech = &self.speech;
        let first_speech = speech.iter().position(|&s| s);
        match first_speech {
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
        let last_speech = speech.iter().rposition(|&s| s).unwrap_or(0);
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
        for (i, &is_speech) in speech[..max_frames].iter().enumerate() {
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
        let energy: Vec<f32> =
            self.pending[..max_frames * FRAME].chunks(FRAME).map(|f| f.iter().map(|s| s * s).sum::<f32>()).collect();
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
        assert!((360000..369600).contains(&(windows[1].start_sample as usize)), "cut at {}", windows[1].start_sample);
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
        let mut w = Windower::with_settings(WindowerSettings { max_window_ms: 2000, max_silence_ms: 2000, ..Default::default() });
        let mut windows = Vec::new();
        for piece in audio.chunks(1600) {
            windows.extend(w.push(piece));
        }
        // Only the last partial window is left for EOS.
        assert!(w.pending() <= 32000, "{} samples held back", w.pending());
        windows.extend(w.flush());
        assert_tiles(&windows, &audio);
        assert!(windows.iter().all(|w| w.samples.len() <= 32000));
        // The first cut falls in the pause.
        assert!((24000..30400).contains(&windows[1].start_sample), "cut at {}", windows[1].start_sample);
        assert!(windows.iter().filter(|w| w.start_sample >= 56000).all(|w| !w.has_speech || w.start_sample < 60000));
    }

    #[test]
    fn a_single_sample_is_one_window() {
        let windows = run(&[0.25], 1);
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].samples, vec![0.25]);
    }
}
