//! How `vit train` shows a run: a line when it starts, a progress bar per epoch, a line per
//! epoch, and `curves.png` redrawn after each epoch.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use vit_train::{EpochEnd, EpochRecord, RunStarted, StepProgress, TrainObserver};

use crate::plot;

/// Renders a run's events on the terminal (or nothing but the curves when `quiet`).
pub struct Progress {
    quiet: bool,
    epochs: usize,
    bar: ProgressBar,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Self { quiet, epochs: 0, bar: ProgressBar::hidden() }
    }
}

impl TrainObserver for Progress {
    fn run_started(&mut self, run: &RunStarted) {
        if self.quiet {
            return;
        }
        let (train, val, test) = run.images;
        println!(
            "training {} on {} ({train} train / {val} validation / {test} test images) on {}; {} parameters; run dir {}",
            run.recipe,
            run.dataset,
            run.device,
            vit_model::group_thousands(run.parameters),
            run.run_dir.display()
        );
        if let Some((epochs, step)) = run.resumed_after {
            println!("resuming after epoch {epochs}, step {step}");
        }
    }

    fn epoch_started(&mut self, epoch: usize, epochs: usize, steps_per_epoch: usize, steps_done: usize) {
        self.epochs = epochs;
        if self.quiet {
            return;
        }
        self.bar = ProgressBar::new(steps_per_epoch as u64);
        self.bar.set_style(
            ProgressStyle::with_template(&format!(
                "epoch {epoch:>3}/{epochs} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}}<{{eta}})"
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        self.bar.set_position(steps_done as u64);
    }

    fn step_finished(&mut self, p: &StepProgress) {
        self.bar.set_message(format!("loss {:.4}  acc {:.4}  {:.0} img/s", p.loss, p.top1, p.images_per_second));
        self.bar.inc(1);
    }

    fn epoch_stopped(&mut self, why: EpochEnd) {
        match why {
            EpochEnd::Interrupted => self.bar.abandon_with_message("interrupted: saving"),
            EpochEnd::Diverged => self.bar.abandon(),
        }
    }

    fn epoch_trained(&mut self) {
        self.bar.finish_and_clear();
    }

    fn epoch_finished(&mut self, history: &[EpochRecord], run_dir: &Path) {
        if let Some(r) = history.last().filter(|_| !self.quiet) {
            let val = match (r.val_loss, r.val_top1, r.val_top5) {
                (Some(loss), Some(top1), Some(top5)) => {
                    format!("val_loss {loss:.4}  val_acc {top1:.4}  val_top5 {top5:.4}")
                }
                _ => "no validation split".to_string(),
            };
            println!(
                "epoch {:>3}/{}  loss {:.4}  acc {:.4}  {val}  lr {:.2e}  {:.0} img/s",
                r.epoch, self.epochs, r.train_loss, r.train_top1, r.learning_rate, r.images_per_second
            );
        }
        let curves = run_dir.join("curves.png");
        if let Err(e) = plot::write_curves(&curves, history) {
            eprintln!("warning: {}: could not draw the curves: {e}", curves.display());
        }
    }
}
