//! GELU (exact, erf-based) and dropout after a dense layer, as one elementwise pass forward and
//! one backward on the CPU.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use crate::cpu::{ELEMS_PER_TASK, f32_slice, par_rows};
use crate::dropout::DropoutMask;
use crate::simd::{gelu_and_grad, simd_kernel};

simd_kernel! {
    fn gelu_rows(out: &mut [f32], x: &[f32]) {
        let n = out.len().min(x.len());
        for i in 0..n {
            out[i] = gelu_and_grad::<FMA>(x[i]).0;
        }
    }
}

simd_kernel! {
    pub(crate) fn gelu_rows_in_place(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_and_grad::<FMA>(*v).0;
        }
    }
}

simd_kernel! {
    /// `g *= gelu'(x)`: the incoming gradient becomes that of GELU's input.
    pub(crate) fn gelu_grad_scale(g: &mut [f32], x: &[f32]) {
        let n = g.len().min(x.len());
        for i in 0..n {
            g[i] *= gelu_and_grad::<FMA>(x[i]).1;
        }
    }
}

/// `dropout(gelu(x))`, `dropout(x)` or `gelu(x)`, elementwise.
pub(crate) struct Act {
    pub gelu: bool,
    pub mask: Option<DropoutMask>,
}

impl CustomOp1 for Act {
    fn name(&self) -> &'static str {
        if self.gelu { "vit-gelu" } else { "vit-dropout" }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let out = par_rows(x.len(), ELEMS_PER_TASK, |c, out| {
            let x = &x[c * ELEMS_PER_TASK..][..out.len()];
            if self.gelu {
                gelu_rows(out, x);
            } else {
                out.copy_from_slice(x);
            }
            if let Some(mask) = &self.mask {
                mask.scale_in_place(c * ELEMS_PER_TASK, out);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(match (self.gelu, &self.mask) {
            (true, mask) => x.apply_op2_no_bwd(&grad, &GeluBackward { mask: *mask })?,
            // The dropout's backward: the same draws scale the gradient.
            (false, Some(mask)) => grad.apply_op1_no_bwd(mask)?,
            (false, None) => grad,
        }))
    }
}

/// `grad * mask * gelu'(x)`: GELU's backward, after the dropout's when there is a mask.
struct GeluBackward {
    pub mask: Option<DropoutMask>,
}

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "vit-gelu-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let out = par_rows(x.len(), ELEMS_PER_TASK, |c, out| {
            let at = c * ELEMS_PER_TASK;
            out.copy_from_slice(&g[at..][..out.len()]);
            if let Some(mask) = &self.mask {
                mask.scale_in_place(at, out);
            }
            gelu_grad_scale(out, &x[at..][..out.len()]);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
