//! `cargo bench -p npuwhisper-kernels`: throughput of every kernel on Whisper's shapes (base
//! model: d = 384, 6 heads of 64, 1500 encoder frames, 51864 tokens).
//!
//! Units: compute-bound kernels count FLOPs (INT8 ones count OPs) as criterion "elements", so
//! "Gelem/s" reads as GFLOP/s (GOP/s); memory-bound ones count the bytes they must move
//! ("GiB/s"). The machine's f32 peak is printed first to read the GEMM figures against.
//!
//! This machine is shared: with `BENCH_TIME=cpu` a sample's time is the process CPU time
//! divided by the kernel threads, i.e. what the wall time would be with the cores to
//! ourselves (time-slicing by other work drops out; spinning workers count against us).
//! The default is wall time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput};
use npuwhisper_kernels::attention::{
    attention_bf16, attention_few_rows, attention_fused, attention_rows, attention_unfused, Shape,
};
use npuwhisper_kernels::gemm::{gemm_strided_with, linear};
use npuwhisper_kernels::isa::Isa;
use npuwhisper_kernels::mel::LogMel;
use npuwhisper_kernels::ops::{gelu, layer_norm, softmax_rows};
use npuwhisper_kernels::pool;
use npuwhisper_kernels::qgemm::{qlinear_with, Activation, QuantizedWeights};
use npuwhisper_kernels::xattn::{cross_attention, cross_attention_with, CrossQuery, HalfKv};

/// Wall time, or CPU time per kernel thread (see the crate comment).
struct Clock {
    cpu: bool,
    threads: f64,
    wall: WallTime,
}

fn cpu_seconds(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

impl Measurement for Clock {
    type Intermediate = (Instant, f64);
    type Value = Duration;

    fn start(&self) -> Self::Intermediate {
        (Instant::now(), cpu_seconds(libc::CLOCK_PROCESS_CPUTIME_ID))
    }
    fn end(&self, (wall, cpu): Self::Intermediate) -> Duration {
        if self.cpu {
            Duration::from_secs_f64((cpu_seconds(libc::CLOCK_PROCESS_CPUTIME_ID) - cpu) / self.threads)
        } else {
            wall.elapsed()
        }
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// Core clock in GHz, timed on a chain of dependent 3-cycle `imul`s against this thread's CPU
/// time (so neither other processes nor the nominal /proc/cpuinfo figure skew it; turbo
/// included); the best of a few runs.
fn clock_ghz() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        (0..5)
            .map(|_| {
                let n: u64 = 20_000_000;
                let t = cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID);
                // SAFETY: register-only arithmetic.
                unsafe {
                    std::arch::asm!(
                        "2:", "imul {x}, {x}", "imul {x}, {x}", "imul {x}, {x}", "imul {x}, {x}",
                        "dec {n}", "jnz 2b",
                        n = inout(reg) n => _, x = inout(reg) 3u64 => _,
                    );
                }
                n as f64 * 12.0 / (cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID) - t) / 1e9
            })
            .fold(0.0, f64::max)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("cpu MHz"))?
                    .split(':')
                    .nth(1)?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(f64::NAN, |mhz| mhz / 1000.0)
    }
}

fn print_peak() {
    let cores = pool::threads();
    let ghz = clock_ghz();
    println!(
        "peak f32: {cores} cores x 32 FLOP/cycle (2 FMA units x 8 lanes x 2) x {ghz:.2} GHz = {:.0} GFLOP/s \
         (AVX2; one core: {:.0}); SIMD path: {}; time: {}",
        cores as f64 * 32.0 * ghz,
        32.0 * ghz,
        npuwhisper_kernels::isa::describe(),
        if std::env::var("BENCH_TIME").as_deref() == Ok("cpu") {
            "CPU time / threads"
        } else {
            "wall"
        },
    );
}

fn group<'a>(c: &'a mut Criterion<Clock>, name: &str) -> BenchmarkGroup<'a, Clock> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    g
}

fn sgemm(c: &mut Criterion<Clock>) {
    print_peak();
    let mut g = group(c, "sgemm (Gelem/s = GFLOP/s)");
    // Encoder linears (m = 1500 frames) and one attention head's Q·Kᵀ (k = head_dim 64).
    for &(m, k, n, label) in &[
        (1500, 384, 1536, "fc1"),
        (1500, 1536, 384, "fc2"),
        (1500, 384, 384, "out"),
        (1500, 64, 1500, "qk"),
    ] {
        let a = data(m * k, 1);
        let b = data(n * k, 2);
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let shape = format!("{label} {m}x{k}x{n}");
        let mut paths = vec![Isa::Avx2];
        if Isa::Avx512Vnni.available() {
            paths.push(Isa::Avx512Vnni);
        }
        if label == "out" {
            paths.push(Isa::Portable);
        }
        for isa in paths {
            g.bench_function(format!("packed-{isa:?}/{shape}"), |bench| {
                bench.iter(|| {
                    let (a, b, c) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
                    // SAFETY: a is m×k and b n×k row-major (read as k×n through the strides), out
                    // m×n row-major, a separate vector.
                    unsafe {
                        gemm_strided_with(
                            isa,
                            m,
                            n,
                            k,
                            1.0,
                            a,
                            (k as isize, 1),
                            b,
                            (1, k as isize),
                            0.0,
                            c,
                            (n as isize, 1),
                        )
                    };
                    black_box(&out);
                })
            });
        }
        g.bench_function(format!("matrixmultiply-avx2/{shape}"), |bench| {
            bench.iter(|| {
                let (a, b, c) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
                // SAFETY: the same shapes and strides as the packed path above.
                unsafe {
                    matrixmultiply::sgemm(m, k, n, 1.0, a, k as isize, 1, b, 1, k as isize, 0.0, c, n as isize, 1)
                };
                black_box(&out);
            })
        });
    }
    g.finish();
}

fn qlinear(c: &mut Criterion<Clock>) {
    let paths: Vec<Isa> = [Isa::Avx2, Isa::Avx512Vnni, Isa::Amx]
        .into_iter()
        .filter(|i| i.available())
        .collect();
    // Decoder steps: one token, memory-bound; GiB/s of weight streamed (f32: 4 bytes a weight,
    // INT8: 1), so equal GiB/s means INT8 is 4x faster.
    // m = 8: one step of a batch of 8 windows (files' default).
    let mut g = group(c, "linear m=1, m=8 (GiB/s of weights)");
    for &(m, k, n) in &[(1, 384, 1536), (1, 384, 51864), (8, 384, 1536), (8, 384, 51864)] {
        let x = data(m * k, 3);
        let w = data(n * k, 4);
        let qw = QuantizedWeights::quantize(&w, n, k);
        let mut y = vec![0f32; m * n];
        g.throughput(Throughput::Bytes((n * k * 4) as u64));
        g.bench_function(format!("f32/m{m} k{k} n{n}"), |bench| {
            bench.iter(|| linear(m, n, k, &x, &w, None, black_box(&mut y)))
        });
        g.throughput(Throughput::Bytes(qw.bytes() as u64));
        for &isa in &paths {
            g.bench_function(format!("int8-{isa:?}/m{m} k{k} n{n}"), |bench| {
                bench.iter(|| qlinear_with(isa, &x, m, k, &qw, None, Activation::None, black_box(&mut y)))
            });
        }
    }
    g.finish();
    // Encoder: m = 1500, compute-bound.
    let mut g = group(c, "linear m=1500 (Gelem/s = GFLOP/s or INT8 GOP/s)");
    for &(k, n, label) in &[(384, 1536, "fc1"), (1536, 384, "fc2")] {
        let m = 1500;
        let x = data(m * k, 5);
        let w = data(n * k, 6);
        let qw = QuantizedWeights::quantize(&w, n, k);
        let mut y = vec![0f32; m * n];
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        g.bench_function(format!("f32/{label} {m}x{k}x{n}"), |bench| {
            bench.iter(|| linear(m, n, k, &x, &w, None, black_box(&mut y)))
        });
        for &isa in &paths {
            g.bench_function(format!("int8-{isa:?}/{label} {m}x{k}x{n}"), |bench| {
                bench.iter(|| qlinear_with(isa, &x, m, k, &qw, None, Activation::None, black_box(&mut y)))
            });
        }
    }
    g.finish();
}

fn attention_bench(c: &mut Criterion<Clock>) {
    let mut g = group(c, "attention (Gelem/s = GFLOP/s of QKᵀ and PV)");
    let (heads, hd) = (6, 64);
    let d = heads * hd;
    for &(tq, tk, label) in &[
        (1500, 1500, "encoder self"),
        (1, 1500, "decoder cross"),
        (2, 1500, "decoder cross"),
    ] {
        let q = data(tq * d, 7);
        let kv = data(tk * 2 * d, 8);
        let mut out = vec![0f32; tq * d];
        let s = Shape {
            tq,
            tk,
            n_heads: heads,
            head_dim: hd,
            q_stride: d,
            k_stride: 2 * d,
            v_stride: 2 * d,
            causal: false,
        };
        g.throughput(Throughput::Elements((4 * tq * tk * d) as u64));
        g.bench_function(format!("unfused/{label} {tq}x{tk}"), |bench| {
            bench.iter(|| attention_unfused(s, &q, &kv, &kv[d..], black_box(&mut out)))
        });
        g.bench_function(format!("fused/{label} {tq}x{tk}"), |bench| {
            bench.iter(|| attention_fused(Isa::detect(), s, &q, &kv, &kv[d..], black_box(&mut out)))
        });
        if tq > 2 {
            // bf16 operands on AMX, and on AVX-512 BF16 with NPUWHISPER_BF16_ATTENTION=1; f32
            // elsewhere.
            g.bench_function(format!("bf16/{label} {tq}x{tk}"), |bench| {
                bench.iter(|| attention_bf16(s, &q, &kv, &kv[d..], black_box(&mut out)))
            });
        }
        if tq <= 2 {
            g.bench_function(format!("rows/{label} {tq}x{tk}"), |bench| {
                bench.iter(|| attention_rows(Isa::detect(), s, &q, &kv, &kv[d..], black_box(&mut out)))
            });
            g.bench_function(format!("few rows/{label} {tq}x{tk}"), |bench| {
                bench.iter(|| attention_few_rows(s, &q, &kv, &kv[d..], black_box(&mut out)))
            });
            // The same on f16 keys and values (what INT8 models decode with).
            let half = HalfKv::new(&kv, 2 * d, &kv[d..], 2 * d, tk, heads, hd);
            for isa in Isa::all_available() {
                g.bench_function(format!("f16 kv-{isa:?}/{label} {tq}x{tk}"), |bench| {
                    bench.iter(|| {
                        cross_attention_with(
                            isa,
                            &mut [CrossQuery {
                                q: &q,
                                tq,
                                q_stride: d,
                                kv: &half,
                                out: black_box(&mut out),
                            }],
                        )
                    })
                });
            }
            // Four windows of one batched decoder step in one call.
            let halves: Vec<HalfKv> = (0..4)
                .map(|_| HalfKv::new(&kv, 2 * d, &kv[d..], 2 * d, tk, heads, hd))
                .collect();
            let mut outs = vec![vec![0f32; tq * d]; 4];
            g.throughput(Throughput::Elements((4 * 4 * tq * tk * d) as u64));
            g.bench_function(format!("f16 kv, 4 windows/{label} {tq}x{tk}"), |bench| {
                bench.iter(|| {
                    let mut queries: Vec<CrossQuery> = outs
                        .iter_mut()
                        .zip(&halves)
                        .map(|(out, kv)| CrossQuery {
                            q: &q,
                            tq,
                            q_stride: d,
                            kv,
                            out,
                        })
                        .collect();
                    cross_attention(black_box(&mut queries));
                })
            });
        }
    }
    g.finish();
}

fn row_ops(c: &mut Criterion<Clock>) {
    let mut g = group(c, "row ops (GiB/s read + written)");
    let (m, d) = (1500, 384);
    let (gamma, beta) = (data(d, 10), data(d, 11));
    let mut x = data(m * d, 9);
    g.throughput(Throughput::Bytes((2 * 4 * m * d) as u64));
    g.bench_function(format!("layer_norm {m}x{d}"), |bench| {
        bench.iter(|| layer_norm(black_box(&mut x), &gamma, &beta, 1e-5))
    });
    let mut s = data(1500 * 1500, 12);
    g.throughput(Throughput::Bytes((2 * 4 * s.len()) as u64));
    g.bench_function("softmax 1500x1500", |bench| {
        bench.iter(|| softmax_rows(black_box(&mut s), 1500))
    });
    // A fresh input each time: GELU applied over and over drives negatives into denormals.
    let h = data(m * 4 * d, 13);
    g.throughput(Throughput::Bytes((2 * 4 * h.len()) as u64));
    g.bench_function(format!("gelu {m}x{}", 4 * d), |bench| {
        bench.iter_batched_ref(|| h.clone(), |h| gelu(black_box(h)), BatchSize::LargeInput)
    });
    g.finish();
}

fn mel(c: &mut Criterion<Clock>) {
    let mut g = group(c, "log-mel (Melem/s = M audio samples/s)");
    let mel = LogMel::new(80);
    let audio: Vec<f32> = data(480_000, 14).iter().map(|v| v * 0.2).collect();
    g.throughput(Throughput::Elements(audio.len() as u64));
    g.bench_function("80 mels, 30 s", |bench| {
        bench.iter(|| black_box(mel.compute(&audio, 480_000)))
    });
    g.finish();
}

fn config() -> Criterion<Clock> {
    let cpu = std::env::var("BENCH_TIME").as_deref() == Ok("cpu");
    Criterion::default().with_measurement(Clock {
        cpu,
        threads: pool::threads() as f64,
        wall: WallTime,
    })
}

criterion_group! {
    name = benches;
    config = config();
    targets = sgemm, qlinear, attention_bench, row_ops, mel
}
criterion_main!(benches);
