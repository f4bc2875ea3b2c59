//! AdamW with decoupled weight decay over the parameters a model lists, and the global
//! gradient norm (for clipping and overflow detection).

use std::collections::{BTreeMap, HashMap};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vit_blocks::ModuleTree;
use vit_blocks::SeededVarMap;
use vit_model::Vit;

/// One parameter to optimise: its name (the key of its moments in the optimizer state), its
/// variable, and whether weight decay applies (the model says: `Vit::parameters`).
#[derive(Debug, Clone)]
pub struct Param {
    /// The parameter's name.
    pub name: String,
    /// The variable to update.
    pub var: Var,
    /// Whether decoupled weight decay applies.
    pub weight_decay: bool,
    /// This parameter's learning rate as a multiple of the schedule's (layer-wise decay, a
    /// slower backbone); 1 for most.
    pub lr_scale: f64,
}

/// The variables of `store` as the model lists its parameters, with the model's weight-decay
/// flags. Every parameter the model names must be a variable of the store and every variable
/// a parameter of the model: a parameter left out would silently never train.
pub fn params_of(model: &Vit, store: &SeededVarMap) -> std::result::Result<Vec<Param>, String> {
    let mut vars = store.vars();
    let mut params = Vec::new();
    for p in model.parameters() {
        let var =
            vars.remove(&p.name).ok_or_else(|| format!("the model's parameter `{}` is not in its store", p.name))?;
        params.push(Param { name: p.name, var, weight_decay: p.weight_decay, lr_scale: 1.0 });
    }
    if let Some(name) = vars.keys().next() {
        return Err(format!("variable `{name}` of the store is no parameter the model lists"));
    }
    Ok(params)
}

/// Which parameters a fine-tuning run trains, and at what learning rate: the recipe's
/// [`FineTuning`] applied to the model's parameters. Frozen parameters are left out (they
/// keep their values bit for bit); with `layer_decay` = d, as timm's
/// `param_groups_layer_decay`, the patch encoder is layer 0, block i layer i + 1 and the final
/// norm and head layer L + 1 of L blocks, and layer k trains at d^(L + 1 - k) times the
/// learning rate; `backbone_lr_scale` multiplies the rate of everything but the head.
pub fn select_trainable(params: Vec<Param>, num_layers: usize, tuning: &FineTuning) -> Vec<Param> {
    let FineTuning { freeze_backbone, frozen_blocks, layer_decay, backbone_lr_scale } = *tuning;
    let layer = |name: &str| -> usize {
        match name.strip_prefix("blocks.").and_then(|r| r.split('.').next()).and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => i + 1,
            None if name.starts_with("patch_encoder.") => 0,
            None => num_layers + 1,
        }
    };
    params
        .into_iter()
        .filter(|p| {
            let k = layer(&p.name);
            let head = p.name.starts_with("head.");
            let frozen = (freeze_backbone && !head) || (frozen_blocks > 0 && k <= frozen_blocks);
            !frozen
        })
        .map(|p| {
            let mut scale = layer_decay.map_or(1.0, |d| d.powi((num_layers + 1 - layer(&p.name)) as i32));
            if !p.name.starts_with("head.") {
                scale *= backbone_lr_scale.unwrap_or(1.0);
            }
            Param { lr_scale: p.lr_scale * scale, ..p }
        })
        .collect()
}

/// Which parameters train, and at which share of the learning rate, when fine-tuning.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FineTuning {
    /// Train the head alone (a linear probe).
    pub freeze_backbone: bool,
    /// Keep the patch encoder and the first N blocks as they are.
    pub frozen_blocks: usize,
    /// Layer-wise learning-rate decay (timm's `layer_decay`).
    pub layer_decay: Option<f64>,
    /// Every parameter outside the head (`head.*`) trains at this share of the rate, on top
    /// of any layer decay: the lower backbone rate of many fine-tuning recipes.
    pub backbone_lr_scale: Option<f64>,
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

/// First and second moments of one parameter: on the host for CPU parameters (updated in one
/// fused pass), as tensors on the parameter's device otherwise (no copies across the bus).
enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

struct Slot {
    name: String,
    var: Var,
    moments: Moments,
    decay: bool,
    lr_scale: f64,
}

/// AdamW over named variables. On the CPU each parameter is updated in one fused pass over its
/// values; on other devices with tensor ops, the moments staying on the device.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl AdamW {
    /// An optimiser for `params`; the order of updates is the names' order.
    pub fn new(params: &[Param], cfg: AdamWConfig) -> Result<Self> {
        Self::build(params, cfg, false)
    }

    /// Like [`new`](Self::new) but with the tensor-op path that GPU parameters take, whatever
    /// the device: it lets the CPU test that path against the fused one.
    pub fn new_with_tensor_ops(params: &[Param], cfg: AdamWConfig) -> Result<Self> {
        Self::build(params, cfg, true)
    }

    fn build(params: &[Param], cfg: AdamWConfig, tensor_ops: bool) -> Result<Self> {
        let mut sorted: Vec<&Param> = params.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut slots = Vec::with_capacity(sorted.len());
        for param in sorted {
            let var = param.var.clone();
            let host = !tensor_ops && var.device().is_cpu();
            let moments = if host {
                Moments::Host { m: vec![0.0; var.elem_count()], v: vec![0.0; var.elem_count()] }
            } else {
                let zeros = Tensor::zeros(var.shape(), DType::F32, var.device())?;
                Moments::Device { m: zeros.clone(), v: zeros }
            };
            slots.push(Slot {
                name: param.name.clone(),
                var,
                moments,
                decay: param.weight_decay,
                lr_scale: param.lr_scale,
            });
        }
        Ok(Self { cfg, slots, step: 0 })
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
            let lr = lr * slot.lr_scale;
            let decay = if slot.decay { (1.0 - lr * cfg.weight_decay) as f32 } else { 1.0 };
            let step_size = (lr / bc1) as f32;
            let (inv_bc2, eps) = ((1.0 / bc2).sqrt() as f32, cfg.eps as f32);
            // 1 - beta in f64 first: 1 - 0.999f32 is off by 1.3e-5 relative, which shows in v.
            let (one_minus_b1, one_minus_b2) = ((1.0 - b1) as f32, (1.0 - b2) as f32);
            let (b1f, b2f, gs) = (b1 as f32, b2 as f32, grad_scale as f32);
            let updated = match &mut slot.moments {
                Moments::Host { m, v } => {
                    let g = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                    let mut p = slot.var.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                    let chunk = 1 << 15;
                    p.par_chunks_mut(chunk)
                        .zip(m.par_chunks_mut(chunk))
                        .zip(v.par_chunks_mut(chunk))
                        .zip(g.par_chunks(chunk))
                        .for_each(|(((p, m), v), g)| {
                            for i in 0..p.len() {
                                let gi = g[i] * gs;
                                m[i] = b1f * m[i] + one_minus_b1 * gi;
                                v[i] = b2f * v[i] + one_minus_b2 * gi * gi;
                                p[i] = p[i] * decay - step_size * m[i] / (v[i].sqrt() * inv_bc2 + eps);
                            }
                        });
                    Tensor::from_vec(p, slot.var.shape(), slot.var.device())?
                }
                Moments::Device { m, v } => {
                    // Detached: a gradient that is a graph node would chain each step's graph
                    // into the moments, and memory would grow without bound.
                    let g = (g.detach().to_dtype(DType::F32)? * f64::from(gs))?;
                    *m = ((&*m * f64::from(b1f))? + (&g * f64::from(one_minus_b1))?)?;
                    *v = ((&*v * f64::from(b2f))? + (g.sqr()? * f64::from(one_minus_b2))?)?;
                    let denom = ((v.sqrt()? * f64::from(inv_bc2))? + f64::from(eps))?;
                    let p = (slot.var.as_tensor().to_dtype(DType::F32)? * f64::from(decay))?;
                    (p - ((&*m * f64::from(step_size))? / denom)?)?
                }
            };
            slot.var.set(&updated.to_dtype(slot.var.dtype())?)?;
        }
        Ok(())
    }

    /// The moments and step, for a checkpoint: `m.<name>`, `v.<name>` and `step` tensors.
    pub fn state(&self, device: &Device) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for s in &self.slots {
            let (m, v) = match &s.moments {
                Moments::Host { m, v } => {
                    (Tensor::from_slice(m, m.len(), device)?, Tensor::from_slice(v, v.len(), device)?)
                }
                Moments::Device { m, v } => (m.flatten_all()?.to_device(device)?, v.flatten_all()?.to_device(device)?),
            };
            out.insert(format!("m.{}", s.name), m);
            out.insert(format!("v.{}", s.name), v);
        }
        out.insert("step".into(), Tensor::new(&[self.step as f64], device)?);
        Ok(out)
    }

    /// Restores [`state`](Self::state). Every moment must be present with the right length.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> std::result::Result<(), String> {
        // Everything is checked before anything is changed: a bad state leaves the optimizer as
        // it was.
        let get = |key: &str, n: usize, second_moment: bool| -> std::result::Result<Vec<f32>, String> {
            let t = state.get(key).ok_or_else(|| format!("optimizer state lacks `{key}`"))?;
            let v = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| format!("`{key}`: {e}"))?;
            if v.len() != n {
                return Err(format!("optimizer state `{key}` has {} values, expected {n}", v.len()));
            }
            if let Some(bad) = v.iter().find(|x| !x.is_finite() || (second_moment && **x < 0.0)) {
                let what = if second_moment { "finite and at least 0" } else { "finite" };
                return Err(format!("optimizer state `{key}` holds {bad}, expected values {what}"));
            }
            Ok(v)
        };
        let mut loaded = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let n = s.var.elem_count();
            loaded.push((get(&format!("m.{}", s.name), n, false)?, get(&format!("v.{}", s.name), n, true)?));
        }
        let expected = 2 * self.slots.len() + 1;
        if state.len() != expected {
            let known = |k: &String| {
                k == "step"
                    || self.slots.iter().any(|s| **k == format!("m.{}", s.name) || **k == format!("v.{}", s.name))
            };
            let extra = state.keys().find(|k| !known(k)).cloned().unwrap_or_default();
            return Err(format!("optimizer state holds `{extra}`, which is no moment of this model's parameters"));
        }
        let step = state.get("step").ok_or("optimizer state lacks `step`")?;
        let step = match step.flatten_all().and_then(|t| t.to_vec1::<f64>()).map_err(|e| format!("`step`: {e}"))?[..] {
            [s] if s >= 0.0 && s.fract() == 0.0 && s < 2f64.powi(53) => s as u64,
            ref other => {
                return Err(format!("optimizer state `step` is {other:?}, expected one whole number of at least 0"));
            }
        };
        for (s, (m, v)) in self.slots.iter_mut().zip(loaded) {
            s.moments = match s.moments {
                Moments::Host { .. } => Moments::Host { m, v },
                Moments::Device { .. } => {
                    let load =
                        |x: Vec<f32>| Tensor::from_vec(x, s.var.shape(), s.var.device()).map_err(|e| e.to_string());
                    Moments::Device { m: load(m)?, v: load(v)? }
                }
            };
        }
        self.step = step;
        Ok(())
    }
}

/// The global L2 norm of all gradients of `vars`.
///
/// The squares are summed on the gradients' device and read back once (on a GPU one read per
/// parameter would synchronise a hundred times a step). An overflowed gradient makes it
/// infinite or NaN, which is how [`crate::LossScaler`] detects overflow.
pub fn global_grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut total: Option<Tensor> = None;
    for v in vars {
        if let Some(g) = grads.get(v) {
            // Each parameter's sum in f32, their total in f64 (Metal has no f64).
            let total_dtype = if g.device().is_metal() { DType::F32 } else { DType::F64 };
            let sq = g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_dtype(total_dtype)?;
            total = Some(match total {
                Some(t) => (t + sq)?,
                None => sq,
            });
        }
    }
    Ok(total
        .map(|t| t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_scalar::<f64>())
        .transpose()?
        .map_or(0.0, f64::sqrt))
}
