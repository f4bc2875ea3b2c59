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
pub struct SharedRng(Arc<Mutex<RngState>>);

impl SharedRng {
    /// A fresh stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(RngState { seed, counter: 0 })))
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
