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
//! INT8 is faster than f32 both for one token (the weights to stream are a quarter) and for
//! the encoder's 1500 rows, more with VNNI (`BENCH_TIME=cpu cargo bench -p npuwhisper-kernels
//! -- linear`: README, Benchmarks). Error against the f32 layer: ≤ 1.8 % of the output RMS on
//! AVX2 (7-bit activations), ≤ 1.2 % with VNNI (tests).

use rayon::prelude::*;

use crate::amx;
use crate::isa::Isa;
use crate::ops;
use crate::pool;
use crate::sgemm::Shared;
use crate::store::Store;

mod activations;
#[cfg(test)]
use activations::quantize_row;
use activations::QuantizedRows;

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
    qlinear_on(isa, crate::isa::avx_vnni(), x, m, k, w, bias, act, out)
}

/// [`qlinear_with`] with the AVX2 tile's AVX-VNNI form chosen (`avx_vnni` only where the CPU
/// has it), for the test that compares the two.
#[allow(clippy::too_many_arguments)]
pub(crate) fn qlinear_on(
    isa: Isa,
    avx_vnni: bool,
    x: &[f32],
    m: usize,
    k: usize,
    w: &QuantizedWeights,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
) {
    assert!(
        !avx_vnni || crate::isa::avx_vnni_available(),
        "qlinear: no AVX-VNNI on this CPU"
    );
    let n = w.n;
    assert_eq!(k, w.k, "qlinear: x has {k} features, the weight {}", w.k);
    assert!(x.len() >= m * k && out.len() >= m * n, "qlinear: slices too short");
    assert!(bias.is_none_or(|b| b.len() >= n), "qlinear: bias too short");
    if m == 0 || n == 0 {
        return;
    }
    let isa = isa.or_below();
    // The tiles take k 64 at a time (every Whisper width is a multiple of 64). A few rows
    // (decoder steps) only stream the weights, which the register tiles do faster; from
    // AMX_MIN_ROWS rows the tiles win (README, Benchmarks).
    let amx = isa == Isa::Amx && w.kp.is_multiple_of(amx::ROW_BYTES) && m >= AMX_MIN_ROWS;
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
                    // whose length was checked above; `isa` came from `or_below`, and `pair` holds
                    // only with VNNI and two whole panels (`j0 + 32 <= c1 <= n`).
                    unsafe {
                        if pair {
                            tile.run_pair()
                        } else {
                            tile.run(isa, avx_vnni)
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
        // SAFETY: `par_blocks` configured the tiles on this thread; the rows are padded to a
        // multiple of 16 (`QuantizedRows::new`) and the channels to whole panels, each `kp`
        // deep; `par_blocks` asks for the second row block or panel only inside them.
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
            // SAFETY: rows `i + q..` below `m` and channels `j..j + cols <= n` of `out`, a part
            // no other `par_blocks` task writes; `acc` holds `rows × 16` sums.
            unsafe { tile.store_rows(&acc[q * NR..][..tile.rows * NR]) };
        }
    };
    // SAFETY: the caller's `isa` came from `or_below`, and `Isa::Amx` is available only when
    // `amx::available()`.
    unsafe { amx::par_blocks(m, w.n, dot, store) }
}

/// `tile::<R>(t, groups, a, b)` for the tile's row count `R` (1 to MR).
macro_rules! by_rows {
    ($tile:ident, $t:expr, $groups:expr, $a:expr, $b:expr) => {
        match $t.rows {
            1 => $tile::<1>($t, $groups, $a, $b),
            2 => $tile::<2>($t, $groups, $a, $b),
            3 => $tile::<3>($t, $groups, $a, $b),
            _ => $tile::<4>($t, $groups, $a, $b),
        }
    };
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
    /// # Safety
    /// The tile's part of `out` must be valid and written by no other thread; `isa` must be one the CPU has,
    /// and AVX-VNNI too if `avx_vnni`.
    unsafe fn run(&self, isa: Isa, avx_vnni: bool) {
        // SAFETY: `isa` came from `or_below`, so the CPU has the features of the arm taken (AVX2 + FMA,
        // and AVX-VNNI when `avx_vnni`, checked by `qlinear_on`; or AVX-512 VNNI + VL for
        // `Avx512Vnni` and `Amx`); `a` is this tile's packed rows (`rows × kp`
        // bytes at `i0 · kp`, `i0` a multiple of MR and `rows` the tile's own count), `b` the panel of
        // channel `j0` (`16 × kp` bytes), which `groups = kp / 4` steps read exactly; `out` as the caller's.
        unsafe {
            let a = self.xq.tile(self.i0);
            let b = self.w.packed[(self.j0 / NR) * NR * self.w.kp..].as_ptr();
            let groups = self.w.kp / 4;
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 if avx_vnni => by_rows!(tile_avx_vnni, self, groups, a, b),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => by_rows!(tile_avx2, self, groups, a, b),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Vnni | Isa::Amx => by_rows!(tile_vnni, self, groups, a, b),
                _ => {
                    let mut acc = [0i32; MR * NR];
                    dot_tile_portable(self.rows, groups, a, b, &mut acc);
                    self.store(&acc);
                }
            }
        }
    }

    /// The tile and the next one to its right (both 16 channels wide), in 512-bit registers.
    ///
    /// # Safety
    /// As [`run`](Self::run), and the CPU must have AVX-512 VNNI, and `j0 + 32 <= n`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn run_pair(&self) {
        // SAFETY: the caller checked VNNI and that a second whole panel follows (`j0 + 32 <= n`, so
        // `b + 16 · kp` is the next panel); otherwise as `run`.
        unsafe {
            let a = self.xq.tile(self.i0);
            let b = self.w.packed[(self.j0 / NR) * NR * self.w.kp..].as_ptr();
            let groups = self.w.kp / 4;
            by_rows!(tile_vnni_pair, self, groups, a, b)
        }
    }

    /// # Safety
    /// Never called: there is no VNNI off x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run_pair(&self) {
        unreachable!("no VNNI off x86-64")
    }

    /// Stores `acc` (`rows` rows of 16 int32, one per channel) through the epilogue the register
    /// tiles use for the same shape, so every path gives the same floats.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `acc` holds `rows × 16` sums; `out` as for [`run`](Self::run).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_rows(&self, acc: &[i32]) {
        // SAFETY: the CPU has AVX2 and FMA (the caller's); `acc` holds `rows × 16` sums and `v(i)`
        // loads 16 of them at `i · 16` for `i < rows`; the tile is whole (`cols == 16`) here.
        unsafe {
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
    }

    /// `out = s_i·s_j·(acc − z_i·rowsum_j) + bias_j`, then the activation. The subtraction is
    /// in int32 (exact); only the final scaling rounds. Inlined into each SIMD path so that it is
    /// vectorised there.
    ///
    /// # Safety
    /// The tile's rows of `out` must be valid and written by no other thread.
    #[inline(always)]
    unsafe fn store(&self, acc: &[i32; MR * NR]) {
        // SAFETY: row `r < m` and columns `j0..j0 + cols <= n` of `out` (`m × n`, checked by
        // `qlinear_with`), which no other task writes (the caller's).
        unsafe {
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
}

/// Portable tile: plain integer loops, the same arithmetic as the AVX2 path.
///
/// # Safety
/// `a` must hold `groups × rows × 4` bytes and `b` `groups × 64`.
unsafe fn dot_tile_portable(rows: usize, groups: usize, a: *const u8, b: *const i8, acc: &mut [i32; MR * NR]) {
    // SAFETY: `a` holds `groups × rows × 4` bytes and `b` `groups × 16 × 4` (the caller's).
    unsafe {
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
}

/// AVX2 tile of R rows × 16 channels: per group of 4 k, one broadcast of each row's 4 u8
/// activations, `vpmaddubsw` against the 8-channel weight vectors (exact: activations ≤ 127,
/// see the module comment), `vpmaddwd` by 1 to int32, add.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `a` is the tile's packed `R × kp` bytes and `b` a whole panel
/// (`16 × kp`); `tile`'s part of `out` is valid and this thread's alone.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize>(tile: &OutTile, groups: usize, a: *const u8, b: *const i8) {
    // SAFETY: AVX2 and FMA are this function's precondition and `tile_simd`'s; operands passed on.
    unsafe {
        use std::arch::x86_64::*;
        let ones = _mm256_set1_epi16(1);
        tile_simd::<R>(tile, groups, a, b, |acc, a, b| {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones))
        });
    }
}

/// AVX-VNNI tile: [`tile_avx2`]'s sums (its 7-bit activations) by the VEX form of `vpdpbusd`,
/// one instruction for the four products and their sum into int32.
///
/// # Safety
/// As [`tile_avx2`], and the CPU must have AVX-VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn tile_avx_vnni<const R: usize>(tile: &OutTile, groups: usize, a: *const u8, b: *const i8) {
    // SAFETY: the CPU has AVX-VNNI (this function's precondition) for `vpdpbusd` and AVX2 + FMA
    // for `tile_simd`; operands passed on.
    unsafe {
        tile_simd::<R>(tile, groups, a, b, |acc, a, b| {
            std::arch::x86_64::_mm256_dpbusd_avx_epi32(acc, a, b)
        });
    }
}

/// AVX-512 VNNI tile (256-bit forms): `vpdpbusd` does the four u8 × i8 products and their sum
/// into int32 in one instruction, with no intermediate saturation.
///
/// # Safety
/// As [`tile_avx2`], and the CPU must have AVX-512 F, VL and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
unsafe fn tile_vnni<const R: usize>(tile: &OutTile, groups: usize, a: *const u8, b: *const i8) {
    // SAFETY: the CPU has AVX-512 VNNI and VL (this function's precondition) for `vpdpbusd` and
    // AVX2 + FMA for `tile_simd`; operands passed on.
    unsafe {
        tile_simd::<R>(tile, groups, a, b, |acc, a, b| {
            std::arch::x86_64::_mm256_dpbusd_epi32(acc, a, b)
        });
    }
}

/// The register tile shared by the SIMD paths; `madd(acc, 4 u8 of a row broadcast, 4 k × 8
/// channels of i8)` adds each channel's 4-term dot product into its int32 lane. Inlined into
/// the target-feature functions above, so it compiles once per path.
///
/// # Safety
/// As [`tile_avx2`].
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
    // SAFETY: each group step reads 4 bytes per row of `a` (`R` rows) and 64 bytes of `b`, for
    // `groups` steps: the tile's `R × kp` bytes and the panel's `16 × kp` (the caller's); the
    // stores go to `acc_out` (MR·16 i32, `i < R <= MR`) or through the epilogues' own checks.
    unsafe {
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
}

/// R rows × 32 channels (two weight panels) with 512-bit `vpdpbusd`: a panel's group of
/// 4 k × 16 channels is one 64-byte vector, so each group is 2 loads, R broadcasts and 2·R
/// dot-product instructions of 16 lanes, twice the work per instruction of [`tile_vnni`].
/// The epilogue is [`store_full_avx2`] on each half, so results equal the 256-bit path's.
///
/// # Safety
/// As [`tile_vnni`], and `b` is followed by a second whole panel (`j0 + 32 <= n`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
unsafe fn tile_vnni_pair<const R: usize>(tile: &OutTile, groups: usize, a: *const u8, b: *const i8) {
    // SAFETY: the CPU has AVX-512 VNNI (the caller's); `b1` is the next panel (the caller checked
    // both are whole); each group reads 64 bytes of each panel and 4 bytes of each of the `R` rows.
    unsafe {
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
        #[allow(clippy::needless_range_loop)] // h also picks the output half
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
}

/// [`OutTile::store`] for a tile 16 channels wide, in vectors: the same operations in the same
/// order (no FMA contraction), so the result matches the scalar epilogue bit for bit.
///
/// # Safety
/// The CPU must have AVX2 and FMA; the tile is 16 channels wide with `j0 + 16 <= n`; `tile`'s
/// rows of `out` are valid and this thread's alone.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_full_avx2<const R: usize>(tile: &OutTile, acc: &[[std::arch::x86_64::__m256i; 2]; R]) {
    // SAFETY: the CPU has AVX2 and FMA (the caller's); the tile is 16 channels wide (`j0 + 16 <= n`),
    // so the 16 scales, row sums and bias values loaded at `j0` exist (scales and sums are padded to
    // whole panels, the bias is at least `n` long: checked by `qlinear_with`), and the stores go to
    // row `r < m`, columns `j0..j0 + 16` of `out`.
    unsafe {
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
}

#[cfg(test)]
mod tests;
