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

/// Queries up to this many rows (decoder steps, a prompt's last tokens) take
/// [`attention_few_rows`]. Whole long-form runs (tiny.en, long_lj001, alternating builds on
/// this 2-core machine): 5.5–5.9 s CPU with it against 6.9–7.3 s with [`attention_rows`] for
/// one row and the GEMMs above; [`attention_rows`] stays as the per-row alternative.
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
            let limit = if s.causal { s.tk - s.tq + i + 1 } else { s.tk };
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
                    // SAFETY: the CPU has AVX2 and FMA.
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
        // SAFETY (both packs): `check` bounds every row of K and V the views address.
        let packs: Vec<(PackedB, PackedB)> = (0..s.n_heads)
            .into_par_iter()
            .map(|h| unsafe {
                let kt = View { ptr: k.as_ptr().add(h * hd), rs: 1, cs: s.k_stride as isize };
                let vv = View { ptr: v.as_ptr().add(h * hd), rs: s.v_stride as isize, cs: 1 };
                (PackedB::new(hd, s.tk, kt), PackedB::new(s.tk, hd, vv))
            })
            .collect();
        let blocks = s.tq.div_ceil(ROW_BLOCK);
        let out = Shared(out.as_mut_ptr());
        (0..s.n_heads * blocks).into_par_iter().for_each(|t| {
            let (h, r0) = (t / blocks, (t % blocks) * ROW_BLOCK);
            let rows = ROW_BLOCK.min(s.tq - r0);
            // Keys past the block's last visible one are never needed.
            let tk = if s.causal { s.tk - s.tq + r0 + rows } else { s.tk };
            let (kt, vv) = &packs[h];
            SCORES.with(|buf| {
                let mut sc = buf.borrow_mut();
                sc.resize(rows * tk, 0.0);
                let mut sums = [0f32; ROW_BLOCK];
                // SAFETY: `check` bounds Q's rows; the score block is rows × tk; the output
                // rows r0.. of head h's columns belong to this task alone.
                unsafe {
                    let qp = q.as_ptr().add(r0 * s.q_stride + h * hd);
                    kt.gemm_a_in_place(isa, rows, 0..hd, tk, scale, (qp, s.q_stride as isize), 0.0, (sc.as_mut_ptr(), tk as isize));
                }
                for (i, row) in sc.chunks_mut(tk).enumerate() {
                    if s.causal {
                        row[s.tk - s.tq + r0 + i + 1..].fill(f32::NEG_INFINITY);
                    }
                    sums[i] = exp_shifted_with(isa, row);
                }
                unsafe {
                    let op = out.get().add(r0 * d + h * hd);
                    vv.gemm_a_in_place(isa, rows, 0..tk, hd, 1.0, (sc.as_ptr(), tk as isize), 0.0, (op, d as isize));
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

fn attention_on_pool(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    let d = s.n_heads * s.head_dim;
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let mut scores = vec![0f32; s.tq * s.tk];
    for h in 0..s.n_heads {
        let off = h * s.head_dim;
        // SAFETY: the asserts above bound every row and column addressed here.
        unsafe {
            gemm_strided(
                s.tq, s.tk, s.head_dim, scale,
                q.as_ptr().add(off), (s.q_stride as isize, 1),
                k.as_ptr().add(off), (1, s.k_stride as isize),
                0.0, scores.as_mut_ptr(), (s.tk as isize, 1),
            );
        }
        scores.par_chunks_mut(s.tk).enumerate().for_each(|(i, row)| {
            if s.causal {
                row[s.tk - s.tq + i + 1..].fill(f32::NEG_INFINITY);
            }
            softmax(row);
        });
        // SAFETY: as above; out rows are d wide.
        unsafe {
            gemm_strided(
                s.tq, s.head_dim, s.tk, 1.0,
                scores.as_ptr(), (s.tk as isize, 1),
                v.as_ptr().add(off), (s.v_stride as isize, 1),
                0.0, out.as_mut_ptr().add(off), (d as isize, 1),
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
            let seen = if s.causal { s.tk - s.tq + i + 1 } else { s.tk };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(s: Shape, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f64> {
        let d = s.n_heads * s.head_dim;
        let mut out = vec![0f64; s.tq * d];
        for h in 0..s.n_heads {
            for i in 0..s.tq {
                let limit = if s.causal { s.tk - s.tq + i + 1 } else { s.tk };
                let sc: Vec<f64> = (0..limit)
                    .map(|j| {
                        (0..s.head_dim)
                            .map(|c| q[i * s.q_stride + h * s.head_dim + c] as f64 * k[j * s.k_stride + h * s.head_dim + c] as f64)
                            .sum::<f64>()
                            / (s.head_dim as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..s.head_dim {
                    out[i * d + h * s.head_dim + c] =
                        (0..limit).map(|j| e[j] / z * v[j * s.v_stride + h * s.head_dim + c] as f64).sum();
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_on_fused_qkv_and_causal_shapes() {
        let mut seed = 3u64;
        let mut r = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let shapes = [(7, 7, 3, 5, false), (1, 9, 2, 8, true), (4, 11, 2, 3, true), (13, 13, 1, 64, true), (50, 50, 2, 16, true), (100, 130, 3, 64, false), (97, 97, 1, 20, true), (60, 700, 2, 64, false), (1, 1500, 6, 64, false), (3, 200, 6, 64, true)];
        for &(tq, tk, heads, hd, causal) in &shapes {
            let d = heads * hd;
            // Q, K, V interleaved in one [t × 3d] matrix, as the fused projection makes them.
            let qkv: Vec<f32> = (0..tk * 3 * d).map(|_| r() * 4.0).collect();
            let s = Shape { tq, tk, n_heads: heads, head_dim: hd, q_stride: 3 * d, k_stride: 3 * d, v_stride: 3 * d, causal };
            let q = &qkv[(tk - tq) * 3 * d..];
            let expect = naive(s, q, &qkv[d..], &qkv[2 * d..]);
            let mut runs: Vec<(String, Vec<f32>)> = Vec::new();
            let mut out = vec![f32::NAN; tq * d];
            attention(s, q, &qkv[d..], &qkv[2 * d..], &mut out);
            runs.push(("attention".into(), out.clone()));
            attention_unfused(s, q, &qkv[d..], &qkv[2 * d..], &mut out);
            runs.push(("unfused".into(), out.clone()));
            out.fill(f32::NAN);
            attention_few_rows(s, q, &qkv[d..], &qkv[2 * d..], &mut out);
            runs.push(("few rows".into(), out.clone()));
            for isa in Isa::all_available() {
                out.fill(f32::NAN);
                attention_fused(isa, s, q, &qkv[d..], &qkv[2 * d..], &mut out);
                runs.push((format!("fused {isa:?}"), out.clone()));
                out.fill(f32::NAN);
                attention_rows(isa, s, q, &qkv[d..], &qkv[2 * d..], &mut out);
                runs.push((format!("rows {isa:?}"), out.clone()));
            }
            for (name, out) in runs {
                for (a, b) in out.iter().zip(&expect) {
                    assert!((*a as f64 - b).abs() < 1e-4, "{name} {tq}x{tk} causal {causal}: {a} vs {b}");
                }
            }
        }
    }
}

