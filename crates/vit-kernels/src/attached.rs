//! candle's fused softmax and LayerNorm forward kernels, with a backward pass attached.
//!
//! `candle_nn::ops::softmax_last_dim` and `candle_nn::ops::layer_norm` run one kernel per call
//! on every device, but record no backward pass. Off the CPU (where this crate's own kernels
//! do not run) the functions here run those kernels on the detached input, then hand the
//! result to a custom op that returns it unchanged and whose backward pass computes the
//! gradients by formula from candle ops: one kernel forward instead of five (softmax) or nine
//! (LayerNorm), and a short backward instead of the autograd chain through all of them.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp3, D, Layout, MetalStorage, Result, Shape, Storage, Tensor,
};

/// A forward value computed outside autograd, re-entered into the graph with a backward pass.
struct Attached(Tensor);

impl Attached {
    fn value<S>(
        &self,
        pick: impl Fn(&Storage) -> Option<&S>,
        clone: impl Fn(&S, &Layout) -> Result<S>,
    ) -> Result<(S, Shape)> {
        let (storage, layout) = self.0.storage_and_layout();
        match pick(&storage) {
            Some(s) => Ok((clone(s, layout)?, layout.shape().clone())),
            None => candle_core::bail!("attached op: the value lives on another device than its input"),
        }
    }

    fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        self.value(|s| if let Storage::Cpu(s) = s { Some(s) } else { None }, BackendStorage::try_clone)
    }

    fn cuda(&self) -> Result<(CudaStorage, Shape)> {
        self.value(|s| if let Storage::Cuda(s) = s { Some(s) } else { None }, BackendStorage::try_clone)
    }

    fn metal(&self) -> Result<(MetalStorage, Shape)> {
        self.value(|s| if let Storage::Metal(s) = s { Some(s) } else { None }, BackendStorage::try_clone)
    }
}

struct Softmax(Attached);

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "vit-attached-softmax"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.0.cpu()
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        self.0.cuda()
    }

    fn metal_fwd(&self, _: &MetalStorage, _: &Layout) -> Result<(MetalStorage, Shape)> {
        self.0.metal()
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // Detached: a gradient computed from graph nodes would hold the step's whole graph, and
        // candle stores a variable's gradient without detaching it (an optimizer keeping it in
        // its moments would then chain every step's graph).
        let (y, grad) = (y.detach(), grad.detach());
        // dx = y * (dy - sum(dy * y))
        let dot = (&grad * &y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((y * grad.broadcast_sub(&dot)?)?))
    }
}

struct LayerNorm {
    value: Attached,
    eps: f64,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "vit-attached-layer-norm"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.value.cpu()
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.value.cuda()
    }

    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        self.value.metal()
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Detached, as in the softmax's backward.
        let (x, weight, grad) = (&x.detach(), &weight.detach(), &grad.detach());
        let d = x.dim(D::Minus1)?;
        let rows = x.elem_count() / d;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let inv_std = (centered.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
        let normed = centered.broadcast_mul(&inv_std)?;
        let grad_weight = (grad * &normed)?.reshape((rows, d))?.sum(0)?;
        let grad_bias = grad.reshape((rows, d))?.sum(0)?;
        // dx = inv_std * (dn - mean(dn) - normed * mean(dn * normed)), dn = grad * weight
        let dn = grad.broadcast_mul(weight)?;
        let along = (&dn * &normed)?.mean_keepdim(D::Minus1)?;
        let dx = dn
            .broadcast_sub(&dn.mean_keepdim(D::Minus1)?)?
            .sub(&normed.broadcast_mul(&along)?)?
            .broadcast_mul(&inv_std)?;
        Ok((Some(dx), Some(grad_weight), Some(grad_bias)))
    }
}

/// Softmax over the last dimension: candle's fused kernel forward, a formula backward.
pub(crate) fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let value = candle_nn::ops::softmax_last_dim(&x.detach())?;
    x.apply_op1(Softmax(Attached(value)))
}

/// LayerNorm: candle's fused kernel forward, a formula backward for all three inputs.
pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    let value = candle_nn::ops::layer_norm(&x.detach(), &weight.detach(), &bias.detach(), eps as f32)?;
    x.apply_op3(weight, bias, LayerNorm { value: Attached(value), eps })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use crate::composed;

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        d / b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6)
    }

    /// On the CPU the attached ops run candle's CPU kernels: the same code path as on a GPU
    /// but for the kernel, so the backward formulas are proven here and again by the device
    /// tests on CUDA.
    #[test]
    fn attached_softmax_and_layer_norm_match_composed_forward_and_backward() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&vit_rng::tensors::normal(0f32, 2., (3, 5, 16), 1, &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&vit_rng::tensors::normal(1f32, 0.5, 16, 2, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&vit_rng::tensors::normal(0f32, 0.5, 16, 3, &dev).unwrap()).unwrap();
        let up = vit_rng::tensors::normal(0f32, 1., (3, 5, 16), 4, &dev).unwrap();
        let pairs = [
            (super::softmax_last_dim(&x).unwrap(), composed::softmax_last_dim(&x).unwrap()),
            (super::layer_norm(&x, &w, &b, 1e-6).unwrap(), composed::layer_norm(&x, &w, &b, 1e-6).unwrap()),
        ];
        for (i, (ours, reference)) in pairs.iter().enumerate() {
            assert!(max_rel(ours, reference) < 1e-5, "op {i} forward");
            let g1 = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (reference * &up).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, var) in [("x", &x), ("weight", &w), ("bias", &b)] {
                match (g1.get(var), g2.get(var)) {
                    (Some(a), Some(r)) => {
                        assert!(max_rel(a, r) < 1e-4, "op {i} d{name}: {}", max_rel(a, r));
                        assert!(!a.track_op(), "op {i}: d{name} holds a graph");
                    }
                    (None, None) => {}
                    _ => panic!("op {i}: d{name} present on one side only"),
                }
            }
        }
    }
}
