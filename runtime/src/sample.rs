//! Choosing the next token: greedy, or temperature with nucleus (top-p) sampling from a seeded
//! generator. The generator is SplitMix64, written here so that a seed gives the same text on
//! every build (general-purpose RNG crates do not promise a stable stream across versions).

#[derive(Clone, Copy, Debug)]
pub struct SamplerSettings {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    pub seed: u64,
}

pub struct Sampler {
    settings: SamplerSettings,
    state: u64,
}

impl Sampler {
    pub fn new(settings: SamplerSettings) -> Sampler {
        Sampler {
            settings,
            state: settings.seed,
        }
    }

    fn next_f32(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    /// The next token given the logits of the last position.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.settings.temperature <= 0.0 {
            return argmax(logits);
        }
        let t = self.settings.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l - max) / t).exp()))
            .collect();
        let total: f32 = probs.iter().map(|p| p.1).sum();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = 0.0;
        let mut n = 0;
        for p in &probs {
            kept += p.1 / total;
            n += 1;
            if kept >= self.settings.top_p {
                break;
            }
        }
        let nucleus = &probs[..n];
        let mass: f32 = nucleus.iter().map(|p| p.1).sum();
        let mut r = self.next_f32() * mass;
        for &(id, p) in nucleus {
            if r < p {
                return id;
            }
            r -= p;
        }
        nucleus[n - 1].0
    }
}

pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_and_top_p_stays_in_the_nucleus() {
        let logits = [0.0, 5.0, 4.9, -3.0];
        let greedy = SamplerSettings {
            temperature: 0.0,
            top_p: 1.0,
            seed: 1,
        };
        assert_eq!(Sampler::new(greedy).pick(&logits), 1);
        let nucleus = SamplerSettings {
            temperature: 1.0,
            top_p: 0.9,
            seed: 7,
        };
        let mut s = Sampler::new(nucleus);
        let picks: Vec<u32> = (0..200).map(|_| s.pick(&logits)).collect();
        assert!(picks.iter().all(|&p| p == 1 || p == 2));
        assert!(picks.contains(&1) && picks.contains(&2));
        let again: Vec<u32> = {
            let mut s = Sampler::new(nucleus);
            (0..200).map(|_| s.pick(&logits)).collect()
        };
        assert_eq!(picks, again, "a seed gives the same stream");
    }
}
