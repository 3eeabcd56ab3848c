//! Silero VAD's network on the kernels crate, with the weights and layer settings read from the
//! model's ONNX file. Per chunk (a row of 576 samples: 512 and the 64 before them) the graph is:
//! reflection padding, an STFT as a strided convolution with a fixed windowed-DFT basis (its
//! first frame dropped), magnitudes, four convolutions with ReLU, one LSTM step, ReLU, a 1×1
//! convolution and a sigmoid.
//!
//! The STFT runs as an FFT, with the window taken from the basis once the basis is checked to
//! be that window times the DFT. Everything before the LSTM depends on its chunk alone, so over
//! the chunks of a call each convolution is one GEMM with the im2col rows of all chunks; only
//! the LSTM runs chunk after chunk. Every product takes the packed GEMM whatever its row count,
//! so a chunk's probability does not depend on how many chunks share the call.

use npuwhisper_kernels::gemm::PackedLinear;
use npuwhisper_kernels::lstm::Lstm;
use npuwhisper_kernels::ops::sigmoid_fast;
use npuwhisper_kernels::pool;
use npuwhisper_kernels::stft::MagnitudeSpectrum;

use super::onnx_proto::{GraphProto, Model, NodeProto};

/// Chunks computed together: bounds the scratch (about 1 MB) and keeps it in cache.
const BLOCK: usize = 64;
/// From this many chunks in one call the products are split over the kernels' threads; fewer
/// (live streams, a buffer at a time) stay on the caller's thread, with no hand-off.
const POOL_MIN_CHUNKS: usize = 32;

/// A 1-D convolution with ReLU over a fixed number of frames. Per output frame, the taps that
/// fall inside the input (the zero padding adds nothing) read consecutive input frames: one
/// product per output frame, over every chunk's frames in place.
struct Conv {
    out: usize,
    inp: usize,
    t_in: usize,
    t_out: usize,
    /// Per output frame: the first input frame its taps read, and those taps' weights
    /// (`out × (taps · inp)`, tap-major).
    frames: Vec<(usize, PackedLinear)>,
    bias: Vec<f32>,
}

pub(super) struct SileroNet {
    /// Samples per row.
    width: usize,
    /// For each sample of the kept STFT frames (frame-major), which sample of the row it is
    /// (the reflection padding resolved).
    gather: Vec<u32>,
    /// STFT frames kept per chunk.
    frames: usize,
    stft: MagnitudeSpectrum,
    convs: Vec<Conv>,
    lstm: Lstm,
    head_w: Vec<f32>,
    head_b: f32,
}

/// A stream's buffers for [`SileroNet::run`]: the network itself is read-only, so one can
/// serve every stream of a process.
#[derive(Default)]
pub(super) struct Scratch {
    /// Two blocks' front ends: one is being computed while the other's recurrence runs.
    fronts: [Front; 2],
    hs: Vec<f32>,
}

/// A block's buffers before the LSTM; `gates` ends up holding its input projections.
#[derive(Default)]
struct Front {
    a: Vec<f32>,
    b: Vec<f32>,
    gates: Vec<f32>,
}

/// Op types between the STFT and the LSTM that carry no weights: whatever they do (shape
/// changes, the magnitude's arithmetic) is what the computation below does.
const PLAIN_OPS: [&str; 9] = [
    "Unsqueeze",
    "Squeeze",
    "Slice",
    "Pow",
    "Add",
    "Sqrt",
    "Relu",
    "Transpose",
    "Reshape",
];

impl SileroNet {
    /// Reads the network from the bytes of the ONNX file; `width` is the samples of one row.
    pub(super) fn from_onnx(bytes: &[u8], width: usize) -> Result<SileroNet, String> {
        let model = Model::decode(bytes)?;
        let graph =
            sixteen_khz_graph(&model.graph).ok_or("no 16 kHz Silero VAD graph (an LSTM after a 256-sample STFT)")?;
        let nodes = &graph.node;
        let f32s = |name: &str, dims: &[usize]| -> Result<Vec<f32>, String> {
            let t = model.tensor(name)?;
            if t.dims != dims {
                return Err(format!("{name} has dimensions {:?}, not {dims:?}", t.dims));
            }
            t.f32s()
                .map(<[f32]>::to_vec)
                .ok_or_else(|| format!("{name} is not float"))
        };
        let i64s = |name: &str| -> Result<Vec<i64>, String> {
            let t = model.tensor(name)?;
            t.i64s()
                .map(<[i64]>::to_vec)
                .ok_or_else(|| format!("{name} is not int64"))
        };
        let find = |from: usize, op: &str| nodes[from..].iter().position(|n| n.op_type == op).map(|i| i + from);

        // Reflection padding of the row's samples.
        let pad_at = find(0, "Pad").ok_or("no Pad node")?;
        let pad = &nodes[pad_at];
        let mode = pad.attribute("mode").map(|a| a.s.as_slice());
        if mode != Some(b"reflect") {
            return Err(format!("Pad mode {:?}, not reflect", mode.map(String::from_utf8_lossy)));
        }
        let pads = i64s(input(pad, 1)?)?;
        let (left, right) = match pads[..] {
            [0, l, 0, r] if l >= 0 && r >= 0 => (l as usize, r as usize),
            _ => return Err(format!("Pad amounts {pads:?}: only the samples' axis is padded here")),
        };
        if left >= width || right >= width {
            return Err(format!("reflection padding of {left} and {right} on {width} samples"));
        }

        // The STFT: a convolution with the basis as weights and no bias.
        let stft_at = find(pad_at, "Conv").ok_or("no STFT Conv")?;
        let stft = &nodes[stft_at];
        let basis_t = model.tensor(input(stft, 1)?)?;
        let (rows, frame) = match basis_t.dims[..] {
            [rows, 1, frame] if rows % 2 == 0 => (rows, frame),
            ref d => return Err(format!("STFT basis of dimensions {d:?}")),
        };
        if stft.input.get(2).is_some_and(|b| !b.is_empty()) {
            return Err("the STFT Conv has a bias".into());
        }
        let hop = single(&stft.ints("strides", &[1]), "STFT stride")?;
        let window = dft_window(&f32s(input(stft, 1)?, &[rows, 1, frame])?, frame)?;
        let padded = left + width + right;
        if padded < frame || hop == 0 {
            return Err(format!("STFT of {frame} samples every {hop} over {padded}"));
        }
        let all_frames = (padded - frame) / hop + 1;

        // The magnitude's Slices drop the first frames (the time axis is 2 or -1).
        let lstm_at = find(stft_at, "LSTM").ok_or("no LSTM")?;
        let mut skip = 0;
        for slice in nodes[stft_at..lstm_at].iter().filter(|n| n.op_type == "Slice") {
            let (starts, axes) = (i64s(input(slice, 1)?)?, i64s(input(slice, 3)?)?);
            if let Some(i) = axes.iter().position(|&a| a == 2 || a == -1) {
                skip = usize::try_from(starts[i]).map_err(|_| format!("Slice start {}", starts[i]))?;
            }
        }
        if skip >= all_frames {
            return Err(format!("{skip} of {all_frames} STFT frames dropped"));
        }
        let frames = all_frames - skip;
        let mut gather = Vec::with_capacity(frames * frame);
        for t in skip..all_frames {
            for u in 0..frame {
                // Index into the row, reflected at both ends (no edge sample repeated).
                let j = (t * hop + u) as isize - left as isize;
                let last = width as isize - 1;
                let s = if j < 0 {
                    -j
                } else if j > last {
                    2 * last - j
                } else {
                    j
                };
                gather.push(s as u32);
            }
        }

        // Convolutions with ReLU up to the LSTM.
        let mut convs = Vec::new();
        let (mut channels, mut t) = (rows / 2, frames);
        for node in &nodes[stft_at + 1..lstm_at] {
            match node.op_type.as_str() {
                "Conv" => {
                    let wt = model.tensor(input(node, 1)?)?;
                    let (out, inp, kernel) = match wt.dims[..] {
                        [o, i, k] => (o, i, k),
                        ref d => return Err(format!("Conv weights of dimensions {d:?}")),
                    };
                    if inp != channels || node.int("group", 1) != 1 {
                        return Err(format!("a Conv of {inp} channels after {channels}"));
                    }
                    let pads = node.ints("pads", &[0, 0]);
                    let pad = match pads[..] {
                        [a, b] if a == b && a >= 0 => a as usize,
                        _ => return Err(format!("Conv pads {pads:?}")),
                    };
                    if single(&node.ints("dilations", &[1]), "dilation")? != 1 {
                        return Err("a dilated Conv".into());
                    }
                    let stride = single(&node.ints("strides", &[1]), "stride")?;
                    if stride == 0 || t + 2 * pad < kernel {
                        return Err(format!("a Conv of {kernel} taps over {t} frames"));
                    }
                    let w = f32s(input(node, 1)?, &[out, inp, kernel])?;
                    let t_out = (t + 2 * pad - kernel) / stride + 1;
                    let mut frames = Vec::with_capacity(t_out);
                    for to in 0..t_out {
                        // Taps q read input frame to·stride + q − pad; those inside 0..t count.
                        let q0 = pad.saturating_sub(to * stride);
                        let q1 = kernel.min((t + pad).saturating_sub(to * stride));
                        if q0 >= q1 {
                            return Err(format!("output frame {to} of a Conv reads only padding"));
                        }
                        // [out][in][tap] to [out][tap][in], taps q0..q1.
                        let mut wr = Vec::with_capacity(out * (q1 - q0) * inp);
                        for o in 0..out {
                            for q in q0..q1 {
                                wr.extend((0..inp).map(|i| w[(o * inp + i) * kernel + q]));
                            }
                        }
                        frames.push((to * stride + q0 - pad, PackedLinear::new(out, (q1 - q0) * inp, &wr)));
                    }
                    convs.push(Conv {
                        out,
                        inp,
                        t_in: t,
                        t_out,
                        frames,
                        bias: f32s(input(node, 2)?, &[out])?,
                    });
                    t = t_out;
                    channels = out;
                }
                op if PLAIN_OPS.contains(&op) => {}
                op => return Err(format!("unexpected {op} node before the LSTM")),
            }
        }
        let relus = nodes[stft_at..lstm_at].iter().filter(|n| n.op_type == "Relu").count();
        if relus != convs.len() || t != 1 {
            return Err(format!(
                "{} Convs with {relus} ReLUs leaving {t} frames: not Silero VAD's encoder",
                convs.len()
            ));
        }

        // The LSTM, one direction, default activations, no peepholes.
        let lstm = &nodes[lstm_at];
        let hidden = usize::try_from(lstm.int("hidden_size", 0)).map_err(|_| "LSTM hidden_size")?;
        if lstm.attribute("activations").is_some()
            || lstm.attribute("direction").is_some_and(|a| a.s != b"forward")
            || lstm.input.get(7).is_some_and(|p| !p.is_empty())
        {
            return Err("an LSTM other than ONNX's default one-direction form".into());
        }
        let lstm = Lstm::new(
            hidden,
            channels,
            &f32s(input(lstm, 1)?, &[1, 4 * hidden, channels])?,
            &f32s(input(lstm, 2)?, &[1, 4 * hidden, hidden])?,
            &f32s(input(lstm, 3)?, &[1, 8 * hidden])?,
        )?;

        // The head: ReLU, 1×1 Conv to one value, sigmoid.
        let head_at = find(lstm_at, "Conv").ok_or("no Conv after the LSTM")?;
        let head = &nodes[head_at];
        let head_w = f32s(input(head, 1)?, &[1, hidden, 1])?;
        let head_b = f32s(input(head, 2)?, &[1])?[0];
        let ops: Vec<&str> = nodes[lstm_at + 1..].iter().map(|n| n.op_type.as_str()).collect();
        let relu_before = ops[..head_at - lstm_at - 1].contains(&"Relu");
        if !relu_before || !ops[head_at - lstm_at..].contains(&"Sigmoid") {
            return Err(format!("after the LSTM: {ops:?}, not ReLU, Conv, Sigmoid"));
        }
        Ok(SileroNet {
            width,
            gather,
            frames,
            stft: MagnitudeSpectrum::new(window),
            convs,
            lstm,
            head_w,
            head_b,
        })
    }

    pub(super) fn state_len(&self) -> usize {
        self.lstm.hidden()
    }

    /// Speech probabilities of the chunks in `rows` (each `width` samples), from the LSTM
    /// state `h`, `c`, which are left as the state after the last chunk.
    ///
    /// Blocks go through in a pipeline: while one block's recurrence runs (step after step, on
    /// one thread), the next block's front end (its STFT, convolutions and LSTM input
    /// projection, independent of the state) runs beside it, its products split over the
    /// threads left.
    pub(super) fn run(&self, scratch: &mut Scratch, rows: &[f32], h: &mut [f32], c: &mut [f32]) -> Vec<f32> {
        let n = rows.len() / self.width;
        let mut probs = Vec::with_capacity(n);
        let blocks: Vec<&[f32]> = rows.chunks(BLOCK * self.width).collect();
        let net = self;
        let mut all = || {
            let [mut ready, mut next] = std::mem::take(&mut scratch.fronts);
            let hs = &mut scratch.hs;
            if let Some(first) = blocks.first() {
                net.front(first, &mut ready);
            }
            for k in 0..blocks.len() {
                let following = blocks.get(k + 1);
                if n >= POOL_MIN_CHUNKS {
                    rayon::join(
                        || net.back(&mut ready.gates, h, c, hs, &mut probs),
                        || {
                            if let Some(b) = following {
                                net.front(b, &mut next);
                            }
                        },
                    );
                } else {
                    net.back(&mut ready.gates, h, c, hs, &mut probs);
                    if let Some(b) = following {
                        net.front(b, &mut next);
                    }
                }
                std::mem::swap(&mut ready, &mut next);
            }
            scratch.fronts = [ready, next];
        };
        if n >= POOL_MIN_CHUNKS {
            pool::install(all);
        } else {
            all();
        }
        probs
    }

    /// A block's chunks up to the LSTM: STFT magnitudes, the convolutions, then the LSTM's
    /// input projection into `f.gates`.
    fn front(&self, rows: &[f32], f: &mut Front) {
        let n = rows.len() / self.width;
        let m = n * self.frames;
        f.a.clear();
        for row in rows.chunks_exact(self.width) {
            f.a.extend(self.gather.iter().map(|&i| row[i as usize]));
        }
        f.b.resize(m * self.stft.bins(), 0.0);
        self.stft.apply(&f.a, &mut f.b);
        std::mem::swap(&mut f.a, &mut f.b);
        f.a.truncate(m * self.stft.bins());
        // Convolutions, a → b, then swapped.
        for conv in &self.convs {
            let (x_row, y_row) = (conv.t_in * conv.inp, conv.t_out * conv.out);
            f.b.resize(n * y_row, 0.0);
            for (to, (first, w)) in conv.frames.iter().enumerate() {
                w.apply_strided(n, (&f.a[first * conv.inp..], x_row), (&mut f.b[to * conv.out..], y_row));
            }
            for row in f.b[..n * y_row].chunks_exact_mut(conv.out) {
                for (v, b) in row.iter_mut().zip(&conv.bias) {
                    *v = (*v + b).max(0.0);
                }
            }
            std::mem::swap(&mut f.a, &mut f.b);
            f.a.truncate(n * y_row);
        }
        self.lstm.project(&f.a, &mut f.gates);
    }

    /// A block's recurrence from its projections, then the head on each step's output.
    fn back(&self, gates: &mut [f32], h: &mut [f32], c: &mut [f32], hs: &mut Vec<f32>, probs: &mut Vec<f32>) {
        let hid = self.lstm.hidden();
        let n = gates.len() / (4 * hid);
        hs.resize(n * hid, 0.0);
        self.lstm.recur(gates, h, c, hs);
        for hs in hs[..n * hid].chunks_exact(hid) {
            let z: f32 = hs.iter().zip(&self.head_w).map(|(v, w)| v.max(0.0) * w).sum();
            probs.push(sigmoid_fast(z + self.head_b));
        }
    }
}

/// The graph that holds the 16 kHz network: the model's own, or for exports that keep both
/// sample rates behind an `If`, the branch whose STFT takes 256 samples.
fn sixteen_khz_graph(graph: &GraphProto) -> Option<&GraphProto> {
    let has = |g: &GraphProto| {
        g.node.iter().any(|n| n.op_type == "LSTM")
            && g.node
                .iter()
                .any(|n| n.op_type == "Conv" && n.ints("kernel_shape", &[]) == [256])
    };
    if has(graph) {
        return Some(graph);
    }
    graph
        .node
        .iter()
        .flat_map(NodeProto::subgraphs)
        .find_map(sixteen_khz_graph)
}

/// The window of an STFT basis (`2·bins` rows of `frame` taps: `window · cos` for each bin,
/// then `± window · sin`), once every row is checked to be that; the FFT then computes the
/// same magnitudes.
fn dft_window(basis: &[f32], frame: usize) -> Result<Vec<f32>, String> {
    let bins = frame / 2 + 1;
    if basis.len() != 2 * bins * frame {
        return Err(format!(
            "an STFT basis of {} rows for {frame} samples",
            basis.len() / frame
        ));
    }
    let window = basis[..frame].to_vec();
    let (re, im) = basis.split_at(bins * frame);
    // Which sign the sine rows carry: the magnitude does not depend on it.
    let sign = if im[frame + 1] < 0.0 { -1.0 } else { 1.0 };
    let mut worst = 0f64;
    for f in 0..bins {
        for (u, &w) in window.iter().enumerate() {
            let a = 2.0 * std::f64::consts::PI * ((f * u) % frame) as f64 / frame as f64;
            worst = worst
                .max((re[f * frame + u] as f64 - w as f64 * a.cos()).abs())
                .max((im[f * frame + u] as f64 - sign * w as f64 * a.sin()).abs());
        }
    }
    // The file's basis was computed in f32: its rounding is of order 1e-7.
    if worst > 1e-6 {
        return Err(format!("the STFT basis is not a windowed DFT (off by {worst:.1e})"));
    }
    Ok(window)
}

fn input(node: &NodeProto, i: usize) -> Result<&str, String> {
    node.input
        .get(i)
        .filter(|s| !s.is_empty())
        .map(String::as_str)
        .ok_or_else(|| format!("{} node {:?} lacks input {i}", node.op_type, node.name))
}

/// The one value of a one-element list attribute, as a size.
fn single(v: &[i64], what: &str) -> Result<usize, String> {
    match v {
        [x] if *x >= 0 => Ok(*x as usize),
        _ => Err(format!("{what} {v:?}")),
    }
}
