//! An exponential moving average of the trained weights (timm's `ModelEma`, TensorFlow's
//! `ExponentialMovingAverage`): after every update `ema = d ema + (1 - d) w`, with the decay
//! warmed up as `d = min(decay, (1 + n) / (10 + n))` over the first updates `n` so that the
//! average does not linger on the initial weights. It is validated beside the raw weights,
//! saved in `last.safetensors` (`train.ema.<name>`) and resumed exactly.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Tensor, Var};

use crate::TrainError;

/// The prefix of the average's tensors in `last.safetensors`.
pub(crate) const EMA_PREFIX: &str = "train.ema.";

/// The average of the trainable variables.
#[derive(Debug)]
pub(crate) struct Ema {
    decay: f64,
    /// `(name, average)`, in the order of the variables it follows.
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// An average starting at the variables' values.
    pub fn new(decay: f64, vars: &[(String, Var)]) -> Result<Self, TrainError> {
        let shadow = vars
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect::<Result<_, TrainError>>()?;
        Ok(Self { decay, shadow })
    }

    /// The average saved in a checkpoint's `tensors` (names without the prefix), which must
    /// hold every variable with its shape.
    pub fn restore(decay: f64, vars: &[(String, Var)], tensors: &HashMap<String, Tensor>) -> Result<Self, String> {
        let mut shadow = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            let t = tensors.get(name).ok_or_else(|| format!("the average of `{name}` is missing"))?;
            if t.dims() != var.dims() {
                return Err(format!("the average of `{name}` has shape {:?}, the variable {:?}", t.dims(), var.dims()));
            }
            shadow.push((name.clone(), t.clone()));
        }
        if tensors.len() != vars.len() {
            return Err(format!("{} averages for {} trainable variables", tensors.len(), vars.len()));
        }
        Ok(Self { decay, shadow })
    }

    /// The decay of update number `updates` (0-based).
    pub fn decay_at(&self, updates: u64) -> f64 {
        self.decay.min((1.0 + updates as f64) / (10.0 + updates as f64))
    }

    /// Folds the variables' current values in, as update number `updates`.
    pub fn update(&mut self, vars: &[(String, Var)], updates: u64) -> Result<(), TrainError> {
        let d = self.decay_at(updates);
        for ((_, shadow), (_, var)) in self.shadow.iter_mut().zip(vars) {
            // Detached: an average computed from a variable would record the operation, and
            // each update's result would hold the one before it, every average ever made kept
            // alive (about 3 MB a step for the mnist preset).
            *shadow = ((&*shadow * d)? + (var.as_tensor().detach() * (1.0 - d))?)?.detach();
        }
        Ok(())
    }

    /// The average by parameter name.
    pub fn tensors(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.shadow.iter().map(|(n, t)| (n, t))
    }

    /// The average as checkpoint training tensors (`train.ema.<name>`).
    pub fn checkpoint_tensors(&self) -> BTreeMap<String, Tensor> {
        self.shadow.iter().map(|(n, t)| (format!("{EMA_PREFIX}{n}"), t.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn the_average_warms_up_then_follows_at_its_decay() {
        let var = Var::new(&[0f32, 10.0], &Device::Cpu).unwrap();
        let vars = vec![("w".to_string(), var.clone())];
        let mut ema = Ema::new(0.9, &vars).unwrap();
        // Update 0 decays by 1/10, update 1 by 2/11, then the decay is capped at 0.9.
        assert_eq!(ema.decay_at(0), 0.1);
        assert!((ema.decay_at(1) - 2.0 / 11.0).abs() < 1e-12);
        assert_eq!(ema.decay_at(1000), 0.9);
        var.set(&Tensor::new(&[10f32, 0.0], &Device::Cpu).unwrap()).unwrap();
        ema.update(&vars, 0).unwrap();
        // 0.1 * [0, 10] + 0.9 * [10, 0]
        let got = ema.shadow[0].1.to_vec1::<f32>().unwrap();
        assert!((got[0] - 9.0).abs() < 1e-5 && (got[1] - 1.0).abs() < 1e-5, "{got:?}");
        ema.update(&vars, 1000).unwrap();
        let got = ema.shadow[0].1.to_vec1::<f32>().unwrap();
        assert!((got[0] - 9.1).abs() < 1e-5 && (got[1] - 0.9).abs() < 1e-5, "{got:?}");
        // A saved average comes back only whole.
        let saved: HashMap<String, Tensor> = ema.tensors().map(|(n, t)| (n.clone(), t.clone())).collect();
        assert!(Ema::restore(0.9, &vars, &saved).is_ok());
        assert!(Ema::restore(0.9, &vars, &HashMap::new()).unwrap_err().contains("missing"));
    }

    #[test]
    fn the_average_keeps_no_history_of_operations() {
        // An average that recorded its operations would keep every earlier average alive
        // through them: memory grows by the model's size each step, without end.
        let var = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let vars = vec![("w".to_string(), var.clone())];
        let mut ema = Ema::new(0.99, &vars).unwrap();
        assert!(!ema.shadow[0].1.track_op(), "the starting copy tracks its variable");
        for n in 0..3 {
            ema.update(&vars, n).unwrap();
            assert!(!ema.shadow[0].1.track_op(), "update {n} recorded its operation");
        }
    }
}
