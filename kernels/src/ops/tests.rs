use super::*;

#[test]
fn erf_matches_known_values() {
    for &(x, e) in &[
        (0.0f32, 0.0f64),
        (0.5, 0.5204998778),
        (1.0, 0.8427007929),
        (-1.5, -0.9661051465),
        (3.0, 0.9999779095),
    ] {
        assert!((erf(x) as f64 - e).abs() < 2e-7, "erf({x})");
    }
}

#[test]
fn layer_norm_normalises_rows() {
    let mut x = vec![1.0, 2.0, 3.0, 4.0, -1.0, -1.0, 5.0, 7.0];
    layer_norm(&mut x, &[1.0; 4], &[0.5; 4], 1e-5);
    for row in x.chunks(4) {
        let mean: f32 = row.iter().sum::<f32>() / 4.0;
        let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
        assert!((mean - 0.5).abs() < 1e-5 && (var - 1.0).abs() < 1e-3);
    }
}

#[test]
fn softmax_and_log_softmax_agree() {
    let row = vec![1.0f32, -2.0, 0.5, f32::NEG_INFINITY, 3.0];
    let mut p = row.clone();
    softmax(&mut p);
    let mut lp = Vec::new();
    log_softmax(&row, &mut lp);
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    for (a, b) in p.iter().zip(&lp) {
        assert!((a - b.exp()).abs() < 1e-6);
    }
    let mut masked = vec![f32::NEG_INFINITY; 3];
    softmax(&mut masked);
    assert_eq!(masked, vec![0.0; 3]);
}

#[test]
fn gelu_matches_definition_on_every_path() {
    let x: Vec<f32> = (-3000..3000)
        .map(|i| i as f32 / 500.0)
        .chain([-40.0, 40.0, f32::MIN_POSITIVE])
        .collect();
    for isa in Isa::all_available() {
        let mut y = x.clone();
        gelu_with(isa, &mut y);
        for (&v, &g) in x.iter().zip(&y) {
            let e = 0.5 * v * (1.0 + erf(v / 2f32.sqrt()));
            assert!(
                (g - e).abs() <= 1e-6 * (1.0 + v.abs()),
                "{isa:?} gelu({v}) = {g}, want {e}"
            );
        }
    }
    let mut y = vec![-1.0f32];
    gelu(&mut y);
    assert!((y[0] - (-0.158655)).abs() < 1e-5);
}

type F = fn(f32) -> f32;

/// The scalar functions, or the AVX2 ones lane by lane.
fn erf_exp(isa: Isa) -> (F, F) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        use std::arch::x86_64::*;
        fn lanes(x: f32, f: unsafe fn(__m256) -> __m256) -> f32 {
            let mut out = [0f32; 8];
            assert!(Isa::Avx2.available());
            // SAFETY: the CPU has AVX2 and FMA (asserted); `out` holds the 8 floats stored.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), f(_mm256_set1_ps(x))) };
            out[3]
        }
        return (|x| lanes(x, avx2::erf), |x| lanes(x, avx2::exp));
    }
    let _ = isa;
    (erf_fast, exp_fast)
}

#[test]
fn fast_erf_and_exp_are_accurate() {
    for isa in Isa::all_available().into_iter().filter(|&i| i <= Isa::Avx2) {
        check_erf_exp(isa);
    }
}

fn check_erf_exp(isa: Isa) {
    let (erf_fast, exp_fast) = erf_exp(isa);
    let mut worst = (0f64, 0f64);
    for i in -6000..=6000 {
        let x = i as f32 / 1000.0;
        let want = libm_erf(x as f64);
        worst.0 = worst.0.max((erf_fast(x) as f64 - want).abs());
    }
    for i in -8700..=8800 {
        let x = i as f32 / 100.0;
        let want = (x as f64).exp();
        worst.1 = worst.1.max(((exp_fast(x) as f64 - want) / want).abs());
    }
    eprintln!(
        "{isa:?}: erf_fast max abs error {:.2e}, exp_fast max rel error {:.2e}",
        worst.0, worst.1
    );
    assert!(worst.0 < 1e-6, "erf_fast abs error {}", worst.0);
    assert!(worst.1 < 3e-7, "exp_fast rel error {}", worst.1);
    assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_fast(0.0), 1.0);
}

/// erf in f64 by its Taylor series (|x| ≤ 3) or continued fraction, for reference only.
fn libm_erf(x: f64) -> f64 {
    if x.abs() > 3.0 {
        // erfc(x) = exp(−x²)/(x√π) · 1/(1 + 1/(2x²)/(1 + 2/(2x²)/(1 + …))), Lentz-free form.
        let ax = x.abs();
        let mut f = 0.0;
        for n in (1..60).rev() {
            f = (n as f64 / 2.0) / (ax + f);
        }
        let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f);
        return x.signum() * (1.0 - erfc);
    }
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn exp_shifted_paths_give_the_same_exps() {
    // Long enough for the 16-lane loop, with a tail, −∞ and values below exp's range.
    let row: Vec<f32> = (0..1503)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.11 - 100.0)
        .chain([f32::NEG_INFINITY, 3.0])
        .collect();
    let mut want = row.clone();
    let want_sum = exp_shifted_with(Isa::Portable, &mut want);
    for isa in Isa::all_available() {
        let mut got = row.clone();
        let sum = exp_shifted_with(isa, &mut got);
        if isa >= Isa::Avx2 {
            let mut avx2 = row.clone();
            exp_shifted_with(Isa::Avx2, &mut avx2);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                avx2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{isa:?}"
            );
        }
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * b.abs() + 1e-30, "{isa:?}: {a} vs {b}");
        }
        assert!(
            (sum - want_sum).abs() <= 1e-5 * want_sum,
            "{isa:?}: sum {sum} vs {want_sum}"
        );
    }
    for isa in Isa::all_available() {
        let mut empty = vec![f32::NEG_INFINITY; 40];
        assert_eq!(exp_shifted_with(isa, &mut empty), 0.0);
        assert!(empty.iter().all(|&v| v == 0.0));
    }
}

#[test]
fn log_sum_exp_and_log_softmax_agree_with_f64_on_every_path() {
    // Vocabulary-sized (odd length, a tail for every lane width), with −∞ masks as the
    // timestamp rules leave them; short and all-masked rows too.
    let vocab: Vec<f32> = (0..51_865)
        .map(|i| {
            if i % 97 == 5 {
                f32::NEG_INFINITY
            } else {
                ((i * 7919) % 4001) as f32 * 0.01 - 25.0
            }
        })
        .collect();
    let rows = [
        vocab,
        vec![2.5],
        vec![-1.0, 4.0, f32::NEG_INFINITY, 0.25, 3.0, -7.5, 1.0, 2.0, 9.0],
        vec![f32::NEG_INFINITY; 19],
        vec![],
    ];
    for row in &rows {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let want = if m == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
        };
        for isa in Isa::all_available() {
            let got = log_sum_exp_with(isa, row) as f64;
            if want == f64::NEG_INFINITY {
                assert_eq!(got, f64::NEG_INFINITY, "{isa:?} len {}", row.len());
                continue;
            }
            assert!(
                (got - want).abs() <= 2e-6 * (1.0 + want.abs()),
                "{isa:?} len {}: {got} vs {want}",
                row.len()
            );
            let mut lp = Vec::new();
            log_softmax_with(isa, row, &mut lp);
            assert_eq!(lp.len(), row.len());
            for (&v, &l) in row.iter().zip(&lp) {
                let w = v as f64 - want;
                assert!(
                    if w.is_infinite() {
                        l == f32::NEG_INFINITY
                    } else {
                        (l as f64 - w).abs() <= 4e-6 * (1.0 + w.abs())
                    },
                    "{isa:?}: {l} vs {w}"
                );
            }
        }
    }
}

#[test]
fn softmax_paths_agree_with_f64() {
    let row: Vec<f32> = (0..37)
        .map(|i| ((i * 7919) % 23) as f32 * 0.7 - 8.0)
        .chain([f32::NEG_INFINITY, 30.0])
        .collect();
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
    for isa in Isa::all_available() {
        let mut p = row.clone();
        softmax_with(isa, &mut p);
        for (&v, &got) in row.iter().zip(&p) {
            let want = (v as f64 - m).exp() / z;
            assert!(
                (got as f64 - want).abs() < 1e-6 * want.max(1e-30) + 1e-12,
                "{isa:?}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn sigmoid_and_tanh_match_f64() {
    let mut worst = (0f64, 0f64);
    for i in -200_000..=200_000 {
        let x = i as f32 * 1e-4;
        let s = 1.0 / (1.0 + (-(x as f64)).exp());
        worst.0 = worst.0.max((sigmoid_fast(x) as f64 - s).abs());
        worst.1 = worst.1.max((tanh_fast(x) as f64 - (x as f64).tanh()).abs());
    }
    assert!(worst.0 < 1e-7 && worst.1 < 2e-7, "{worst:?}");
    for x in [-1e4f32, -100.0, 100.0, 1e4, f32::NEG_INFINITY, f32::INFINITY] {
        let s = sigmoid_fast(x);
        assert!(
            if x > 0.0 { s == 1.0 } else { (0.0..1e-30).contains(&s) },
            "sigmoid({x}) = {s}"
        );
        assert_eq!(tanh_fast(x), x.signum(), "tanh({x})");
    }
}
