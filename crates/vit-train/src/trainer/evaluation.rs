//! Evaluation inside a run (validation after each epoch, the final test): each rank evaluates
//! its share of the split and the counts are summed, and NaN or infinite logits are an error.

use std::sync::Arc;

use candle_core::Device;
use vit_data::{Dataset, Pipeline};
use vit_model::Vit;

use super::observer::TrainObserver;
use crate::TrainError;
use crate::distributed::{Collective, shard_rows};
use crate::evaluate::evaluate_rows;
use crate::metrics::Tally;

/// Evaluates `data` for the `(split, epoch)` named, told to `observer` (in data-parallel
/// training, this rank's share of it, the counts summed across ranks: each image is evaluated
/// once in the job), with NaN or infinite logits an error: weights that give them cannot be right.
#[allow(clippy::too_many_arguments)]
pub(super) fn evaluate_finite(
    model: &Vit,
    data: &Arc<Dataset>,
    pipeline: &Pipeline,
    batch_size: usize,
    device: &Device,
    (split, epoch): (&str, usize),
    observer: &mut dyn TrainObserver,
    comm: &mut dyn Collective,
) -> Result<Tally, TrainError> {
    let world = comm.world_size();
    let (first, len) = shard_rows(data.len(), comm.rank(), world);
    observer.evaluation_started(split, len);
    let rows = first..first + len;
    let tally =
        evaluate_rows(model, data, rows, pipeline, batch_size, device, &mut |done| observer.evaluation_progress(done));
    observer.evaluation_finished();
    let mut tally = tally?;
    if world > 1 {
        tally = summed_across_ranks(&tally, comm)?;
    }
    if tally.non_finite > 0 {
        return Err(TrainError::NonFiniteLogits {
            split: data.name.clone(),
            count: tally.non_finite,
            images: tally.count,
            epoch,
        });
    }
    Ok(tally)
}

/// The tally of every rank's share, summed in one all-reduce: the counts in the layout every
/// sum across ranks uses, then the confusion matrix.
fn summed_across_ranks(tally: &Tally, comm: &mut dyn Collective) -> Result<Tally, TrainError> {
    let classes = tally.confusion.len();
    let mut buffer = tally.counts_for_sum().to_vec();
    buffer.extend(tally.confusion.iter().flatten().map(|&n| n as f32));
    comm.all_reduce_sum(&mut buffer)?;
    Ok(Tally::from_sum(&buffer, classes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::Collective;

    /// Rank 0 of two, whose partner holds `other`: an all-reduce adds the partner's buffer.
    struct PairedWith {
        other: Vec<f32>,
    }

    impl Collective for PairedWith {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), TrainError> {
            assert_eq!(buffer.len(), self.other.len(), "the ranks' buffers differ in length");
            buffer.iter_mut().zip(&self.other).for_each(|(b, o)| *b += o);
            Ok(())
        }
        fn all_gather_u64(&mut self, value: u64) -> Result<Vec<u64>, TrainError> {
            Ok(vec![value, value])
        }
        fn barrier(&mut self) -> Result<(), TrainError> {
            Ok(())
        }
    }

    #[test]
    fn the_ranks_shares_of_an_evaluation_sum_to_the_whole() {
        let logits = vec![vec![2.0, 0.0, 1.0], vec![0.0, 3.0, 1.0], vec![0.0, 1.0, 2.0], vec![5.0, 1.0, 0.0]];
        let labels = [0u32, 2, 2, 1];
        let mut whole = Tally::new(3);
        whole.add(&logits, &labels, 0.5);
        let (mut first, mut second) = (Tally::new(3), Tally::new(3));
        first.add(&logits[..1], &labels[..1], 0.25);
        second.add(&logits[1..], &labels[1..], 0.5);
        // What rank 1 sends: its counts, loss sum and confusion matrix, in the same layout.
        second.loss_sum = 1.5;
        let mut other = second.counts_for_sum().to_vec();
        other.extend(second.confusion.iter().flatten().map(|&n| n as f32));
        let summed = summed_across_ranks(&first, &mut PairedWith { other }).unwrap();
        assert_eq!((summed.count, summed.top1, summed.top5, summed.non_finite), (4, 2, 4, 0));
        assert_eq!(summed.confusion, whole.confusion);
        assert_eq!(summed.loss_sum, 0.25 + 1.5);
    }
}
