use super::*;

fn naive(s: Shape, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f64> {
    naive_rounding(s, q, k, v, |x| x)
}

/// The plain definition in f64, with `round` applied to the operands of both products as
/// the kernel sees them (Q already scaled, K, the probabilities, V).
fn naive_rounding(s: Shape, q: &[f32], k: &[f32], v: &[f32], round: fn(f32) -> f32) -> Vec<f64> {
    let d = s.n_heads * s.head_dim;
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let mut out = vec![0f64; s.tq * d];
    for h in 0..s.n_heads {
        for i in 0..s.tq {
            let limit = if s.causal { s.tk - s.tq + i + 1 } else { s.tk };
            let sc: Vec<f64> = (0..limit)
                .map(|j| {
                    (0..s.head_dim)
                        .map(|c| {
                            let (qc, kc) = (
                                q[i * s.q_stride + h * s.head_dim + c] * scale,
                                k[j * s.k_stride + h * s.head_dim + c],
                            );
                            round(qc) as f64 * round(kc) as f64
                        })
                        .sum::<f64>()
                })
                .collect();
            let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..s.head_dim {
                out[i * d + h * s.head_dim + c] = (0..limit)
                    .map(|j| round(e[j] as f32) as f64 / z * round(v[j * s.v_stride + h * s.head_dim + c]) as f64)
                    .sum();
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
    let shapes = [
        (7, 7, 3, 5, false),
        (1, 9, 2, 8, true),
        (4, 11, 2, 3, true),
        (13, 13, 1, 64, true),
        (50, 50, 2, 16, true),
        (100, 130, 3, 64, false),
        (97, 97, 1, 20, true),
        (60, 700, 2, 64, false),
        (1, 1500, 6, 64, false),
        (3, 200, 6, 64, true),
    ];
    for &(tq, tk, heads, hd, causal) in &shapes {
        let d = heads * hd;
        // Q, K, V interleaved in one [t × 3d] matrix, as the fused projection makes them.
        let qkv: Vec<f32> = (0..tk * 3 * d).map(|_| r() * 4.0).collect();
        let s = Shape {
            tq,
            tk,
            n_heads: heads,
            head_dim: hd,
            q_stride: 3 * d,
            k_stride: 3 * d,
            v_stride: 3 * d,
            causal,
        };
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
                assert!(
                    (*a as f64 - b).abs() < 1e-4,
                    "{name} {tq}x{tk} causal {causal}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn bf16_attention_matches_a_bf16_reference_and_stays_close_to_f32() {
    let mut seed = 5u64;
    let mut r = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    #[cfg(target_arch = "x86_64")]
    let bf16 = |x: f32| crate::amx::f32_of_bf16(crate::amx::bf16(x));
    #[cfg(not(target_arch = "x86_64"))]
    let bf16 = |x: f32| x;
    // Every bf16 engine this CPU has, then the f32 path that CPUs without one take.
    let engines: Vec<Option<bf16_tiles::Engine>> = bf16_tiles::Engine::all_available()
        .into_iter()
        .map(Some)
        .chain([None])
        .collect();
    eprintln!("bf16 attention on {engines:?} (None: the f32 path)");
    // Rows and keys around the 16/32 tiles, causal blocks, Whisper's 1500 frames.
    for &(tq, tk, heads, causal) in &[
        (32, 32, 1, false),
        (33, 47, 2, false),
        (50, 50, 2, true),
        (100, 130, 3, false),
        (97, 97, 1, true),
        (60, 700, 2, true),
        (1500, 1500, 1, false),
    ] {
        let (hd, d) = (64, heads * 64);
        let qkv: Vec<f32> = (0..tk * 3 * d).map(|_| r() * 4.0).collect();
        let s = Shape {
            tq,
            tk,
            n_heads: heads,
            head_dim: hd,
            q_stride: 3 * d,
            k_stride: 3 * d,
            v_stride: 3 * d,
            causal,
        };
        let q = &qkv[(tk - tq) * 3 * d..];
        let exact = naive(s, q, &qkv[d..], &qkv[2 * d..]);
        for &engine in &engines {
            let mut out = vec![f32::NAN; tq * d];
            attention_bf16_on(engine, s, q, &qkv[d..], &qkv[2 * d..], &mut out);
            if engine.is_some() {
                // The same roundings in f64: only the f32 sums and exp differ.
                let want = naive_rounding(s, q, &qkv[d..], &qkv[2 * d..], bf16);
                for (a, b) in out.iter().zip(&want) {
                    assert!(
                        (*a as f64 - b).abs() < 2e-3,
                        "{engine:?} {tq}x{tk} causal {causal}: {a} vs bf16 reference {b}"
                    );
                }
            }
            let rms = |v: &mut dyn Iterator<Item = f64>| {
                let (s, n) = v.fold((0.0, 0), |(s, n), x| (s + x * x, n + 1));
                (s / n as f64).sqrt()
            };
            let err = rms(&mut out.iter().zip(&exact).map(|(&a, &b)| a as f64 - b)) / rms(&mut exact.iter().copied());
            eprintln!(
                "{engine:?} {tq}x{tk} causal {causal}: error vs f64 {:.3} % of the output RMS",
                err * 100.0
            );
            assert!(err < 0.01, "{engine:?} {tq}x{tk}: {:.3} %", err * 100.0);
        }
    }
}
