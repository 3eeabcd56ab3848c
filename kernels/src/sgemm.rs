//! Packed, cache-blocked f32 GEMM (the BLIS/Goto scheme): C is computed in 6×16 register tiles
//! by a micro-kernel that reads a 6-row A micro-panel and a 16-column B micro-panel, both packed
//! contiguous. Blocks: a KC×NR B micro-panel (16 KiB) stays in L1 while the micro-kernel sweeps
//! the MC×KC A block (144 KiB, L2); the KC×NC B block streams from L2/L3.
//!
//! 6×16 on AVX2/FMA: 12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers;
//! each k step issues 12 FMAs against 8 loads, so the two FMA ports stay the bottleneck.
//! On AVX-512 machines (the `Avx512Vnni` path) two adjacent B micro-panels go through one
//! 6×32 tile in zmm registers: the same 12 FMAs and 8 loads per k step, twice the width
//! (`cargo bench`: README, Benchmarks). The packing is unchanged; a lone last panel takes 6×16.
//!
//! Threads split C into row ranges (or column ranges when C is wide and short), each thread
//! packing its own panels: no barriers, and for the encoder's shapes the duplicated packing is
//! a small part of the work.

use rayon::prelude::*;

use crate::isa::Isa;

mod micro;
use micro::{micro_kernel, micro_kernel_pair, pairs, APanel, Tile};

const MR: usize = 6;
const NR: usize = 16;
const KC: usize = 384;
const MC: usize = 144;
const NC: usize = 3072;
/// C at most this wide reads A in place instead of packing it (when A's rows are contiguous):
/// packed A is reused once per 16 columns of C, so for narrow C (attention's P·V, 64 wide) the
/// packing costs as much as the arithmetic. The micro-kernel then broadcasts from six row
/// streams, which the prefetchers follow.
const DIRECT_A_MAX_N: usize = 4 * NR;
/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// A read-only strided matrix view: element (i, j) is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a view stands for a shared borrow `&[f32]` (only ever read through, and `sgemm`'s
// caller keeps the memory valid and unwritten for the call), and `&[f32]` is Send: `sgemm`
// hands views to the pool's threads.
unsafe impl Send for View {}
// SAFETY: as for `Send`: sharing a view among tasks only lets them read f32s, like `&[f32]`.
unsafe impl Sync for View {}

impl View {
    /// # Safety
    /// `(i, j)` must be inside the matrix the view describes.
    unsafe fn at(self, i: usize, j: usize) -> *const f32 {
        // SAFETY: the caller keeps (i, j) inside the matrix the view describes (`# Safety` of `at`).
        unsafe { self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }
}

/// Raw pointers moved into rayon tasks; the caller guarantees the tasks touch disjoint parts.
#[derive(Clone, Copy)]
pub(crate) struct Shared<T>(pub T);
// SAFETY: a `Shared<*mut T>` stands for the `&mut [T]` it was made from, split among tasks that
// each write only their own disjoint elements while the borrow lasts (every user's contract):
// sending it, or sharing it so that each task takes a copy, moves `T`s' exclusive access to other
// threads, which is sound when `T: Send`, as for `&mut [T]` split with `chunks_mut`.
unsafe impl<T: Send> Send for Shared<*mut T> {}
// SAFETY: as for `Send`: tasks only copy the pointer out and write disjoint elements.
unsafe impl<T: Send> Sync for Shared<*mut T> {}

impl<T: Copy> Shared<T> {
    /// The pointer. A method, so that closures capture the whole `Send` wrapper rather than
    /// the raw field (edition 2021 captures disjoint fields).
    pub(crate) fn get(self) -> T {
        self.0
    }
}

/// `C = alpha·A·B + beta·C` for `A: m×k`, `B: k×n`, `C: m×n` (row stride `rsc`, column stride
/// `csc`), on the current rayon pool. `beta == 0` never reads C (it may hold NaN).
///
/// # Safety
/// Every element addressed through the views and strides must be valid, and C must not alias A or B.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: View,
    b: View,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let isa = isa.or_below();
    let threads = if m * n * k < PARALLEL_MIN_MACS {
        1
    } else {
        rayon::current_num_threads()
    };
    // One contiguous range of C per thread, in whole register tiles: rows when there are
    // plenty (each thread then packs all of B, cheap next to its share of the work), else
    // columns, so that a short, wide product (a few decoder tokens against a 51864-row
    // vocabulary) does not pack the whole of B once per thread.
    let (split_rows, tile) = if m.div_ceil(MR) >= 8 * threads || m >= n {
        (true, MR)
    } else {
        (false, NR)
    };
    let len = if split_rows { m } else { n };
    let tiles_per_part = len.div_ceil(tile).div_ceil(threads.max(1));
    let step = tiles_per_part * tile;
    let parts = len.div_ceil(step);
    let c = Shared(c);
    let run = |p: usize| {
        let (s, e) = (p * step, ((p + 1) * step).min(len));
        // SAFETY: `s < len` (rows of C and A, or columns of C and B), so the offset views stay
        // inside the operands the caller vouched for; the parts are disjoint ranges of C's rows
        // or columns, so the tasks write disjoint elements of C, none of them in A or B (no
        // aliasing, by contract).
        unsafe {
            if split_rows {
                serial(
                    isa,
                    e - s,
                    n,
                    k,
                    alpha,
                    View { ptr: a.at(s, 0), ..a },
                    b,
                    beta,
                    c.get().offset(s as isize * rsc),
                    rsc,
                    csc,
                );
            } else {
                serial(
                    isa,
                    m,
                    e - s,
                    k,
                    alpha,
                    a,
                    View { ptr: b.at(0, s), ..b },
                    beta,
                    c.get().offset(s as isize * csc),
                    rsc,
                    csc,
                );
            }
        }
    };
    if parts == 1 {
        run(0);
    } else {
        (0..parts).into_par_iter().for_each(run);
    }
}

/// 64-byte aligned scratch (kept per thread for packing, so repeated products do not
/// page-fault fresh allocations).
struct Scratch {
    buf: Vec<f32>,
}

impl Scratch {
    fn get(&mut self, len: usize) -> *mut f32 {
        if self.buf.len() < len + 16 {
            self.buf = vec![0.0; len + 16];
        }
        let p = self.buf.as_mut_ptr();
        // SAFETY: at most 15 floats past the start, and len + 16 floats are allocated.
        unsafe { p.add(p.align_offset(64)) }
    }
}

thread_local! {
    static PACKS: std::cell::RefCell<(Scratch, Scratch)> =
        const { std::cell::RefCell::new((Scratch { buf: Vec::new() }, Scratch { buf: Vec::new() })) };
}

/// # Safety
/// As [`sgemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn serial(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: View,
    b: View,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    // SAFETY: every offset below addresses an element inside `m × n` of C, `m × k` of A or
    // `k × n` of B (the loops stay below those bounds), valid by the caller's contract; the pack
    // buffers come from `Scratch::get` with the lengths the packers and micro-kernels use
    // (MC·KC for A, KC·NC rounded up to whole panels for B) and are 64-byte aligned.
    unsafe {
        if k == 0 {
            for i in 0..m {
                for j in 0..n {
                    let p = c.offset(i as isize * rsc + j as isize * csc);
                    *p = if beta == 0.0 { 0.0 } else { beta * *p };
                }
            }
            return;
        }
        PACKS.with(|packs| {
            let (sa, sb) = &mut *packs.borrow_mut();
            let direct_a = a.cs == 1 && n <= DIRECT_A_MAX_N;
            let apack = if direct_a {
                std::ptr::null_mut()
            } else {
                sa.get(MC * KC)
            };
            let bpack = sb.get(KC * NC.min(n.next_multiple_of(NR)));
            for jc in (0..n).step_by(NC) {
                let nc = NC.min(n - jc);
                // Equal k blocks (384 → one, 1536 → four of 384): no short block that would pay a
                // full pass over C for a few k.
                let kc_step = k.div_ceil(k.div_ceil(KC));
                for pc in (0..k).step_by(kc_step) {
                    let kc = kc_step.min(k - pc);
                    pack_b(kc, nc, View { ptr: b.at(pc, jc), ..b }, bpack);
                    let beta = if pc == 0 { beta } else { 1.0 };
                    for ic in (0..m).step_by(MC) {
                        let mc = MC.min(m - ic);
                        if !direct_a {
                            pack_a(mc, kc, View { ptr: a.at(ic, pc), ..a }, apack);
                        }
                        let mut jr = 0;
                        while jr < nc {
                            let pair = pairs(isa) && jr + 2 * NR <= nc;
                            for ir in (0..mc).step_by(MR) {
                                let cp = c.offset((ic + ir) as isize * rsc + (jc + jr) as isize * csc);
                                let tile = Tile {
                                    c: cp,
                                    rsc,
                                    csc,
                                    alpha,
                                    beta,
                                    mr: MR.min(mc - ir),
                                    nr: NR.min(nc - jr),
                                };
                                let a = if direct_a {
                                    APanel {
                                        ptr: a.at(ic + ir, pc),
                                        rs: a.rs,
                                        direct: true,
                                    }
                                } else {
                                    APanel {
                                        ptr: apack.add(ir * kc),
                                        rs: 1,
                                        direct: false,
                                    }
                                };
                                if pair {
                                    micro_kernel_pair(kc, a, bpack.add(jr * kc), bpack.add((jr + NR) * kc), tile);
                                } else {
                                    micro_kernel(isa, kc, a, bpack.add(jr * kc), tile);
                                }
                            }
                            jr += if pair { 2 * NR } else { NR };
                        }
                    }
                }
            }
        });
    }
}

/// A B operand packed once and used by many products (attention's Kᵀ and V of one head):
/// NR-column panels, each `[p][j]` over the whole k.
pub(crate) struct PackedB {
    buf: Scratch,
    k: usize,
    n: usize,
}

impl PackedB {
    /// Packs `B: k×n`.
    ///
    /// # Safety
    /// Every element of B addressed through the view must be valid.
    pub(crate) unsafe fn new(k: usize, n: usize, b: View) -> PackedB {
        // SAFETY: the buffer holds `k · n` rounded up to whole panels, what `pack_b` writes; B's
        // elements are valid by the caller's contract.
        unsafe {
            let mut buf = Scratch { buf: Vec::new() };
            pack_b(k, n, b, buf.get(k * n.next_multiple_of(NR)));
            PackedB { buf, k, n }
        }
    }

    /// `C[m×cols] = alpha·A[:, ks]·B[ks, ..cols] + beta·C` for rows `ks` and the first `cols`
    /// columns of B, on this thread. A is read in place: row `i` at `a + i·rsa`, its k
    /// contiguous (element `ks.start` first).
    ///
    /// # Safety
    /// A's `m` rows of `ks.len()` floats and C's `m` rows of `n` floats (`rsc` apart) must be
    /// valid, C not overlapping A.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn gemm_a_in_place(
        &self,
        isa: Isa,
        m: usize,
        ks: std::ops::Range<usize>,
        cols: usize,
        alpha: f32,
        (a, rsa): (*const f32, isize),
        beta: f32,
        (c, rsc): (*mut f32, isize),
    ) {
        // SAFETY: `b` is the 64-byte aligned start of the pack (as in `Scratch::get`), which holds
        // `self.k` rows of every panel, and `ks.end <= self.k`, `cols <= self.n` (asserted); A's and C's
        // rows are valid by the caller's contract and `i0 < m`, `j0 < cols`.
        unsafe {
            assert!(ks.end <= self.k && cols <= self.n);
            let isa = isa.or_below();
            let b = self.buf.buf.as_ptr();
            let b = b.add(b.align_offset(64));
            // k in chunks, so that each B micro-panel chunk stays in L1 across the row tiles.
            for (chunk, p0) in (ks.start..ks.end).step_by(KC).enumerate() {
                let kc = KC.min(ks.end - p0);
                let beta = if chunk == 0 { beta } else { 1.0 };
                let mut j0 = 0;
                while j0 < cols {
                    let pair = pairs(isa) && j0 + 2 * NR <= cols;
                    for i0 in (0..m).step_by(MR) {
                        let tile = Tile {
                            c: c.offset(i0 as isize * rsc + j0 as isize),
                            rsc,
                            csc: 1,
                            alpha,
                            beta,
                            mr: MR.min(m - i0),
                            nr: NR.min(cols - j0),
                        };
                        let a = APanel {
                            ptr: a.offset(i0 as isize * rsa).add(p0 - ks.start),
                            rs: rsa,
                            direct: true,
                        };
                        if pair {
                            micro_kernel_pair(
                                kc,
                                a,
                                b.add(j0 * self.k + p0 * NR),
                                b.add((j0 + NR) * self.k + p0 * NR),
                                tile,
                            );
                        } else {
                            micro_kernel(isa, kc, a, b.add(j0 * self.k + p0 * NR), tile);
                        }
                    }
                    j0 += if pair { 2 * NR } else { NR };
                }
            }
            if ks.is_empty() {
                serial(
                    isa,
                    m,
                    cols,
                    0,
                    alpha,
                    View { ptr: a, rs: rsa, cs: 1 },
                    View { ptr: b, rs: 0, cs: 0 },
                    beta,
                    c,
                    rsc,
                    1,
                );
            }
        }
    }
}

/// A linear layer's weight `w[n×k]` (one output per row) packed once into the GEMM's B panels,
/// for a layer applied to many small batches: no packing per call, and A is read in place. Each
/// row of a product comes out the same bits whatever the number of rows or threads.
pub struct PackedLinear {
    pack: PackedB,
    n: usize,
    k: usize,
}

impl PackedLinear {
    pub fn new(n: usize, k: usize, w: &[f32]) -> PackedLinear {
        assert!(w.len() >= n * k, "PackedLinear: weight too short");
        let wt = View {
            ptr: w.as_ptr(),
            rs: 1,
            cs: k as isize,
        };
        // SAFETY: B = wᵀ (`k × n`): element (p, j) is w[j·k + p], inside the asserted n·k.
        let pack = unsafe { PackedB::new(k, n, wt) };
        PackedLinear { pack, n, k }
    }

    /// Outputs per row.
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// `y[m×n] = x[m×k] · wᵀ`. Inside a rayon pool ([`crate::pool::install`]) a large product is
    /// split by rows over its threads; called from any other thread it runs on that thread
    /// alone, with no hand-off.
    pub fn apply(&self, m: usize, x: &[f32], y: &mut [f32]) {
        self.apply_strided(m, (x, self.k), (y, self.n));
    }

    /// [`PackedLinear::apply`] on rows `x_stride` and `y_stride` floats apart (a view of every
    /// chunk's same frame, say).
    pub fn apply_strided(&self, m: usize, (x, x_stride): (&[f32], usize), (y, y_stride): (&mut [f32], usize)) {
        let (n, k) = (self.n, self.k);
        if m == 0 {
            return;
        }
        let (x_len, y_len) = ((m - 1) * x_stride + k, (m - 1) * y_stride + n);
        assert!(
            x_stride >= k && y_stride >= n && x.len() >= x_len && y.len() >= y_len,
            "PackedLinear::apply: slices too short"
        );
        let isa = Isa::detect();
        let threads = if rayon::current_thread_index().is_some() && m * n * k >= PARALLEL_MIN_MACS {
            rayon::current_num_threads()
        } else {
            1
        };
        let rows = m.div_ceil(MR).div_ceil(threads).max(1) * MR;
        let run = |(y, x): (&mut [f32], &[f32])| {
            // SAFETY: `y` holds whole rows `y_stride` apart, the last one `n` long, and `x` the
            // same rows `x_stride` apart, the last `k` long (chunks of the asserted lengths at
            // the same row): every row the product reads or writes is inside them; they are
            // distinct borrows, so C overlaps neither A nor the pack.
            unsafe {
                self.pack.gemm_a_in_place(
                    isa,
                    y.len().div_ceil(y_stride),
                    0..k,
                    n,
                    1.0,
                    (x.as_ptr(), x_stride as isize),
                    0.0,
                    (y.as_mut_ptr(), y_stride as isize),
                )
            }
        };
        let (x, y) = (&x[..x_len], &mut y[..y_len]);
        if threads == 1 {
            run((y, x));
        } else {
            y.par_chunks_mut(rows * y_stride)
                .zip(x.par_chunks(rows * x_stride))
                .for_each(run);
        }
    }
}

/// A's block as MR-row micro-panels, each k-major (`[p][i]`), rows past m zero.
///
/// # Safety
/// A's `mc × kc` elements must be valid and `dst` must hold `mc · kc` rounded up to whole MR-row panels.
unsafe fn pack_a(mc: usize, kc: usize, a: View, dst: *mut f32) {
    // SAFETY: `dst` holds `mc · kc` rounded up to whole MR-row panels (the caller sizes it MC·KC);
    // A's `mc × kc` elements are valid by the caller's contract.
    unsafe {
        for i0 in (0..mc).step_by(MR) {
            let rows = MR.min(mc - i0);
            let d = dst.add(i0 * kc);
            for i in 0..MR {
                if i < rows {
                    let src = a.at(i0 + i, 0);
                    for p in 0..kc {
                        *d.add(p * MR + i) = *src.offset(p as isize * a.cs);
                    }
                } else {
                    for p in 0..kc {
                        *d.add(p * MR + i) = 0.0;
                    }
                }
            }
        }
    }
}

/// B's block as NR-column micro-panels, each k-major (`[p][j]`), columns past n zero.
///
/// # Safety
/// B's `kc × nc` elements must be valid and `dst` must hold `kc · nc` rounded up to whole NR-column panels.
unsafe fn pack_b(kc: usize, nc: usize, b: View, dst: *mut f32) {
    // SAFETY: `dst` holds `kc · nc` rounded up to whole NR-column panels; B's `kc × nc` elements
    // are valid by the caller's contract; a whole contiguous panel row does not overlap `dst`.
    unsafe {
        for j0 in (0..nc).step_by(NR) {
            let cols = NR.min(nc - j0);
            let d = dst.add(j0 * kc);
            if b.cs == 1 && cols == NR {
                for p in 0..kc {
                    std::ptr::copy_nonoverlapping(b.at(p, j0), d.add(p * NR), NR);
                }
                continue;
            }
            for j in 0..NR {
                if j < cols {
                    let src = b.at(0, j0 + j);
                    for p in 0..kc {
                        *d.add(p * NR + j) = *src.offset(p as isize * b.rs);
                    }
                } else {
                    for p in 0..kc {
                        *d.add(p * NR + j) = 0.0;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
