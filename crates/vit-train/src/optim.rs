//! AdamW with decoupled weight decay, the warm-up + cosine schedule, and global-norm clipping.

use std::collections::{BTreeMap, HashMap};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// True for parameters that get weight decay: weight matrices, not biases, norms, position
/// embeddings, the class token or layer scales (as timm and most ViT recipes do).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias")
        || name.contains("norm")
        || name.contains("position_embedding")
        || name.contains("class_token")
        || name.contains("layer_scale"))
}

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay (multiplied by the learning rate, as PyTorch and Keras do).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        // Keras' AdamW defaults, with the Keras example's weight decay.
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay: 1e-4 }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Vec<f32>,
    v: Vec<f32>,
    decay: bool,
}

/// AdamW over named variables. On the CPU each parameter is updated in one fused pass over its
/// values; elsewhere with tensor ops.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl AdamW {
    /// An optimiser for `vars` (name -> variable); the order of updates is the names' order.
    pub fn new(vars: &HashMap<String, Var>, cfg: AdamWConfig) -> Self {
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        let slots = names
            .into_iter()
            .map(|name| {
                let var = vars[name].clone();
                let n = var.elem_count();
                Slot { name: name.clone(), var, m: vec![0.0; n], v: vec![0.0; n], decay: decays(name) }
            })
            .collect();
        Self { cfg, slots, step: 0 }
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Applies one update with learning rate `lr` from `grads` scaled by `grad_scale` (for
    /// clipping). Parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let cfg = self.cfg;
        for slot in &mut self.slots {
            let Some(g) = grads.get(&slot.var) else { continue };
            let g = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let mut p = slot.var.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let decay = if slot.decay { (1.0 - lr * cfg.weight_decay) as f32 } else { 1.0 };
            // 1 - beta in f64 first: 1 - 0.999f32 is off by 1.3e-5 relative, which shows in v.
            let (b1f, b2f, gs) = (b1 as f32, b2 as f32, grad_scale as f32);
            let (one_minus_b1, one_minus_b2) = ((1.0 - b1) as f32, (1.0 - b2) as f32);
            let step_size = (lr / bc1) as f32;
            let (inv_bc2, eps) = ((1.0 / bc2).sqrt() as f32, cfg.eps as f32);
            let chunk = 1 << 15;
            p.par_chunks_mut(chunk)
                .zip(slot.m.par_chunks_mut(chunk))
                .zip(slot.v.par_chunks_mut(chunk))
                .zip(g.par_chunks(chunk))
                .for_each(|(((p, m), v), g)| {
                    for i in 0..p.len() {
                        let gi = g[i] * gs;
                        m[i] = b1f * m[i] + one_minus_b1 * gi;
                        v[i] = b2f * v[i] + one_minus_b2 * gi * gi;
                        p[i] = p[i] * decay - step_size * m[i] / (v[i].sqrt() * inv_bc2 + eps);
                    }
                });
            let shape = slot.var.shape().clone();
            let device = slot.var.device().clone();
            slot.var.set(&Tensor::from_vec(p, shape, &device)?.to_dtype(slot.var.dtype())?)?;
        }
        Ok(())
    }

    /// The moments and step, for a checkpoint: `m.<name>`, `v.<name>` and `step` tensors.
    pub fn state(&self, device: &Device) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for s in &self.slots {
            out.insert(format!("m.{}", s.name), Tensor::from_slice(&s.m, s.m.len(), device)?);
            out.insert(format!("v.{}", s.name), Tensor::from_slice(&s.v, s.v.len(), device)?);
        }
        out.insert("step".into(), Tensor::new(&[self.step as f64], device)?);
        Ok(out)
    }

    /// Restores [`state`](Self::state). Every moment must be present with the right length.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> std::result::Result<(), String> {
        let get = |key: &str, n: usize| -> std::result::Result<Vec<f32>, String> {
            let t = state.get(key).ok_or_else(|| format!("optimizer state lacks `{key}`"))?;
            let v = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| format!("`{key}`: {e}"))?;
            if v.len() != n {
                return Err(format!("optimizer state `{key}` has {} values, expected {n}", v.len()));
            }
            Ok(v)
        };
        for s in &mut self.slots {
            let n = s.var.elem_count();
            s.m = get(&format!("m.{}", s.name), n)?;
            s.v = get(&format!("v.{}", s.name), n)?;
        }
        let step = state.get("step").ok_or("optimizer state lacks `step`")?;
        self.step = step.to_vec1::<f64>().map_err(|e| e.to_string())?[0] as u64;
        Ok(())
    }
}

/// Linear warm-up to `peak`, then cosine decay to `min_lr` at `total` steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Warm-up steps.
    pub warmup: u64,
    /// Total steps.
    pub total: u64,
}

impl Schedule {
    /// The learning rate for step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        self.min_lr + 0.5 * (self.peak - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// The global L2 norm of all gradients of `vars`.
pub fn global_grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v) {
            total += f64::from(g.sqr()?.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        }
    }
    Ok(total.sqrt())
}
