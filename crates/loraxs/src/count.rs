//! Parameter counting by group.

use core::ops::{Add, AddAssign};

/// Parameter counts split the way the paper reports them: the adapter's
/// trainable values, the task head's, and everything frozen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamCount {
    /// Trainable adapter values (LoRA-XS: `r²` per module).
    pub adapter: usize,
    /// Trainable task-head values.
    pub head: usize,
    /// Frozen values (base weights, frozen factors, embeddings, norms).
    pub frozen: usize,
}

impl ParamCount {
    /// Only frozen values.
    pub fn frozen(n: usize) -> Self {
        Self {
            frozen: n,
            ..Self::default()
        }
    }

    /// Only head values.
    pub fn head(n: usize) -> Self {
        Self {
            head: n,
            ..Self::default()
        }
    }

    /// Adapter plus head.
    pub fn trainable(&self) -> usize {
        self.adapter + self.head
    }

    /// Everything.
    pub fn total(&self) -> usize {
        self.adapter + self.head + self.frozen
    }
}

impl Add for ParamCount {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self {
            adapter: self.adapter + rhs.adapter,
            head: self.head + rhs.head,
            frozen: self.frozen + rhs.frozen,
        }
    }
}

impl AddAssign for ParamCount {
    fn add_assign(&mut self, rhs: Self) {
        *self = *self + rhs;
    }
}

impl core::iter::Sum for ParamCount {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), Add::add)
    }
}
