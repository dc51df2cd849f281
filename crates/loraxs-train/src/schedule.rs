//! Learning-rate schedules: linear warm-up, then linear decay to zero
//! (Hugging Face's `get_linear_schedule_with_warmup`, the GLUE runs) or
//! cosine decay to zero (`get_cosine_schedule_with_warmup`, the paper's
//! math runs).

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

/// Linear warm-up over `warmup_steps`, then half a cosine down to 0 at
/// `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineSchedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Steps of warm-up.
    pub warmup_steps: usize,
    /// Steps in all.
    pub total_steps: usize,
}

impl CosineSchedule {
    /// A schedule whose warm-up is `warmup_ratio` of `total_steps` (rounded
    /// up, as Hugging Face's `get_warmup_steps`).
    pub fn new(peak: f64, warmup_ratio: f64, total_steps: usize) -> Self {
        Self {
            peak,
            warmup_steps: (warmup_ratio * total_steps as f64).ceil() as usize,
            total_steps,
        }
    }

    /// The learning rate of step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let rest = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / rest as f64).min(1.0);
        self.peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Either schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// [`LinearSchedule`].
    Linear(LinearSchedule),
    /// [`CosineSchedule`].
    Cosine(CosineSchedule),
}

impl Schedule {
    /// The learning rate of step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        match self {
            Schedule::Linear(s) => s.at(step),
            Schedule::Cosine(s) => s.at(step),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_then_follows_half_a_cosine() {
        let s = CosineSchedule::new(4e-3, 0.02, 100);
        assert_eq!(s.warmup_steps, 2);
        assert_eq!(s.at(0), 0.0);
        assert_eq!(s.at(1), 2e-3);
        assert_eq!(s.at(2), 4e-3);
        // Half-way through the decay: half the peak; the end: 0.
        assert!((s.at(51) - 2e-3).abs() < 1e-15);
        assert!(s.at(100).abs() < 1e-18);
    }

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
