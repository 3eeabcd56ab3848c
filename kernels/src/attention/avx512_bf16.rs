//! The two products of [`super::bf16_tiles`] on AVX-512 BF16's `vdpbf16ps` (Zen 4 and later,
//! Cooper Lake, Sapphire Rapids), for CPUs without AMX: each instruction multiplies 16 pairs of
//! bf16 and adds them into 16 f32 sums, twice the products of an f32 FMA. They read the AMX
//! tile layouts as they are: one tile row (32 bf16) is one vector, 16 lanes of a pair each.

use std::arch::x86_64::*;

use super::bf16_tiles::{HEAD_DIM, ROWS};
use crate::amx::BF16_TILE;

/// Pairs of head dimensions (one `vdpbf16ps` step each).
const PAIRS: usize = HEAD_DIM / 2;

/// Whether the CPU has the instructions (AVX-512 BF16 besides the F and BW the caller's path
/// already has).
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512bf16")
}

#[inline(always)]
unsafe fn bh(x: __m512i) -> __m512bh {
    // SAFETY: both are 64 bytes of plain bits.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(x) }
}

/// [`crate::amx::scores_bf16`] for Whisper's head width: `out[i][j] = Σ_p q[i][p]·k_j[p]`
/// for 32 query rows (bf16, `HEAD_DIM` apart) against the 32 keys of `k` (two 16-key blocks
/// of the key pack, one after the other), stored to `out` with `ldo` floats a row.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16 ([`available`]); `q` must hold 32 rows, `k` 32
/// keys of the pack, `out` 32 rows of 32 floats `ldo` apart.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn scores(q: *const u16, k: *const u16, out: *mut f32, ldo: usize) {
    // A 16-key block is its two 32-dimension tiles back to back: pair p's 16 keys at `p · 32`.
    const RG: usize = 8;
    // SAFETY: the loads read pairs `0..PAIRS` of two 16-key blocks (`2 · 2 · BF16_TILE` u16 from
    // `k`) and rows `0..ROWS` of `q`; the stores write rows `0..ROWS`, 32 floats each, of `out`:
    // what the caller vouched for.
    unsafe {
        let k1 = k.add(2 * BF16_TILE);
        for r0 in (0..ROWS).step_by(RG) {
            let mut acc = [[_mm512_setzero_ps(); 2]; RG];
            for p in 0..PAIRS {
                let kv0 = bh(_mm512_loadu_si512(k.add(p * 32) as *const _));
                let kv1 = bh(_mm512_loadu_si512(k1.add(p * 32) as *const _));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let qp = q.add((r0 + r) * HEAD_DIM + 2 * p) as *const i32;
                    let qb = bh(_mm512_set1_epi32(qp.read_unaligned()));
                    acc[0] = _mm512_dpbf16_ps(acc[0], qb, kv0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], qb, kv1);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let o = out.add((r0 + r) * ldo);
                _mm512_storeu_ps(o, acc[0]);
                _mm512_storeu_ps(o.add(16), acc[1]);
            }
        }
    }
}

/// [`crate::amx::weighted_sum_bf16`]: `out[i][c] = Σ_j p[i][j]·v_j[c]` for 16 rows of
/// probabilities (bf16, `ldp` elements a row) over `chunks` × 32 keys of the value pack.
///
/// # Safety
/// As [`scores`]; `p` must hold 16 rows of `chunks · 32` and `v` `chunks` 32-key chunks.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn weighted_sum(
    chunks: usize,
    p: *const u16,
    ldp: usize,
    v: *const u16,
    out: &mut [f32; 16 * HEAD_DIM],
) {
    // Rows per pass: 4 rows × 4 column blocks of 16 = 16 sums, with the 4 value vectors and a
    // broadcast well inside the 32 registers.
    const RG: usize = 4;
    const BLOCKS: usize = HEAD_DIM / 16;
    // SAFETY: key pair `j < chunks · 16` reads the value pack's tile row at
    // `(j / 16 · 4 + b) · BF16_TILE + (j % 16) · 32` (inside `chunks` chunks of 4 tiles) and
    // `p`'s elements `2j, 2j + 1` of rows below 16; the stores write `out`'s 16 × 64.
    unsafe {
        let o = out.as_mut_ptr();
        for r0 in (0..16).step_by(RG) {
            let mut acc = [[_mm512_setzero_ps(); BLOCKS]; RG];
            for j in 0..chunks * 16 {
                let vrow = v.add((j / 16) * BLOCKS * BF16_TILE + (j % 16) * 32);
                let mut vv = [bh(_mm512_setzero_si512()); BLOCKS];
                for (b, vv) in vv.iter_mut().enumerate() {
                    *vv = bh(_mm512_loadu_si512(vrow.add(b * BF16_TILE) as *const _));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let pp = p.add((r0 + r) * ldp + 2 * j) as *const i32;
                    let pb = bh(_mm512_set1_epi32(pp.read_unaligned()));
                    for (a, &vv) in acc.iter_mut().zip(&vv) {
                        *a = _mm512_dpbf16_ps(*a, pb, vv);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (b, &a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(o.add((r0 + r) * HEAD_DIM + b * 16), a);
                }
            }
        }
    }
}
