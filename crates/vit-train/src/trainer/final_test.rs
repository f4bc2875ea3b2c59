//! The end of a run: the chosen model (best on validation, else the last epoch's or its moving
//! average) evaluated once on the test set, and `summary.json`.

use vit_model::Vit;

use super::evaluation::evaluate_finite;
use super::observer::TrainObserver;
use super::report::{TrainOutcome, TrainReport};
use super::session::Session;
use crate::TrainError;

impl Session<'_> {
    /// Tests the chosen model and writes the summary.
    pub fn final_test(self, observer: &mut dyn TrainObserver) -> Result<TrainOutcome, TrainError> {
        let (chosen, model_selection) = self.chosen_model()?;
        let t = &self.recipe.train;
        let (data, split) = (&self.data, ("test", t.epochs));
        let test = evaluate_finite(
            &chosen,
            &data.test,
            &data.pipeline,
            t.eval_batch_size,
            &self.device,
            split,
            observer,
            &mut *self.comm,
        )?;
        let selected = data.val.is_some();
        let report = TrainReport {
            model_selection,
            best_epoch: selected.then_some(self.state.best_epoch),
            best_val_top1: selected.then_some(self.state.best_val_top1),
            test_loss: test.loss(),
            test_top1: test.top1(),
            test_top5: test.top5(),
            test_images: test.count,
            test_confusion: test.confusion.clone(),
            wall_seconds: self.state.elapsed_seconds + self.started.elapsed().as_secs_f64(),
            images_per_second: self.state.images_trained as f64 / self.state.train_seconds.max(1e-9),
            run_dir: self.run.path().to_path_buf(),
        };
        if self.root {
            self.run.write_summary(&report)?;
        }
        Ok(TrainOutcome::Finished(report))
    }

    /// The model to test, and how it was chosen, in words.
    fn chosen_model(&self) -> Result<(Vit, String), TrainError> {
        let t = &self.recipe.train;
        if self.data.val.is_some() {
            let what = if t.select_by_ema {
                "the moving average's best validation top-1"
            } else {
                "the best validation top-1"
            };
            let mut message = format!("{what}, epoch {}", self.state.best_epoch);
            if self.recipe.data.validate_on_test {
                message = format!(
                    "{} (data.validate_on_test: chosen on the test set itself, so the test score is optimistic)",
                    message.replace("validation", "test")
                );
            }
            return Ok((Vit::load(self.run.best_path(), &self.device)?.0, message));
        }
        match self.averaged_weights().filter(|_| t.select_by_ema) {
            Some(weights) => {
                let averaged =
                    Vit::from_tensors(&self.cfg, weights.into_iter().collect(), &self.run.last_path(), &self.device)?.0;
                Ok((averaged, "none: no validation split, so the last epoch's moving average is tested".into()))
            }
            None => Ok((self.model.clone(), "none: no validation split, so the last epoch's model is tested".into())),
        }
    }
}
