//! Self-describing safetensors checkpoints: the weights, the config and the class names in one
//! file, written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use vit_blocks::{SeededVarMap, SharedRng};
use vit_data::{PREPROCESSING_KEYS, Preprocessing};

use crate::{ModelError, Vit, VitConfig};

/// Metadata key holding the config as JSON.
pub const CONFIG_KEY: &str = "vit.config";
/// Metadata key holding the class names as a JSON array.
pub const CLASS_NAMES_KEY: &str = "vit.class_names";
/// Metadata key holding the format tag.
pub const FORMAT_KEY: &str = "vit.format";
/// The current format tag.
pub const FORMAT: &str = "vit-rs/1";
/// Tensors whose names start with this belong to a training run's state (the optimizer's
/// moments, in a run's `last.safetensors`), not to the model: loading a model leaves them out.
pub const TRAINING_PREFIX: &str = "train.";

/// What a checkpoint says about itself besides the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    /// The model's configuration.
    pub config: VitConfig,
    /// One name per class, in logit order.
    pub class_names: Vec<String>,
    /// How an image becomes the model's input, where the checkpoint records it (a training
    /// run's normalisation and data size; an import's normalisation, resize and crop); see
    /// [`CheckpointMeta::preprocessing`] for what inference uses.
    pub preprocessing: Option<Preprocessing>,
    /// Any other string entries (e.g. training state), kept as they are.
    pub extra: BTreeMap<String, String>,
}

impl CheckpointMeta {
    /// Metadata of a model with no recorded preprocessing and no other entries.
    pub fn new(config: VitConfig, class_names: Vec<String>) -> Self {
        Self { config, class_names, preprocessing: None, extra: BTreeMap::new() }
    }

    /// How to prepare an image for this model: the recorded preprocessing, or, where the
    /// checkpoint records none, the model's input size with no normalisation.
    pub fn preprocessing(&self) -> Preprocessing {
        self.preprocessing.clone().unwrap_or_else(|| {
            Preprocessing::identity((self.config.image_size[0], self.config.image_size[1]), self.config.channels)
        })
    }
}

/// A checkpoint read from disk.
#[derive(Debug)]
pub struct Checkpoint {
    /// The file it came from.
    pub path: PathBuf,
    /// Config, class names, extra metadata.
    pub meta: CheckpointMeta,
    /// The model's tensors by name.
    pub tensors: HashMap<String, Tensor>,
    /// The tensors of a training run's state (named `train.*`), if the file holds any.
    pub training: HashMap<String, Tensor>,
}

/// Writes the variables of `varmap` and `meta` to `path` atomically: to a temporary file in
/// the same directory, flushed to disk, then renamed over `path`. A crash leaves either the
/// old file or the new one, never half of one.
pub fn save(path: impl AsRef<Path>, varmap: &VarMap, meta: &CheckpointMeta) -> Result<(), ModelError> {
    save_with_training(path, varmap, &BTreeMap::new(), meta)
}

/// [`save`], with the tensors of a training run's state (each named `train.*`, see
/// [`TRAINING_PREFIX`]) in the same file: one file, committed by one rename, holds the whole
/// state. [`Vit::load`] reads such a file as a model and leaves them out.
pub fn save_with_training(
    path: impl AsRef<Path>,
    varmap: &VarMap,
    training: &BTreeMap<String, Tensor>,
    meta: &CheckpointMeta,
) -> Result<(), ModelError> {
    let path = path.as_ref();
    if let Some(name) = training.keys().find(|k| !k.starts_with(TRAINING_PREFIX)) {
        return Err(ModelError::Metadata {
            path: path.into(),
            key: name.clone(),
            message: format!("a training tensor's name must start with `{TRAINING_PREFIX}`"),
        });
    }
    let mut tensors: BTreeMap<String, Tensor> = {
        let data = varmap.data().lock().expect("varmap lock poisoned");
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
    };
    tensors.extend(training.iter().map(|(k, v)| (k.clone(), v.clone())));
    save_tensors(path, &tensors, meta)
}

/// [`save`] for plain tensors.
pub fn save_tensors(path: &Path, tensors: &BTreeMap<String, Tensor>, meta: &CheckpointMeta) -> Result<(), ModelError> {
    if meta.class_names.len() != meta.config.num_classes {
        return Err(ModelError::invalid(
            "num_classes",
            format!("is {} but {} class names were given", meta.config.num_classes, meta.class_names.len()),
        ));
    }
    if let Some(key) = meta.extra.keys().find(|k| PREPROCESSING_KEYS.contains(&k.as_str())) {
        return Err(ModelError::Metadata {
            path: path.into(),
            key: key.clone(),
            message: "belongs in CheckpointMeta::preprocessing, not among the extra entries".into(),
        });
    }
    let mut metadata: HashMap<String, String> = meta.extra.clone().into_iter().collect();
    if let Some(prep) = &meta.preprocessing {
        prep.validate().map_err(|(key, message)| ModelError::Metadata {
            path: path.into(),
            key: key.into(),
            message,
        })?;
        metadata.extend(prep.to_metadata());
    }
    metadata.insert(FORMAT_KEY.into(), FORMAT.into());
    metadata.insert(CONFIG_KEY.into(), serde_json::to_string(&meta.config).expect("config serialises"));
    metadata.insert(CLASS_NAMES_KEY.into(), serde_json::to_string(&meta.class_names).expect("names serialise"));
    // Streamed to the file tensor by tensor: the file is never built whole in memory beside
    // the tensors it holds.
    commit_file(path, |tmp| {
        safetensors::serialize_to_file(tensors.iter(), Some(metadata), tmp)
            .map_err(|e| ModelError::Safetensors { path: path.into(), message: e.to_string() })
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    commit_file(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| ModelError::io(tmp, e)))
}

/// Writes `path` atomically with `write`, which fills a temporary file beside it: the file is
/// synced, renamed over `path` (the one step that commits it) and the rename made durable. On
/// an error the temporary file is removed and `path` is untouched.
pub fn commit_file(path: &Path, write: impl FnOnce(&Path) -> Result<(), ModelError>) -> Result<(), ModelError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = write(&tmp).and_then(|()| {
        let file = std::fs::File::open(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
        file.sync_all().map_err(|e| ModelError::io(&tmp, e))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))?;
    // Make the rename itself durable; not every platform lets a directory be opened.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a checkpoint: tensors onto `device`, and its metadata.
pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Checkpoint, ModelError> {
    let path = path.as_ref();
    let bytes = map_file(path)?;
    from_bytes(&bytes, path, device)
}

/// The bytes of the file at `path`, memory-mapped: pages are read as the tensors are made of
/// them, and the file is never held whole in memory beside them.
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap, ModelError> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the map is only read, while the tensors are copied out of it, and dropped right
    // after. The hazard of a map is another process changing or truncating the file meanwhile;
    // this project never writes a file in place (every write renames a new file over the old
    // one, whose mapped inode stays intact), and a loader cannot guard against other writers.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))
}

/// [`load`] of the bytes of a file; `path` names it in errors. Every field of the metadata is
/// checked before anything the size of the config is allocated.
pub fn from_bytes(bytes: &[u8], path: &Path, device: &Device) -> Result<Checkpoint, ModelError> {
    let (meta, st) = parse(bytes, path)?;
    let (mut tensors, mut training) = (HashMap::new(), HashMap::new());
    for (name, view) in st.tensors() {
        let tensor = view.load(device)?;
        if name.starts_with(TRAINING_PREFIX) {
            training.insert(name, tensor)
        } else {
            tensors.insert(name, tensor)
        };
    }
    Ok(Checkpoint { path: path.into(), meta, tensors, training })
}

/// The metadata of the checkpoint at `path`, checked as [`load`] checks it, without reading
/// its tensors.
pub fn read_meta(path: impl AsRef<Path>) -> Result<CheckpointMeta, ModelError> {
    let path = path.as_ref();
    let bytes = map_file(path)?;
    Ok(parse(&bytes, path)?.0)
}

/// The checked metadata of a checkpoint's bytes, and the tensors' index.
fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<(CheckpointMeta, safetensors::SafeTensors<'a>), ModelError> {
    let bad = |e: safetensors::SafeTensorError| ModelError::Safetensors { path: path.into(), message: e.to_string() };
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(bad)?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(bad)?;
    let mut metadata = header.metadata().clone().unwrap_or_default();
    let mut take = |key: &str| {
        metadata.remove(key).ok_or_else(|| ModelError::Metadata {
            path: path.into(),
            key: key.into(),
            message: "missing: this is not a vit-rs checkpoint (use the Hugging Face import for other files)".into(),
        })
    };
    let format = take(FORMAT_KEY)?;
    if format != FORMAT {
        return Err(ModelError::Metadata {
            path: path.into(),
            key: FORMAT_KEY.into(),
            message: format!("expected `{FORMAT}`, found `{format}`"),
        });
    }
    let config: VitConfig = serde_json::from_str(&take(CONFIG_KEY)?).map_err(|e| ModelError::Metadata {
        path: path.into(),
        key: CONFIG_KEY.into(),
        message: e.to_string(),
    })?;
    let class_names: Vec<String> = serde_json::from_str(&take(CLASS_NAMES_KEY)?).map_err(|e| ModelError::Metadata {
        path: path.into(),
        key: CLASS_NAMES_KEY.into(),
        message: e.to_string(),
    })?;
    config.validate().map_err(|e| ModelError::Metadata {
        path: path.into(),
        key: CONFIG_KEY.into(),
        message: e.to_string(),
    })?;
    if class_names.len() != config.num_classes {
        return Err(ModelError::Metadata {
            path: path.into(),
            key: CLASS_NAMES_KEY.into(),
            message: format!("holds {} names, but the config has {} classes", class_names.len(), config.num_classes),
        });
    }
    // A config that describes far more parameters than the file's model tensors hold (an absurd
    // size, say) fails here, before anything the size of the config is allocated; a smaller
    // disagreement is left to `assign`, which names the tensor that is missing or misshapen.
    let in_file: u64 = st
        .tensors()
        .iter()
        .filter(|(name, _)| !name.starts_with(TRAINING_PREFIX))
        .map(|(_, view)| view.shape().iter().product::<usize>() as u64)
        .sum();
    let expected = config.parameter_count().unwrap_or(u64::MAX);
    if expected > in_file.saturating_mul(2).saturating_add(1 << 20) {
        return Err(ModelError::Metadata {
            path: path.into(),
            key: CONFIG_KEY.into(),
            message: format!(
                "describes a model of {expected} parameters, but the file's tensors hold {in_file} values"
            ),
        });
    }
    let mut extra: BTreeMap<String, String> = metadata.into_iter().collect();
    let input = (config.image_size[0], config.image_size[1]);
    let preprocessing = Preprocessing::from_metadata(&extra, input, config.channels)
        .map_err(|(key, message)| ModelError::Metadata { path: path.into(), key: key.into(), message })?;
    extra.retain(|key, _| !PREPROCESSING_KEYS.contains(&key.as_str()));
    let meta = CheckpointMeta { config, class_names, preprocessing, extra };
    Ok((meta, st))
}

/// Copies `tensors` into the variables of `varmap`, checking that the names and shapes match
/// exactly: a missing, unexpected or misshapen tensor is an error naming it and both shapes.
pub fn assign(varmap: &VarMap, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<(), ModelError> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        if !data.contains_key(name) {
            return Err(ModelError::UnexpectedTensor {
                path: path.into(),
                name: name.clone(),
                found: tensors[name].dims().to_vec(),
            });
        }
    }
    let mut params: Vec<(&String, &candle_core::Var)> = data.iter().collect();
    params.sort_by(|a, b| a.0.cmp(b.0));
    for (name, var) in params {
        let Some(t) = tensors.get(name) else {
            return Err(ModelError::MissingTensor {
                path: path.into(),
                name: name.clone(),
                expected: var.dims().to_vec(),
            });
        };
        if t.dims() != var.dims() {
            return Err(ModelError::ShapeMismatch {
                path: path.into(),
                name: name.clone(),
                expected: var.dims().to_vec(),
                found: t.dims().to_vec(),
            });
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

impl Vit {
    /// Loads a trainable model from a checkpoint written by [`save`]: the model, the store
    /// holding its parameters (to train or save again) and the checkpoint's metadata.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<(Vit, SeededVarMap, CheckpointMeta), ModelError> {
        let Checkpoint { path, meta, tensors, .. } = load(path, device)?;
        let (model, store) = Vit::from_tensors(&meta.config, tensors, &path, device)?;
        Ok((model, store, meta))
    }

    /// The trainable model `cfg` describes with its parameters taken from `tensors` (by this
    /// crate's names), each copied into its variable and dropped as the model is built, so
    /// that the weights are held about once. A tensor the model lacks, a parameter without a
    /// tensor, or one of another shape is an error naming it and the file at `path`.
    pub fn from_tensors(
        cfg: &VitConfig,
        tensors: HashMap<String, Tensor>,
        path: &Path,
        device: &Device,
    ) -> Result<(Vit, SeededVarMap), ModelError> {
        let store = SeededVarMap::from_tensors(0, tensors);
        let model = Vit::new(cfg, store.var_builder(DType::F32, device), SharedRng::new(0))?;
        let outcome = store.finish_source().expect("a store made from tensors");
        if let Some((name, found)) = outcome.unused.into_iter().next() {
            return Err(ModelError::UnexpectedTensor { path: path.into(), name, found });
        }
        let missing = outcome.drawn.into_iter().map(|(name, expected)| (name, expected, None));
        let misshapen = outcome.mismatched.into_iter().map(|(name, expected, found)| (name, expected, Some(found)));
        let mut problems: Vec<_> = missing.chain(misshapen).collect();
        problems.sort();
        match problems.into_iter().next() {
            None => Ok((model, store)),
            Some((name, expected, None)) => Err(ModelError::MissingTensor { path: path.into(), name, expected }),
            Some((name, expected, Some(found))) => {
                Err(ModelError::ShapeMismatch { path: path.into(), name, expected, found })
            }
        }
    }

    /// The trainable model of a checkpoint already read with [`load`].
    pub fn from_checkpoint(checkpoint: &Checkpoint, device: &Device) -> Result<(Vit, SeededVarMap), ModelError> {
        let store = SeededVarMap::new(0);
        let model = Vit::new(&checkpoint.meta.config, store.var_builder(DType::F32, device), SharedRng::new(0))?;
        assign(store.varmap(), &checkpoint.tensors, &checkpoint.path)?;
        Ok((model, store))
    }
}
