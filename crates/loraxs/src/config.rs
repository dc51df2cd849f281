//! The one description of an adapter: method, rank, scaling, targets and
//! initialisation. It is written verbatim into every adapter file.

use loraxs_svd::SvdMethod;
use serde::{Deserialize, Serialize};

use crate::AdapterError;
use crate::method::{MethodSpec, ModuleShape};
use crate::targets::TargetModules;

/// The fine-tuning method applied to each targeted linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// LoRA-XS: frozen SVD factors `B = U_r`, `A = Σ_r V_rᵀ` around a
    /// trainable `r × r` matrix `R`. `r²` trainable values per module.
    LoraXs,
    /// LoRA (Hu et al. 2021): trainable `A` (Kaiming-uniform) and `B`
    /// (zeros). `r (in + out)` trainable values per module.
    Lora,
    /// VeRA (Kopiczko et al. 2024): frozen shared random `A`, `B`; trainable
    /// scaling vectors `d` (length `r`) and `b` (length `out`).
    Vera,
    /// Full fine-tuning: the targeted linear layers themselves train.
    Full,
}

impl Method {
    /// Every method, in the order tables list them.
    pub const ALL: [Method; 4] = [Method::Full, Method::Lora, Method::Vera, Method::LoraXs];

    /// The method's parameter arithmetic and file layout, implemented
    /// beside its layer (`xs.rs`, `lora.rs`, `vera.rs`, `full.rs`).
    pub fn spec(self) -> &'static dyn MethodSpec {
        match self {
            Method::LoraXs => &crate::xs::LoraXsSpec,
            Method::Lora => &crate::lora::LoraSpec,
            Method::Vera => &crate::vera::VeraSpec,
            Method::Full => &crate::full::FullSpec,
        }
    }

    /// The stable name used in files and on the command line.
    pub fn name(self) -> &'static str {
        self.spec().name()
    }

    /// Trainable values one module of shape `in → out` gets at `rank`.
    ///
    /// This needs no weights, which is what lets `cargo xtask params` print
    /// the paper's table for models that are not on disk.
    pub fn trainable_per_module(self, d_in: usize, d_out: usize, rank: usize, bias: bool) -> usize {
        self.spec()
            .trainable_values(ModuleShape::new(d_in, d_out, bias), rank)
    }
}

impl core::fmt::Display for Method {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for Method {
    type Err = AdapterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s || m.spec().aliases().contains(&s))
            .ok_or_else(|| AdapterError::InvalidConfig {
                field: "method",
                reason: format!(
                    "`{s}` is unknown: expected {}",
                    Method::ALL.map(Method::name).join(", ")
                ),
            })
    }
}

/// How the trainable LoRA-XS matrix `R` starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum RInit {
    /// `N(0, std²)`; the paper uses `std = 1e-5`.
    Gaussian {
        /// Standard deviation.
        std: f64,
    },
    /// All zeros: the adapted model starts exactly at the base model.
    Zeros,
}

impl Default for RInit {
    fn default() -> Self {
        RInit::Gaussian { std: 1e-5 }
    }
}

/// Where the frozen LoRA-XS factors `A` and `B` come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Factors {
    /// Truncated SVD of the pretrained weight (the method).
    #[default]
    Svd,
    /// Kaiming-uniform random `A` and `B` (the paper's ablation).
    Random,
}

/// Configuration of an adapter: what to adapt and how.
///
/// ```
/// use loraxs::{AdapterConfig, Method};
/// let config = AdapterConfig::lora_xs(16).with_alpha(16.0);
/// assert_eq!(config.method, Method::LoraXs);
/// assert_eq!(config.scale(), 1.0);
/// let json = serde_json::to_string(&config).unwrap();
/// assert_eq!(serde_json::from_str::<AdapterConfig>(&json).unwrap(), config);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// The method.
    pub method: Method,
    /// The rank `r` (LoRA-XS, LoRA, VeRA); ignored by full fine-tuning.
    pub rank: usize,
    /// Scaling numerator: the update is multiplied by `alpha / rank`
    /// (LoRA-XS, LoRA). VeRA's learned vectors make it unnecessary there.
    pub alpha: f64,
    /// Which linear layers to adapt, PEFT style.
    pub targets: TargetModules,
    /// LoRA-XS: initialisation of `R`.
    #[serde(default)]
    pub r_init: RInit,
    /// LoRA-XS: SVD factors or the random ablation.
    #[serde(default)]
    pub factors: Factors,
    /// LoRA-XS: SVD algorithm ([`SvdMethod::name`] format).
    #[serde(default = "default_svd_method", with = "svd_method_serde")]
    pub svd_method: SvdMethod,
    /// Dropout on the adapter input (LoRA, VeRA), as in PEFT.
    #[serde(default)]
    pub dropout: f64,
    /// Seed for every random initialisation; each module derives its own
    /// stream from this and its name, so results do not depend on order.
    #[serde(default)]
    pub seed: u64,
}

fn default_svd_method() -> SvdMethod {
    SvdMethod::Auto
}

mod svd_method_serde {
    use loraxs_svd::SvdMethod;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(method: &SvdMethod, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&method.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SvdMethod, D::Error> {
        let name = String::deserialize(d)?;
        SvdMethod::from_name(&name).ok_or_else(|| {
            D::Error::custom(format!(
                "unknown SVD method `{name}`: expected auto, exact, krylov or randomized(...)"
            ))
        })
    }
}

impl AdapterConfig {
    /// A configuration for `method` at `rank` with the paper's GLUE targets
    /// and `alpha = 16`.
    pub fn new(method: Method, rank: usize) -> Self {
        Self {
            method,
            rank,
            alpha: 16.0,
            targets: TargetModules::paper_glue(),
            r_init: RInit::default(),
            factors: Factors::default(),
            svd_method: SvdMethod::Auto,
            dropout: 0.0,
            seed: 0,
        }
    }

    /// LoRA-XS at `rank` with the paper's defaults.
    pub fn lora_xs(rank: usize) -> Self {
        Self::new(Method::LoraXs, rank)
    }

    /// LoRA at `rank` on `query` and `value` (the usual LoRA setting).
    pub fn lora(rank: usize) -> Self {
        Self::new(Method::Lora, rank).with_targets(TargetModules::new(["query", "value"]))
    }

    /// VeRA at `rank` on the paper's GLUE targets.
    pub fn vera(rank: usize) -> Self {
        Self::new(Method::Vera, rank)
    }

    /// Full fine-tuning of the targeted layers.
    pub fn full() -> Self {
        Self::new(Method::Full, 0)
    }

    /// The named presets the experiment runner and command lines use:
    /// `lora-xs`, `lora-xs-random` (the paper's ablation: random instead of
    /// SVD factors), `lora`, `vera` and `full`, each as the constructor of
    /// the same name sets it up.
    ///
    /// ```
    /// use loraxs::{AdapterConfig, Factors, Method};
    /// let c = AdapterConfig::preset("lora-xs-random", 8).unwrap();
    /// assert_eq!((c.method, c.rank, c.factors), (Method::LoraXs, 8, Factors::Random));
    /// assert_eq!(c.preset_name(), "lora-xs-random");
    /// assert!(AdapterConfig::preset("dora", 8).unwrap_err().to_string().contains("lora-xs-random"));
    /// ```
    pub fn preset(name: &str, rank: usize) -> Result<Self, AdapterError> {
        Ok(match name {
            "lora-xs-random" => Self::lora_xs(rank).with_factors(Factors::Random),
            _ => match name.parse::<Method>() {
                Ok(Method::LoraXs) => Self::lora_xs(rank),
                Ok(Method::Lora) => Self::lora(rank),
                Ok(Method::Vera) => Self::vera(rank),
                Ok(Method::Full) => Self::full(),
                Err(_) => {
                    return Err(AdapterError::InvalidConfig {
                        field: "method",
                        reason: format!(
                            "`{name}` is unknown: expected one of {}",
                            Self::PRESETS.join(", ")
                        ),
                    });
                }
            },
        })
    }

    /// The names [`AdapterConfig::preset`] accepts.
    pub const PRESETS: [&'static str; 5] = ["lora-xs", "lora-xs-random", "lora", "vera", "full"];

    /// The preset name this config corresponds to (the method's name, or
    /// `lora-xs-random` for LoRA-XS with random factors).
    pub fn preset_name(&self) -> &'static str {
        match (self.method, self.factors) {
            (Method::LoraXs, Factors::Random) => "lora-xs-random",
            (method, _) => method.name(),
        }
    }

    /// Sets `alpha`.
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Sets the targets.
    pub fn with_targets(mut self, targets: TargetModules) -> Self {
        self.targets = targets;
        self
    }

    /// Sets the initialisation of `R`.
    pub fn with_r_init(mut self, r_init: RInit) -> Self {
        self.r_init = r_init;
        self
    }

    /// Sets where `A` and `B` come from.
    pub fn with_factors(mut self, factors: Factors) -> Self {
        self.factors = factors;
        self
    }

    /// Sets the SVD algorithm.
    pub fn with_svd_method(mut self, svd_method: SvdMethod) -> Self {
        self.svd_method = svd_method;
        self
    }

    /// Sets the adapter dropout.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The update scale `alpha / rank` (1 for full fine-tuning and VeRA).
    pub fn scale(&self) -> f64 {
        self.method.spec().scale(self)
    }

    /// Checks the values that do not depend on the model.
    pub fn validate(&self) -> Result<(), crate::AdapterError> {
        let bad = |field: &'static str, reason: String| crate::AdapterError::InvalidConfig { field, reason };
        if self.method.spec().has_rank() && self.rank == 0 {
            return Err(bad("rank", "must be at least 1".into()));
        }
        if !self.alpha.is_finite() {
            return Err(bad("alpha", format!("must be finite, got {}", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(bad("dropout", format!("must be in [0, 1), got {}", self.dropout)));
        }
        if let RInit::Gaussian { std } = self.r_init
            && !(std.is_finite() && std >= 0.0)
        {
            return Err(bad("r_init", format!("std must be finite and ≥ 0, got {std}")));
        }
        if self.targets.is_empty() {
            return Err(bad("targets", "at least one target module is needed".into()));
        }
        Ok(())
    }
}
