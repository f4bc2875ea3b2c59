//! The one place that picks the reduced-precision CPU kernels for the processor it runs on,
//! detected at run time: a build for a generic x86-64 runs the AVX-512 kernels where the CPU
//! has them and the portable kernels elsewhere.
//!
//! `VIT_KERNELS=no-amx` leaves AMX out (the kernels a CPU with AVX-512 but no AMX runs).
//! `VIT_KERNELS=portable` in the environment forces the portable kernels (tests and
//! comparisons run both on any machine); the kernels themselves also take the choice as an
//! argument, so a test can run each path in one process.

use std::cell::Cell;
use std::sync::OnceLock;

/// The environment variable that forces the portable kernels (`VIT_KERNELS=portable`).
pub const FORCE_ENV: &str = "VIT_KERNELS";

/// How the int8 matrix products run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Int8Kernel {
    /// AMX-INT8: `tdpbusd` on 16 x 64-byte tiles (Intel Xeon from Sapphire Rapids on), through
    /// inline assembly; the process asks Linux for the tile state first.
    Amx,
    /// AVX512-VNNI: `vpdpbusd`, 64 unsigned-by-signed byte products summed into 16 int32
    /// lanes per instruction.
    Avx512Vnni,
    /// Plain Rust integer arithmetic (what the compiler makes of it for the build's target):
    /// the same int32 sums, so the same results to the bit.
    Portable,
}

impl Int8Kernel {
    /// The fastest kernel this CPU runs, unless `VIT_KERNELS=portable`.
    pub fn detect() -> Self {
        static CHOICE: OnceLock<Int8Kernel> = OnceLock::new();
        *CHOICE.get_or_init(|| {
            if forced_portable() {
                Self::Portable
            } else if amx_ready() && !forced_no_amx() {
                Self::Amx
            } else if cpu_has_avx512_vnni() {
                Self::Avx512Vnni
            } else {
                Self::Portable
            }
        })
    }

    /// Every kernel this CPU can run (the portable one always), for tests that compare them.
    pub fn available() -> Vec<Self> {
        let mut out = vec![Self::Portable];
        if cpu_has_avx512_vnni() {
            out.push(Self::Avx512Vnni);
        }
        if amx_ready() {
            out.push(Self::Amx);
        }
        out
    }

    /// A short name for reports: `avx512-vnni` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Amx => "amx-int8",
            Self::Avx512Vnni => "avx512-vnni",
            Self::Portable => "portable",
        }
    }
}

/// How the bf16 matrix products run (mixed precision on the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Kernel {
    /// AMX-BF16: `tdpbf16ps` on 16 x 32-value tiles, f32 sums.
    Amx,
    /// AVX512-BF16: `vdpbf16ps`, 16 f32 sums of bf16 pair products per instruction (CPUs with
    /// AVX512-BF16 and no AMX, such as AMD Zen 4 and Intel Cooper Lake).
    Avx512Bf16,
    /// Plain Rust: the same bf16 products summed in f32 (in another order).
    Portable,
}

impl Bf16Kernel {
    /// The fastest kernel this CPU runs, unless `VIT_KERNELS=portable`.
    pub fn detect() -> Self {
        static CHOICE: OnceLock<Bf16Kernel> = OnceLock::new();
        *CHOICE.get_or_init(|| {
            if forced_portable() {
                Self::Portable
            } else if amx_bf16_ready() && !forced_no_amx() {
                Self::Amx
            } else if cpu_has_avx512_bf16() {
                Self::Avx512Bf16
            } else {
                Self::Portable
            }
        })
    }

    /// Every kernel this CPU can run, for tests that compare them.
    pub fn available() -> Vec<Self> {
        let mut out = vec![Self::Portable];
        if cpu_has_avx512_bf16() {
            out.push(Self::Avx512Bf16);
        }
        if amx_bf16_ready() {
            out.push(Self::Amx);
        }
        out
    }

    /// A short name for reports: `amx-bf16`, `avx512-bf16` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Amx => "amx-bf16",
            Self::Avx512Bf16 => "avx512-bf16",
            Self::Portable => "portable",
        }
    }
}

/// Whether `VIT_KERNELS=portable` is set (read once).
pub fn forced_portable() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| std::env::var(FORCE_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("portable")))
}

/// Whether `VIT_KERNELS=no-amx` is set (read once): the fastest kernels without AMX, as a CPU
/// with AVX-512 but no AMX runs them (to measure that path on a machine with AMX).
pub fn forced_no_amx() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| std::env::var(FORCE_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("no-amx")))
}

/// Whether rounding f32 to bf16 runs on AVX512-BF16's conversion instruction: the CPU has it
/// and `VIT_KERNELS=portable` is not set (read once).
pub fn bf16_conversions() -> bool {
    static YES: OnceLock<bool> = OnceLock::new();
    *YES.get_or_init(|| {
        !forced_portable() && cpu_has_avx512_bf16() && {
            #[cfg(target_arch = "x86_64")]
            {
                std::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                false
            }
        }
    })
}

/// Whether the CPU runs the AVX512-BF16 kernel (AVX512F and AVX512-BF16).
pub fn cpu_has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU runs the AVX512-VNNI int8 kernel (AVX512F, AVX512BW and AVX512-VNNI).
pub fn cpu_has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AMX-INT8 kernel can run: the CPU has AMX-TILE and AMX-INT8 (CPUID leaf 7,
/// EDX bits 24 and 25) and Linux granted this process the tile state
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, asked once). Elsewhere false.
pub fn amx_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| amx_with(25))
}

/// Whether the AMX-BF16 kernel can run: as [`amx_ready`], with AMX-BF16 (EDX bit 22).
pub fn amx_bf16_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| amx_with(22))
}

/// AMX-TILE and the AMX feature of CPUID leaf 7 EDX bit `feature`, with the tile state
/// granted by Linux (asked for once per process, whoever asks first).
fn amx_with(feature: u32) -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            let max_leaf = std::arch::x86_64::__cpuid(0).eax;
            if max_leaf < 7 {
                return false;
            }
            let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
            if edx & (1 << 24) == 0 || edx & (1 << feature) == 0 {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_ulong = 18;
            // SAFETY: a request for a permission; it fails cleanly on kernels without AMX.
            *GRANTED.get_or_init(|| unsafe {
                libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
            })
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            let _ = (feature, &GRANTED);
            false
        }
    }
}

/// One line naming the kernels this process runs and the CPU features behind the choice, for
/// `vit --version` and the bench output.
pub fn describe() -> String {
    #[cfg(target_arch = "x86_64")]
    let features = {
        let mut f = Vec::new();
        for (name, has) in [
            ("avx2", std::is_x86_feature_detected!("avx2")),
            ("fma", std::is_x86_feature_detected!("fma")),
            ("avx512f", std::is_x86_feature_detected!("avx512f")),
            ("avx512_bf16", std::is_x86_feature_detected!("avx512bf16")),
            ("avx512_vnni", std::is_x86_feature_detected!("avx512vnni")),
            ("amx_int8", amx_ready()),
        ] {
            if has {
                f.push(name);
            }
        }
        if f.is_empty() { "none of avx2/avx512".to_string() } else { f.join(",") }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let features = std::env::consts::ARCH.to_string();
    let forced = if forced_portable() {
        format!(" ({FORCE_ENV}=portable)")
    } else if forced_no_amx() {
        format!(" ({FORCE_ENV}=no-amx)")
    } else {
        String::new()
    };
    format!(
        "int8 kernel: {}, bf16 kernel: {}, row kernels: {}{forced}; cpu: {features}",
        Int8Kernel::detect().name(),
        Bf16Kernel::detect().name(),
        row_kernels()
    )
}

// The row kernels' AVX-512 build: chosen here, with the other kernels, and read by
// `simd::simd_kernel!` at every call.

/// Whether the row kernels run their AVX-512 build: the CPU has AVX512F/BW/VL/DQ (with AVX2
/// and FMA), `VIT_KERNELS=portable` does not ask for the portable paths (under it they run the
/// AVX2 build, or the baseline), and [`allow_avx512_rows`] did not turn it off.
/// Each lane computes the same operations in every build, so the builds give the same values
/// (tested).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn avx512_rows() -> bool {
    match AVX512_ROWS.load(Ordering::Relaxed) {
        UNKNOWN => {
            let yes = !forced_portable() && cpu_has_avx512_rows();
            AVX512_ROWS.store(if yes { YES } else { NO }, Ordering::Relaxed);
            yes
        }
        state => state == YES,
    }
}

#[cfg(target_arch = "x86_64")]
use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86_64")]
const UNKNOWN: u8 = 0;
#[cfg(target_arch = "x86_64")]
const NO: u8 = 1;
#[cfg(target_arch = "x86_64")]
const YES: u8 = 2;
/// Whether the row kernels' AVX-512 build runs (one load per call).
#[cfg(target_arch = "x86_64")]
static AVX512_ROWS: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether the CPU has what the AVX-512 build of the row kernels needs.
pub(crate) fn cpu_has_avx512_rows() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Lets the elementwise row kernels (softmax, LayerNorm, GELU, the bf16 conversions) run their
/// AVX-512 build where the CPU has it (`true`, the default) or holds them to the AVX2 one, for
/// the whole process. For tests that compare the builds, in a test binary of their own.
pub fn allow_avx512_rows(on: bool) {
    #[cfg(target_arch = "x86_64")]
    AVX512_ROWS.store(if on && cpu_has_avx512_rows() { YES } else { NO }, Ordering::Relaxed);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = on;
}

/// The build of the row kernels that runs now: `avx512`, `avx2` or `baseline`.
pub fn row_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_rows() {
            return "avx512";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "avx2";
        }
    }
    "baseline"
}

thread_local! {
    static BF16_MATMULS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the dense layers it builds on this thread computing their products in bf16
/// with f32 sums (forward, and the backward passes of those layers, whenever they run), as
/// PyTorch's CPU autocast does; `on = false` runs them in f32. The previous setting is
/// restored afterwards.
pub fn with_bf16_matmuls<R>(on: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BF16_MATMULS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(BF16_MATMULS.with(|c| c.replace(on)));
    f()
}

/// The bf16 kernel the dense layers built now use, if [`with_bf16_matmuls`] is on.
pub(crate) fn bf16_matmuls() -> Option<Bf16Kernel> {
    BF16_MATMULS.with(Cell::get).then(Bf16Kernel::detect)
}
