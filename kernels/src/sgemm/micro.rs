//! The register-tile micro-kernels of the f32 GEMM: one 6×16 tile (AVX2/FMA, portable) or two
//! side by side as 6×32 (AVX-512), over packed A and B micro-panels.

use super::{MR, NR};
use crate::isa::Isa;

/// Where a register tile goes: `mr × nr` valid elements of C at `c`.
#[derive(Clone, Copy)]
pub(super) struct Tile {
    pub(super) c: *mut f32,
    pub(super) rsc: isize,
    pub(super) csc: isize,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    pub(super) mr: usize,
    pub(super) nr: usize,
}

impl Tile {
    /// Writes `alpha·acc + beta·C` for the valid part of a full MR×NR accumulator tile.
    ///
    /// # Safety
    /// The tile's `mr × nr` elements of C must be valid and written by no other thread.
    unsafe fn store(self, acc: &[f32; MR * NR]) {
        // SAFETY: only the `mr × nr` elements inside C that the tile owns are read and written.
        unsafe {
            for i in 0..self.mr {
                for j in 0..self.nr {
                    let p = self.c.offset(i as isize * self.rsc + j as isize * self.csc);
                    let v = self.alpha * acc[i * NR + j];
                    *p = if self.beta == 0.0 { v } else { v + self.beta * *p };
                }
            }
        }
    }
}

/// The A side of a micro-kernel call: a packed MR-row micro-panel (`[p][i]`), or `direct`ly
/// MR rows of row-major A, `rs` apart (rows past the tile's `mr` are never read).
#[derive(Clone, Copy)]
pub(super) struct APanel {
    pub(super) ptr: *const f32,
    pub(super) rs: isize,
    pub(super) direct: bool,
}

impl APanel {
    /// Row `i`'s elements start here and are `step` apart in k.
    ///
    /// # Safety
    /// The panel must have valid rows `0..mr` (packed: MR interleaved rows).
    unsafe fn row(self, i: usize, mr: usize) -> (*const f32, usize) {
        // SAFETY: row `i` (clamped to the tile's last valid row when direct) of the panel the caller
        // vouched for.
        unsafe {
            if self.direct {
                (self.ptr.offset(i.min(mr - 1) as isize * self.rs), 1)
            } else {
                (self.ptr.add(i), MR)
            }
        }
    }
}

/// # Safety
/// `b` is a 64-byte aligned packed panel of `kc` rows of NR floats, `a` a panel of `kc`
/// elements per row, `tile` valid C (as [`Tile::store`]).
pub(super) unsafe fn micro_kernel(isa: Isa, kc: usize, a: APanel, b: *const f32, tile: Tile) {
    // SAFETY: `isa` came from `or_below` (the CPU has AVX2 and FMA for every arm that needs them);
    // the pointers are the caller's.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni | Isa::Amx if a.direct => kernel_avx2_direct(kc, a, b, tile),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni | Isa::Amx => kernel_avx2(kc, a.ptr, b, tile),
            _ => kernel_portable(kc, a, b, tile),
        }
    }
}

/// Whether [`micro_kernel_pair`] runs: AVX-512 machines (the `Avx512Vnni` path).
pub(super) fn pairs(isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && isa >= Isa::Avx512Vnni
}

/// An MR × 2·NR tile (two B micro-panels, `b0` then `b1`, columns `0..16` and `16..32` of the
/// tile) in 512-bit registers: 12 accumulators of 16 lanes, so each k step is 12 FMAs of
/// twice the AVX2 width against 8 loads. `tile.nr` is ignored: both panels are whole.
/// Only called when [`pairs`] is true.
///
/// # Safety
/// [`pairs`] must be true for the ISA that chose this path; otherwise as [`micro_kernel`] for each panel.
pub(super) unsafe fn micro_kernel_pair(kc: usize, a: APanel, b0: *const f32, b1: *const f32, tile: Tile) {
    // SAFETY: `pairs(isa)` (the caller's precondition) means the CPU has AVX-512F; the panels and
    // tile are the caller's.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if a.direct {
            kernel_avx512_pair::<1>(kc, a, b0, b1, tile);
        } else {
            kernel_avx512_pair::<MR>(kc, a, b0, b1, tile);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (kc, a, b0, b1, tile);
            unreachable!("pairs() is false off x86-64");
        }
    }
}

/// A packed (`STEP` = MR) or in place (`STEP` = 1; rows past `tile.mr` then repeat the last
/// one and are not stored). The step is a constant: as a variable it cost 8 % here.
///
/// # Safety
/// The CPU must have AVX-512F; operands as [`micro_kernel_pair`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512_pair<const STEP: usize>(kc: usize, a: APanel, b0: *const f32, b1: *const f32, tile: Tile) {
    // SAFETY: the CPU has AVX-512F (caller); `b0`, `b1` are 64-byte aligned packed panels of `kc`
    // rows of NR floats (aligned loads); row pointers read `kc` elements of A's valid rows.
    unsafe {
        use std::arch::x86_64::*;
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.row(i, tile.mr).0);
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for p in 0..kc {
            let v0 = _mm512_load_ps(b0.add(p * NR));
            let v1 = _mm512_load_ps(b1.add(p * NR));
            for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                let ai = _mm512_set1_ps(*row.add(p * STEP));
                acc[0] = _mm512_fmadd_ps(ai, v0, acc[0]);
                acc[1] = _mm512_fmadd_ps(ai, v1, acc[1]);
            }
        }
        store_avx512_pair(&acc, tile);
    }
}

/// `alpha·acc + beta·C` into an MR × 32 tile: vector stores of the valid rows when C's rows
/// are contiguous, else element by element (two MR × 16 halves).
///
/// # Safety
/// The CPU must have AVX-512F; `tile` must be 32 whole columns of valid C.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_avx512_pair(acc: &[[std::arch::x86_64::__m512; 2]; MR], tile: Tile) {
    // SAFETY: pointer arithmetic stays inside the tile's `mr` rows × 32 columns of C (both halves
    // are whole panels: `pairs`); `half` is MR·NR floats and `i < MR`.
    unsafe {
        use std::arch::x86_64::*;
        if tile.csc == 1 {
            let alpha = _mm512_set1_ps(tile.alpha);
            for (i, row) in acc.iter().enumerate().take(tile.mr) {
                let c = tile.c.offset(i as isize * tile.rsc);
                for (h, v) in row.iter().enumerate() {
                    let p = c.add(NR * h);
                    let mut out = _mm512_mul_ps(alpha, *v);
                    if tile.beta != 0.0 {
                        out = _mm512_fmadd_ps(_mm512_set1_ps(tile.beta), _mm512_loadu_ps(p), out);
                    }
                    _mm512_storeu_ps(p, out);
                }
            }
        } else {
            for h in 0..2 {
                let mut half = [0f32; MR * NR];
                for (i, row) in acc.iter().enumerate() {
                    _mm512_storeu_ps(half.as_mut_ptr().add(i * NR), row[h]);
                }
                Tile {
                    c: tile.c.offset((h * NR) as isize * tile.csc),
                    nr: NR,
                    ..tile
                }
                .store(&half);
            }
        }
    }
}

/// # Safety
/// Operands as [`micro_kernel`].
unsafe fn kernel_portable(kc: usize, a: APanel, b: *const f32, tile: Tile) {
    // SAFETY: `b` is a packed panel of `kc` rows of NR floats and A's rows have `kc` elements
    // (the caller's contract).
    unsafe {
        let mut acc = [0f32; MR * NR];
        for i in 0..MR {
            let (row, step) = a.row(i, tile.mr);
            for p in 0..kc {
                let ai = *row.add(p * step);
                let bp = std::slice::from_raw_parts(b.add(p * NR), NR);
                for j in 0..NR {
                    acc[i * NR + j] += ai * bp[j];
                }
            }
        }
        tile.store(&acc);
    }
}

/// # Safety
/// The CPU must have AVX2 and FMA; `a` is a packed MR-row panel of `kc` steps; otherwise as [`micro_kernel`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(kc: usize, a: *const f32, b: *const f32, tile: Tile) {
    // SAFETY: the CPU has AVX2 and FMA (caller); `b` is a 64-byte aligned packed panel of `kc`
    // rows of NR floats (aligned loads), `a` a packed A panel of `kc` rows of MR floats.
    unsafe {
        use std::arch::x86_64::*;
        prefetch_c(tile);
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm256_load_ps(b);
            let b1 = _mm256_load_ps(b.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(i));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        store_avx2(&acc, tile);
    }
}

/// [`kernel_avx2`] reading A in place: six row pointers, k contiguous along each.
///
/// # Safety
/// The CPU must have AVX2 and FMA; otherwise as [`micro_kernel`] with A read in place.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2_direct(kc: usize, a: APanel, b: *const f32, tile: Tile) {
    // SAFETY: as `kernel_avx2`, with A read in place: each row pointer has `kc` valid elements.
    unsafe {
        use std::arch::x86_64::*;
        prefetch_c(tile);
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.row(i, tile.mr).0);
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for p in 0..kc {
            let b0 = _mm256_load_ps(b.add(p * NR));
            let b1 = _mm256_load_ps(b.add(p * NR + 8));
            for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                let ai = _mm256_broadcast_ss(&*row.add(p));
                acc[0] = _mm256_fmadd_ps(ai, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(ai, b1, acc[1]);
            }
        }
        store_avx2(&acc, tile);
    }
}

/// C's rows are far apart and usually cold: ask for them now, while the k loop runs.
///
/// # Safety
/// The CPU must have AVX2 (SSE prefetch); the tile's rows must be inside C.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn prefetch_c(tile: Tile) {
    // SAFETY: row `i < mr` of the tile is inside C; the prefetch address is computed with wrapping
    // arithmetic, since a narrow tile's 16th column may lie past C, and prefetching never faults.
    unsafe {
        use std::arch::x86_64::*;
        for i in 0..tile.mr {
            let row = tile.c.offset(i as isize * tile.rsc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_offset((NR as isize - 1) * tile.csc * 4));
        }
    }
}

/// `alpha·acc + beta·C` into the tile: straight vector stores when it is whole and C's rows
/// are contiguous, else through a buffer.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `tile` as [`Tile::store`].
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_avx2(acc: &[[std::arch::x86_64::__m256; 2]; MR], tile: Tile) {
    // SAFETY: the vector path runs only for whole 6×16 tiles of contiguous C rows, so every row
    // pointer and its 16 floats are inside C; `flat` is MR·NR floats and `i < MR`.
    unsafe {
        use std::arch::x86_64::*;
        if tile.mr == MR && tile.nr == NR && tile.csc == 1 {
            let alpha = _mm256_set1_ps(tile.alpha);
            for (i, row) in acc.iter().enumerate() {
                let c = tile.c.offset(i as isize * tile.rsc);
                for (h, v) in row.iter().enumerate() {
                    let p = c.add(8 * h);
                    let mut out = _mm256_mul_ps(alpha, *v);
                    if tile.beta != 0.0 {
                        out = _mm256_fmadd_ps(_mm256_set1_ps(tile.beta), _mm256_loadu_ps(p), out);
                    }
                    _mm256_storeu_ps(p, out);
                }
            }
        } else {
            let mut flat = [0f32; MR * NR];
            for (i, row) in acc.iter().enumerate() {
                _mm256_storeu_ps(flat.as_mut_ptr().add(i * NR), row[0]);
                _mm256_storeu_ps(flat.as_mut_ptr().add(i * NR + 8), row[1]);
            }
            tile.store(&flat);
        }
    }
}
