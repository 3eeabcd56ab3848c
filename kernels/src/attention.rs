//! Multi-head scaled dot-product attention on row-major Q, K, V views.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::gemm::gemm_strided;
use crate::isa::Isa;
use crate::ops::{exp_shifted_with, softmax};
use crate::sgemm::{PackedB, Shared, View};

/// Query rows per fused task: their scores (48 × tk floats, 288 KiB at tk = 1500) stay in L2
/// between Q·Kᵀ, softmax and P·V.
const ROW_BLOCK: usize = 48;

/// Shape of one attention call. Q is `tq` rows, K and V are `tk` rows; head `h` uses columns
/// `h·head_dim .. (h+1)·head_dim` of each row. Rows are `*_stride` floats apart, so Q, K and V
/// may be column ranges of one fused QKV matrix.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub tq: usize,
    pub tk: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub q_stride: usize,
    pub k_stride: usize,
    pub v_stride: usize,
    /// Query `i` sees keys `0..=tk−tq+i` only (decoder self-attention).
    pub causal: bool,
}

impl Shape {
    /// Keys query row `i` sees: all of them, or when causal those up to its own position.
    pub fn visible_keys(&self, i: usize) -> usize {
        if self.causal {
            self.tk - self.tq + i + 1
        } else {
            self.tk
        }
    }
}

/// `out[tq × n_heads·head_dim] = softmax(Q Kᵀ / sqrt(head_dim)) V`, head by head, on the
/// kernels' pool.
pub fn attention(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    if s.tq >= ROW_BLOCK {
        attention_fused(Isa::detect(), s, q, k, v, out);
    } else if s.tq <= FEW_ROWS {
        attention_few_rows(s, q, k, v, out);
    } else {
        attention_unfused(s, q, k, v, out);
    }
}

/// [`attention`] with Q·Kᵀ and P·V in bf16 operands with f32 sums, on the AMX tiles of CPUs
/// that have them or, when asked for, with AVX-512 BF16's `vdpbf16ps` on those that have that
/// instead (for Whisper's head width, 64, and at least 32 query rows; [`bf16_tiles::Engine`]);
/// elsewhere it is [`attention`], in f32. The softmax stays f32. The encoder of INT8 models
/// uses it: these two products are 40 % of the encoder's arithmetic and are not weights, so
/// INT8 has no scale for them computed in advance; bf16 keeps each value's exponent.
pub fn attention_bf16(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    attention_bf16_on(bf16_tiles::Engine::detect(), s, q, k, v, out)
}

/// [`attention_bf16`] on a chosen engine (`None`: f32), for tests that compare them.
pub(crate) fn attention_bf16_on(
    engine: Option<bf16_tiles::Engine>,
    s: Shape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(engine) = engine.filter(|_| s.head_dim == bf16_tiles::HEAD_DIM && s.tq >= bf16_tiles::ROWS) {
        check(s, q, k, v, out);
        return crate::pool::install(|| bf16_tiles::attention(engine, s, q, k, v, out));
    }
    attention(s, q, k, v, out)
}

/// Queries up to this many rows (decoder steps, a prompt's last tokens) take
/// [`attention_few_rows`]: on whole long-form runs it takes less CPU time than
/// [`attention_rows`] for one row and the GEMMs above (README, Benchmarks);
/// [`attention_rows`] stays as the per-row alternative.
const FEW_ROWS: usize = 4;

/// Attention for a few query rows (decoder steps): per (head, query row), scores by dot
/// products straight from K's rows and the output as a weighted sum of V's rows. K and V are
/// read in place once, where the GEMM paths would pack them first (the packing cost as much
/// as the arithmetic for one row).
pub fn attention_rows(isa: Isa, s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    check(s, q, k, v, out);
    let (hd, d) = (s.head_dim, s.n_heads * s.head_dim);
    let scale = 1.0 / (hd as f32).sqrt();
    let out = Shared(out.as_mut_ptr());
    crate::pool::install(|| {
        (0..s.n_heads * s.tq).into_par_iter().for_each(|t| {
            let (h, i) = (t / s.tq, t % s.tq);
            let limit = s.visible_keys(i);
            let row = RowJob {
                q: &q[i * s.q_stride + h * hd..][..hd],
                k: &k[h * hd..],
                k_stride: s.k_stride,
                v: &v[h * hd..],
                v_stride: s.v_stride,
                scale,
            };
            // SAFETY: `check` bounds out's rows; (row i, head h) belongs to this task alone.
            let o = unsafe { std::slice::from_raw_parts_mut(out.get().add(i * d + h * hd), hd) };
            SCORES.with(|buf| {
                let mut sc = buf.borrow_mut();
                sc.resize(limit, 0.0);
                #[cfg(target_arch = "x86_64")]
                if isa.or_below() >= Isa::Avx2 {
                    // SAFETY: `or_below` checked that the CPU has AVX2 and FMA.
                    return unsafe { row.run_avx2(isa, &mut sc, o) };
                }
                row.run(isa, &mut sc, o);
            });
        });
    });
}

/// One query row of one head, for [`attention_rows`].
struct RowJob<'a> {
    q: &'a [f32],
    k: &'a [f32],
    k_stride: usize,
    v: &'a [f32],
    v_stride: usize,
    scale: f32,
}

impl RowJob<'_> {
    /// [`run`](Self::run) compiled for AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, isa: Isa, sc: &mut [f32], o: &mut [f32]) {
        self.run(isa, sc, o);
    }

    /// Plain loops that LLVM vectorises; inlined into `run_avx2` they get AVX2.
    #[inline(always)]
    fn run(&self, isa: Isa, sc: &mut [f32], o: &mut [f32]) {
        let hd = self.q.len();
        for (j, s) in sc.iter_mut().enumerate() {
            *s = crate::gemm::dot_portable(self.q, &self.k[j * self.k_stride..][..hd]) * self.scale;
        }
        let sum = exp_shifted_with(isa, sc);
        let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        // 32 output columns at a time, their sums kept in registers across all keys.
        for (c0, o) in (0..hd).step_by(32).zip(o.chunks_mut(32)) {
            let mut acc = [0f32; 32];
            if o.len() == 32 {
                for (j, &p) in sc.iter().enumerate() {
                    let vr: &[f32; 32] = self.v[j * self.v_stride + c0..][..32].try_into().expect("32 columns");
                    for c in 0..32 {
                        acc[c] += p * vr[c];
                    }
                }
            } else {
                for (j, &p) in sc.iter().enumerate() {
                    for (a, &x) in acc.iter_mut().zip(&self.v[j * self.v_stride + c0..][..o.len()]) {
                        *a += p * x;
                    }
                }
            }
            for (y, a) in o.iter_mut().zip(acc) {
                *y = a * inv;
            }
        }
    }
}

/// The reference: per head, one GEMM for all scores, softmax over the whole score matrix,
/// one GEMM for the output. Used between [`attention_rows`] and [`attention_fused`].
pub fn attention_unfused(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    check(s, q, k, v, out);
    crate::pool::install(|| attention_on_pool(s, q, k, v, out));
}

fn check(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &[f32]) {
    let d = s.n_heads * s.head_dim;
    assert!(s.tq > 0 && s.tk > 0 && s.tk >= if s.causal { s.tq } else { 0 });
    assert!(q.len() >= (s.tq - 1) * s.q_stride + d, "attention: q too short");
    assert!(k.len() >= (s.tk - 1) * s.k_stride + d, "attention: k too short");
    assert!(v.len() >= (s.tk - 1) * s.v_stride + d, "attention: v too short");
    assert!(out.len() >= s.tq * d, "attention: out too short");
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Fused attention: each head's Kᵀ and V are packed once; then tasks of (head, 48 query rows)
/// compute their scores, softmax and P·V back to back while the scores sit in L2, so the
/// tq × tk score matrix never goes to memory and all heads share one parallel loop. Causal
/// blocks stop at their last visible key. The softmax is exact (two passes over an L2-resident
/// block), not online: with Whisper's ≤ 1500 keys a block's whole row fits.
pub fn attention_fused(isa: Isa, s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    check(s, q, k, v, out);
    let (hd, d) = (s.head_dim, s.n_heads * s.head_dim);
    let scale = 1.0 / (hd as f32).sqrt();
    crate::pool::install(|| {
        let pack = |h: usize| {
            let kt = View {
                ptr: k[h * hd..].as_ptr(),
                rs: 1,
                cs: s.k_stride as isize,
            };
            let vv = View {
                ptr: v[h * hd..].as_ptr(),
                rs: s.v_stride as isize,
                cs: 1,
            };
            // SAFETY: `check` bounds every element the views address: head h's columns
            // `h·hd..(h+1)·hd` of `tk` rows, `k_stride` / `v_stride` apart.
            unsafe { (PackedB::new(hd, s.tk, kt), PackedB::new(s.tk, hd, vv)) }
        };
        let packs: Vec<(PackedB, PackedB)> = (0..s.n_heads).into_par_iter().map(pack).collect();
        let blocks = s.tq.div_ceil(ROW_BLOCK);
        let out = Shared(out.as_mut_ptr());
        (0..s.n_heads * blocks).into_par_iter().for_each(|t| {
            let (h, r0) = (t / blocks, (t % blocks) * ROW_BLOCK);
            let rows = ROW_BLOCK.min(s.tq - r0);
            // Keys past the block's last visible one are never needed.
            let tk = s.visible_keys(r0 + rows - 1);
            let (kt, vv) = &packs[h];
            SCORES.with(|buf| {
                let mut sc = buf.borrow_mut();
                sc.resize(rows * tk, 0.0);
                let mut sums = [0f32; ROW_BLOCK];
                // SAFETY: `check` bounds Q's rows; the score block is rows × tk; the output
                // rows r0.. of head h's columns belong to this task alone.
                unsafe {
                    let qp = q.as_ptr().add(r0 * s.q_stride + h * hd);
                    kt.gemm_a_in_place(
                        isa,
                        rows,
                        0..hd,
                        tk,
                        scale,
                        (qp, s.q_stride as isize),
                        0.0,
                        (sc.as_mut_ptr(), tk as isize),
                    );
                }
                for (i, row) in sc.chunks_mut(tk).enumerate() {
                    row[s.visible_keys(r0 + i)..].fill(f32::NEG_INFINITY);
                    sums[i] = exp_shifted_with(isa, row);
                }
                // SAFETY: the scores are `rows × tk` (resized above) and the V pack covers `tk`
                // keys of `hd` columns; the output rows `r0..r0 + rows` (< tq, `check`) of head
                // h's columns belong to this task alone, and `d` floats apart.
                unsafe {
                    let op = out.get().add(r0 * d + h * hd);
                    vv.gemm_a_in_place(
                        isa,
                        rows,
                        0..tk,
                        hd,
                        1.0,
                        (sc.as_ptr(), tk as isize),
                        0.0,
                        (op, d as isize),
                    );
                    // The softmax's normalisation, on the narrow output rather than the scores.
                    for (i, &sum) in sums[..rows].iter().enumerate() {
                        let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
                        for o in std::slice::from_raw_parts_mut(op.add(i * d), hd) {
                            *o *= inv;
                        }
                    }
                }
            });
        });
    });
}

/// [`attention_unfused`]'s work; its caller has run `check`.
fn attention_on_pool(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    let d = s.n_heads * s.head_dim;
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let mut scores = vec![0f32; s.tq * s.tk];
    for h in 0..s.n_heads {
        let off = h * s.head_dim;
        // SAFETY: `check` (run by the caller) bounds Q's `tq` and K's `tk` rows of head h's
        // columns; the scores are their own `tq × tk` vector.
        unsafe {
            gemm_strided(
                s.tq,
                s.tk,
                s.head_dim,
                scale,
                q.as_ptr().add(off),
                (s.q_stride as isize, 1),
                k.as_ptr().add(off),
                (1, s.k_stride as isize),
                0.0,
                scores.as_mut_ptr(),
                (s.tk as isize, 1),
            );
        }
        scores.par_chunks_mut(s.tk).enumerate().for_each(|(i, row)| {
            row[s.visible_keys(i)..].fill(f32::NEG_INFINITY);
            softmax(row);
        });
        // SAFETY: as above for V's `tk` rows; `out` holds `tq` rows of `d` (`check`), of which
        // head h's columns are written.
        unsafe {
            gemm_strided(
                s.tq,
                s.head_dim,
                s.tk,
                1.0,
                scores.as_ptr(),
                (s.tk as isize, 1),
                v.as_ptr().add(off),
                (s.v_stride as isize, 1),
                0.0,
                out.as_mut_ptr().add(off),
                (d as isize, 1),
            );
        }
    }
}

/// Attention for a decoder step (a query row or a few): scores by dot products straight off K
/// and a weighted sum straight off V, heads in parallel. Packing K for a GEMM costs as much as
/// the product itself when Q has one row, and a step calls this 2 × layers times.
pub fn attention_few_rows(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    check(s, q, k, v, out);
    let d = s.n_heads * s.head_dim;
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let head = |h: usize, out_rows: &mut [Vec<f32>]| {
        let off = h * s.head_dim;
        let mut p = vec![0f32; s.tk];
        for (i, o) in out_rows.iter_mut().enumerate() {
            let seen = s.visible_keys(i);
            let qi = &q[i * s.q_stride + off..i * s.q_stride + off + s.head_dim];
            for (j, pj) in p[..seen].iter_mut().enumerate() {
                *pj = crate::gemm::dot(qi, &k[j * s.k_stride + off..j * s.k_stride + off + s.head_dim]) * scale;
            }
            softmax(&mut p[..seen]);
            o.clear();
            o.resize(s.head_dim, 0.0);
            for (j, &pj) in p[..seen].iter().enumerate() {
                let vj = &v[j * s.v_stride + off..j * s.v_stride + off + s.head_dim];
                for (acc, &x) in o.iter_mut().zip(vj) {
                    *acc += pj * x;
                }
            }
        }
    };
    // Per head, its output rows; written to `out` after.
    let mut per_head: Vec<Vec<Vec<f32>>> = (0..s.n_heads).map(|_| vec![Vec::new(); s.tq]).collect();
    if s.tk * s.tq >= 256 {
        crate::pool::install(|| per_head.par_iter_mut().enumerate().for_each(|(h, rows)| head(h, rows)));
    } else {
        per_head.iter_mut().enumerate().for_each(|(h, rows)| head(h, rows));
    }
    for (h, rows) in per_head.iter().enumerate() {
        for (i, row) in rows.iter().enumerate() {
            out[i * d + h * s.head_dim..i * d + (h + 1) * s.head_dim].copy_from_slice(row);
        }
    }
}

/// Attention in bf16: per head, K and V are converted to bf16 once, in the AMX tile layouts;
/// tasks of (head, 32 query rows) then compute their scores 32 keys at a time into an
/// L2-resident block, take the f32 softmax, round the probabilities to bf16 and multiply them
/// by V, as [`attention_fused`] does in f32. The products run on the AMX tiles or, where the
/// CPU has no AMX, on AVX-512 BF16 ([`avx512_bf16`]) from the same layouts.
#[cfg(target_arch = "x86_64")]
pub(crate) mod bf16_tiles {
    use std::cell::RefCell;

    use rayon::prelude::*;

    use super::{avx512_bf16, Shape};
    use crate::amx::{self, bf16, BF16_TILE};
    use crate::isa::Isa;
    use crate::sgemm::Shared;

    /// What multiplies the bf16 operands.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Engine {
        /// The AMX tiles (`tdpbf16ps`).
        Amx,
        /// AVX-512 BF16's `vdpbf16ps`.
        Avx512Bf16,
    }

    impl Engine {
        /// The engine of the chosen SIMD path: AMX on its path; on the AVX-512 path, AVX-512
        /// BF16 only when asked for (`NPUWHISPER_BF16_ATTENTION=1`) and the CPU has it; none
        /// below. Not by default: on Zen 5 its bf16 Q·Kᵀ took the hour of long-form from
        /// 1.96 % to 2.06 % WER, past that test's 2 % (README, Benchmarks).
        pub(crate) fn detect() -> Option<Engine> {
            static CHOSEN: std::sync::OnceLock<Option<Engine>> = std::sync::OnceLock::new();
            *CHOSEN.get_or_init(|| {
                let asked = std::env::var("NPUWHISPER_BF16_ATTENTION").is_ok_and(|v| v == "1");
                match Isa::detect() {
                    Isa::Amx => Some(Engine::Amx),
                    Isa::Avx512Vnni if asked && avx512_bf16::available() => Some(Engine::Avx512Bf16),
                    _ => None,
                }
            })
        }

        /// Every engine this CPU has, for tests.
        #[cfg(test)]
        pub(crate) fn all_available() -> Vec<Engine> {
            let mut all = Vec::new();
            if Isa::Amx.available() {
                all.push(Engine::Amx);
            }
            if Isa::Avx512Vnni.available() && avx512_bf16::available() {
                all.push(Engine::Avx512Bf16);
            }
            all
        }
    }

    /// The head width the tiles are laid out for (every Whisper model's).
    pub(super) const HEAD_DIM: usize = 64;
    /// Query rows per task: two 16-row tiles.
    pub(super) const ROWS: usize = 32;
    /// Keys per step of the products (two 16-key score tiles, one 32-key P·V tile).
    const KEYS: usize = 32;

    #[derive(Default)]
    struct Block {
        q: Vec<u16>,
        scores: Vec<f32>,
        probs: Vec<u16>,
    }

    thread_local! {
        static BLOCK: RefCell<Block> = RefCell::new(Block::default());
    }

    /// Head `h`'s keys as `[16-key block][32-dimension chunk]` tiles, each row r holding
    /// dimensions 2r, 2r+1 of the block's 16 keys; keys padded with zeros to a multiple of 32.
    fn pack_keys(s: &Shape, k: &[f32], h: usize) -> Vec<u16> {
        let tk = s.tk.next_multiple_of(KEYS);
        let mut packed = vec![0u16; tk * HEAD_DIM];
        // A 16-key block's two tiles are back to back: pair p of key c at `p · 32 + c · 2`.
        for (j0, block) in (0..s.tk).step_by(16).zip(packed.chunks_exact_mut(16 * HEAD_DIM)) {
            for (c, j) in (j0..s.tk.min(j0 + 16)).enumerate() {
                let row: &[f32; HEAD_DIM] = k[j * s.k_stride + h * HEAD_DIM..][..HEAD_DIM]
                    .try_into()
                    .expect("a head");
                for (p, pair) in row.chunks_exact(2).enumerate() {
                    let dst: &mut [u16; 2] = (&mut block[p * 32 + c * 2..][..2]).try_into().expect("a pair");
                    *dst = [bf16(pair[0]), bf16(pair[1])];
                }
            }
        }
        packed
    }

    /// Head `h`'s values as `[32-key chunk][16-column block]` tiles, each row r holding keys
    /// 2r, 2r+1 of the block's 16 columns; keys padded with zeros to a multiple of 32.
    fn pack_values(s: &Shape, v: &[f32], h: usize) -> Vec<u16> {
        let tk = s.tk.next_multiple_of(KEYS);
        let mut packed = vec![0u16; tk * HEAD_DIM];
        let row = |j: usize| -> &[f32] { &v[j * s.v_stride + h * HEAD_DIM..][..HEAD_DIM] };
        // Keys 2r and 2r + 1 of a chunk interleave into tile row r of each column block.
        for (j, chunk) in (0..s.tk).step_by(KEYS).zip(packed.chunks_exact_mut(KEYS * HEAD_DIM)) {
            for (r, j) in (j..s.tk.min(j + KEYS)).step_by(2).enumerate() {
                let (even, odd) = (row(j), (j + 1 < s.tk).then(|| row(j + 1)));
                for (block, tile) in chunk.chunks_exact_mut(BF16_TILE).enumerate() {
                    let dst: &mut [u16; 32] = (&mut tile[r * 32..][..32]).try_into().expect("a tile row");
                    for c in 0..16 {
                        dst[2 * c] = bf16(even[block * 16 + c]);
                        dst[2 * c + 1] = odd.map_or(0, |o| bf16(o[block * 16 + c]));
                    }
                }
            }
        }
        packed
    }

    /// Called on the pool, with `check` passed and the engine available.
    pub(super) fn attention(engine: Engine, s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
        let d = s.n_heads * HEAD_DIM;
        let scale = 1.0 / (HEAD_DIM as f32).sqrt();
        let packs: Vec<(Vec<u16>, Vec<u16>)> = (0..s.n_heads)
            .into_par_iter()
            .map(|h| (pack_keys(&s, k, h), pack_values(&s, v, h)))
            .collect();
        let blocks = s.tq.div_ceil(ROWS);
        let out = Shared(out.as_mut_ptr());
        (0..s.n_heads * blocks).into_par_iter().for_each(|t| {
            let (h, r0) = (t / blocks, (t % blocks) * ROWS);
            let rows = ROWS.min(s.tq - r0);
            // Keys past the block's last visible one are never needed.
            let tk = s.visible_keys(r0 + rows - 1);
            let width = tk.next_multiple_of(KEYS);
            let (kp, vp) = &packs[h];
            BLOCK.with(|b| {
                let b = &mut *b.borrow_mut();
                b.q.clear();
                b.q.resize(ROWS * HEAD_DIM, 0);
                for (i, dst) in b.q.chunks_mut(HEAD_DIM).take(rows).enumerate() {
                    for (d, &x) in dst
                        .iter_mut()
                        .zip(&q[(r0 + i) * s.q_stride + h * HEAD_DIM..][..HEAD_DIM])
                    {
                        *d = bf16(x * scale);
                    }
                }
                b.scores.resize(ROWS * width, 0.0);
                b.probs.resize(ROWS * width, 0);
                // SAFETY: the engine is available (the caller's check); the guard releases the
                // tiles at the end of the task.
                let _tiles = (engine == Engine::Amx).then(|| unsafe { amx::Tiles::configure() });
                for j0 in (0..width).step_by(KEYS) {
                    // SAFETY: the tiles are configured for AMX, and AVX-512 BF16 available
                    // otherwise; Q is 32 rows of 64 bf16 (128 bytes apart), the two 16-key
                    // blocks at `j0` lie inside the key pack (`tk` rounded up to 32 keys ≥
                    // `width` keys of 64), and the 32 × 32 scores at column `j0` inside the
                    // 32 × `width` score block.
                    unsafe {
                        let k0 = kp.as_ptr().add(j0 * HEAD_DIM);
                        let out = b.scores.as_mut_ptr().add(j0);
                        match engine {
                            Engine::Amx => amx::scores_bf16(
                                2,
                                b.q.as_ptr(),
                                HEAD_DIM * 2,
                                k0,
                                k0.add(16 * HEAD_DIM),
                                out,
                                width * 4,
                            ),
                            Engine::Avx512Bf16 => avx512_bf16::scores(b.q.as_ptr(), k0, out, width),
                        }
                    }
                }
                let mut sums = [0f32; ROWS];
                for i in 0..ROWS {
                    let probs = &mut b.probs[i * width..(i + 1) * width];
                    if i >= rows {
                        probs.fill(0);
                        continue;
                    }
                    let row = &mut b.scores[i * width..i * width + tk];
                    row[s.visible_keys(r0 + i)..].fill(f32::NEG_INFINITY);
                    // SAFETY: `Isa::Amx` implies the `Avx512Vnni` set, which includes AVX-512BW.
                    sums[i] = unsafe { exp_to_bf16(row, &mut probs[..tk]) };
                    probs[tk..].fill(0);
                }
                let mut o = [0f32; 16 * HEAD_DIM];
                for half in 0..rows.div_ceil(16) {
                    // SAFETY: the engine is ready (as for the scores); the probabilities are
                    // 32 × width (16 rows read from row `half · 16`), the value pack covers
                    // `width` keys of 64 columns; output rows `r0 + i < tq` (`check`) of head
                    // h's 64 columns belong to this task alone.
                    unsafe {
                        let p = b.probs.as_ptr().add(half * 16 * width);
                        match engine {
                            Engine::Amx => amx::weighted_sum_bf16(width / KEYS, p, width * 2, vp.as_ptr(), &mut o),
                            Engine::Avx512Bf16 => {
                                avx512_bf16::weighted_sum(width / KEYS, p, width, vp.as_ptr(), &mut o)
                            }
                        }
                        for i in half * 16..rows.min(half * 16 + 16) {
                            let inv = if sums[i] > 0.0 { 1.0 / sums[i] } else { 0.0 };
                            let dst =
                                std::slice::from_raw_parts_mut(out.get().add((r0 + i) * d + h * HEAD_DIM), HEAD_DIM);
                            for (y, &x) in dst.iter_mut().zip(&o[(i - half * 16) * HEAD_DIM..]) {
                                *y = x * inv;
                            }
                        }
                    }
                }
            });
        });
    }

    /// `probs ← bf16(exp(row − max))`, returning the f32 sum: the softmax numerators the P·V
    /// tiles take, in one pass after the max. Its exp is cheaper than [`crate::ops`]' (a
    /// degree-5 Taylor polynomial, relative error below 5e-6 where the bf16 rounding that
    /// follows is up to 2e-3) and scales by 2ⁿ with `vscalefps`. A row of only −∞ gives zeros.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA, AVX-512F and AVX-512BW; `probs` must be at least as long as
    /// `row`.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw")]
    unsafe fn exp_to_bf16(row: &[f32], probs: &mut [u16]) -> f32 {
        // SAFETY: the features are the caller's; loads read `row[i..i + 16]` with `i + 16 <= n`,
        // or the masked tail `n - i < 16` lanes, and stores write the same positions of `probs`
        // (at least `n` long, the caller's).
        unsafe {
            use std::arch::x86_64::*;
            let n = row.len();
            let p = row.as_ptr();
            let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
            for i in (0..n / 16 * 16).step_by(16) {
                vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(p.add(i)));
            }
            let max = row[n / 16 * 16..]
                .iter()
                .fold(_mm512_reduce_max_ps(vmax), |a, &b| if b > a { b } else { a });
            if max == f32::NEG_INFINITY {
                probs.fill(0);
                return 0.0;
            }
            let (vm, mut vsum) = (_mm512_set1_ps(max), _mm512_setzero_ps());
            let exp = |x: __m512| {
                // x ≤ 0; below −87 (masked keys' −∞ included) the result is 0.
                let live = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-87.0));
                let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
                let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
                    x,
                    _mm512_set1_ps(std::f32::consts::LOG2_E),
                ));
                let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(std::f32::consts::LN_2), x);
                let mut poly = _mm512_set1_ps(1.0 / 120.0);
                for c in [1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
                    poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(c));
                }
                _mm512_maskz_mov_ps(live, _mm512_scalef_ps(poly, k))
            };
            let round = |e: __m512| {
                // Round to nearest even on the bits, then keep the high halves.
                let b = _mm512_castps_si512(e);
                let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
                let b = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
                _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(b))
            };
            let out = probs.as_mut_ptr();
            let mut i = 0;
            while i + 16 <= n {
                let e = exp(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), vm));
                vsum = _mm512_add_ps(vsum, e);
                _mm256_storeu_si256(out.add(i) as *mut __m256i, round(e));
                i += 16;
            }
            if i < n {
                let mask: __mmask16 = (1u32 << (n - i)) as u16 - 1;
                let x = _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask, p.add(i));
                let e = _mm512_maskz_mov_ps(mask, exp(_mm512_sub_ps(x, vm)));
                vsum = _mm512_add_ps(vsum, e);
                _mm256_mask_storeu_epi16(out.add(i) as *mut i16, mask, round(e));
            }
            _mm512_reduce_add_ps(vsum)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512_bf16;

/// Elsewhere there is no bf16 engine.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) mod bf16_tiles {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Engine {}

    impl Engine {
        pub(crate) fn detect() -> Option<Engine> {
            None
        }

        #[cfg(test)]
        pub(crate) fn all_available() -> Vec<Engine> {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests;
