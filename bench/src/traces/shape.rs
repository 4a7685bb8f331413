//! Synthetic invocation traces with the shapes "Serverless in the Wild" (Shahrad et al.,
//! USENIX ATC 2020) reports for Azure Functions: timers, random (Poisson) arrivals at many
//! rates, bursts, and a mix of many services. Seeded, so every run replays the same trace.

use std::fmt;

/// One service's arrival pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// One request every `period` seconds, give or take `jitter`.
    Timer { period: f64, jitter: f64 },
    /// Independent arrivals, `mean` seconds apart on average.
    Poisson { mean: f64 },
    /// Bursts `mean` seconds apart on average, each `size` requests within `spread` seconds.
    Bursts { mean: f64, size: u32, spread: f64 },
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Timer { period, .. } => write!(f, "timer every {}", Span(*period)),
            Shape::Poisson { mean } => write!(f, "Poisson, mean {} apart", Span(*mean)),
            Shape::Bursts { mean, size, .. } => write!(f, "bursts of {size}, mean {} apart", Span(*mean)),
        }
    }
}

/// Seconds as "45s", "5m", "1.5h".
struct Span(f64);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0;
        if seconds >= 3_600.0 {
            write!(f, "{}h", round(seconds / 3_600.0))
        } else if seconds >= 60.0 {
            write!(f, "{}m", round(seconds / 60.0))
        } else {
            write!(f, "{}s", round(seconds))
        }
    }
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// A small deterministic generator (SplitMix64): the same seed, the same trace.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with this mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }

    /// Log-uniform between `low` and `high`.
    pub fn log_uniform(&mut self, low: f64, high: f64) -> f64 {
        (low.ln() + self.uniform() * (high.ln() - low.ln())).exp()
    }
}

/// Arrival times (seconds from the start, ascending) of `shape` over `duration` seconds.
pub fn arrivals(shape: Shape, duration: f64, rng: &mut Rng) -> Vec<f64> {
    let mut times = Vec::new();
    match shape {
        Shape::Timer { period, jitter } => {
            // Timers start at a random phase, as deployments do.
            let mut tick = rng.uniform() * period;
            while tick < duration {
                let at = tick + (rng.uniform() * 2.0 - 1.0) * jitter;
                times.push(at.clamp(0.0, duration));
                tick += period;
            }
        }
        Shape::Poisson { mean } => {
            let mut at = rng.exponential(mean);
            while at < duration {
                times.push(at);
                at += rng.exponential(mean);
            }
        }
        Shape::Bursts { mean, size, spread } => {
            let mut at = rng.exponential(mean);
            while at < duration {
                for _ in 0..size {
                    times.push((at + rng.uniform() * spread).min(duration));
                }
                at += rng.exponential(mean);
            }
        }
    }
    times.sort_by(f64::total_cmp);
    times
}

/// The shapes measured one by one.
pub fn singles() -> Vec<(&'static str, Shape)> {
    vec![
        (
            "timer-45s",
            Shape::Timer {
                period: 45.0,
                jitter: 0.5,
            },
        ),
        (
            "timer-5m",
            Shape::Timer {
                period: 300.0,
                jitter: 2.0,
            },
        ),
        ("poisson-10s", Shape::Poisson { mean: 10.0 }),
        ("poisson-1m", Shape::Poisson { mean: 60.0 }),
        ("poisson-10m", Shape::Poisson { mean: 600.0 }),
        (
            "bursts-10m",
            Shape::Bursts {
                mean: 600.0,
                size: 20,
                spread: 0.2,
            },
        ),
    ]
}

/// `count` services with shapes drawn like the paper's population: half timers (30 s to
/// 30 min), a third random arrivals (5 s to 1 h apart), the rest bursts.
pub fn mix(count: usize, rng: &mut Rng) -> Vec<Shape> {
    (0..count)
        .map(|_| {
            let kind = rng.uniform();
            if kind < 0.5 {
                let period = rng.log_uniform(30.0, 1_800.0);
                Shape::Timer {
                    period,
                    jitter: period * 0.01,
                }
            } else if kind < 0.85 {
                Shape::Poisson {
                    mean: rng.log_uniform(5.0, 3_600.0),
                }
            } else {
                Shape::Bursts {
                    mean: rng.log_uniform(120.0, 3_600.0),
                    size: 2 + (rng.uniform() * 30.0) as u32,
                    spread: 0.5,
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_trace() {
        let shape = Shape::Poisson { mean: 10.0 };
        assert_eq!(
            arrivals(shape, 600.0, &mut Rng::new(7)),
            arrivals(shape, 600.0, &mut Rng::new(7))
        );
        assert_ne!(
            arrivals(shape, 600.0, &mut Rng::new(7)),
            arrivals(shape, 600.0, &mut Rng::new(8))
        );
    }

    #[test]
    fn shapes_have_their_rates() {
        let mut rng = Rng::new(1);
        let hour = 3_600.0;
        let timer = arrivals(
            Shape::Timer {
                period: 45.0,
                jitter: 0.5,
            },
            hour,
            &mut rng,
        );
        assert_eq!(timer.len(), 80);
        assert!(timer.windows(2).all(|w| (w[1] - w[0] - 45.0).abs() <= 1.0));
        let poisson = arrivals(Shape::Poisson { mean: 10.0 }, 10.0 * hour, &mut rng);
        let rate = poisson.len() as f64 / (10.0 * hour);
        assert!((rate - 0.1).abs() < 0.005, "{rate}");
        let bursts = arrivals(
            Shape::Bursts {
                mean: 600.0,
                size: 20,
                spread: 0.2,
            },
            10.0 * hour,
            &mut rng,
        );
        assert_eq!(bursts.len() % 20, 0);
        assert!(bursts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn the_mix_draws_every_kind() {
        let shapes = mix(200, &mut Rng::new(3));
        let timers = shapes.iter().filter(|s| matches!(s, Shape::Timer { .. })).count();
        let bursts = shapes.iter().filter(|s| matches!(s, Shape::Bursts { .. })).count();
        assert!((80..120).contains(&timers), "{timers}");
        assert!((15..50).contains(&bursts), "{bursts}");
    }
}
