//! Intel AMX (Advanced Matrix Extensions: Sapphire Rapids and later Xeons), the CPU's own
//! matrix unit and the closest thing to an NPU a CPU has: eight 1 KiB tile registers and
//! instructions that multiply whole tiles, `tdpbusd` (u8 × i8 → i32, 16 × 16 outputs × 64
//! products in one instruction) and `tdpbf16ps` (bf16 × bf16 → f32).
//!
//! Rust 1.95 has no stable AMX intrinsics, so the few instructions are inline assembly. The
//! kernel (Linux ≥ 5.16) enables the 8 KiB tile state only for processes that ask for it
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which [`available`] does once.
//!
//! Every kernel here uses one tile shape, 16 rows × 64 bytes, in fixed roles: tiles 0–3 are
//! the 2 × 2 accumulators, 4–5 the two A row blocks, 6–7 the two B column blocks. A [`Tiles`]
//! guard configures them on the calling thread and releases them when dropped, so a kernel
//! leaves nothing behind on a thread that other code shares.

#[cfg(target_arch = "x86_64")]
use std::arch::asm;

/// Whether the CPU has AMX-TILE, AMX-INT8 and AMX-BF16 and the OS let this process use them.
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // CPUID leaf 7: EDX bit 22 AMX-BF16, 24 AMX-TILE, 25 AMX-INT8.
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            let cpu = [22, 24, 25].iter().all(|bit| leaf7.edx & (1 << bit) != 0);
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a plain syscall with integer arguments.
            cpu && unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) } == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// Rows of every tile.
pub(crate) const ROWS: usize = 16;
/// Bytes per tile row: 64 u8/i8, 32 bf16 or 16 i32/f32.
pub(crate) const ROW_BYTES: usize = 64;

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// The eight tiles configured 16 × 64 bytes on this thread, for the guard's lifetime.
pub(crate) struct Tiles(());

impl Tiles {
    /// # Safety
    /// [`available`] must have returned true.
    #[cfg(target_arch = "x86_64")]
    pub(crate) unsafe fn configure() -> Tiles {
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        config.bytes_per_row[..8].fill(ROW_BYTES as u16);
        config.rows[..8].fill(ROWS as u8);
        // SAFETY: the CPU has AMX and the OS granted the tile state (the caller's `available`);
        // `config` is a valid 64-byte aligned palette-1 configuration that the instruction only
        // reads.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly)) };
        Tiles(())
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the guard exists only if `configure` ran, so the CPU has AMX; releasing returns them to init state.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Defines a 2 × 2 block product on the tiles with one multiply instruction: 16 × 16
/// accumulators `C = A·B` over `steps` steps of one tile's depth (64 u8/i8 or 32 bf16):
/// A row-major, `lda` bytes per row, rows `0..16` and, when `two_rows`, `16..32`; B in the
/// weight-panel layout (16 columns a panel, one 1 KiB tile per step: row r holds, for each
/// column, the 4 bytes of depth 4r..4r+4 or the bf16 pair 2r, 2r+1), panels `b0` and, when
/// `b1` is given, `b1`. `c[2·r + p]` receives row block r, panel p.
macro_rules! block_2x2 {
    ($name:ident, $a:ty, $b:ty, $c:ty, $mul:literal) => {
        /// # Safety
        /// A [`Tiles`] guard must be alive on this thread; the pointers must cover `steps` tiles'
        /// depth of the rows and panels read.
        #[cfg(target_arch = "x86_64")]
        pub(crate) unsafe fn $name(steps: usize, a: *const $a, lda: usize, two_rows: bool, b0: *const $b, b1: Option<*const $b>, c: &mut [[$c; 256]; 4]) {
            // SAFETY: the tiles are configured (the caller's guard); every tile load reads 16
            // rows of 64 bytes, `lda` apart for A (rows 0..16, and 16..32 only if `two_rows`)
            // and contiguous for the B panels, for `steps` steps, all inside what the caller
            // vouched for; the stores write 1 KiB into `c`'s own 4 × 1 KiB accumulators.
            unsafe {
            let (a, b0) = (a as *const u8, b0 as *const u8);
            let b1 = b1.map(|b| b as *const u8);
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
            let a1 = a.add(ROWS * lda);
            for s in 0..steps {
                let (ka, kb) = (s * ROW_BYTES, s * ROWS * ROW_BYTES);
                asm!("tileloadd tmm4, [{a} + {lda}*1]", "tileloadd tmm6, [{b} + {row}*1]",
                    a = in(reg) a.add(ka), lda = in(reg) lda, b = in(reg) b0.add(kb), row = in(reg) ROW_BYTES, options(nostack, readonly));
                asm!(concat!($mul, " tmm0, tmm4, tmm6"), options(nostack, nomem));
                if let Some(b1) = b1 {
                    asm!("tileloadd tmm7, [{b} + {row}*1]", b = in(reg) b1.add(kb), row = in(reg) ROW_BYTES, options(nostack, readonly));
                    asm!(concat!($mul, " tmm1, tmm4, tmm7"), options(nostack, nomem));
                }
                if two_rows {
                    asm!("tileloadd tmm5, [{a} + {lda}*1]", a = in(reg) a1.add(ka), lda = in(reg) lda, options(nostack, readonly));
                    asm!(concat!($mul, " tmm2, tmm5, tmm6"), options(nostack, nomem));
                    if b1.is_some() {
                        asm!(concat!($mul, " tmm3, tmm5, tmm7"), options(nostack, nomem));
                    }
                }
            }
            let row = ROW_BYTES;
            asm!("tilestored [{c} + {row}*1], tmm0", c = in(reg) c[0].as_mut_ptr(), row = in(reg) row, options(nostack));
            if b1.is_some() {
                asm!("tilestored [{c} + {row}*1], tmm1", c = in(reg) c[1].as_mut_ptr(), row = in(reg) row, options(nostack));
            }
            if two_rows {
                asm!("tilestored [{c} + {row}*1], tmm2", c = in(reg) c[2].as_mut_ptr(), row = in(reg) row, options(nostack));
                if b1.is_some() {
                    asm!("tilestored [{c} + {row}*1], tmm3", c = in(reg) c[3].as_mut_ptr(), row = in(reg) row, options(nostack));
                }
            }
        }}
    };
}

// u8 activations × i8 weights → i32 (the INT8 GEMM).
block_2x2!(dot_u8i8, u8, i8, i32, "tdpbusd");
// bf16 × bf16 → f32 (the bf16 GEMM).
block_2x2!(dot_bf16, u16, u16, f32, "tdpbf16ps");

/// Rows and columns of the output per task of [`par_blocks`].
const TASK_ROWS: usize = 64;
const TASK_COLS: usize = 128;

/// Drives an `m × n` product on the tiles: tasks of 64 rows × 128 columns in parallel on the
/// current pool, each with the tiles configured, each a loop of 32 × 32 blocks. For a block at
/// `(i0, j0)`, `dot(i0, two_rows, j0, two_panels, acc)` fills its 2 × 2 accumulators (the
/// second row block or panel only when it starts inside the output); then `store(i, rows, j,
/// cols, acc)` takes each 16 × 16 accumulator that starts inside the output, `rows × cols` of
/// it being output. Tasks cover disjoint parts of the output.
///
/// # Safety
/// [`available`] must have returned true.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn par_blocks<T: Copy + Default + Send>(
    m: usize,
    n: usize,
    dot: impl Fn(usize, bool, usize, bool, &mut [[T; 256]; 4]) + Sync,
    store: impl Fn(usize, usize, usize, usize, &[T; 256]) + Sync,
) {
    {
        use rayon::prelude::*;
        let (row_tasks, col_tasks) = (m.div_ceil(TASK_ROWS), n.div_ceil(TASK_COLS));
        (0..row_tasks * col_tasks).into_par_iter().for_each(|t| {
            let (r0, c0) = ((t / col_tasks) * TASK_ROWS, (t % col_tasks) * TASK_COLS);
            let (r1, c1) = ((r0 + TASK_ROWS).min(m), (c0 + TASK_COLS).min(n));
            // SAFETY: the caller guarantees `available` (this function's contract); the guard
            // configures the tiles on this worker thread and releases them when the task ends.
            let _tiles = unsafe { Tiles::configure() };
            let mut acc = [[T::default(); 256]; 4];
            for i0 in (r0..r1).step_by(2 * ROWS) {
                for j0 in (c0..c1).step_by(2 * ROWS) {
                    dot(i0, i0 + ROWS < r1, j0, j0 + ROWS < c1, &mut acc);
                    for (b, acc) in acc.iter().enumerate() {
                        let (i, j) = (i0 + (b / 2) * ROWS, j0 + (b % 2) * ROWS);
                        if i < r1 && j < c1 {
                            store(i, ROWS.min(r1 - i), j, ROWS.min(c1 - j), acc);
                        }
                    }
                }
            }
        });
    }
}

/// f32 → bf16 bits, rounded to nearest even (finite inputs).
#[inline(always)]
pub(crate) fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// bf16 bits → f32 (exact).
#[cfg(test)]
pub(crate) fn f32_of_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// u16 elements in one bf16 tile (16 rows × 32).
pub(crate) const BF16_TILE: usize = ROWS * ROW_BYTES / 2;

/// Attention scores of 32 query rows against 32 keys on the bf16 tiles, f32 sums:
/// `out[i][j] = Σ_p q[i][p]·k_j[p]` over `chunks` × 32 dimensions. `q` is bf16 row-major, `ldq`
/// bytes per row, 32 rows; `k0` and `k1` are two blocks of 16 keys, each `chunks` tiles
/// (one per 32 dimensions) in the pair layout `tdpbf16ps` reads: tile row r holds, for each
/// of the 16 keys, dimensions 2r and 2r+1. Stored straight to `out` (f32, `ldo` bytes a row).
///
/// # Safety
/// A [`Tiles`] guard must be alive on this thread; the pointers must cover what is read and
/// written.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn scores_bf16(
    chunks: usize,
    q: *const u16,
    ldq: usize,
    k0: *const u16,
    k1: *const u16,
    out: *mut f32,
    ldo: usize,
) {
    // SAFETY: the tiles are configured (the caller's guard); the loads read 32 rows of `q` (16
    // `ldq` apart twice) and 16-row tiles of `k0`, `k1`, `chunks` times, and the stores write
    // 32 rows × 32 f32 of `out`: all inside what the caller vouched for.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        let q1 = (q as *const u8).add(ROWS * ldq);
        for c in 0..chunks {
            asm!(
                "tileloadd tmm4, [{q0} + {ldq}*1]",
                "tileloadd tmm5, [{q1} + {ldq}*1]",
                "tileloadd tmm6, [{k0} + {row}*1]",
                "tileloadd tmm7, [{k1} + {row}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                q0 = in(reg) q.add(c * 32), q1 = in(reg) q1.add(c * ROW_BYTES), ldq = in(reg) ldq,
                k0 = in(reg) k0.add(c * BF16_TILE), k1 = in(reg) k1.add(c * BF16_TILE), row = in(reg) ROW_BYTES,
                options(nostack, readonly),
            );
        }
        let o1 = (out as *mut u8).add(ROWS * ldo);
        asm!(
            "tilestored [{o0} + {ldo}*1], tmm0",
            "tilestored [{o0r} + {ldo}*1], tmm1",
            "tilestored [{o1} + {ldo}*1], tmm2",
            "tilestored [{o1r} + {ldo}*1], tmm3",
            o0 = in(reg) out, o0r = in(reg) out.add(16), o1 = in(reg) o1, o1r = in(reg) o1.add(ROW_BYTES), ldo = in(reg) ldo,
            options(nostack),
        );
    }
}

/// 16 query rows' weighted sums of values on the bf16 tiles, f32 sums: `out[i][c] = Σ_j
/// p[i][j]·v_j[c]` for 64 value columns over `chunks` × 32 keys. `p` is bf16 row-major, `ldp`
/// bytes per row; `v` holds per 32 keys four tiles (16 columns each) in the pair layout: tile
/// row r holds, for each of the 16 columns, keys 2r and 2r+1. `out` is 16 rows × 64, row-major.
///
/// # Safety
/// As [`scores_bf16`].
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn weighted_sum_bf16(
    chunks: usize,
    p: *const u16,
    ldp: usize,
    v: *const u16,
    out: &mut [f32; 16 * 64],
) {
    // SAFETY: as `scores_bf16`: `p`'s 16 rows and `v`'s `4 · chunks` tiles are read, and the
    // stores write 16 rows × 64 f32, exactly `out`'s array.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for c in 0..chunks {
            let vc = v.add(c * 4 * BF16_TILE);
            asm!(
                "tileloadd tmm4, [{p} + {ldp}*1]",
                "tileloadd tmm6, [{v0} + {row}*1]",
                "tileloadd tmm7, [{v1} + {row}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm6, [{v2} + {row}*1]",
                "tileloadd tmm7, [{v3} + {row}*1]",
                "tdpbf16ps tmm2, tmm4, tmm6",
                "tdpbf16ps tmm3, tmm4, tmm7",
                p = in(reg) p.add(c * 32), ldp = in(reg) ldp,
                v0 = in(reg) vc, v1 = in(reg) vc.add(BF16_TILE), v2 = in(reg) vc.add(2 * BF16_TILE), v3 = in(reg) vc.add(3 * BF16_TILE),
                row = in(reg) ROW_BYTES,
                options(nostack, readonly),
            );
        }
        let o = out.as_mut_ptr();
        asm!(
            "tilestored [{o0} + {ld}*1], tmm0",
            "tilestored [{o1} + {ld}*1], tmm1",
            "tilestored [{o2} + {ld}*1], tmm2",
            "tilestored [{o3} + {ld}*1], tmm3",
            o0 = in(reg) o, o1 = in(reg) o.add(16), o2 = in(reg) o.add(32), o3 = in(reg) o.add(48), ld = in(reg) 64usize * 4,
            options(nostack),
        );
    }
}
