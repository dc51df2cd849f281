//! The backends a run can use, by name: the one place a backend string
//! becomes a burn type.

use crate::{ExperimentError, Result};

/// A burn backend this crate can train and evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `burn-flex` on the CPU (threads, SIMD): the default.
    Flex,
    /// `burn-ndarray` on the CPU.
    Ndarray,
    /// `burn-cuda` on an NVIDIA GPU (needs the `cuda` feature).
    Cuda,
}

impl BackendKind {
    /// Every backend, by name.
    pub const ALL: [BackendKind; 3] = [BackendKind::Flex, BackendKind::Ndarray, BackendKind::Cuda];

    /// The name used in profiles, records and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this build can run it.
    pub fn compiled_in(self) -> bool {
        self != BackendKind::Cuda || cfg!(feature = "cuda")
    }

    /// Fails with what to do when this build cannot run the backend.
    pub fn check(self) -> Result<Self> {
        if self.compiled_in() {
            Ok(self)
        } else {
            Err(ExperimentError::Backend(format!(
                "the {} backend is not compiled in: rebuild with `--features cuda` \
                 (e.g. `cargo run --release -p loraxs-experiments --features cuda -- reproduce glue --backend cuda`)",
                self.name()
            )))
        }
    }
}

impl core::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for BackendKind {
    type Err = ExperimentError;

    fn from_str(s: &str) -> Result<Self> {
        BackendKind::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                ExperimentError::Backend(format!("unknown backend `{s}`: expected flex, ndarray or cuda"))
            })
    }
}

/// Work generic over the backend, for [`BackendKind::run`]: Rust has no
/// closures generic over a type, so the work is a value with a generic
/// method. Wrap `B` in `burn::backend::Autodiff` inside to train.
pub trait OnBackend {
    /// What the work returns.
    type Output;
    /// Does the work on backend `B` (its default device; `B` has the fused
    /// kernels of `loraxs-kernels`, and so has `Autodiff<B>`).
    fn run<B: loraxs_models::KernelBackend>(self) -> Self::Output;
}

impl BackendKind {
    /// Runs `work` on this backend: the one place a backend name becomes
    /// a burn type.
    pub fn run<W: OnBackend>(self, work: W) -> Result<W::Output> {
        Ok(match self.check()? {
            BackendKind::Flex => work.run::<burn::backend::Flex>(),
            BackendKind::Ndarray => work.run::<burn::backend::NdArray<f32>>(),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => work.run::<burn::backend::Cuda>(),
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => unreachable!("check() refuses backends that are not compiled in"),
        })
    }
}
