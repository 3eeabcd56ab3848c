//! INT8 linear layers: `y = x·Wᵀ + b` with W quantized once at load time and x quantized per
//! call, multiplied in integers with int32 accumulation, and dequantized (plus bias and,
//! optionally, GELU) as each register tile is stored.
//!
//! Weights: symmetric i8 per output channel (`w ≈ q·s_j`, q in −127..=127), packed in panels of
//! 16 output channels, k in groups of 4: `[panel][k/4][16][4]`. One 32-byte vector holds 4
//! consecutive k of 8 channels, which is what `vpmaddubsw`/`vpdpbusd` consume. k is padded to a
//! multiple of 4 and n to a multiple of 16 with zeros; the zero weights make the padding's
//! activations irrelevant.
//!
//! Activations: asymmetric u8 per row (`x ≈ (q − z_i)·s_i`, 0 in range so exactly
//! representable), quantized on the fly. The zero point comes out through the weight row sums:
//! `Σ_k (q_ik − z_i)·w_jk = Σ_k q_ik·w_jk − z_i·rowsum_j`, subtracted in int32 (exact).
//!
//! Why 7-bit activations on AVX2: `vpmaddubsw` multiplies u8 × i8 and adds adjacent pairs into
//! an i16 *with saturation*; with full 8-bit activations a pair can reach 2·255·127 = 64770 and
//! clip. With activations in 0..=127 a pair is at most 2·127·127 = 32258 < 32767, so the
//! products are exact and `vpmaddwd` by 1 widens them to int32 exactly. The price is half the
//! activation resolution (about 1.3 % of the output RMS on Gaussian data, against ~0.7 % for 8
//! bits); the alternative, sign-extending to i16 and `vpmaddwd` alone, would be exact at 8 bits
//! but does half the multiply-adds per instruction (no faster than f32 FMA). AVX-512 VNNI's
//! `vpdpbusd` sums four u8 × i8 products straight into int32 without intermediate saturation,
//! so that path uses the full 0..=255. The portable path follows AVX2 bit for bit.
//!
//! Measured (`BENCH_TIME=cpu cargo bench -p npuwhisper-kernels -- linear`, 2 threads; runs
//! vary with the shared machine's clock, so compare within a run): one token, k = 384,
//! n = 1536: f32 32.4 µs, INT8 6.6 µs (4.9×); n = 51864 (the vocabulary): f32 1.60 ms, INT8
//! 0.41 ms (3.9×). Encoder, m = 1500 (run at 3.32 GHz, f32 peak 213): 384→1536 f32 182
//! GFLOP/s, INT8 331 GOP/s on AVX2 (1.8×), 433 with VNNI (2.4×); 1536→384: 189, 345 (1.8×),
//! 490 (2.6×). Error against the f32 layer: ≤ 1.8 % of the output RMS on AVX2 (7-bit
//! activations), ≤ 1.2 % with VNNI (tests).

use rayon::prelude::*;

use crate::amx;
use crate::isa::Isa;
use crate::ops;
use crate::pool;
use crate::sgemm::Shared;
use crate::store::Store;

/// Output channels per packed panel (two 8-lane int32 vectors per row of the register tile).
const NR: usize = 16;
/// Rows per register tile: 4 rows × 2 vectors = 8 accumulators, + 2 weight vectors, the
/// broadcast, the constant 1s and a temporary = 13 of the 16 ymm registers.
const MR: usize = 4;
/// Rows per task: the task's quantized activations (MC × k bytes, ≤ 150 KiB at k = 1536) stay
/// in L2 while each 16-channel weight panel (16 × k bytes, 24 KiB) is reused from L1.
const MC: usize = 96;
/// Output channels per task for the weight stream.
const NC: usize = 128;
/// Rows of f32 that [`QuantizedWeights::quantize_with`] asks for at a time.
pub const QUANTIZE_BLOCK_ROWS: usize = 1024;

/// A linear layer's weight `[n_out × k]` as per-channel symmetric INT8, packed for the
/// micro-kernel. Built once at model load; a quarter of the f32 weight's memory.
pub struct QuantizedWeights {
    n: usize,
    k: usize,
    /// k rounded up to a multiple of 4.
    kp: usize,
    /// `[n/16 panels][kp/4][16][4]`, zero-padded.
    packed: Store<i8>,
    /// Per output channel: `w ≈ q·scale`; padded channels have scale 0.
    scales: Store<f32>,
    /// Per output channel: `Σ_k q`, to take out the activations' zero point.
    row_sums: Store<i32>,
}

impl QuantizedWeights {
    /// Quantizes `w` (`n_out` rows of `k`, row-major: one output channel per row, as stored by
    /// CTranslate2) with one scale per row, `max|w_row| / 127`.
    pub fn quantize(w: &[f32], n_out: usize, k: usize) -> QuantizedWeights {
        assert!(w.len() >= n_out * k, "QuantizedWeights::quantize: w too short");
        Self::quantize_with(n_out, k, |r0, rows| {
            rows.copy_from_slice(&w[r0 * k..r0 * k + rows.len()])
        })
    }

    /// [`quantize`](Self::quantize) with the rows supplied a block at a time: `fill(r0, rows)`
    /// writes rows `r0..r0 + rows.len() / k` of the weight into `rows`. Only one block of f32
    /// rows exists at any time (at most `QUANTIZE_BLOCK_ROWS`), so a matrix can be quantized
    /// straight from its file encoding without a full f32 copy. The same bytes as `quantize`.
    pub fn quantize_with(n_out: usize, k: usize, mut fill: impl FnMut(usize, &mut [f32])) -> QuantizedWeights {
        // Keeps the int32 accumulator exact: k · 255 · 127 < 2³¹.
        assert!(
            k < 1 << 16,
            "QuantizedWeights::quantize: k = {k} is too large for int32 accumulation"
        );
        let kp = k.next_multiple_of(4);
        let np = n_out.next_multiple_of(NR);
        let mut packed = vec![0i8; np * kp];
        let mut scales = vec![0f32; np];
        let mut row_sums = vec![0i32; np];
        // Whole panels per block, so that the blocks' panels split the packed matrix exactly.
        let block_rows = QUANTIZE_BLOCK_ROWS.max(NR) / NR * NR;
        let mut block = Vec::new();
        for r0 in (0..n_out).step_by(block_rows) {
            let rows = block_rows.min(n_out - r0);
            block.resize(rows * k, 0.0);
            fill(r0, &mut block);
            let (p0, p1) = (r0 / NR, (r0 + rows).div_ceil(NR));
            packed[p0 * NR * kp..p1 * NR * kp]
                .par_chunks_mut(NR * kp)
                .zip(scales[p0 * NR..p1 * NR].par_chunks_mut(NR))
                .zip(row_sums[p0 * NR..p1 * NR].par_chunks_mut(NR))
                .enumerate()
                .for_each(|(panel, ((dst, scales), sums))| {
                    for c in 0..NR.min(rows.saturating_sub(panel * NR)) {
                        let j = panel * NR + c;
                        let row = &block[j * k..(j + 1) * k];
                        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                        scales[c] = scale;
                        for (p, &v) in row.iter().enumerate() {
                            let q = (v / scale).round().clamp(-127.0, 127.0) as i8;
                            dst[(p / 4) * NR * 4 + c * 4 + p % 4] = q;
                            sums[c] += q as i32;
                        }
                    }
                });
        }
        QuantizedWeights {
            n: n_out,
            k,
            kp,
            packed: packed.into(),
            scales: scales.into(),
            row_sums: row_sums.into(),
        }
    }

    /// The packed weights, scales and row sums, to store them (see [`from_parts`](Self::from_parts)).
    pub fn parts(&self) -> (&Store<i8>, &Store<f32>, &Store<i32>) {
        (&self.packed, &self.scales, &self.row_sums)
    }

    /// A layer from the parts [`parts`](Self::parts) gave, checked to have their sizes.
    pub fn from_parts(
        n_out: usize,
        k: usize,
        packed: Store<i8>,
        scales: Store<f32>,
        row_sums: Store<i32>,
    ) -> Result<QuantizedWeights, String> {
        let (kp, np) = (k.next_multiple_of(4), n_out.next_multiple_of(NR));
        if k >= 1 << 16 || packed.len() != np * kp || scales.len() != np || row_sums.len() != np {
            return Err(format!(
                "INT8 parts of {} / {} / {} values do not make a {n_out}×{k} layer",
                packed.len(),
                scales.len(),
                row_sums.len()
            ));
        }
        Ok(QuantizedWeights {
            n: n_out,
            k,
            kp,
            packed,
            scales,
            row_sums,
        })
    }

    /// Output channels.
    pub fn n_out(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes of the packed weights, the memory one call streams.
    pub fn bytes(&self) -> usize {
        self.packed.len()
    }

    /// The weight as the kernels see it, `q·scale`, `[n_out × k]`: for tests and error budgets.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        for (j, row) in w.chunks_mut(self.k).enumerate() {
            for (p, v) in row.iter_mut().enumerate() {
                *v = self.q(j, p) as f32 * self.scales[j];
            }
        }
        w
    }

    fn q(&self, j: usize, p: usize) -> i8 {
        self.packed[(j / NR) * NR * self.kp + (p / 4) * NR * 4 + (j % NR) * 4 + p % 4]
    }
}

/// What is applied to each output after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// Exact (erf) GELU, as `ops::gelu`.
    Gelu,
}

/// INT8 linear layer: `out[m×n] = x[m×k] · Wᵀ + bias`, W quantized per output channel, x per
/// row at call time. On the kernels' pool.
pub fn qlinear(x: &[f32], m: usize, k: usize, w: &QuantizedWeights, bias: Option<&[f32]>, out: &mut [f32]) {
    qlinear_with(Isa::detect(), x, m, k, w, bias, Activation::None, out);
}

/// [`qlinear`] followed by an activation, fused into the same pass over the output.
pub fn qlinear_act(
    x: &[f32],
    m: usize,
    k: usize,
    w: &QuantizedWeights,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
) {
    qlinear_with(Isa::detect(), x, m, k, w, bias, act, out);
}

/// [`qlinear_act`] on a chosen SIMD path (downgraded if the CPU lacks it), for tests and
/// benchmarks that compare paths.
#[allow(clippy::too_many_arguments)]
pub fn qlinear_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &QuantizedWeights,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
) {
    let n = w.n;
    assert_eq!(k, w.k, "qlinear: x has {k} features, the weight {}", w.k);
    assert!(x.len() >= m * k && out.len() >= m * n, "qlinear: slices too short");
    assert!(bias.is_none_or(|b| b.len() >= n), "qlinear: bias too short");
    if m == 0 || n == 0 {
        return;
    }
    let isa = isa.or_below();
    // The tiles take k 64 at a time (every Whisper width is a multiple of 64). A few rows
    // (decoder steps) only stream the weights, which the register tiles do faster: one token at
    // k = 384, n = 51864, 0.34 ms against 0.40 on the tiles; from 8 rows the tiles win (a step
    // of 8 windows: 0.43 ms against 0.51).
    let amx = isa == Isa::Amx && w.kp % amx::ROW_BYTES == 0 && m >= AMX_MIN_ROWS;
    pool::install(|| {
        let xq = QuantizedRows::new(isa, x, m, k, w.kp, amx);
        let out = Shared(out.as_mut_ptr());
        #[cfg(target_arch = "x86_64")]
        if amx {
            return qlinear_amx(&xq, m, w, bias, act, out);
        }
        let (row_blocks, col_blocks) = (m.div_ceil(MC), n.div_ceil(NC));
        (0..row_blocks * col_blocks).into_par_iter().for_each(|t| {
            let (r0, c0) = ((t / col_blocks) * MC, (t % col_blocks) * NC);
            let (r1, c1) = ((r0 + MC).min(m), (c0 + NC).min(n));
            let mut j0 = c0;
            while j0 < c1 {
                // Two whole panels at once in 512-bit registers where the CPU has them.
                let pair = isa >= Isa::Avx512Vnni && j0 + 2 * NR <= c1;
                for i0 in (r0..r1).step_by(MR) {
                    let tile = OutTile {
                        w,
                        xq: &xq,
                        bias,
                        act,
                        out: out.get(),
                        i0,
                        rows: MR.min(r1 - i0),
                        j0,
                        cols: NR.min(c1 - j0),
                    };
                    // SAFETY: tasks write disjoint (row block × column block) parts of `out`,
                    // whose length was checked above; `pair` needs VNNI and two whole panels.
                    unsafe {
                        if pair {
                            tile.run_pair()
                        } else {
                            tile.run(isa)
                        }
                    };
                }
                j0 += if pair { 2 * NR } else { NR };
            }
        });
    });
}

/// Fewer rows than this take the register tiles even on AMX machines.
const AMX_MIN_ROWS: usize = 8;

/// The AMX path: 32 × 32 blocks on the tiles (two 16-row A tiles against two 16-channel
/// weight panels), whose int32 sums go through the same epilogue as the VNNI path's register
/// tiles: the same results, bit for bit.
#[cfg(target_arch = "x86_64")]
fn qlinear_amx(
    xq: &QuantizedRows,
    m: usize,
    w: &QuantizedWeights,
    bias: Option<&[f32]>,
    act: Activation,
    out: Shared<*mut f32>,
) {
    let kp = w.kp;
    let panel = |j: usize| w.packed[(j / NR) * NR * kp..].as_ptr();
    let dot = |i0: usize, two_rows: bool, j0: usize, two_panels: bool, acc: &mut [[i32; 256]; 4]| {
        // SAFETY: the rows are padded to a multiple of 16 (`QuantizedRows::new`) and the
        // channels to whole panels; `par_blocks` asks for the second ones only inside them.
        unsafe {
            amx::dot_u8i8(
                kp / amx::ROW_BYTES,
                xq.data[i0 * kp..].as_ptr(),
                kp,
                two_rows,
                panel(j0),
                two_panels.then(|| panel(j0 + NR)),
                acc,
            )
        }
    };
    let store = |i: usize, rows: usize, j: usize, cols: usize, acc: &[i32; 256]| {
        for q in (0..rows).step_by(MR) {
            let tile = OutTile {
                w,
                xq,
                bias,
                act,
                out: out.get(),
                i0: i + q,
                rows: MR.min(rows - q),
                j0: j,
                cols,
            };
            // SAFETY: `par_blocks` tasks write disjoint parts of `out`.
            unsafe { tile.store_rows(&acc[q * NR..][..tile.rows * NR]) };
        }
    };
    // SAFETY: `Isa::Amx` is only chosen when `amx::available()`.
    unsafe { amx::par_blocks(m, w.n, dot, store) }
}

/// x quantized per row: packed in MR-row tiles `[tile][kp/4][rows][4]` (u8) for the register
/// tiles, or row-major `[rows][kp]` with the rows padded to a multiple of 16 for AMX.
struct QuantizedRows {
    data: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    kp: usize,
    row_major: bool,
}

thread_local! {
    /// The bytes of this thread's last [`QuantizedRows`], reused by the next: a fresh buffer of
    /// a megabyte or more would be new pages from the system, a page fault per 4 KiB.
    static ROWS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Drop for QuantizedRows {
    fn drop(&mut self) {
        ROWS.set(std::mem::take(&mut self.data));
    }
}

impl QuantizedRows {
    fn new(isa: Isa, x: &[f32], m: usize, k: usize, kp: usize, row_major: bool) -> QuantizedRows {
        let qmax = if isa >= Isa::Avx512Vnni { 255.0 } else { 127.0 };
        let mut scales = vec![0f32; m];
        let mut zero_points = vec![0i32; m];
        if row_major {
            let mut data = pool::reused_zeroed(&ROWS, m.next_multiple_of(amx::ROWS) * kp);
            data.par_chunks_mut(kp)
                .zip(scales.par_iter_mut())
                .zip(zero_points.par_iter_mut())
                .enumerate()
                .for_each(|(r, ((q, s), z))| {
                    (*s, *z) = quantize_row(isa, &x[r * k..(r + 1) * k], qmax, &mut q[..k]);
                });
            return QuantizedRows {
                data,
                scales,
                zero_points,
                kp,
                row_major,
            };
        }
        let mut data = pool::reused_zeroed(&ROWS, m * kp);
        data.par_chunks_mut(MR * kp)
            .zip(scales.par_chunks_mut(MR))
            .zip(zero_points.par_chunks_mut(MR))
            .enumerate()
            .for_each(|(tile, ((dst, scales), zps))| {
                let rows = scales.len();
                let mut q = vec![0u8; kp];
                for i in 0..rows {
                    let r = tile * MR + i;
                    (scales[i], zps[i]) = quantize_row(isa, &x[r * k..(r + 1) * k], qmax, &mut q[..k]);
                    for (g, four) in q.chunks_exact(4).enumerate() {
                        dst[(g * rows + i) * 4..][..4].copy_from_slice(four);
                    }
                }
            });
        QuantizedRows {
            data,
            scales,
            zero_points,
            kp,
            row_major,
        }
    }

    /// Rows `i0..i0+rows` (a whole tile, as `i0` is a multiple of MR).
    fn tile(&self, i0: usize) -> *const u8 {
        debug_assert!(!self.row_major);
        self.data[i0 * self.kp..].as_ptr()
    }

    /// Row `i`'s quantized feature `p`, in either layout.
    #[cfg(test)]
    fn value(&self, i: usize, p: usize) -> u8 {
        if self.row_major {
            return self.data[i * self.kp + p];
        }
        let (t, r) = (i / MR * MR, i % MR);
        let rows = MR.min(self.scales.len() - t);
        self.data[t * self.kp + (p / 4) * rows * 4 + r * 4 + p % 4]
    }
}

fn quantize_row(isa: Isa, x: &[f32], qmax: f32, q: &mut [u8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        // SAFETY: `isa` was checked against the CPU by `or_below`.
        return unsafe { quantize_row_avx2(x, qmax, q) };
    }
    let _ = isa;
    quantize_row_portable(x, qmax, q)
}

/// [`quantize_row_portable`] in intrinsics (LLVM does not vectorise the rounding and clamping
/// well): the same arithmetic, `cvtps` rounding half to even like `round_ties_even`, so the two
/// paths give the same bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_avx2(x: &[f32], qmax: f32, q: &mut [u8]) -> (f32, i32) {
    use std::arch::x86_64::*;
    let n32 = x.len() / 32 * 32;
    let p = x.as_ptr();
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in (0..x.len() / 8 * 8).step_by(8) {
        let v = _mm256_loadu_ps(p.add(i));
        lo = _mm256_min_ps(lo, v);
        hi = _mm256_max_ps(hi, v);
    }
    let (mut l, mut h) = ([0f32; 8], [0f32; 8]);
    _mm256_storeu_ps(l.as_mut_ptr(), lo);
    _mm256_storeu_ps(h.as_mut_ptr(), hi);
    let tail = &x[x.len() / 8 * 8..];
    let lo = l.iter().chain(tail).fold(0f32, |a, &b| if b < a { b } else { a });
    let hi = h.iter().chain(tail).fold(0f32, |a, &b| if b > a { b } else { a });
    let (scale, zp) = scale_and_zero_point(lo, hi, qmax);
    let (inv, zpv) = (_mm256_set1_ps(1.0 / scale), _mm256_set1_ps(zp));
    let (zero, top) = (_mm256_setzero_si256(), _mm256_set1_epi32(qmax as i32));
    let quant = |i: usize| {
        let v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(p.add(i)), inv), zpv);
        _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(v), zero), top)
    };
    for i in (0..n32).step_by(32) {
        // 4 × 8 int32 → 32 bytes; the packs work per 128-bit lane, the permute restores order.
        let ab = _mm256_packs_epi32(quant(i), quant(i + 8));
        let cd = _mm256_packs_epi32(quant(i + 16), quant(i + 24));
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr().add(i) as *mut __m256i, bytes);
    }
    quantize_with(&x[n32..], 1.0 / scale, zp, qmax, &mut q[n32..]);
    (scale, zp as i32)
}

/// Scale and zero point for a row spanning `lo ≤ 0 ≤ hi`.
#[inline(always)]
fn scale_and_zero_point(lo: f32, hi: f32, qmax: f32) -> (f32, f32) {
    let scale = if hi > lo { (hi - lo) / qmax } else { 1.0 };
    (scale, (-lo / scale).round().clamp(0.0, qmax))
}

#[inline(always)]
fn quantize_with(x: &[f32], inv: f32, zp: f32, qmax: f32, q: &mut [u8]) {
    for (d, &v) in q.iter_mut().zip(x) {
        *d = (v * inv + zp).round_ties_even().clamp(0.0, qmax) as u8;
    }
}

/// Asymmetric per-row quantization with 0 exactly representable.
fn quantize_row_portable(x: &[f32], qmax: f32, q: &mut [u8]) -> (f32, i32) {
    let (mut lo, mut hi) = ([0f32; 8], [0f32; 8]);
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            lo[l] = if c[l] < lo[l] { c[l] } else { lo[l] };
            hi[l] = if c[l] > hi[l] { c[l] } else { hi[l] };
        }
    }
    for &v in chunks.remainder() {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
    }
    let lo = lo.iter().fold(0f32, |a, &b| a.min(b));
    let hi = hi.iter().fold(0f32, |a, &b| a.max(b));
    let (scale, zp) = scale_and_zero_point(lo, hi, qmax);
    quantize_with(x, 1.0 / scale, zp, qmax, q);
    (scale, zp as i32)
}

/// One MR×NR register tile of the output and everything needed to produce it.
#[derive(Clone, Copy)]
struct OutTile<'a> {
    w: &'a QuantizedWeights,
    xq: &'a QuantizedRows,
    bias: Option<&'a [f32]>,
    act: Activation,
    out: *mut f32,
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
}

impl OutTile<'_> {
    unsafe fn run(&self, isa: Isa) {
        let a = self.xq.tile(self.i0);
        let b = self.w.packed[(self.j0 / NR) * NR * self.w.kp..].as_ptr();
        let groups = self.w.kp / 4;
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => match self.rows {
                1 => tile_avx2::<1>(self, groups, a, b),
                2 => tile_avx2::<2>(self, groups, a, b),
                3 => tile_avx2::<3>(self, groups, a, b),
                _ => tile_avx2::<4>(self, groups, a, b),
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni | Isa::Amx => match self.rows {
                1 => tile_vnni::<1>(self, groups, a, b),
                2 => tile_vnni::<2>(self, groups, a, b),
                3 => tile_vnni::<3>(self, groups, a, b),
                _ => tile_vnni::<4>(self, groups, a, b),
            },
            _ => {
                let mut acc = [0i32; MR * NR];
                dot_tile_portable(self.rows, groups, a, b, &mut acc);
                self.store(&acc);
            }
        }
    }

    /// The tile and the next one to its right (both 16 channels wide), in 512-bit registers.
    #[cfg(target_arch = "x86_64")]
    unsafe fn run_pair(&self) {
        let a = self.xq.tile(self.i0);
        let b = self.w.packed[(self.j0 / NR) * NR * self.w.kp..].as_ptr();
        let groups = self.w.kp / 4;
        match self.rows {
            1 => tile_vnni_pair::<1>(self, groups, a, b),
            2 => tile_vnni_pair::<2>(self, groups, a, b),
            3 => tile_vnni_pair::<3>(self, groups, a, b),
            _ => tile_vnni_pair::<4>(self, groups, a, b),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run_pair(&self) {
        unreachable!("no VNNI off x86-64")
    }

    /// Stores `acc` (`rows` rows of 16 int32, one per channel) through the epilogue the register
    /// tiles use for the same shape, so every path gives the same floats.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_rows(&self, acc: &[i32]) {
        use std::arch::x86_64::*;
        if self.cols < NR {
            let mut full = [0i32; MR * NR];
            full[..acc.len()].copy_from_slice(acc);
            return self.store(&full);
        }
        let v = |i: usize| [0, 8].map(|h| _mm256_loadu_si256(acc.as_ptr().add(i * NR + h) as *const __m256i));
        match self.rows {
            1 => store_full_avx2::<1>(self, &[v(0)]),
            2 => store_full_avx2::<2>(self, &[v(0), v(1)]),
            3 => store_full_avx2::<3>(self, &[v(0), v(1), v(2)]),
            _ => store_full_avx2::<4>(self, &[v(0), v(1), v(2), v(3)]),
        }
    }

    /// `out = s_i·s_j·(acc − z_i·rowsum_j) + bias_j`, then the activation. The subtraction is
    /// in int32 (exact); only the final scaling rounds. Inlined into each SIMD path so that it is
    /// vectorised there.
    #[inline(always)]
    unsafe fn store(&self, acc: &[i32; MR * NR]) {
        let n = self.w.n;
        let ws = &self.w.scales[self.j0..self.j0 + self.cols];
        let sums = &self.w.row_sums[self.j0..self.j0 + self.cols];
        for i in 0..self.rows {
            let r = self.i0 + i;
            let (sx, zp) = (self.xq.scales[r], self.xq.zero_points[r]);
            let row = std::slice::from_raw_parts_mut(self.out.add(r * n + self.j0), self.cols);
            for (c, y) in row.iter_mut().enumerate() {
                let v = (acc[i * NR + c] - zp * sums[c]) as f32 * (sx * ws[c]);
                *y = v + self.bias.map_or(0.0, |b| b[self.j0 + c]);
            }
            if self.act == Activation::Gelu {
                // The portable path stays portable, also when the CPU could do better.
                ops::gelu_with(Isa::Portable, row);
            }
        }
    }
}

/// Portable tile: plain integer loops, the same arithmetic as the AVX2 path.
unsafe fn dot_tile_portable(rows: usize, groups: usize, a: *const u8, b: *const i8, acc: &mut [i32; MR * NR]) {
    for g in 0..groups {
        let bg = std::slice::from_raw_parts(b.add(g * NR * 4), NR * 4);
        let ag = std::slice::from_raw_parts(a.add(g * rows * 4), rows * 4);
        for i in 0..rows {
            for c in 0..NR {
                let mut s = 0i32;
                for t in 0..4 {
                    s += ag[i * 4 + t] as i32 * bg[c * 4 + t] as i32;
                }
                acc[i * NR + c] += s;
            }
        }
    }
}

/// AVX2 tile of R rows × 16 channels: per group of 4 k, one broadcast of each row's 4 u8
/// activations, `vpmaddubsw` against the 8-channel weight vectors (exact: activations ≤ 127,
/// see the module comment), `vpmaddwd` by 1 to int32, add.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize>(tile: &OutTile, groups: usize, a: *const u8, b: *const i8) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    tile_simd::<R>(tile, groups, a, b, |acc, a, b| {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones))
    });
}

/// AVX-512 VNNI tile (256-bit forms): `vpdpbusd` does the four u8 × i8 products and their sum
/// into int32 in one instruction, with no intermediate saturation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
unsafe fn tile_vnni<const R: usize>(tile: &OutTile, groups: usize, a: *const u8, b: *const i8) {
    tile_simd::<R>(tile, groups, a, b, |acc, a, b| {
        std::arch::x86_64::_mm256_dpbusd_epi32(acc, a, b)
    });
}

/// The register tile shared by the SIMD paths; `madd(acc, 4 u8 of a row broadcast, 4 k × 8
/// channels of i8)` adds each channel's 4-term dot product into its int32 lane. Inlined into
/// the target-feature functions above, so it compiles once per path.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_simd<const R: usize>(
    tile: &OutTile,
    groups: usize,
    a: *const u8,
    b: *const i8,
    madd: impl Fn(
        std::arch::x86_64::__m256i,
        std::arch::x86_64::__m256i,
        std::arch::x86_64::__m256i,
    ) -> std::arch::x86_64::__m256i,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let (mut a, mut b) = (a, b);
    for _ in 0..groups {
        let b0 = _mm256_loadu_si256(b as *const __m256i);
        let b1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
        for (i, acc) in acc.iter_mut().enumerate() {
            let ai = _mm256_set1_epi32((a.add(4 * i) as *const i32).read_unaligned());
            acc[0] = madd(acc[0], ai, b0);
            acc[1] = madd(acc[1], ai, b1);
        }
        a = a.add(4 * R);
        b = b.add(NR * 4);
    }
    if tile.cols == NR {
        store_full_avx2(tile, &acc);
        return;
    }
    let mut acc_out = [0i32; MR * NR];
    for (i, acc) in acc.iter().enumerate() {
        _mm256_storeu_si256(acc_out.as_mut_ptr().add(i * NR) as *mut __m256i, acc[0]);
        _mm256_storeu_si256(acc_out.as_mut_ptr().add(i * NR + 8) as *mut __m256i, acc[1]);
    }
    tile.store(&acc_out);
}

/// R rows × 32 channels (two weight panels) with 512-bit `vpdpbusd`: a panel's group of
/// 4 k × 16 channels is one 64-byte vector, so each group is 2 loads, R broadcasts and 2·R
/// dot-product instructions of 16 lanes, twice the work per instruction of [`tile_vnni`].
/// The epilogue is [`store_full_avx2`] on each half, so results equal the 256-bit path's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
unsafe fn tile_vnni_pair<const R: usize>(tile: &OutTile, groups: usize, a: *const u8, b: *const i8) {
    use std::arch::x86_64::*;
    let b1 = b.add(NR * tile.w.kp);
    let mut acc = [[_mm512_setzero_si512(); 2]; R];
    for g in 0..groups {
        let v0 = _mm512_loadu_si512(b.add(g * NR * 4) as *const __m512i);
        let v1 = _mm512_loadu_si512(b1.add(g * NR * 4) as *const __m512i);
        for (i, acc) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_epi32((a.add(g * 4 * R + 4 * i) as *const i32).read_unaligned());
            acc[0] = _mm512_dpbusd_epi32(acc[0], ai, v0);
            acc[1] = _mm512_dpbusd_epi32(acc[1], ai, v1);
        }
    }
    for h in 0..2 {
        let halves: [[__m256i; 2]; R] = std::array::from_fn(|i| {
            [
                _mm512_castsi512_si256(acc[i][h]),
                _mm512_extracti64x4_epi64::<1>(acc[i][h]),
            ]
        });
        let t = OutTile {
            j0: tile.j0 + h * NR,
            cols: NR,
            ..*tile
        };
        store_full_avx2(&t, &halves);
    }
}

/// [`OutTile::store`] for a tile 16 channels wide, in vectors: the same operations in the same
/// order (no FMA contraction), so the result matches the scalar epilogue bit for bit.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_full_avx2<const R: usize>(tile: &OutTile, acc: &[[std::arch::x86_64::__m256i; 2]; R]) {
    use std::arch::x86_64::*;
    let (w, j0) = (tile.w, tile.j0);
    let ws = [
        _mm256_loadu_ps(w.scales.as_ptr().add(j0)),
        _mm256_loadu_ps(w.scales.as_ptr().add(j0 + 8)),
    ];
    let sums = [0, 8].map(|h| _mm256_loadu_si256(w.row_sums.as_ptr().add(j0 + h) as *const __m256i));
    let bias = tile.bias.map_or([_mm256_setzero_ps(); 2], |b| {
        [
            _mm256_loadu_ps(b.as_ptr().add(j0)),
            _mm256_loadu_ps(b.as_ptr().add(j0 + 8)),
        ]
    });
    for (i, acc) in acc.iter().enumerate() {
        let r = tile.i0 + i;
        let (sx, zp) = (
            _mm256_set1_ps(tile.xq.scales[r]),
            _mm256_set1_epi32(tile.xq.zero_points[r]),
        );
        for h in 0..2 {
            let v = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[h], _mm256_mullo_epi32(zp, sums[h])));
            let mut y = _mm256_add_ps(_mm256_mul_ps(v, _mm256_mul_ps(sx, ws[h])), bias[h]);
            if tile.act == Activation::Gelu {
                y = ops::avx2::gelu(y);
            }
            _mm256_storeu_ps(tile.out.add(r * w.n + j0 + 8 * h), y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::gemm_nt;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    /// Roughly Gaussian (sum of four uniforms), with a shift so rows are not centred on 0.
    fn data(len: usize, seed: &mut u64, shift: f32) -> Vec<f32> {
        (0..len)
            .map(|_| (0..4).map(|_| lcg(seed)).sum::<f32>() + shift)
            .collect()
    }

    fn rms(v: impl Iterator<Item = f64>) -> f64 {
        let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x * x, n + 1));
        (s / n.max(1) as f64).sqrt()
    }

    /// Checks one shape on one path; returns the error against the f32 layer relative to the
    /// RMS of the f32 product (bias left out: it is added exactly and would flatter the figure).
    fn check(isa: Isa, m: usize, k: usize, n: usize, seed: &mut u64) -> f64 {
        let x = data(m * k, seed, 0.3);
        let w = data(n * k, seed, 0.0);
        let bias: Vec<f32> = (0..n).map(|_| lcg(seed)).collect();
        let qw = QuantizedWeights::quantize(&w, n, k);
        let mut y = vec![f32::NAN; m * n];
        qlinear_with(isa, &x, m, k, &qw, Some(&bias), Activation::None, &mut y);

        // Exact: the same quantized operands, multiplied in integers.
        let isa = isa.or_below();
        let xq = QuantizedRows::new(
            isa,
            &x,
            m,
            k,
            qw.kp,
            isa == Isa::Amx && qw.kp % amx::ROW_BYTES == 0 && m >= AMX_MIN_ROWS,
        );
        let xrow = |i: usize| -> Vec<i32> { (0..k).map(|p| xq.value(i, p) as i32 - xq.zero_points[i]).collect() };
        let wq: Vec<Vec<i32>> = (0..n).map(|j| (0..k).map(|p| qw.q(j, p) as i32).collect()).collect();
        for i in 0..m {
            let xi = xrow(i);
            for j in 0..n {
                let exact: i64 = xi.iter().zip(&wq[j]).map(|(&a, &b)| a as i64 * b as i64).sum();
                let bound: f64 = xi.iter().zip(&wq[j]).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
                let s = xq.scales[i] as f64 * qw.scales[j] as f64;
                let want = s * exact as f64 + bias[j] as f64;
                let got = y[i * n + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * s * bound + 1e-6 * want.abs() + 1e-6,
                    "{isa:?} {m}x{k}x{n} ({i},{j}): {got} vs exact {want}"
                );
            }
        }

        // Against the f32 layer.
        let mut f = vec![0f32; m * n];
        gemm_nt(m, n, k, &x, &w, &mut f);
        let err = rms(y
            .iter()
            .zip(&f)
            .enumerate()
            .map(|(i, (a, b))| (*a - *b - bias[i % n]) as f64));
        err / rms(f.iter().map(|&v| v as f64))
    }

    #[test]
    fn matches_exact_integer_product_and_stays_close_to_f32() {
        let mut seed = 17;
        let mut shapes = Vec::new();
        for m in [1, 2, 3, 7, 8, 33] {
            for k in [1, 5, 384, 385] {
                for n in [1, 3, 17, 40, 384] {
                    shapes.push((m, k, n));
                }
            }
        }
        shapes.extend([
            (1, 1536, 1536),
            (8, 1536, 3),
            (33, 1536, 17),
            (1, 384, 51864),
            (3, 384, 51864),
        ]);
        shapes.extend([(1500, 384, 384), (1500, 385, 17), (1500, 1536, 384)]);
        for isa in Isa::all_available() {
            let mut worst = (0.0, (0, 0, 0));
            for &(m, k, n) in &shapes {
                let rel = check(isa, m, k, n, &mut seed);
                if m * n * k >= 1 << 24 {
                    eprintln!(
                        "{isa:?} {m}x{k}x{n}: error vs f32 = {:.3} % of the output RMS",
                        rel * 100.0
                    );
                }
                // The budget is a statistic: it needs enough outputs and a real k.
                if k >= 384 && m * n >= 16 && rel > worst.0 {
                    worst = (rel, (m, k, n));
                }
            }
            eprintln!(
                "{isa:?}: worst error vs f32 = {:.3} % of the output RMS at {:?}",
                worst.0 * 100.0,
                worst.1
            );
            let budget = if isa.or_below() >= Isa::Avx512Vnni { 0.015 } else { 0.02 };
            assert!(worst.0 < budget, "{isa:?}: {:.3} %", worst.0 * 100.0);
        }
    }

    #[test]
    fn activation_quantization_is_the_same_on_every_path() {
        let mut seed = 29;
        for len in [1, 7, 8, 31, 32, 33, 100, 1536] {
            for shift in [0.0, 3.0, -3.0] {
                let mut x = data(len, &mut seed, shift);
                if len > 2 {
                    x[1] = 0.0;
                }
                for qmax in [127.0, 255.0] {
                    let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
                    let ra = quantize_row(Isa::Portable, &x, qmax, &mut a);
                    let rb = quantize_row(Isa::detect(), &x, qmax, &mut b);
                    assert_eq!((ra, &a), (rb, &b), "len {len} shift {shift} qmax {qmax}");
                    let (scale, zp) = ra;
                    for (&q, &v) in a.iter().zip(&x) {
                        assert!(q as f32 <= qmax && ((q as i32 - zp) as f32 * scale - v).abs() <= 0.5001 * scale);
                    }
                }
            }
        }
        let mut z = [9u8; 3];
        assert_eq!(quantize_row(Isa::detect(), &[0.0; 3], 127.0, &mut z), (1.0, 0));
        assert_eq!(z, [0; 3]);
    }

    #[test]
    fn fused_gelu_equals_gelu_after() {
        let mut seed = 23;
        let (m, k, n) = (5, 40, 37);
        let x = data(m * k, &mut seed, 0.0);
        let w = data(n * k, &mut seed, 0.0);
        let qw = QuantizedWeights::quantize(&w, n, k);
        for isa in Isa::all_available() {
            let mut plain = vec![0f32; m * n];
            qlinear_with(isa, &x, m, k, &qw, None, Activation::None, &mut plain);
            crate::ops::gelu(&mut plain);
            let mut fused = vec![0f32; m * n];
            qlinear_with(isa, &x, m, k, &qw, None, Activation::Gelu, &mut fused);
            for (a, b) in fused.iter().zip(&plain) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{isa:?}: {a} vs {b}");
            }
        }
    }

    /// One random layer (shifted inputs, a bias) run on each of `paths`.
    fn outputs_on(paths: &[Isa], (m, k, n): (usize, usize, usize), act: Activation, seed: &mut u64) -> Vec<Vec<f32>> {
        let x = data(m * k, seed, 0.2);
        let w = data(n * k, seed, 0.0);
        let bias: Vec<f32> = (0..n).map(|_| lcg(seed)).collect();
        let qw = QuantizedWeights::quantize(&w, n, k);
        let run = |&isa: &Isa| {
            let mut y = vec![f32::NAN; m * n];
            qlinear_with(isa, &x, m, k, &qw, Some(&bias), act, &mut y);
            y
        };
        paths.iter().map(run).collect()
    }

    #[test]
    fn avx2_and_portable_paths_agree() {
        let mut seed = 31;
        for act in [Activation::None, Activation::Gelu] {
            let [portable, avx2] = &outputs_on(&[Isa::Portable, Isa::Avx2], (7, 130, 45), act, &mut seed)[..] else {
                unreachable!()
            };
            match act {
                Activation::None => assert_eq!(portable, avx2),
                // The GEMM agrees bit for bit; the two erf approximations of GELU do not.
                Activation::Gelu => {
                    for (a, b) in portable.iter().zip(avx2) {
                        assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "GELU {a} against {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn amx_and_vnni_paths_agree_bit_for_bit() {
        if !Isa::Amx.available() {
            eprintln!("no AMX here: nothing to compare");
            return;
        }
        let mut seed = 41;
        // Row and channel counts around the tile blocks (16, 32, 64) and a partial last panel.
        for shape in [
            (8, 384, 51864),
            (16, 384, 51864),
            (17, 64, 33),
            (20, 384, 200),
            (33, 1536, 40),
            (70, 512, 130),
            (1500, 384, 1536),
        ] {
            for act in [Activation::None, Activation::Gelu] {
                let [amx, vnni] = &outputs_on(&[Isa::Amx, Isa::Avx512Vnni], shape, act, &mut seed)[..] else {
                    unreachable!()
                };
                let same = amx.iter().zip(vnni).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{shape:?} {act:?}: AMX and VNNI differ");
            }
        }
    }

    #[test]
    fn streamed_quantization_matches_a_plain_per_row_quantization() {
        let mut seed = 37;
        // Row counts around the block and panel sizes, odd k.
        for (n, k) in [
            (1, 5),
            (17, 3),
            (QUANTIZE_BLOCK_ROWS - 1, 7),
            (QUANTIZE_BLOCK_ROWS + 21, 9),
            (2 * QUANTIZE_BLOCK_ROWS + 16, 4),
        ] {
            let mut w = data(n * k, &mut seed, 0.0);
            if n >= 2 {
                w[k..2 * k].fill(0.0); // an all-zero row
            }
            let mut asked = Vec::new();
            let qw = QuantizedWeights::quantize_with(n, k, |r0, rows| {
                asked.push((r0, rows.len() / k));
                rows.copy_from_slice(&w[r0 * k..r0 * k + rows.len()]);
            });
            // Every row asked for once, in order, in blocks of at most QUANTIZE_BLOCK_ROWS.
            let mut next = 0;
            for &(r0, rows) in &asked {
                assert!(
                    r0 == next && rows > 0 && rows <= QUANTIZE_BLOCK_ROWS,
                    "{n}x{k}: {asked:?}"
                );
                next += rows;
            }
            assert_eq!(next, n);
            // The plain definition, row by row.
            for j in 0..n {
                let row = &w[j * k..(j + 1) * k];
                let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                let q: Vec<i8> = row
                    .iter()
                    .map(|&v| (v / scale).round().clamp(-127.0, 127.0) as i8)
                    .collect();
                assert_eq!(qw.scales[j], scale, "{n}x{k} row {j}");
                assert_eq!((0..k).map(|p| qw.q(j, p)).collect::<Vec<_>>(), q, "{n}x{k} row {j}");
                assert_eq!(
                    qw.row_sums[j],
                    q.iter().map(|&v| v as i32).sum::<i32>(),
                    "{n}x{k} row {j}"
                );
            }
            // Padding: zero weights and scales.
            assert!(qw.scales[n..].iter().all(|&s| s == 0.0) && qw.row_sums[n..].iter().all(|&s| s == 0));
            assert_eq!(
                qw.packed.iter().filter(|&&v| v != 0).count(),
                (0..n)
                    .flat_map(|j| (0..k).map(move |p| (j, p)))
                    .filter(|&(j, p)| qw.q(j, p) != 0)
                    .count()
            );
        }
    }

    #[test]
    fn zero_rows_and_zero_weights_give_the_bias() {
        let (m, k, n) = (3, 9, 5);
        let qw = QuantizedWeights::quantize(&vec![0.0; n * k], n, k);
        let bias = [1.0, -2.0, 0.5, 0.0, 3.0];
        let mut y = vec![f32::NAN; m * n];
        qlinear(&vec![0.7; m * k], m, k, &qw, Some(&bias), &mut y);
        for row in y.chunks(n) {
            assert_eq!(row, bias);
        }
        assert_eq!(qw.dequantize(), vec![0.0; n * k]);
    }
}
