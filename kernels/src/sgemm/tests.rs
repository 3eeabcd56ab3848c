use super::*;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

/// Every path, on shapes that cover partial tiles, several KC/MC/NC blocks, transposed views
/// (as attention's Kᵀ), alpha/beta and the thread split along either side.
#[test]
fn every_path_matches_a_double_reference() {
    let mut seed = 5;
    let shapes = [
        (1, 1, 1),
        (7, 17, 5),
        (6, 16, 256),
        (13, 33, 257),
        (150, 40, 300),
        (33, 3100, 20),
        (5, 700, 64),
        (200, 9, 513),
        (6, 32, 3),
        (11, 64, 64),
        (1, 48, 7),
    ];
    for isa in Isa::all_available() {
        for &(m, n, k) in &shapes {
            for &(transpose_b, alpha, beta, transpose_c) in &[
                (false, 1.0f32, 0.0f32, false),
                (true, 0.5, 0.0, false),
                (false, 1.0, 2.0, false),
                (false, 1.0, 0.5, true),
            ] {
                let a: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
                let b: Vec<f32> = (0..k * n).map(|_| lcg(&mut seed)).collect();
                let c0: Vec<f32> = (0..m * n).map(|_| lcg(&mut seed)).collect();
                // B(p, j) is b[p·n + j], or b[j·k + p] when transposed.
                let (rsb, csb) = if transpose_b { (1, k as isize) } else { (n as isize, 1) };
                // C(i, j) is c[i·n + j], or c[j·m + i] when transposed (stored column-major).
                let (rsc, csc) = if transpose_c { (1, m as isize) } else { (n as isize, 1) };
                let at = |i: usize, j: usize| (i as isize * rsc + j as isize * csc) as usize;
                let mut c = if beta == 0.0 {
                    vec![f32::NAN; m * n]
                } else {
                    vec![0f32; m * n]
                };
                if beta != 0.0 {
                    for i in 0..m {
                        for j in 0..n {
                            c[at(i, j)] = c0[i * n + j];
                        }
                    }
                }
                // SAFETY: a, b and c hold m·k, k·n and m·n floats, and the strides address exactly those
                // (row-major, or transposed for B and C); c is its own vector.
                unsafe {
                    sgemm(
                        isa,
                        m,
                        n,
                        k,
                        alpha,
                        View {
                            ptr: a.as_ptr(),
                            rs: k as isize,
                            cs: 1,
                        },
                        View {
                            ptr: b.as_ptr(),
                            rs: rsb,
                            cs: csb,
                        },
                        beta,
                        c.as_mut_ptr(),
                        rsc,
                        csc,
                    );
                }
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k)
                            .map(|p| a[i * k + p] as f64 * b[(p as isize * rsb + j as isize * csb) as usize] as f64)
                            .sum();
                        let want = alpha as f64 * dot + beta as f64 * c0[i * n + j] as f64;
                        let got = c[at(i, j)] as f64;
                        assert!(
                            (got - want).abs() < 1e-5 * (k as f64).sqrt() + 1e-6,
                            "{isa:?} {m}x{n}x{k} t{transpose_b} tc{transpose_c}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
