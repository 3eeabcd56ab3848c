//! A one-layer, one-direction LSTM over a sequence, as ONNX's `LSTM` operator computes it
//! (gates in the order input, output, forget, cell; sigmoid, tanh, tanh; no peepholes). The
//! input projection of the whole sequence is one GEMM; only the recurrence runs step by step,
//! as `Rᵀ` rows scaled by the state and accumulated in registers, 64 gates at a time.
//!
//! Each step's result depends only on its input and the state before it: the same sequence
//! gives the same bits however it is split into calls.

use crate::gemm::PackedLinear;
use crate::isa::Isa;
use crate::ops::{sigmoid_fast, tanh_fast};

/// Gates accumulated at once in a step: 8 AVX2 or 4 AVX-512 registers.
const BLOCK: usize = 64;

/// An LSTM's weights, laid out for [`Lstm::run`].
pub struct Lstm {
    hidden: usize,
    input: usize,
    /// `W`: `4·hidden × input`, rows in gate order.
    w: PackedLinear,
    /// `Rᵀ` in blocks of [`BLOCK`] gates: block `b` holds `hidden` rows of its gates, so that a
    /// step adds `h[k]` times row `k` of each block, reading the weights in one stream.
    r_t: Vec<f32>,
    /// `Wb + Rb`.
    bias: Vec<f32>,
}

impl Lstm {
    /// From ONNX's `W` (`4H × I`), `R` (`4H × H`) and `B` (`Wb` then `Rb`, `8H`), one direction.
    /// `H` must be a multiple of 16 (a whole number of gate blocks).
    pub fn new(hidden: usize, input: usize, w: &[f32], r: &[f32], b: &[f32]) -> Result<Lstm, String> {
        let gates = 4 * hidden;
        if hidden == 0 || !gates.is_multiple_of(BLOCK) {
            return Err(format!(
                "LSTM hidden size {hidden}: a multiple of {} is needed",
                BLOCK / 4
            ));
        }
        if w.len() != gates * input || r.len() != gates * hidden || b.len() != 2 * gates {
            return Err(format!(
                "LSTM weights of {}, {} and {} values for hidden size {hidden}, input {input}",
                w.len(),
                r.len(),
                b.len()
            ));
        }
        let mut r_t = vec![0f32; hidden * gates];
        for (g, row) in r.chunks_exact(hidden).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                r_t[(g / BLOCK * hidden + k) * BLOCK + g % BLOCK] = v;
            }
        }
        Ok(Lstm {
            hidden,
            input,
            w: PackedLinear::new(gates, input, w),
            r_t,
            bias: b[..gates].iter().zip(&b[gates..]).map(|(x, y)| x + y).collect(),
        })
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    pub fn input(&self) -> usize {
        self.input
    }

    /// Runs the `n` steps of `x` (`n × input`) from the state `h`, `c` (`hidden` each), which are
    /// left as the state after the last step; each step's `h` goes into a row of `out`
    /// (`n × hidden`). `gates` is scratch, resized as needed.
    pub fn run(&self, x: &[f32], h: &mut [f32], c: &mut [f32], out: &mut [f32], gates: &mut Vec<f32>) {
        self.run_with(Isa::detect(), x, h, c, out, gates);
    }

    /// [`Lstm::run`] on a chosen SIMD path (downgraded if the CPU lacks it), for tests.
    pub fn run_with(&self, isa: Isa, x: &[f32], h: &mut [f32], c: &mut [f32], out: &mut [f32], gates: &mut Vec<f32>) {
        self.project(x, gates);
        self.recur_with(isa, gates, h, c, out);
    }

    /// The input projection of the `n` steps of `x` (`n × input`) into `gates` (resized to
    /// `n × 4·hidden`): the part of [`Lstm::run`] that does not depend on the state, so it can
    /// run ahead of the recurrence (and on other threads).
    pub fn project(&self, x: &[f32], gates: &mut Vec<f32>) {
        let n = x.len() / self.input;
        assert!(x.len() == n * self.input, "Lstm::project: input of the wrong length");
        gates.clear();
        gates.resize(n * 4 * self.hidden, 0.0);
        self.w.apply(n, x, gates);
    }

    /// The recurrence over steps whose projections [`Lstm::project`] made: `gates` is
    /// overwritten, `h`, `c` and `out` as in [`Lstm::run`].
    pub fn recur(&self, gates: &mut [f32], h: &mut [f32], c: &mut [f32], out: &mut [f32]) {
        self.recur_with(Isa::detect(), gates, h, c, out);
    }

    fn recur_with(&self, isa: Isa, gates: &mut [f32], h: &mut [f32], c: &mut [f32], out: &mut [f32]) {
        let (hid, g4) = (self.hidden, 4 * self.hidden);
        let n = gates.len() / g4;
        assert!(
            gates.len() == n * g4 && out.len() >= n * hid && h.len() == hid && c.len() == hid,
            "Lstm::recur: slices of the wrong length"
        );
        let isa = isa.or_below();
        for (t, g) in gates.chunks_exact_mut(g4).enumerate() {
            let out = &mut out[t * hid..(t + 1) * hid];
            #[cfg(target_arch = "x86_64")]
            if isa >= Isa::Avx512Vnni {
                // SAFETY: `or_below` checked that the CPU has AVX-512F, AVX2 and FMA.
                unsafe { step_avx512(&self.r_t, &self.bias, g, h, c, out) };
                continue;
            } else if isa >= Isa::Avx2 {
                // SAFETY: `or_below` checked that the CPU has AVX2 and FMA.
                unsafe { step_avx2(&self.r_t, &self.bias, g, h, c, out) };
                continue;
            }
            step::<false, false>(&self.r_t, &self.bias, g, h, c, out);
        }
    }
}

/// [`step`] with FMA, compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn step_avx2(r_t: &[f32], bias: &[f32], g: &mut [f32], h: &mut [f32], c: &mut [f32], out: &mut [f32]) {
    step::<true, false>(r_t, bias, g, h, c, out);
}

/// [`step`] with FMA, compiled for AVX-512: a block's 64 gates are only four registers, so
/// the rows are summed in two halves (AVX2's eight registers keep its FMA units busy as they
/// are).
///
/// # Safety
/// The CPU must have AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn step_avx512(r_t: &[f32], bias: &[f32], g: &mut [f32], h: &mut [f32], c: &mut [f32], out: &mut [f32]) {
    step::<true, true>(r_t, bias, g, h, c, out);
}

/// One step: `g` holds the input projection `W·x`; adds the bias and `R·h`, then updates `c`,
/// `h` and writes `h` to `out`. `FMA` fuses the multiply-adds (only where the CPU has FMA:
/// elsewhere `mul_add` is a libm call).
#[inline(always)]
fn step<const FMA: bool, const SPLIT: bool>(
    r_t: &[f32],
    bias: &[f32],
    g: &mut [f32],
    h: &mut [f32],
    c: &mut [f32],
    out: &mut [f32],
) {
    let hid = h.len();
    for ((g, bias), r) in g
        .chunks_exact_mut(BLOCK)
        .zip(bias.chunks_exact(BLOCK))
        .zip(r_t.chunks_exact(hid * BLOCK))
    {
        let mut acc = [0f32; BLOCK];
        for ((a, x), b) in acc.iter_mut().zip(g.iter()).zip(bias) {
            *a = x + b;
        }
        let fma = |acc: &mut [f32; BLOCK], hk: f32, row: &[f32]| {
            for (a, &r) in acc.iter_mut().zip(row) {
                *a = if FMA { hk.mul_add(r, *a) } else { *a + hk * r };
            }
        };
        if SPLIT {
            // Even and odd rows in separate sums: twice the independent chains, so the
            // multiply-adds do not wait on each other's latency.
            let mut odd = [0f32; BLOCK];
            for (hk, rows) in h.chunks_exact(2).zip(r.chunks_exact(2 * BLOCK)) {
                fma(&mut acc, hk[0], &rows[..BLOCK]);
                fma(&mut odd, hk[1], &rows[BLOCK..]);
            }
            for (a, o) in acc.iter_mut().zip(odd) {
                *a += o;
            }
        } else {
            for (&hk, row) in h.iter().zip(r.chunks_exact(BLOCK)) {
                fma(&mut acc, hk, row);
            }
        }
        g.copy_from_slice(&acc);
    }
    // Separate passes over contiguous slices, so that each vectorises.
    let (gates, cand) = g.split_at_mut(3 * hid);
    for v in gates.iter_mut() {
        *v = sigmoid_fast(*v);
    }
    for v in cand.iter_mut() {
        *v = tanh_fast(*v);
    }
    let (i, rest) = gates.split_at(hid);
    let (o, f) = rest.split_at(hid);
    for ((ck, (&ik, &fk)), &gk) in c.iter_mut().zip(i.iter().zip(f)).zip(cand.iter()) {
        *ck = fk * *ck + ik * gk;
    }
    for ((hk, &ck), &ok) in h.iter_mut().zip(c.iter()).zip(o) {
        *hk = ok * tanh_fast(ck);
    }
    out.copy_from_slice(h);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::tests::lcg;

    /// ONNX's LSTM equations in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        hid: usize,
        inp: usize,
        w: &[f32],
        r: &[f32],
        b: &[f32],
        x: &[f32],
        h0: &[f32],
        c0: &[f32],
    ) -> Vec<f64> {
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let (mut h, mut c): (Vec<f64>, Vec<f64>) = (
            h0.iter().map(|&v| v as f64).collect(),
            c0.iter().map(|&v| v as f64).collect(),
        );
        let mut out = Vec::new();
        for xt in x.chunks(inp) {
            let g: Vec<f64> = (0..4 * hid)
                .map(|j| {
                    let wx: f64 = (0..inp).map(|p| w[j * inp + p] as f64 * xt[p] as f64).sum();
                    let rh: f64 = (0..hid).map(|p| r[j * hid + p] as f64 * h[p]).sum();
                    wx + rh + b[j] as f64 + b[4 * hid + j] as f64
                })
                .collect();
            for k in 0..hid {
                c[k] = sig(g[2 * hid + k]) * c[k] + sig(g[k]) * g[3 * hid + k].tanh();
                h[k] = sig(g[hid + k]) * c[k].tanh();
            }
            out.extend_from_slice(&h);
        }
        out
    }

    #[test]
    fn every_path_matches_a_double_reference_and_splits_do_not_matter() {
        let (hid, inp, n) = (32, 24, 40);
        let mut seed = 3;
        let mut vals = |len: usize, scale: f32| (0..len).map(|_| lcg(&mut seed) * scale).collect::<Vec<f32>>();
        let (w, r, b, x) = (
            vals(4 * hid * inp, 0.6),
            vals(4 * hid * hid, 0.6),
            vals(8 * hid, 1.0),
            vals(n * inp, 2.0),
        );
        let (h0, c0) = (vals(hid, 1.0), vals(hid, 1.0));
        let lstm = Lstm::new(hid, inp, &w, &r, &b).unwrap();
        let want = reference(hid, inp, &w, &r, &b, &x, &h0, &c0);
        let mut gates = Vec::new();
        for isa in Isa::all_available() {
            let (mut h, mut c, mut out) = (h0.clone(), c0.clone(), vec![0f32; n * hid]);
            lstm.run_with(isa, &x, &mut h, &mut c, &mut out, &mut gates);
            let worst = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 2e-6, "{isa:?}: {worst}");
            assert_eq!(h, out[(n - 1) * hid..]);
            // The same sequence in uneven calls: the same bits.
            let (mut h2, mut c2, mut out2) = (h0.clone(), c0.clone(), vec![0f32; n * hid]);
            let mut t = 0;
            for len in [1, 7, 2, 30] {
                lstm.run_with(
                    isa,
                    &x[t * inp..(t + len) * inp],
                    &mut h2,
                    &mut c2,
                    &mut out2[t * hid..(t + len) * hid],
                    &mut gates,
                );
                t += len;
            }
            assert_eq!((out2, h2, c2), (out, h, c), "{isa:?}");
        }
    }

    #[test]
    fn wrong_shapes_are_refused() {
        assert!(Lstm::new(12, 4, &[0.0; 192], &[0.0; 576], &[0.0; 96]).is_err());
        assert!(Lstm::new(16, 4, &[0.0; 256], &[0.0; 1024], &[0.0; 100]).is_err());
    }
}
