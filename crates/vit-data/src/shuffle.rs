//! The order of a data set's records in an epoch, and in a validation split.

use vit_rng::splitmix64;

/// A deterministic permutation of `0..n` for `(seed, epoch)` (Fisher-Yates).
pub fn shuffled(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = splitmix64(seed ^ splitmix64(epoch ^ 0x5348_5546));
    for i in (1..n).rev() {
        state = splitmix64(state);
        let j = (state % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}
