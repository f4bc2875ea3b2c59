//! A parameter store whose initial values depend only on a seed and each parameter's name.
//!
//! `candle_nn::VarMap` draws initial values from candle's unseeded generator, so two runs never
//! start from the same weights. [`SeededVarMap`] is a drop-in backend for `VarBuilder` that
//! draws them from a seed and the parameter's path instead (through FNV-1a, a specified hash):
//! the same model built twice, in another order, or by another Rust release, gets the same
//! weights. It lives here, in the lowest crate that builds parameters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};

use vit_rng::{named_stream, normal_at, uniform_at};

/// A `VarMap` whose new variables are initialised from `seed` and their name, or, for a store
/// made [`from_tensors`](SeededVarMap::from_tensors), from given values.
#[derive(Clone)]
pub struct SeededVarMap {
    varmap: VarMap,
    seed: u64,
    source: Option<Arc<Mutex<Source>>>,
}

/// What a store made from given values did with them while a model was built.
#[derive(Debug, Default)]
pub struct SourceOutcome {
    /// Given tensors no parameter asked for: `(name, shape)`.
    pub unused: Vec<(String, Vec<usize>)>,
    /// Parameters whose given tensor had another shape: `(name, expected, found)`; they were
    /// drawn from the seed instead.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Parameters with no given tensor, drawn from the seed: `(name, shape)`.
    pub drawn: Vec<(String, Vec<usize>)>,
}

#[derive(Debug, Default)]
struct Source {
    tensors: HashMap<String, Tensor>,
    outcome: SourceOutcome,
}

impl std::fmt::Debug for SeededVarMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.varmap.data().lock().map(|d| d.len()).unwrap_or(0);
        f.debug_struct("SeededVarMap").field("seed", &self.seed).field("variables", &count).finish()
    }
}

impl SeededVarMap {
    /// An empty store.
    pub fn new(seed: u64) -> Self {
        Self { varmap: VarMap::new(), seed, source: None }
    }

    /// A store whose variables take their values from `tensors` as a model asks for them by
    /// name: each tensor is copied into its variable and dropped then, so that loading a model
    /// holds its weights about once, not as tensors and variables side by side. What did not
    /// fit is told by [`finish_source`](Self::finish_source).
    pub fn from_tensors(seed: u64, tensors: HashMap<String, Tensor>) -> Self {
        let source = Source { tensors, outcome: SourceOutcome::default() };
        Self { varmap: VarMap::new(), seed, source: Some(Arc::new(Mutex::new(source))) }
    }

    /// For a store made [`from_tensors`](Self::from_tensors): the tensors left unused and the
    /// parameters that did not get a given value, each sorted by name. `None` otherwise.
    pub fn finish_source(&self) -> Option<SourceOutcome> {
        let source = self.source.as_ref()?;
        let mut source = source.lock().expect("source lock poisoned");
        let mut outcome = std::mem::take(&mut source.outcome);
        outcome.unused = source.tensors.drain().map(|(name, t)| (name, t.dims().to_vec())).collect();
        outcome.unused.sort();
        outcome.mismatched.sort();
        outcome.drawn.sort();
        Some(outcome)
    }

    /// The underlying `VarMap` (trainable variables by name).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Every variable by name, in name order (a `BTreeMap`, so that anything iterating over
    /// them, a gradient norm's sum for one, runs in the same order in every run).
    pub fn vars(&self) -> std::collections::BTreeMap<String, Var> {
        let data = self.varmap.data().lock().expect("varmap lock poisoned");
        data.iter().map(|(name, var)| (name.clone(), var.clone())).collect()
    }

    /// A `VarBuilder` that creates variables in this store.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    fn draw(&self, shape: &Shape, name: &str, init: Init) -> Result<Vec<f32>> {
        let stream = named_stream(self.seed, name.as_bytes());
        let n = shape.elem_count();
        let uniform = |i: usize| uniform_at(stream, i as u64);
        let values = match init {
            Init::Const(v) => vec![v as f32; n],
            Init::Uniform { lo, up } => (0..n).map(|i| lo as f32 + (up - lo) as f32 * uniform(i)).collect(),
            Init::Randn { mean, stdev } => normal(n, stream, mean as f32, stdev as f32),
            Init::Kaiming { dist, fan, non_linearity } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    candle_nn::init::NormalOrUniform::Uniform => {
                        let bound = (3f64.sqrt() * std) as f32;
                        (0..n).map(|i| -bound + 2.0 * bound * uniform(i)).collect()
                    }
                    candle_nn::init::NormalOrUniform::Normal => normal(n, stream, 0.0, std as f32),
                }
            }
        };
        Ok(values)
    }
}

/// `n` normal numbers from the stream.
fn normal(n: usize, stream: u64, mean: f32, stdev: f32) -> Vec<f32> {
    (0..n as u64).map(|i| normal_at(stream, i, mean, stdev)).collect()
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, shape: Shape, name: &str, init: Init, dtype: DType, device: &Device) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("varmap lock poisoned");
        if let Some(var) = data.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "parameter `{name}` already exists with shape {:?}, asked for {:?}",
                    var.dims(),
                    shape.dims()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        if let Some(source) = &self.source {
            let mut source = source.lock().expect("source lock poisoned");
            match source.tensors.remove(name) {
                Some(given) if given.shape() == &shape => {
                    let var = Var::from_tensor(&given.to_dtype(dtype)?.to_device(device)?)?;
                    let tensor = var.as_tensor().clone();
                    data.insert(name.to_string(), var);
                    return Ok(tensor);
                }
                Some(given) => {
                    let mismatch = (name.to_string(), shape.dims().to_vec(), given.dims().to_vec());
                    source.outcome.mismatched.push(mismatch);
                }
                None => source.outcome.drawn.push((name.to_string(), shape.dims().to_vec())),
            }
        }
        let values = self.draw(&shape, name, init)?;
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _device: &Device) -> Result<Tensor> {
        let data = self.varmap.data().lock().expect("varmap lock poisoned");
        match data.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("parameter `{name}` does not exist and no shape was given"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().expect("varmap lock poisoned").contains_key(name)
    }
}
