//! Voice activity detection with Silero VAD v6 (MIT).
//!
//! The model reads the stream in 32 ms chunks (512 samples, each with the 64 samples before it)
//! and carries an LSTM state from chunk to chunk, so it is fed the whole stream in order. Chunks
//! are counted from the start of the stream and the model's output does not depend on how many
//! chunks go into one call, so the result does not depend on how upstream cuts its buffers.
//!
//! The network runs on the kernels crate ([`net`]), with the weights read from the model's ONNX
//! file; [`SileroVad::load_onnxruntime`] runs the same file through ONNX Runtime instead, the
//! reference the port is tested against.
//!
//! Before the model the audio goes through a DC blocker and an automatic gain: a chunk whose
//! last second peaks below a fixed level is amplified to it (by at most 40 dB), so the model
//! hears quiet recordings as it hears loud ones; louder audio goes in as it is.

mod net;
mod onnx_proto;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::value::TensorRef;

/// Samples per chunk at 16 kHz.
pub const CHUNK: usize = 512;
/// Samples of the previous chunk given with each chunk.
const CONTEXT: usize = 64;
const STATE: usize = 128;
/// Chunks run at most at once: a push of a whole file runs in parts of this many.
const MAX_ROWS: usize = 1024;

/// Chunks per ONNX Runtime call: bounds the memory of one call; results do not depend on it.
const MAX_BATCH: usize = 2048;
/// Level (-12 dBFS) the gain brings a quieter recent peak up to.
const AGC_TARGET: f32 = 0.25;
/// Most gain (40 dB): audio quieter than that is taken as silence.
const AGC_MAX_GAIN: f32 = 100.0;
/// How far back (chunks, 1 s) the peak is taken: short enough that a quiet talker right
/// after a loud one is heard.
const AGC_WINDOW: usize = 32;
/// DC blocker pole: a high-pass at about 13 Hz.
const DC_POLE: f32 = 0.995;

/// File name of the model in the models directory.
pub const MODEL_FILE: &str = "silero_vad_v6.onnx";

/// The model file used by default: in the models directory, as the set-up installs it.
pub fn default_model_path() -> PathBuf {
    crate::model::models_dir().join(MODEL_FILE)
}

/// Why the detector could not run.
#[derive(Debug, Clone)]
pub struct VadError(pub String);

impl std::fmt::Display for VadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VadError {}

/// What computes the network.
enum Backend {
    /// The network (shared by every stream of the process that loaded the same file) and this
    /// stream's buffers.
    Kernels(Arc<net::SileroNet>, Box<net::Scratch>),
    OnnxRuntime(Box<Session>),
}

/// Chunks that files run together ([`SileroVad::set_batch`]): about 16 s, eight blocks of the
/// network's pipeline, so that nearly every block's recurrence overlaps the next one's front
/// end.
pub const FILE_BATCH: usize = 512;

/// Silero VAD over a stream: speech probability per 512-sample chunk.
pub struct SileroVad {
    backend: Backend,
    h: Vec<f32>,
    c: Vec<f32>,
    /// Conditioned samples not yet in a chunk.
    pending: Vec<f32>,
    /// Last samples of the previous chunk (conditioned).
    context: [f32; CONTEXT],
    /// Peak of each of the last chunks, for the gain.
    peaks: VecDeque<f32>,
    dc_x: f32,
    dc_y: f32,
    /// Chunks run together at least (see [`SileroVad::set_batch`]).
    batch: usize,
    /// Rows of chunks waiting for a batch.
    rows: Vec<f32>,
}

impl SileroVad {
    /// Loads the model from `path`, to run on the kernels crate.
    pub fn load(path: &Path) -> Result<Self, VadError> {
        check_exists(path)?;
        let net = shared_net(path)?;
        Ok(Self::with_backend(Backend::Kernels(net, Box::default())))
    }

    /// Loads the model from `path` to run through ONNX Runtime (one thread: the chunks of a
    /// stream depend on each other): the reference for the kernels' version.
    pub fn load_onnxruntime(path: &Path) -> Result<Self, VadError> {
        check_exists(path)?;
        let env = crate::runtime::environment().map_err(VadError)?;
        let err = |e: ort::Error| VadError(format!("Could not load the VAD model {}: {e}", path.display()));
        let session = Session::builder(env)
            .map_err(err)?
            .with_intra_threads(1)
            .map_err(|e| err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.into()))?
            .commit_from_file(path)
            .map_err(err)?;
        Ok(Self::with_backend(Backend::OnnxRuntime(Box::new(session))))
    }

    fn with_backend(backend: Backend) -> Self {
        SileroVad {
            backend,
            h: vec![0.0; STATE],
            c: vec![0.0; STATE],
            pending: Vec::with_capacity(CHUNK),
            context: [0.0; CONTEXT],
            peaks: VecDeque::with_capacity(AGC_WINDOW),
            dc_x: 0.0,
            dc_y: 0.0,
            batch: 1,
            rows: Vec::new(),
        }
    }

    /// Holds chunks back until `chunks` of them can run together (the last ones at
    /// [`SileroVad::finish`]): for files, where the products of many chunks at once cost less
    /// per chunk than a buffer's few. A chunk's probability does not depend on it. 1, the
    /// default, runs every chunk as soon as it is complete (live streams).
    pub fn set_batch(&mut self, chunks: usize) {
        self.batch = chunks.max(1);
    }

    /// Back to the start of a stream.
    pub fn reset(&mut self) {
        self.h.fill(0.0);
        self.c.fill(0.0);
        self.pending.clear();
        self.context = [0.0; CONTEXT];
        self.peaks.clear();
        self.dc_x = 0.0;
        self.dc_y = 0.0;
        self.rows.clear();
    }

    /// Adds samples; returns the speech probability of every chunk completed.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>, VadError> {
        let width = CHUNK + CONTEXT;
        let mut rows = std::mem::take(&mut self.rows);
        let mut probs = Vec::new();
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (CHUNK - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == CHUNK {
                self.chunk_row(&mut rows);
                // A long push (a whole file) runs in parts: the rows stay a few MB.
                if rows.len() == MAX_ROWS * width {
                    probs.extend(self.run(&rows)?);
                    rows.clear();
                }
            }
        }
        if rows.len() >= self.batch * width {
            probs.extend(self.run(&rows)?);
            rows.clear();
        }
        self.rows = rows;
        Ok(probs)
    }

    /// The end of the stream: the probabilities of the chunks held back for a batch, then of
    /// the last partial chunk padded with zeros, if there was one.
    pub fn finish(&mut self) -> Result<Vec<f32>, VadError> {
        let mut rows = std::mem::take(&mut self.rows);
        if !self.pending.is_empty() {
            // Filtered as far as the stream goes, then zeros.
            dc_block(&mut self.pending, &mut self.dc_x, &mut self.dc_y);
            self.pending.resize(CHUNK, 0.0);
            self.chunk_row_filtered(&mut rows);
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let probs = self.run(&rows);
        rows.clear();
        self.rows = rows;
        probs
    }

    /// Moves the pending chunk (raw samples), filtered and scaled by the gain, with its context
    /// into `rows`.
    fn chunk_row(&mut self, rows: &mut Vec<f32>) {
        dc_block(&mut self.pending, &mut self.dc_x, &mut self.dc_y);
        self.chunk_row_filtered(rows);
    }

    /// Moves the filtered pending chunk, scaled by the gain, with its context into `rows`.
    fn chunk_row_filtered(&mut self, rows: &mut Vec<f32>) {
        let peak = self.pending.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        if self.peaks.len() == AGC_WINDOW {
            self.peaks.pop_front();
        }
        self.peaks.push_back(peak);
        let recent = self.peaks.iter().fold(0.0f32, |m, &p| m.max(p));
        // Only up: the model hears loud audio best as it is (scaled down, speech that follows
        // loud music was heard a second late).
        let gain = if recent > 0.0 {
            (AGC_TARGET / recent).clamp(1.0, AGC_MAX_GAIN)
        } else {
            1.0
        };
        for s in &mut self.pending {
            *s = (*s * gain).clamp(-1.0, 1.0);
        }
        rows.extend_from_slice(&self.context);
        rows.extend_from_slice(&self.pending);
        self.context.copy_from_slice(&self.pending[CHUNK - CONTEXT..]);
        self.pending.clear();
    }

    fn run(&mut self, rows: &[f32]) -> Result<Vec<f32>, VadError> {
        let session = match &mut self.backend {
            Backend::Kernels(net, scratch) => return Ok(net.run(scratch, rows, &mut self.h, &mut self.c)),
            Backend::OnnxRuntime(session) => session,
        };
        let width = CHUNK + CONTEXT;
        let mut probs = Vec::with_capacity(rows.len() / width);
        let err = |e: ort::Error| VadError(format!("Silero VAD failed: {e}"));
        for batch in rows.chunks(MAX_BATCH * width) {
            let n = batch.len() / width;
            let outputs = session
                .run(ort::inputs![
                    "input" => TensorRef::from_array_view(([n, width], batch)).map_err(err)?,
                    "h" => TensorRef::from_array_view(([1usize, 1, STATE], self.h.as_slice())).map_err(err)?,
                    "c" => TensorRef::from_array_view(([1usize, 1, STATE], self.c.as_slice())).map_err(err)?,
                ])
                .map_err(err)?;
            let (_, p) = outputs["speech_probs"].try_extract_tensor::<f32>().map_err(err)?;
            let (_, h) = outputs["hn"].try_extract_tensor::<f32>().map_err(err)?;
            let (_, c) = outputs["cn"].try_extract_tensor::<f32>().map_err(err)?;
            if p.len() != n || h.len() != STATE || c.len() != STATE {
                return Err(VadError(format!(
                    "Silero VAD returned {} probabilities for {n} chunks",
                    p.len()
                )));
            }
            probs.extend_from_slice(p);
            self.h.copy_from_slice(h);
            self.c.copy_from_slice(c);
        }
        Ok(probs)
    }
}

fn check_exists(path: &Path) -> Result<(), VadError> {
    if path.is_file() {
        return Ok(());
    }
    Err(VadError(format!(
        "Silero VAD model {} not found: run scripts/fetch-models.sh (it takes it from the faster-whisper wheel)",
        path.display()
    )))
}

/// How chunk probabilities become speech.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadSettings {
    /// A chunk at or above this starts speech.
    pub threshold: f32,
    /// Speech goes on while chunks stay at or above this.
    pub neg_threshold: f32,
    /// A window is transcribed only if one of its chunks reaches this: noise that the model
    /// finds faintly speech-like stays below it, speech reaches it within a few words.
    pub confident_threshold: f32,
    /// Speech is widened by this much (ms) on each side, for soft onsets and endings.
    pub pad_ms: u32,
}

impl Default for VadSettings {
    fn default() -> Self {
        VadSettings {
            threshold: 0.5,
            neg_threshold: 0.35,
            confident_threshold: 0.8,
            pad_ms: 96,
        }
    }
}

/// The decision for one chunk (or frame).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Speech {
    pub speech: bool,
    /// The detector is sure of it (see [`VadSettings::confident_threshold`]).
    pub confident: bool,
}

/// Chunk probabilities to decisions, with hysteresis: speech starts at `threshold` and lasts
/// while the probability stays at or above `neg_threshold`.
#[derive(Debug, Default)]
pub struct ChunkGate {
    settings: VadSettings,
    in_speech: bool,
}

impl ChunkGate {
    pub fn new(settings: VadSettings) -> Self {
        ChunkGate {
            settings,
            in_speech: false,
        }
    }

    pub fn decide(&mut self, p: f32) -> Speech {
        let s = self.settings;
        self.in_speech = p >= s.threshold || (self.in_speech && p >= s.neg_threshold);
        Speech {
            speech: self.in_speech,
            confident: p >= s.confident_threshold,
        }
    }
}

/// The network in the file at `path`, read once per process: every pipeline of a process (the
/// command's files one after another, a benchmark's) shares it instead of parsing and packing
/// it again. A file that changed (size or modification time) is read again.
fn shared_net(path: &Path) -> Result<Arc<net::SileroNet>, VadError> {
    type Stamp = (u64, Option<std::time::SystemTime>);
    static NETS: Mutex<Vec<(PathBuf, Stamp, Arc<net::SileroNet>)>> = Mutex::new(Vec::new());
    let read_err = |e: std::io::Error| VadError(format!("Could not read the VAD model {}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let stamp = (meta.len(), meta.modified().ok());
    let mut nets = NETS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, net)) = nets.iter().find(|(p, s, _)| p == path && *s == stamp) {
        return Ok(net.clone());
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let net = net::SileroNet::from_onnx(&bytes, CHUNK + CONTEXT)
        .map_err(|e| VadError(format!("Could not load the VAD model {}: {e}", path.display())))?;
    if net.state_len() != STATE {
        return Err(VadError(format!(
            "The VAD model {} has an LSTM of {} units, not Silero VAD's {STATE}",
            path.display(),
            net.state_len()
        )));
    }
    let net = Arc::new(net);
    nets.retain(|(p, _, _)| p != path);
    nets.push((path.to_path_buf(), stamp, net.clone()));
    Ok(net)
}

/// The DC blocker `y[n] = x[n] − x[n−1] + R·y[n−1]` on `s`, in place, carrying the last input
/// and output in `x` and `y`. Run on whole chunks (and the stream's last part), so its blocks
/// fall at the same samples whatever the upstream buffers. Eight outputs at a time: each is a
/// weighted sum of the block's differences plus `R^(i+1)` times the last output, so only that
/// product waits on the block before (sample by sample, every sample waited on the last).
fn dc_block(s: &mut [f32], x: &mut f32, y: &mut f32) {
    const B: usize = 8;
    let mut pow = [1.0f32; B + 1];
    for i in 1..=B {
        pow[i] = pow[i - 1] * DC_POLE;
    }
    let n = s.len() / B * B;
    let (blocks, tail) = s.split_at_mut(n);
    for block in blocks.chunks_exact_mut(B) {
        let mut d = [0f32; B];
        for (d, &v) in d.iter_mut().zip(block.iter()) {
            *d = v - *x;
            *x = v;
        }
        let mut out = [0f32; B];
        for (k, &dk) in d.iter().enumerate() {
            for (i, o) in out.iter_mut().enumerate().skip(k) {
                *o += pow[i - k] * dk;
            }
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o += pow[i + 1] * *y;
        }
        *y = out[B - 1];
        block.copy_from_slice(&out);
    }
    for v in tail {
        *y = *v - *x + DC_POLE * *y;
        *x = *v;
        *v = *y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernels_net(vad: &SileroVad) -> &Arc<net::SileroNet> {
        match &vad.backend {
            Backend::Kernels(net, _) => net,
            Backend::OnnxRuntime(_) => unreachable!("loaded for the kernels"),
        }
    }

    #[test]
    fn streams_share_one_network_and_keep_their_own_state() {
        let path = default_model_path();
        if !path.exists() {
            eprintln!("skipped: no VAD model at {} (scripts/fetch-models.sh)", path.display());
            return;
        }
        let (mut a, mut b) = (SileroVad::load(&path).unwrap(), SileroVad::load(&path).unwrap());
        assert!(Arc::ptr_eq(kernels_net(&a), kernels_net(&b)), "read twice");
        // Two different signals pushed in turn through the shared network give what each gives
        // alone.
        let tone: Vec<f32> = (0..40 * CHUNK)
            .map(|n| 0.3 * (n as f32 * 0.05).sin() * ((n / 4000) % 2) as f32)
            .collect();
        let buzz: Vec<f32> = (0..40 * CHUNK)
            .map(|n| 0.2 * (((n * 7919) % 613) as f32 / 306.0 - 1.0))
            .collect();
        let alone = |x: &[f32]| {
            let mut v = SileroVad::load(&path).unwrap();
            let mut p = v.push(x).unwrap();
            p.extend(v.finish().unwrap());
            p
        };
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        for (xa, xb) in tone.chunks(3000).zip(buzz.chunks(3000)) {
            pa.extend(a.push(xa).unwrap());
            pb.extend(b.push(xb).unwrap());
        }
        pa.extend(a.finish().unwrap());
        pb.extend(b.finish().unwrap());
        assert_eq!(pa, alone(&tone));
        assert_eq!(pb, alone(&buzz));
        assert_ne!(pa, pb);
        // A file that changed is read again.
        let dir = std::env::temp_dir().join(format!("npuwhisper-vad-share-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join(MODEL_FILE);
        std::fs::copy(&path, &copy).unwrap();
        let first = SileroVad::load(&copy).unwrap();
        assert!(Arc::ptr_eq(
            kernels_net(&first),
            kernels_net(&SileroVad::load(&copy).unwrap())
        ));
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let again = SileroVad::load(&copy).unwrap();
        assert!(
            !Arc::ptr_eq(kernels_net(&first), kernels_net(&again)),
            "a changed file was not read again"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn dc_block_is_the_recurrence() {
        // Speech-like input with an offset, in chunks and a last part that is not a whole block.
        let input: Vec<f32> = (0..3 * CHUNK + 13)
            .map(|n| 0.3 + 0.5 * (n as f32 * 0.07).sin() + 0.1 * (n as f32 * 1.3).cos())
            .collect();
        let (mut x, mut y) = (0f64, 0f64);
        let want: Vec<f64> = input
            .iter()
            .map(|&v| {
                y = v as f64 - x + DC_POLE as f64 * y;
                x = v as f64;
                y
            })
            .collect();
        let (mut got, mut x, mut y) = (input.clone(), 0f32, 0f32);
        for part in got.chunks_mut(CHUNK) {
            dc_block(part, &mut x, &mut y);
        }
        let worst = got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (g as f64 - w).abs())
            .fold(0.0, f64::max);
        // f32 rounding of values below 1, a few ulps (a wrong power or tap is 1e-2 or more).
        assert!(worst < 1e-5, "largest difference {worst:e}");
        // The offset is gone by the end.
        let tail = &got[got.len() - CHUNK..];
        assert!(tail.iter().sum::<f32>().abs() / (CHUNK as f32) < 0.02);
    }

    fn gate(probs: &[f32]) -> Vec<bool> {
        let mut g = ChunkGate::new(VadSettings::default());
        probs.iter().map(|&p| g.decide(p).speech).collect()
    }

    #[test]
    fn hysteresis_keeps_speech_through_dips() {
        let out = gate(&[0.1, 0.6, 0.9, 0.4, 0.9, 0.2, 0.1]);
        assert_eq!(out, vec![false, true, true, true, true, false, false]);
        // A dip below the lower threshold ends it; the upper one starts it again.
        assert_eq!(gate(&[0.6, 0.3, 0.4, 0.5]), vec![true, false, false, true]);
    }

    #[test]
    fn confidence_is_per_chunk() {
        let mut g = ChunkGate::new(VadSettings::default());
        assert_eq!(
            g.decide(0.6),
            Speech {
                speech: true,
                confident: false
            }
        );
        assert_eq!(
            g.decide(0.85),
            Speech {
                speech: true,
                confident: true
            }
        );
        assert_eq!(
            g.decide(0.4),
            Speech {
                speech: true,
                confident: false
            }
        );
    }
}
