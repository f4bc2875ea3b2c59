//! The NCCL backend: `mpirun -n N vit --device cuda train --distributed nccl ...`, one GPU per
//! rank.
//!
//! MPI launches the job and carries NCCL's unique id from rank 0 to the others; NCCL then sums
//! the fused gradient buffer where it lies, on the GPUs, on the stream candle computes on (so
//! the sum follows the backward pass that produced it without a host synchronisation). The
//! few small host-side collectives (evaluation counts, the weights' checksums) go over MPI.

use candle_core::backend::BackendStorage;
use candle_core::cuda::CudaStorage;
use candle_core::cuda::cudarc::nccl::{Comm, Id, ReduceOp, result::NcclError};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

use crate::distributed::Collective;
use crate::distributed::mpi::MpiCollective;
use crate::error::TrainError;

/// NCCL's communicator of all ranks, on this rank's GPU.
pub struct NcclComm {
    comm: Comm,
}

impl NcclComm {
    /// Joins the NCCL communicator of every rank of `mpi`'s job on `device` (this rank's GPU):
    /// rank 0 makes NCCL's unique id and broadcasts it over MPI. Every rank must call this.
    pub fn join(mpi: &MpiCollective, device: &Device) -> Result<Self, TrainError> {
        let (rank, world) = (mpi.rank(), mpi.world_size());
        let fail = |what: &str, e: NcclError| TrainError::Distributed {
            message: format!("rank {rank} of {world}: NCCL {what}: {:?}", e.0),
        };
        let Device::Cuda(cuda) = device else {
            return Err(TrainError::Distributed {
                message: format!("rank {rank} of {world}: NCCL needs a CUDA device, found {device:?}"),
            });
        };
        let mut id = [0u8; 128];
        if rank == 0 {
            let fresh = Id::new().map_err(|e| fail("could not make its unique id", e))?;
            for (byte, &c) in id.iter_mut().zip(fresh.internal()) {
                *byte = c as u8;
            }
        }
        mpi.broadcast_from_root(&mut id);
        let id = Id::uninit(id.map(|b| b as std::ffi::c_char));
        // NCCL joins on the calling thread's current GPU: make it this rank's.
        let stream = cuda.cuda_stream();
        stream.context().bind_to_thread().map_err(|e| TrainError::Distributed {
            message: format!("rank {rank} of {world}: cannot make GPU {} current: {e}", stream.context().ordinal()),
        })?;
        let comm = Comm::from_rank(stream, rank, world, id).map_err(|e| fail("could not join the communicator", e))?;
        Ok(Self { comm })
    }
}

/// Data-parallel collectives for GPU ranks: the gradients summed by NCCL on the device, the
/// rest over MPI.
pub struct NcclCollective {
    // Dropped in this order: NCCL's communicator before MPI is finalised.
    nccl: NcclComm,
    mpi: MpiCollective,
}

impl NcclCollective {
    /// The collectives of `mpi`'s job, the tensors summed through `nccl` (joined on `mpi`).
    pub fn new(mpi: MpiCollective, nccl: NcclComm) -> Self {
        Self { mpi, nccl }
    }

    /// The MPI job underneath (to abort it on an error).
    pub fn mpi(&self) -> &MpiCollective {
        &self.mpi
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }
    fn world_size(&self) -> usize {
        self.mpi.world_size()
    }
    fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), TrainError> {
        self.mpi.all_reduce_sum(buffer)
    }
    fn all_reduce_sum_tensor(&mut self, tensor: &Tensor) -> Result<Tensor, TrainError> {
        let flat = tensor.to_dtype(DType::F32)?.flatten_all()?.contiguous()?;
        Ok(flat.apply_op1_no_bwd(&AllReduceSum(&self.nccl.comm))?)
    }
    fn all_gather_u64(&mut self, value: u64) -> Result<Vec<u64>, TrainError> {
        self.mpi.all_gather_u64(value)
    }
    fn barrier(&mut self) -> Result<(), TrainError> {
        self.mpi.barrier()
    }
}

/// NCCL's sum of a contiguous `f32` tensor across ranks, into a new buffer on the same GPU.
struct AllReduceSum<'a>(&'a Comm);

impl CustomOp1 for AllReduceSum<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce-sum"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the NCCL all-reduce sums tensors on a CUDA device, not on the CPU")
    }

    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("the NCCL all-reduce needs a contiguous tensor, got strides {:?}", layout.stride())
        };
        if storage.dtype() != DType::F32 {
            candle_core::bail!("the NCCL all-reduce sums f32 tensors, got {:?}", storage.dtype())
        }
        let src = storage.as_cuda_slice::<f32>()?.slice(start..end);
        let mut dst = storage.device.alloc_zeros::<f32>(end - start)?;
        self.0
            .all_reduce(&src, &mut dst, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::Msg(format!("NCCL all-reduce: {:?}", e.0)))?;
        Ok((CudaStorage::wrap_cuda_slice(dst, storage.device.clone()), layout.shape().clone()))
    }
}
