//! How `vit train` shows a run: a line when it starts, a progress bar per epoch with the time
//! left for the whole run, a line per epoch, and `curves.png` redrawn after each epoch. When
//! standard error is no terminal (nohup, CI, a scheduler's log), where no bar is drawn, a
//! progress line goes to standard output every `log_every` instead.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use vit_train::{EpochEnd, EpochRecord, RunStarted, StepProgress, TrainObserver};

use crate::render::curves;

/// Renders a run's events on the terminal (or nothing but the curves when `quiet`).
pub struct Progress {
    quiet: bool,
    epochs: usize,
    bar: ProgressBar,
    /// `Some(interval)` when progress goes out as lines: standard error is no terminal.
    log_every: Option<Duration>,
    last_line: Instant,
    /// Steps of the whole run, and the first step of this session with when it began.
    total_steps: usize,
    session: Option<(usize, Instant)>,
    evaluation: Option<EvalProgress>,
}

impl Progress {
    /// `log_every`: how often to print a progress line when standard error is no terminal.
    pub fn new(quiet: bool, log_every: Duration) -> Self {
        let log_every = (!std::io::stderr().is_terminal()).then_some(log_every);
        Self {
            quiet,
            epochs: 0,
            bar: ProgressBar::hidden(),
            log_every,
            last_line: Instant::now(),
            total_steps: 0,
            session: None,
            evaluation: None,
        }
    }

    /// `37% of the run, about 3m 10s left`, from this session's pace.
    fn run_position(&self, done: usize) -> String {
        let share = done as f64 / self.total_steps.max(1) as f64;
        let left = match self.session {
            Some((first, since)) if done > first => {
                let per_step = since.elapsed().as_secs_f64() / (done - first) as f64;
                format!(
                    ", about {} left",
                    duration_text(per_step * (self.total_steps - done.min(self.total_steps)) as f64)
                )
            }
            _ => String::new(),
        };
        format!("{:.0}% of the run{left}", 100.0 * share)
    }
}

/// `1h 02m`, `3m 10s`, `42s`.
fn duration_text(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

/// Progress of an evaluation: a bar on a terminal, else a line when it starts and then every
/// `log_every`.
pub struct EvalProgress {
    bar: ProgressBar,
    split: String,
    images: usize,
    log_every: Option<Duration>,
    last_line: Instant,
}

impl EvalProgress {
    /// Evaluation of `images` images of `split` begins (nothing shown when `quiet`).
    pub fn start(split: &str, images: usize, quiet: bool, log_every: Duration) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = if quiet || !terminal {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(images as u64);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{split:>10} [{{bar:30}}] {{pos}}/{{len}} images ({{elapsed}}<{{eta}})"
                ))
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        };
        let log_every = (!quiet && !terminal).then_some(log_every);
        if log_every.is_some() {
            println!("evaluating {split}: {images} images");
        }
        Self { bar, split: split.to_string(), images, log_every, last_line: Instant::now() }
    }

    /// `done` images evaluated.
    pub fn update(&mut self, done: usize) {
        self.bar.set_position(done as u64);
        if self.log_every.is_some_and(|every| self.last_line.elapsed() >= every) {
            println!("{}: {done}/{} images", self.split, self.images);
            self.last_line = Instant::now();
        }
    }

    /// Done: the bar goes away.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl TrainObserver for Progress {
    fn evaluation_started(&mut self, split: &str, images: usize) {
        self.evaluation = Some(EvalProgress::start(split, images, self.quiet, self.log_every.unwrap_or_default()));
    }

    fn evaluation_progress(&mut self, images_done: usize) {
        if let Some(e) = self.evaluation.as_mut() {
            e.update(images_done);
        }
    }

    fn evaluation_finished(&mut self) {
        if let Some(e) = self.evaluation.take() {
            e.finish();
        }
    }

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
        if let Some((path, transfer)) = &run.initialized_from {
            println!("starting from {}: {transfer}", path.display());
        }
        if !run.skipped_images.is_empty() {
            println!("skipped {} images that could not be read (data.skip_unreadable):", run.skipped_images.len());
            for image in run.skipped_images.iter().take(10) {
                println!("  {}: {}", image.path.display(), image.error);
            }
            if run.skipped_images.len() > 10 {
                println!("  ... and {} more", run.skipped_images.len() - 10);
            }
        }
    }

    fn epoch_started(&mut self, epoch: usize, epochs: usize, steps_per_epoch: usize, steps_done: usize) {
        self.epochs = epochs;
        self.total_steps = epochs * steps_per_epoch;
        if self.session.is_none() {
            self.session = Some(((epoch - 1) * steps_per_epoch + steps_done, Instant::now()));
        }
        if self.quiet || self.log_every.is_some() {
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
        let done = (p.epoch - 1) * p.steps_per_epoch + p.steps_done;
        let figures = format!("loss {:.4}  acc {:.4}  {:.0} img/s", p.loss, p.top1, p.images_per_second);
        match self.log_every {
            Some(every) if !self.quiet && self.last_line.elapsed() >= every => {
                println!(
                    "epoch {:>3}/{}  step {}/{}  {figures}  {}",
                    p.epoch,
                    self.epochs,
                    p.steps_done,
                    p.steps_per_epoch,
                    self.run_position(done)
                );
                self.last_line = Instant::now();
            }
            Some(_) => {}
            None => {
                self.bar.set_message(format!("{figures}  {}", self.run_position(done)));
                self.bar.inc(1);
            }
        }
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
        if let Err(e) = curves::write_curves(&curves, history) {
            eprintln!("warning: {}: could not draw the curves: {e}", curves.display());
        }
    }
}
