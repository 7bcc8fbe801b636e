//! The multiple-choice knapsack: each module takes exactly one of its choices (a bit width, with
//! its bytes and its cost); minimise the summed cost with the summed bytes within a budget.
//!
//! Solved exactly by dynamic programming over a grid of sizes, once for every capacity up to the
//! largest budget, so all budgets share one solve. Sizes are measured above each item's smallest
//! choice, in units of the greatest common divisor of those differences: with the runtime's
//! formats that unit is a few hundred bytes and the grid is exact. Only when the grid would pass
//! `max_cells` is the unit coarsened; sizes are then rounded *up*, so a selection never exceeds
//! its budget (it may leave up to one unit per item unused).

/// One way to store one item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub bytes: u64,
    pub cost: f64,
}

/// A selection: the chosen index for each item, with its exact bytes and cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub picks: Vec<usize>,
    pub bytes: u64,
    pub cost: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KnapsackError {
    #[error("item {0} has no choices")]
    NoChoices(usize),
    #[error("item {0} has more than 255 choices")]
    TooManyChoices(usize),
    #[error("item {item}: cost {cost} is not a finite number")]
    BadCost { item: usize, cost: f64 },
}

/// The solved knapsack for every capacity from the smallest selection up to `max_bytes`.
pub struct Knapsack {
    items: Vec<Vec<Choice>>,
    /// Grid unit in bytes.
    unit: u64,
    /// Bytes of the selection that takes every item's smallest choice.
    min_bytes: u64,
    /// units[i][k]: grid units of choice k of item i above the item's smallest choice.
    units: Vec<Vec<usize>>,
    /// pick[i][c]: the choice of item i in the best selection of items 0..=i within c units.
    pick: Vec<Vec<u8>>,
    /// best[c]: the least cost of all items within c units.
    best: Vec<f64>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn check(items: &[Vec<Choice>]) -> Result<(), KnapsackError> {
    for (i, choices) in items.iter().enumerate() {
        if choices.is_empty() {
            return Err(KnapsackError::NoChoices(i));
        }
        if choices.len() > 255 {
            return Err(KnapsackError::TooManyChoices(i));
        }
        if let Some(c) = choices.iter().find(|c| !c.cost.is_finite()) {
            return Err(KnapsackError::BadCost {
                item: i,
                cost: c.cost,
            });
        }
    }
    Ok(())
}

fn smallest(choices: &[Choice]) -> u64 {
    choices.iter().map(|c| c.bytes).min().unwrap_or(0)
}

/// The grid unit: the gcd of every choice's bytes above its item's smallest, coarsened only if
/// `span` bytes would need more than `max_cells` cells.
fn grid_unit(items: &[Vec<Choice>], span: u64, max_cells: usize) -> u64 {
    let exact = items
        .iter()
        .flat_map(|cs| {
            let min = smallest(cs);
            cs.iter().map(move |c| c.bytes - min)
        })
        .fold(0, gcd)
        .max(1);
    let cells = span / exact + 1;
    if cells <= max_cells as u64 {
        exact
    } else {
        span.div_ceil(max_cells.max(2) as u64 - 1)
    }
}

impl Knapsack {
    /// Solves for every budget up to `max_bytes` with a grid of at most `max_cells` sizes.
    pub fn solve(
        items: Vec<Vec<Choice>>,
        max_bytes: u64,
        max_cells: usize,
    ) -> Result<Knapsack, KnapsackError> {
        check(&items)?;
        let min_bytes: u64 = items.iter().map(|cs| smallest(cs)).sum();
        let max_useful: u64 = items
            .iter()
            .map(|cs| cs.iter().map(|c| c.bytes).max().unwrap_or(0))
            .sum();
        let span = max_bytes.min(max_useful).saturating_sub(min_bytes);
        let unit = grid_unit(&items, span, max_cells);
        let cells = (span / unit) as usize + 1;
        let units: Vec<Vec<usize>> = items
            .iter()
            .map(|cs| {
                let min = smallest(cs);
                cs.iter()
                    .map(|c| (c.bytes - min).div_ceil(unit) as usize)
                    .collect()
            })
            .collect();
        let mut k = Knapsack {
            items,
            unit,
            min_bytes,
            units,
            pick: vec![],
            best: vec![0.0; cells],
        };
        for i in 0..k.items.len() {
            k.add_item(i);
        }
        Ok(k)
    }

    /// One DP step: best[c] over items 0..=i from best over items 0..i. Choices are tried from
    /// the fewest units up and only a strictly lower cost replaces one, so ties go to the
    /// smaller choice and the result is deterministic.
    fn add_item(&mut self, i: usize) {
        let mut order: Vec<usize> = (0..self.items[i].len()).collect();
        order.sort_by_key(|&c| (self.units[i][c], self.items[i][c].bytes));
        let cells = self.best.len();
        let mut next = vec![f64::INFINITY; cells];
        let mut pick = vec![0u8; cells];
        for c in 0..cells {
            for &choice in &order {
                let u = self.units[i][choice];
                if u > c {
                    break;
                }
                let v = self.best[c - u] + self.items[i][choice].cost;
                if v < next[c] {
                    next[c] = v;
                    pick[c] = choice as u8;
                }
            }
        }
        self.best = next;
        self.pick.push(pick);
    }

    /// Bytes of the smallest possible selection.
    pub fn min_bytes(&self) -> u64 {
        self.min_bytes
    }

    /// Whether the grid is exact (no rounding of sizes).
    pub fn grid_unit(&self) -> u64 {
        self.unit
    }

    /// The least-cost selection within `budget` bytes; None below the smallest selection.
    /// Budgets above the solved range are treated as its top.
    pub fn best_within(&self, budget: u64) -> Option<Selection> {
        let extra = budget.checked_sub(self.min_bytes)?;
        let mut c = ((extra / self.unit) as usize).min(self.best.len() - 1);
        let mut picks = vec![0; self.items.len()];
        for i in (0..self.items.len()).rev() {
            let choice = self.pick[i][c] as usize;
            picks[i] = choice;
            c -= self.units[i][choice];
        }
        let bytes = self.bytes_of(&picks);
        let cost = picks
            .iter()
            .enumerate()
            .map(|(i, &k)| self.items[i][k].cost)
            .sum();
        Some(Selection { picks, bytes, cost })
    }

    fn bytes_of(&self, picks: &[usize]) -> u64 {
        picks
            .iter()
            .enumerate()
            .map(|(i, &k)| self.items[i][k].bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every selection, by enumeration: the least cost within `budget`.
    fn brute_force(items: &[Vec<Choice>], budget: u64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut picks = vec![0usize; items.len()];
        loop {
            let bytes: u64 = picks
                .iter()
                .enumerate()
                .map(|(i, &k)| items[i][k].bytes)
                .sum();
            let cost: f64 = picks
                .iter()
                .enumerate()
                .map(|(i, &k)| items[i][k].cost)
                .sum();
            if bytes <= budget && best.is_none_or(|b| cost < b) {
                best = Some(cost);
            }
            // Next combination, odometer style.
            let mut i = 0;
            while i < items.len() {
                picks[i] += 1;
                if picks[i] < items[i].len() {
                    break;
                }
                picks[i] = 0;
                i += 1;
            }
            if i == items.len() {
                return best;
            }
        }
    }

    /// A fixed pseudo-random table (seeded), so failures reproduce.
    fn random_items(seed: u64, n: usize, k: usize) -> Vec<Vec<Choice>> {
        let mut rng = paretoqc_runtime::testgen::Lcg(seed);
        (0..n)
            .map(|_| {
                (0..k)
                    .map(|_| Choice {
                        bytes: 10 + rng.draw() % 90,
                        cost: (rng.draw() % 1000) as f64 / 100.0,
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_on_every_budget() {
        for seed in 0..40 {
            let items = random_items(seed, 5, 2 + (seed as usize % 3));
            let max: u64 = items
                .iter()
                .map(|cs| cs.iter().map(|c| c.bytes).max().unwrap())
                .sum();
            let k = Knapsack::solve(items.clone(), max, 1 << 16).unwrap();
            for budget in 0..=max + 5 {
                let want = brute_force(&items, budget);
                let got = k.best_within(budget);
                match (want, &got) {
                    (None, None) => {}
                    (Some(w), Some(g)) => {
                        assert!(
                            (w - g.cost).abs() < 1e-9,
                            "seed {seed} budget {budget}: {w} vs {}",
                            g.cost
                        );
                        assert!(g.bytes <= budget, "seed {seed}: over budget");
                    }
                    _ => panic!("seed {seed} budget {budget}: {want:?} vs {got:?}"),
                }
            }
        }
    }

    #[test]
    fn a_known_optimum() {
        // Two modules, widths (bytes, cost): the best within 9 bytes is (5, 1.0) + (4, 0.5):
        // the cheapest pair that fits; (6, 0.1) + (4, 0.5) needs 10.
        let items = vec![
            vec![
                Choice {
                    bytes: 2,
                    cost: 5.0,
                },
                Choice {
                    bytes: 5,
                    cost: 1.0,
                },
                Choice {
                    bytes: 6,
                    cost: 0.1,
                },
            ],
            vec![
                Choice {
                    bytes: 1,
                    cost: 3.0,
                },
                Choice {
                    bytes: 4,
                    cost: 0.5,
                },
            ],
        ];
        let k = Knapsack::solve(items, 20, 1000).unwrap();
        let s = k.best_within(9).unwrap();
        assert_eq!((s.picks.clone(), s.bytes), (vec![1, 1], 9));
        assert!((s.cost - 1.5).abs() < 1e-12);
        assert_eq!(k.min_bytes(), 3);
        assert_eq!(k.best_within(2), None);
        assert_eq!(k.best_within(10).unwrap().picks, vec![2, 1]);
    }

    #[test]
    fn a_coarse_grid_never_exceeds_the_budget() {
        let items = random_items(7, 8, 4);
        let max: u64 = items
            .iter()
            .map(|cs| cs.iter().map(|c| c.bytes).max().unwrap())
            .sum();
        let k = Knapsack::solve(items.clone(), max, 16).unwrap();
        assert!(k.grid_unit() > 1);
        for budget in k.min_bytes()..=max {
            let s = k.best_within(budget).unwrap();
            assert!(s.bytes <= budget, "budget {budget}: {} bytes", s.bytes);
            let exact = brute_force(&items, budget).unwrap();
            assert!(s.cost >= exact - 1e-9);
        }
    }

    #[test]
    fn ties_prefer_the_smaller_choice() {
        let items = vec![vec![
            Choice {
                bytes: 4,
                cost: 1.0,
            },
            Choice {
                bytes: 2,
                cost: 1.0,
            },
        ]];
        let k = Knapsack::solve(items, 10, 100).unwrap();
        assert_eq!(k.best_within(10).unwrap().picks, vec![1]);
    }

    #[test]
    fn bad_items_are_errors() {
        assert_eq!(
            Knapsack::solve(vec![vec![]], 10, 10).err(),
            Some(KnapsackError::NoChoices(0))
        );
        let nan = vec![vec![Choice {
            bytes: 1,
            cost: f64::NAN,
        }]];
        assert!(matches!(
            Knapsack::solve(nan, 10, 10),
            Err(KnapsackError::BadCost { .. })
        ));
    }
}
