//! Elementwise arithmetic for the row kernels: a function compiled twice (baseline and
//! AVX2+FMA, chosen at run time), a vectorisable `exp` and `erf`, and lane-wise reductions.

/// Whether `f32::mul_add` is one instruction for the whole build's target (always on aarch64;
/// on x86-64 only when built for a CPU with FMA, `-C target-cpu=native` for example).
pub(crate) const FMA_BUILD: bool = cfg!(any(target_feature = "fma", target_arch = "aarch64"));

/// Defines a function whose body is compiled three times: for the baseline target, with AVX2
/// and FMA, and with AVX-512, the widest the CPU has chosen at run time. The row kernels are elementwise polynomial
/// arithmetic (`exp`, `erf`): 8 lanes with fused multiply-adds instead of SSE2's 4 without.
/// The body sees a constant `FMA`, true where `mul_add` is one instruction, to pass to
/// [`exp_with`] and the functions built on it (elsewhere `mul_add` is a libm call).
macro_rules! simd_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) {
                #[allow(dead_code)]
                const FMA: bool = $crate::simd::FMA_BUILD;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    #[allow(dead_code)]
                    const FMA: bool = true;
                    $body
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2_fma($($arg: $ty),*) {
                    #[allow(dead_code)]
                    const FMA: bool = true;
                    $body
                }
                if $crate::isa::avx512_rows() {
                    // SAFETY: the CPU has the features (checked once by `avx512_rows`).
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has both features.
                    return unsafe { avx2_fma($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

pub(crate) use simd_kernel;

/// The maximum and the sum over 8 lanes, so that the reductions vectorise (a single running
/// value is a dependency chain the compiler may not reorder).
#[inline(always)]
pub(crate) fn lanes_fold(row: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            lanes[j] = op(lanes[j], c[j]);
        }
    }
    tail.iter().fold(lanes.into_iter().fold(init, &op), |a, &v| op(a, v))
}

/// `a * b + c`, fused into one instruction (and one rounding) where `FMA` says it is one.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `e^x` to about 2 ulp (Cody-Waite range reduction, degree-6 Taylor polynomial, the exponent
/// set by bit arithmetic), branch-free so that loops over it vectorise; libm's `expf` is a call
/// per element.
#[inline]
pub fn exp(x: f32) -> f32 {
    exp_with::<FMA_BUILD>(x)
}

/// [`exp`], with fused multiply-adds when `FMA` (the polynomial in 6 instead of 12 operations).
#[inline(always)]
pub(crate) fn exp_with<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in f32.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = madd::<FMA>(x, LOG2E, ROUND);
    let n = shifted - ROUND;
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, x));
    let mut p = madd::<FMA>(r, 1.0 / 720.0, 1.0 / 120.0);
    for c in [1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = madd::<FMA>(p, r, c);
    }
    // `shifted` holds `n` in its low mantissa bits: moving them into the exponent field is
    // integer arithmetic that vectorises, where `n as i32` is a saturating scalar conversion
    // per lane. The clamp keeps `n + 127` in 1..=254, and the shift drops the high bits.
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    p * scale
}

/// `erf` to within 1e-6 of libm (Abramowitz and Stegun 7.1.26, 1.5e-7 in exact arithmetic), with
/// one `exp`: several times cheaper than libm's `erff`.
#[inline]
pub fn erf(x: f32) -> f32 {
    erf_with::<FMA_BUILD>(x)
}

#[inline(always)]
fn erf_with<const FMA: bool>(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let z = x.abs();
    let t = 1.0 / madd::<FMA>(P, z, 1.0);
    let mut poly = A[4];
    for a in [A[3], A[2], A[1], A[0]] {
        poly = madd::<FMA>(poly, t, a);
    }
    let y = 1.0 - poly * t * exp_with::<FMA>(-z * z);
    y.copysign(x)
}

/// The exact (erf) GELU and its derivative: `x * Phi(x)` and `Phi(x) + x * phi(x)`.
#[inline(always)]
pub(crate) fn gelu_and_grad<const FMA: bool>(x: f32) -> (f32, f32) {
    const INV_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = 0.5 * (1.0 + erf_with::<FMA>(x * INV_SQRT2));
    let pdf = INV_SQRT_2PI * exp_with::<FMA>(-0.5 * x * x);
    (x * cdf, madd::<FMA>(x, pdf, cdf))
}

simd_kernel! {
    /// `a *= b`, elementwise.
    pub(crate) fn mul_in_place(a: &mut [f32], b: &[f32]) {
        let n = a.len().min(b.len());
        for i in 0..n {
            a[i] *= b[i];
        }
    }
}
