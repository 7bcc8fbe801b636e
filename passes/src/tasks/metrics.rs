//! lm-eval-harness's multiple-choice metrics:
//! - `acc`: the choice with the highest summed log-likelihood is the gold one;
//! - `acc_norm`: the same after dividing each log-likelihood by the length of its choice in
//!   characters (`tokens::normalisation_length`);
//! - the standard error of a mean of 0/1 scores: the sample standard deviation over √n, which is
//!   √(p(1-p)/(n-1)); undefined (`None`) for one document;
//! - ties go to the first choice, as `numpy.argmax` does.

use serde::Serialize;

/// One document's scores.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DocScore {
    pub doc_id: u64,
    pub gold: usize,
    /// Summed log-likelihood of each choice's continuation.
    pub loglikelihoods: Vec<f64>,
    /// Characters of each choice (the acc_norm divisor).
    pub lengths: Vec<usize>,
    pub pred: usize,
    pub pred_norm: usize,
}

impl DocScore {
    pub fn new(doc_id: u64, gold: usize, loglikelihoods: Vec<f64>, lengths: Vec<usize>) -> Self {
        let normalised: Vec<f64> = loglikelihoods
            .iter()
            .zip(&lengths)
            .map(|(ll, &len)| ll / len.max(1) as f64)
            .collect();
        DocScore {
            doc_id,
            gold,
            pred: argmax(&loglikelihoods),
            pred_norm: argmax(&normalised),
            loglikelihoods,
            lengths,
        }
    }
}

/// The index of the first largest value (NaN never wins).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}

/// A mean over documents and its standard error.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Metric {
    pub value: f64,
    pub stderr: Option<f64>,
}

impl Metric {
    /// The mean of 0/1 outcomes and lm-eval's `mean_stderr`.
    pub fn of_hits(hits: usize, n: usize) -> Metric {
        let p = hits as f64 / n as f64;
        let stderr = (n > 1).then(|| (p * (1.0 - p) / (n - 1) as f64).sqrt());
        Metric { value: p, stderr }
    }
}

/// acc and acc_norm of a task.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Accuracy {
    pub acc: Metric,
    pub acc_norm: Metric,
}

impl Accuracy {
    pub fn of(scores: &[DocScore]) -> Accuracy {
        let n = scores.len();
        let acc = scores.iter().filter(|s| s.pred == s.gold).count();
        let norm = scores.iter().filter(|s| s.pred_norm == s.gold).count();
        Accuracy {
            acc: Metric::of_hits(acc, n),
            acc_norm: Metric::of_hits(norm, n),
        }
    }
}

/// The unweighted mean over tasks of acc and of acc_norm (each task counts once, whatever its
/// number of documents, as papers average their zero-shot tables).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Average {
    pub acc: f64,
    pub acc_norm: f64,
}

impl Average {
    pub fn of<'a>(tasks: impl IntoIterator<Item = &'a Accuracy>) -> Average {
        let (mut acc, mut norm, mut n) = (0.0, 0.0, 0usize);
        for a in tasks {
            acc += a.acc.value;
            norm += a.acc_norm.value;
            n += 1;
        }
        let n = n.max(1) as f64;
        Average {
            acc: acc / n,
            acc_norm: norm / n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[f64::NAN, -5.0, -6.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }

    #[test]
    fn normalisation_can_change_the_prediction() {
        // " no" is likelier in total, but " yes indeed" per character.
        let s = DocScore::new(7, 0, vec![-10.0, -4.0], vec![10, 2]);
        assert_eq!((s.pred, s.pred_norm), (1, 0));
    }

    #[test]
    fn stderr_is_the_sample_standard_error_of_the_hits() {
        // 3 hits of 4: outcomes 1,1,1,0; mean 0.75; sample variance 0.25; stderr 0.25.
        let m = Metric::of_hits(3, 4);
        let outcomes = [1.0, 1.0, 1.0, 0.0];
        let var = outcomes
            .iter()
            .map(|x: &f64| (x - 0.75).powi(2))
            .sum::<f64>()
            / 3.0;
        assert_eq!(m.value, 0.75);
        assert!((m.stderr.unwrap() - (var / 4.0).sqrt()).abs() < 1e-15);
        assert_eq!(Metric::of_hits(1, 1).stderr, None);
    }

    #[test]
    fn accuracy_counts_hits_and_the_average_weighs_tasks_equally() {
        let a = Accuracy::of(&[
            DocScore::new(0, 0, vec![-1.0, -2.0], vec![1, 1]),
            DocScore::new(1, 1, vec![-1.0, -2.0], vec![1, 100]),
        ]);
        assert_eq!(a.acc.value, 0.5);
        assert_eq!(a.acc_norm.value, 1.0);
        let b = Accuracy::of(&[DocScore::new(0, 1, vec![-1.0, -2.0], vec![1, 1])]);
        let avg = Average::of([&a, &b]);
        assert_eq!((avg.acc, avg.acc_norm), (0.25, 0.5));
    }
}
