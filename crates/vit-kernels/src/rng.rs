//! The project's one random number generator: counter-based, so that its whole state is two
//! integers. Dropout masks, initial weights, data order and augmentation all draw from it, so
//! a run is reproducible from its seed and training can save and restore the exact random
//! state (candle's CPU generator cannot be seeded).
//!
//! It lives here, in the lowest crate that draws random numbers (the dropout kernels), and the
//! crates above use it from here.

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
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_hash_is_fnv1a_as_published() {
        // The FNV reference test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
