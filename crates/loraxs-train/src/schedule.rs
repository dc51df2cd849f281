//! The learning-rate schedule: linear warm-up, then linear decay to zero,
//! as Hugging Face's `get_linear_schedule_with_warmup`.

/// Linear warm-up over `warmup_steps`, then linear decay to 0 at `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearSchedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Steps of warm-up.
    pub warmup_steps: usize,
    /// Steps in all.
    pub total_steps: usize,
}

impl LinearSchedule {
    /// A schedule whose warm-up is `warmup_ratio` of `total_steps` (rounded up,
    /// as Hugging Face's `get_warmup_steps`).
    pub fn new(peak: f64, warmup_ratio: f64, total_steps: usize) -> Self {
        let warmup_steps = (warmup_ratio * total_steps as f64).ceil() as usize;
        Self {
            peak,
            warmup_steps,
            total_steps,
        }
    }

    /// The learning rate of step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let rest = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        self.peak * (self.total_steps.saturating_sub(step) as f64 / rest as f64).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let s = LinearSchedule::new(1.0, 0.1, 100);
        assert_eq!(s.warmup_steps, 10);
        assert_eq!(s.at(0), 0.0);
        assert_eq!(s.at(5), 0.5);
        assert_eq!(s.at(10), 1.0);
        assert!((s.at(55) - 0.5).abs() < 1e-12);
        assert_eq!(s.at(100), 0.0);
        let flat = LinearSchedule::new(2.0, 0.0, 4);
        assert_eq!([flat.at(0), flat.at(1), flat.at(3)], [2.0, 1.5, 0.5]);
    }
}
