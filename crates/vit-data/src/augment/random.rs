//! The per-image (and per-batch) random stream of augmentation, and the distributions drawn
//! from it. Every draw is a pure function of the stream's key, so an image is augmented the
//! same way whatever thread prepares it, and a resumed run draws what an uninterrupted one did.

use vit_rng::{splitmix64, unit_f32};

/// A small counter-free random stream keyed by `(seed, epoch, index)`.
pub(crate) struct SampleRng(u64);

impl SampleRng {
    /// The stream of image (or batch) `index` of `epoch` under `seed`.
    pub(crate) fn new(seed: u64, epoch: u64, index: u64) -> Self {
        Self(splitmix64(seed ^ splitmix64(epoch.wrapping_mul(0x9E37_79B9) ^ splitmix64(index))))
    }

    /// An independent stream for another purpose (`salt`) under the same key, so that a new
    /// kind of draw leaves the draws of the existing ones where they were.
    pub(crate) fn fork(seed: u64, epoch: u64, index: u64, salt: u64) -> Self {
        Self::new(seed ^ splitmix64(salt), epoch, index)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn uniform(&mut self) -> f32 {
        self.0 = splitmix64(self.0);
        unit_f32(self.0)
    }

    /// Uniform in `[-r, r]`.
    pub(crate) fn symmetric(&mut self, r: f32) -> f32 {
        (self.uniform() * 2.0 - 1.0) * r
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + self.uniform() * (hi - lo)
    }

    /// An integer uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.uniform() as f64 * n as f64) as usize).min(n - 1)
    }

    /// `1.0` or `-1.0`, each with probability one half.
    pub(crate) fn sign(&mut self) -> f32 {
        if self.uniform() < 0.5 { -1.0 } else { 1.0 }
    }

    /// A standard normal draw (Box-Muller).
    pub(crate) fn normal(&mut self) -> f32 {
        let u1 = 1.0 - f64::from(self.uniform()); // (0, 1]: the logarithm is finite
        let u2 = f64::from(self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// A Gamma(`shape`, 1) draw (Marsaglia and Tsang; shapes below 1 through the
    /// `Gamma(shape + 1) * U^(1 / shape)` identity). `shape > 0`.
    pub(crate) fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = 1.0 - f64::from(self.uniform());
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = f64::from(self.normal());
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = 1.0 - f64::from(self.uniform());
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// A Beta(`alpha`, `alpha`) draw, the mixing weight of mixup and cutmix. `alpha > 0`.
    pub(crate) fn beta_symmetric(&mut self, alpha: f64) -> f32 {
        let x = self.gamma(alpha);
        let y = self.gamma(alpha);
        if x + y > 0.0 { (x / (x + y)) as f32 } else { 0.5 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(draws: impl Iterator<Item = f64>) -> (f64, f64) {
        let v: Vec<f64> = draws.collect();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        (mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
    }

    #[test]
    fn normal_draws_have_mean_zero_and_variance_one() {
        let mut rng = SampleRng::new(1, 2, 3);
        let (mean, var) = moments((0..200_000).map(|_| f64::from(rng.normal())));
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
    }

    #[test]
    fn gamma_and_beta_draws_have_their_moments() {
        let mut rng = SampleRng::new(4, 5, 6);
        for shape in [0.2, 0.8, 1.0, 2.5] {
            // Gamma(k, 1): mean k, variance k.
            let (mean, var) = moments((0..100_000).map(|_| rng.gamma(shape)));
            assert!((mean - shape).abs() < 0.02 * shape.max(1.0), "shape {shape}: mean {mean}");
            assert!((var - shape).abs() < 0.05 * shape.max(1.0), "shape {shape}: variance {var}");
        }
        for alpha in [0.2, 0.8, 1.0] {
            // Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
            let (mean, var) = moments((0..100_000).map(|_| f64::from(rng.beta_symmetric(alpha))));
            let expected = 1.0 / (4.0 * (2.0 * alpha + 1.0));
            assert!((mean - 0.5).abs() < 0.005, "alpha {alpha}: mean {mean}");
            assert!((var - expected).abs() < 0.003, "alpha {alpha}: variance {var}, expected {expected}");
        }
    }

    #[test]
    fn below_covers_its_range_evenly() {
        let mut rng = SampleRng::new(7, 8, 9);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[rng.below(7)] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
    }
}
