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
        isa == Isa::Amx && qw.kp.is_multiple_of(amx::ROW_BYTES) && m >= AMX_MIN_ROWS,
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
fn avx_vnni_and_avx2_tiles_agree_bit_for_bit() {
    if !crate::isa::avx_vnni_available() {
        eprintln!("no AVX-VNNI here: nothing to compare");
        return;
    }
    let mut seed = 43;
    for (m, k, n) in [
        (1, 384, 51864),
        (7, 130, 45),
        (17, 64, 33),
        (70, 512, 130),
        (1500, 384, 1536),
    ] {
        let x = data(m * k, &mut seed, 0.2);
        let w = data(n * k, &mut seed, 0.0);
        let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
        let qw = QuantizedWeights::quantize(&w, n, k);
        let run = |avx_vnni: bool| {
            let mut y = vec![f32::NAN; m * n];
            qlinear_on(
                Isa::Avx2,
                avx_vnni,
                &x,
                m,
                k,
                &qw,
                Some(&bias),
                Activation::None,
                &mut y,
            );
            y
        };
        let (plain, vnni) = (run(false), run(true));
        let same = plain.iter().zip(&vnni).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{m}x{k}x{n}: the AVX-VNNI tile differs from the AVX2 one");
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
