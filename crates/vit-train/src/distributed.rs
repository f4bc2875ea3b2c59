//! Data-parallel training across processes: the collective operations the trainer needs, and
//! their backends.
//!
//! Every process (rank) holds the whole model and takes its rows of every global batch (the
//! recipe's batch size stays the global batch); after the backward pass the gradients, each
//! weighted by its shard's share of the batch, are summed across ranks in one fused buffer
//! (with the loss, the accuracy counts and the stop flag), so every rank takes the same AdamW
//! step. Dropout and drop-path masks are keyed by the sample's row in the global batch
//! ([`vit_rng::BatchShard`]) and augmentation by the sample, so the arithmetic does
//! not depend on the number of ranks, up to the order of the sums. Rank 0 writes the run
//! directory; the others read it when resuming (a file system all ranks see).
//!
//! Backends: [`SingleProcess`] (the trainer then runs the single-process path, unchanged);
//! behind the `mpi` feature, `mpi::MpiCollective` over the system's MPI (Open MPI or MPICH,
//! through the `mpi` crate); behind the `nccl` feature, `nccl::NcclCollective`, which sums the
//! gradients on the GPUs with NCCL and does the rest (its own bootstrap included) over MPI.
//! Any backend but [`SingleProcess`] takes the data-parallel path even at world size 1, so
//! `mpirun -n 1` runs the collectives a larger job runs.

use candle_core::{DType, Tensor};

use crate::error::TrainError;

#[cfg(feature = "nccl")]
pub mod nccl;

/// What data-parallel training needs from a communication library.
pub trait Collective {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn world_size(&self) -> usize;
    /// Sums `buffer` element-wise across all ranks, in place; every rank ends with the sum.
    fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), TrainError>;
    /// Sums a 1-D `f32` tensor across all ranks; every rank gets the sum, on the tensor's
    /// device. This default goes through host memory and [`Collective::all_reduce_sum`]; a
    /// backend that can reduce device memory (NCCL) overrides it.
    fn all_reduce_sum_tensor(&mut self, tensor: &Tensor) -> Result<Tensor, TrainError> {
        let mut host = tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        self.all_reduce_sum(&mut host)?;
        Ok(Tensor::from_vec(host, tensor.elem_count(), tensor.device())?)
    }
    /// Every rank's `value`, in rank order.
    fn all_gather_u64(&mut self, value: u64) -> Result<Vec<u64>, TrainError>;
    /// Waits until every rank is here.
    fn barrier(&mut self) -> Result<(), TrainError>;
    /// Whether this is [`SingleProcess`], for which the trainer skips the data-parallel path
    /// (its collectives would all be the identity).
    fn is_single_process(&self) -> bool {
        false
    }
}

/// One process: every collective is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _buffer: &mut [f32]) -> Result<(), TrainError> {
        Ok(())
    }
    fn all_gather_u64(&mut self, value: u64) -> Result<Vec<u64>, TrainError> {
        Ok(vec![value])
    }
    fn barrier(&mut self) -> Result<(), TrainError> {
        Ok(())
    }
    fn is_single_process(&self) -> bool {
        true
    }
}

/// Rows `first..first + len` of a global batch of `global` rows that `rank` of `world`
/// computes: contiguous, the sizes differing by at most one.
pub fn shard_rows(global: usize, rank: usize, world: usize) -> (usize, usize) {
    let first = rank * global / world;
    let end = (rank + 1) * global / world;
    (first, end - first)
}

/// The 64-bit FNV-1a hash of every value's bits, in order: equal on every rank while the
/// ranks hold the same weights.
pub fn weights_checksum(values: impl IntoIterator<Item = f32>) -> u64 {
    values
        .into_iter()
        .fold(vit_rng::FNV1A64_OFFSET_BASIS, |h, v| vit_rng::fnv1a64_continue(h, &v.to_bits().to_le_bytes()))
}

#[cfg(feature = "mpi")]
pub mod mpi {
    //! The MPI backend: `mpirun -n N vit train --distributed mpi ...`.

    use ::mpi::collective::SystemOperation;
    use ::mpi::environment::Universe;
    use ::mpi::topology::SimpleCommunicator;
    use ::mpi::traits::*;

    use crate::distributed::Collective;
    use crate::error::TrainError;

    /// The world communicator of an MPI job. MPI is initialised when this is made and
    /// finalised when it is dropped; make one per process.
    pub struct MpiCollective {
        world: SimpleCommunicator,
        _universe: Universe,
    }

    impl MpiCollective {
        /// Initialises MPI (once per process).
        pub fn init() -> Result<Self, TrainError> {
            let universe = ::mpi::initialize().ok_or_else(|| TrainError::Distributed {
                message: "MPI is already initialised in this process".into(),
            })?;
            Ok(Self { world: universe.world(), _universe: universe })
        }

        /// Ends the whole job at once with `code` (every rank), as MPI_Abort does: for an
        /// error on one rank, which would otherwise leave the others waiting.
        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }

        /// This process's rank among the ranks on its machine (those that share its memory),
        /// whatever the launcher: the GPU a rank of an NCCL job takes.
        pub fn local_rank(&self) -> usize {
            self.world.split_shared(self.world.rank()).rank() as usize
        }

        /// Copies rank 0's `bytes` into every rank's `bytes` (the same length on all).
        pub fn broadcast_from_root(&self, bytes: &mut [u8]) {
            self.world.process_at_rank(0).broadcast_into(bytes);
        }
    }

    impl Collective for MpiCollective {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn world_size(&self) -> usize {
            self.world.size() as usize
        }
        fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), TrainError> {
            let send = buffer.to_vec();
            self.world.all_reduce_into(&send[..], buffer, SystemOperation::sum());
            Ok(())
        }
        fn all_gather_u64(&mut self, value: u64) -> Result<Vec<u64>, TrainError> {
            let mut all = vec![0u64; self.world_size()];
            self.world.all_gather_into(&value, &mut all[..]);
            Ok(all)
        }
        fn barrier(&mut self) -> Result<(), TrainError> {
            self.world.barrier();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order_and_differ_by_at_most_one_row() {
        for (global, world) in [(256, 2), (7, 3), (5, 5), (10, 4)] {
            let shards: Vec<(usize, usize)> = (0..world).map(|r| shard_rows(global, r, world)).collect();
            assert_eq!(shards[0].0, 0);
            for pair in shards.windows(2) {
                assert_eq!(pair[0].0 + pair[0].1, pair[1].0);
            }
            let last = shards[world - 1];
            assert_eq!(last.0 + last.1, global);
            let (lo, hi) = (shards.iter().map(|s| s.1).min().unwrap(), shards.iter().map(|s| s.1).max().unwrap());
            assert!(hi - lo <= 1, "{shards:?}");
        }
        assert_ne!(weights_checksum([1.0, 2.0]), weights_checksum([2.0, 1.0]));
    }
}
