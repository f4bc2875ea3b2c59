//! The data of a run: the splits as the model takes them, the validation split held out, and
//! the normaliser (inherited or fitted).

use std::path::Path;
use std::sync::Arc;

use vit_data::augment::Normalizer;
use vit_data::{Dataset, FolderOptions, Pipeline, SkippedImage, load_splits_with};
use vit_model::VitConfig;

use crate::TrainError;
use crate::evaluate::check_fits;
use crate::recipe::Recipe;

/// The prepared data of a run.
pub(super) struct Data {
    pub train: Arc<Dataset>,
    /// `None` without a validation split: no model selection, the last epoch's model is tested.
    pub val: Option<Arc<Dataset>>,
    pub test: Arc<Dataset>,
    pub pipeline: Pipeline,
    /// Images left out as unreadable (with `data.skip_unreadable`).
    pub skipped: Vec<SkippedImage>,
}

/// The training and test splits of `recipe`'s data set as a model of `cfg` takes them (its
/// classes kept, when the recipe keeps some), from `data_dir`, else the recipe's, else
/// `VIT_DATA_DIR`; and the images skipped as unreadable, when the recipe allows it.
pub fn load_recipe_splits(
    recipe: &Recipe,
    cfg: &VitConfig,
    data_dir: Option<&Path>,
) -> Result<(Dataset, Dataset, Vec<SkippedImage>), TrainError> {
    let size = (cfg.image_size[0], cfg.image_size[1]);
    let dir = data_dir.or(recipe.data.dir.as_deref());
    let options = FolderOptions { skip_unreadable: recipe.data.skip_unreadable, stream: recipe.data.stream };
    let (mut train, mut test, skipped) = load_splits_with(&recipe.data.dataset, dir, size, cfg.channels, &options)?;
    if let Some(classes) = &recipe.data.classes {
        (train, test) = (train.keep_classes(classes)?, test.keep_classes(classes)?);
    }
    Ok((train, test, skipped))
}

/// The run's data; `normalizer` given (inherited from the weights the run starts from, or the
/// run's own on resume) or else fitted to the training split.
pub(super) fn prepare_data(
    recipe: &Recipe,
    cfg: &VitConfig,
    data_dir: Option<&Path>,
    normalizer: Option<Normalizer>,
) -> Result<Data, TrainError> {
    let size = (cfg.image_size[0], cfg.image_size[1]);
    let (mut train, test, skipped) = load_recipe_splits(recipe, cfg, data_dir)?;
    if let Some(limit) = recipe.data.limit_train {
        let keep: Vec<usize> = (0..limit.min(train.len())).collect();
        train = train.select(&keep, train.name.clone());
    }
    check_fits(&train, cfg)?;
    check_fits(&test, cfg)?;
    // The test split is never used to choose a model (unless a time-to-accuracy recipe asks
    // for it by name): without a validation split there is no choice to make, and the last
    // epoch's model is the one tested.
    let test = Arc::new(test);
    let (train, val) = if recipe.data.validate_on_test {
        (train, Some(test.clone()))
    } else if recipe.data.validation_split > 0.0 {
        let (train, val) = train.split_validation(recipe.data.validation_split, recipe.train.seed)?;
        (train, Some(Arc::new(val)))
    } else {
        (train, None)
    };
    let normalizer = match normalizer {
        Some(n) => n,
        None => Normalizer::fit(&train)?,
    };
    Ok(Data { train: Arc::new(train), val, test, pipeline: Pipeline { size, normalizer }, skipped })
}
