//! Run-time choice of the SIMD code path. Every vector kernel exists as an AVX2/FMA version
//! (AMD Zen 3, the peer's reference machine), sometimes an AVX-512 VNNI version (newer Intel)
//! or an AMX version (Intel's matrix unit, Sapphire Rapids and later), and a portable scalar
//! version; which one runs is decided here, at run time,
//! so one binary serves every x86-64 machine. Tests force each path through the `*_with`
//! functions that take an `Isa`.

/// A SIMD code path, from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust, no target features beyond the build's baseline.
    Portable,
    /// AVX2 + FMA + F16C (Haswell, Zen 1 and later). Where the CPU also has AVX-VNNI (Intel's
    /// client CPUs from Alder Lake on, which have no AVX-512), the INT8 GEMM's tile takes its
    /// `vpdpbusd` ([`avx_vnni`]), with the same results.
    Avx2,
    /// AVX2 + FMA + AVX-512 (F, VL, BW, VNNI): `vpdpbusd` for the INT8 GEMM, and 512-bit tiles of
    /// two 16-column panels in the f32 and INT8 GEMMs. Where the CPU also has AVX-512 BF16
    /// (Zen 4 and later, Cooper Lake), `NPUWHISPER_BF16_ATTENTION=1` takes the encoder's
    /// attention products to `vdpbf16ps`.
    Avx512Vnni,
    /// AVX-512 VNNI + AMX (tiles, INT8, BF16; Sapphire Rapids and later Xeons): the INT8 GEMM
    /// on the matrix unit.
    Amx,
}

impl Isa {
    /// The best path this CPU supports, or a lower one named by `NPUWHISPER_ISA` (`portable`,
    /// `avx2`, `avx2-vnni`, `avx512`): to reproduce on a newer CPU the numbers of an older
    /// machine. `avx2` is plain AVX2 (Zen 3, Haswell); `avx2-vnni` the AVX2 path with AVX-VNNI.
    pub fn detect() -> Isa {
        static CHOSEN: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let best = [Isa::Amx, Isa::Avx512Vnni, Isa::Avx2]
                .into_iter()
                .find(|isa| isa.available())
                .unwrap_or(Isa::Portable);
            match std::env::var("NPUWHISPER_ISA").as_deref() {
                Ok("portable") => Isa::Portable,
                Ok("avx2" | "avx2-vnni") => best.min(Isa::Avx2),
                Ok("avx512") => best.min(Isa::Avx512Vnni),
                _ => best,
            }
        })
    }

    /// Whether this CPU can run the path (`std` caches the CPUID answers).
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            // F16C (f16 loads in `xattn`) came before AVX2 on every x86 CPU that has AVX2.
            let avx2 = || {
                std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("f16c")
            };
            match self {
                Isa::Portable => true,
                Isa::Avx2 => avx2(),
                Isa::Avx512Vnni => {
                    avx2()
                        && std::is_x86_feature_detected!("avx512f")
                        && std::is_x86_feature_detected!("avx512vl")
                        && std::is_x86_feature_detected!("avx512bw")
                        && std::is_x86_feature_detected!("avx512vnni")
                }
                Isa::Amx => Isa::Avx512Vnni.available() && crate::amx::available(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Portable
        }
    }

    /// Every path this CPU can run, for tests that compare them.
    pub fn all_available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512Vnni, Isa::Amx]
            .into_iter()
            .filter(|isa| isa.available())
            .collect()
    }

    /// `self` if the CPU supports it, else the best supported path below it.
    pub(crate) fn or_below(self) -> Isa {
        if self.available() {
            self
        } else {
            Isa::detect().min(self)
        }
    }
}

/// Whether the AVX2 path's INT8 GEMM tile uses AVX-VNNI (`vpdpbusd` in its VEX form): the CPU
/// has it and `NPUWHISPER_ISA` does not ask for plain AVX2. Its sums are the AVX2 tile's, bit
/// for bit (the 7-bit activations make `vpmaddubsw` exact), in one instruction instead of three.
pub fn avx_vnni() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| avx_vnni_available() && std::env::var("NPUWHISPER_ISA").as_deref() != Ok("avx2"))
}

/// The chosen path for a report: [`Isa::detect`]'s name, with AVX-VNNI where the AVX2 path
/// takes it.
pub fn describe() -> String {
    match Isa::detect() {
        Isa::Avx2 if avx_vnni() => "Avx2 + AVX-VNNI".to_string(),
        isa => format!("{isa:?}"),
    }
}

/// Whether the CPU has AVX-VNNI.
pub(crate) fn avx_vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Isa::Avx2.available() && std::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
