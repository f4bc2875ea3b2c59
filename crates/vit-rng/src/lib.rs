//! The project's one random number generator: counter-based, so that its whole state is two
//! integers. Dropout masks, initial weights, data order, augmentation and the inputs of tests
//! all draw from it, so a run is reproducible from its seed and training can save and restore
//! the exact random state (candle's CPU generator cannot be seeded).
//!
//! A crate of its own, below every crate that draws random numbers (the dropout kernels, the
//! data pipeline, the initialisers), with no dependencies: the data pipeline uses it without
//! pulling in the kernels.
//!
//! ```
//! use vit_rng::{SharedRng, block_u64, normal, unit_f32};
//!
//! // The same seed gives the same numbers, on every machine and in every release.
//! assert_eq!(normal(4, 7), normal(4, 7));
//! let rng = SharedRng::new(42);
//! let (seed, first) = rng.reserve(3);
//! let draws: Vec<f32> = (0..3).map(|i| unit_f32(block_u64(seed, first, i))).collect();
//! assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
//! assert_eq!(rng.state().counter, 3);
//! ```

use std::sync::{Arc, Mutex};

/// SplitMix64: a strong 64-bit mixing function; `mix(seed ^ counter)` is a counter-based RNG.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bits, over `bytes`: the specified hash that turns a parameter's name into its
/// initial stream (`std`'s `DefaultHasher` may change between Rust releases, and with it every
/// initial weight).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_continue(FNV1A64_OFFSET_BASIS, bytes)
}

/// FNV-1a's starting value: the hash of no bytes.
pub const FNV1A64_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of the bytes hashed into `hash` so far followed by `bytes`, for hashing a stream
/// piece by piece (`fnv1a64(ab) == fnv1a64_continue(fnv1a64(a), b)`).
pub fn fnv1a64_continue(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Uniform `f32` in `[0, 1)` from the top 24 bits of a 64-bit word.
pub fn unit_f32(bits: u64) -> f32 {
    (bits >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// The random state shared by every dropout layer of a model: a seed and a counter of the
/// numbers drawn so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RngState {
    /// The stream's seed.
    pub seed: u64,
    /// How many numbers have been drawn.
    pub counter: u64,
}

/// A handle to a shared [`RngState`]; clones share the state.
#[derive(Debug, Clone)]
pub struct SharedRng(Arc<Mutex<RngState>>, Arc<Mutex<Option<BatchShard>>>);

/// The part of a global batch one process of data-parallel training computes: rows
/// `first..first + len` of `global` rows. With a shard set, a call over a batch reserves the
/// numbers of the whole global batch and uses its own rows' part of them, so that every
/// sample's dropout is the same whatever the number of processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShard {
    /// The first global row of this shard.
    pub first: usize,
    /// Rows in this shard.
    pub len: usize,
    /// Rows in the global batch.
    pub global: usize,
}

impl SharedRng {
    /// A fresh stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(RngState { seed, counter: 0 })), Arc::new(Mutex::new(None)))
    }

    /// Sets (or clears) the shard of the global batch that the next calls compute.
    pub fn set_shard(&self, shard: Option<BatchShard>) {
        *self.1.lock().expect("rng lock poisoned") = shard;
    }

    /// Reserves the numbers of a call over `n` elements whose leading dimension is the batch,
    /// one number per `per_number` elements: without a shard, `n` elements' worth; with one,
    /// the global batch's, returning also the index of this shard's first element among the
    /// global batch's elements. `(seed, first counter, element offset)`.
    pub fn reserve_batch(&self, n: usize, per_number: usize) -> (u64, u64, usize) {
        let shard = *self.1.lock().expect("rng lock poisoned");
        let per_number = per_number.max(1);
        match shard {
            Some(s) if s.len > 0 && n.is_multiple_of(s.len) && s.global >= s.first + s.len => {
                let per_row = n / s.len;
                let (seed, first) = self.reserve((per_row * s.global).div_ceil(per_number) as u64);
                (seed, first, per_row * s.first)
            }
            _ => {
                let (seed, first) = self.reserve(n.div_ceil(per_number) as u64);
                (seed, first, 0)
            }
        }
    }

    /// The current state, for checkpoints.
    pub fn state(&self) -> RngState {
        *self.0.lock().expect("rng lock poisoned")
    }

    /// Restores a state saved with [`SharedRng::state`].
    pub fn set_state(&self, state: RngState) {
        *self.0.lock().expect("rng lock poisoned") = state;
    }

    /// Reserves `n` numbers and returns the seed and first counter of the block; number `i` of
    /// the block is `splitmix64(seed ^ splitmix64(first + i))`, so blocks can be filled in
    /// parallel.
    pub fn reserve(&self, n: u64) -> (u64, u64) {
        let mut state = self.0.lock().expect("rng lock poisoned");
        let first = state.counter;
        state.counter = state.counter.wrapping_add(n);
        (state.seed, first)
    }
}

/// Number `i` of a block reserved with [`SharedRng::reserve`].
pub fn block_u64(seed: u64, first: u64, i: u64) -> u64 {
    splitmix64(seed ^ splitmix64(first.wrapping_add(i)))
}

/// The stream of a named draw (a parameter's initial values, a test input): the seed mixed with
/// the name's FNV-1a hash.
pub fn named_stream(seed: u64, name: &[u8]) -> u64 {
    splitmix64(seed ^ fnv1a64(name))
}

/// Number `i` of a stream, uniform in `[0, 1)`.
pub fn uniform_at(stream: u64, i: u64) -> f32 {
    unit_f32(splitmix64(stream ^ splitmix64(i)))
}

/// Number `i` of a stream, normal with that mean and standard deviation: Box-Muller over the
/// stream's numbers `2i` and `2i + 1`.
pub fn normal_at(stream: u64, i: u64, mean: f32, stdev: f32) -> f32 {
    let u1 = unit_f32(splitmix64(stream ^ splitmix64(2 * i))).max(f32::MIN_POSITIVE);
    let u2 = unit_f32(splitmix64(stream ^ splitmix64(2 * i + 1)));
    mean + stdev * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// `len` numbers uniform in `[0, 1)` from `seed`, the same on every machine: the seeded
/// counterpart of candle's `Tensor::rand(0, 1, ..)` (unseeded on the CPU), for test inputs and
/// benchmarks.
pub fn uniform(len: usize, seed: u64) -> Vec<f32> {
    let stream = named_stream(seed, b"uniform");
    (0..len as u64).map(|i| uniform_at(stream, i)).collect()
}

/// `len` standard normal numbers from `seed`, the same on every machine: the seeded
/// counterpart of candle's `Tensor::randn(0, 1, ..)`.
pub fn normal(len: usize, seed: u64) -> Vec<f32> {
    let stream = named_stream(seed, b"normal");
    (0..len as u64).map(|i| normal_at(stream, i, 0.0, 1.0)).collect()
}

/// Seeded candle tensors (feature `tensors`): test inputs that are the same in every run,
/// where candle's `Tensor::rand` and `Tensor::randn` are not seeded on the CPU.
#[cfg(feature = "tensors")]
pub mod tensors {
    use candle_core::{Device, Result, Shape, Tensor};

    /// A tensor of [`uniform`](super::uniform) numbers in `[lo, hi)`.
    pub fn uniform(lo: f32, hi: f32, shape: impl Into<Shape>, seed: u64, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let values = super::uniform(shape.elem_count(), seed).into_iter().map(|u| lo + (hi - lo) * u).collect();
        Tensor::from_vec(values, shape, device)
    }

    /// A tensor of [`normal`](super::normal) numbers with that mean and standard deviation.
    pub fn normal(mean: f32, stdev: f32, shape: impl Into<Shape>, seed: u64, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let values = super::normal(shape.elem_count(), seed).into_iter().map(|z| mean + stdev * z).collect();
        Tensor::from_vec(values, shape, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_hash_is_fnv1a_as_published() {
        // The FNV reference test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a64_continue(fnv1a64(b"foo"), b"bar"), fnv1a64(b"foobar"));
    }

    #[test]
    fn test_inputs_are_the_same_from_run_to_run_and_shaped_as_asked() {
        // A change to the generator would change every seeded test input and initial weight:
        // it is seen here first.
        // The bits of the first numbers, recorded once: equal in every run, on every machine.
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(uniform(3, 1)), [1057966275, 1046907172, 1061747311]);
        assert_eq!(bits(normal(3, 1)), [3213873046, 3180606369, 1058303308]);
        assert_eq!(normal(3, 5), normal(3, 5));
        assert_ne!(normal(3, 5), normal(3, 6));
        let u = uniform(10_000, 3);
        assert!(u.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = u.iter().sum::<f32>() / 1e4;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let n = normal(10_000, 3);
        let mean = n.iter().sum::<f32>() / 1e4;
        let var = n.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / 1e4;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
    }
}
