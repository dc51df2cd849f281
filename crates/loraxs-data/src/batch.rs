//! Tokenised datasets and batches: each example is tokenised once, batches
//! are padded to their longest member (capped by the tokenizer's maximum
//! length), shuffled deterministically from a seed, optionally grouped by
//! length so that little compute goes to padding.

use loraxs_tokenizer::{TextTokenizer, TokenBatch, TokenSequence};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::tsv::{Example, Label};

/// A task split tokenised once.
#[derive(Debug, Clone)]
pub struct TokenizedSet {
    /// One sequence per example.
    pub sequences: Vec<TokenSequence>,
    /// The gold labels, in the same order.
    pub labels: Vec<Label>,
    /// The tokenizer's padding id.
    pub pad_id: u32,
}

/// One batch: tokens and gold labels.
#[derive(Debug, Clone)]
pub struct LabelledBatch {
    /// Padded tokens.
    pub tokens: TokenBatch,
    /// Gold labels.
    pub labels: Vec<Label>,
    /// Positions of these examples in the set.
    pub indices: Vec<usize>,
}

impl TokenizedSet {
    /// Tokenises `examples` (truncated to the tokenizer's maximum length).
    pub fn new(examples: &[Example], tokenizer: &TextTokenizer) -> loraxs_tokenizer::Result<Self> {
        let mut sequences = Vec::with_capacity(examples.len());
        // Chunks keep memory bounded and let the tokenizer parallelise.
        for chunk in examples.chunks(4096) {
            let texts: Vec<(&str, Option<&str>)> = chunk
                .iter()
                .map(|e| (e.text_a.as_str(), e.text_b.as_deref()))
                .collect();
            sequences.extend(tokenizer.encode_each(&texts)?);
        }
        Ok(Self {
            sequences,
            labels: examples.iter().map(|e| e.label).collect(),
            pad_id: tokenizer.pad_id(),
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    /// The batch of the examples at `indices`.
    pub fn batch(&self, indices: &[usize]) -> LabelledBatch {
        let sequences: Vec<&TokenSequence> = indices.iter().map(|&i| &self.sequences[i]).collect();
        LabelledBatch {
            tokens: TokenBatch::pad(&sequences, self.pad_id),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            indices: indices.to_vec(),
        }
    }

    /// The order of one epoch as batches of indices.
    ///
    /// `shuffle`: a seed (the same seed gives the same order on every
    /// machine) or `None` for file order. `bucket_window`: `0` or `1` cuts
    /// batches straight from the shuffled order; `w > 1` sorts examples by
    /// length inside windows of `w` batches before cutting, then shuffles
    /// the batches, so padding shrinks but every batch holds one length band
    /// of its window. Large windows on small sets make each batch a single
    /// band of the whole epoch, which hurts learning (see
    /// `docs/results/glue-sweep.md`); a few batches per window keep most of
    /// the saving.
    pub fn epoch(&self, batch_size: usize, shuffle: Option<u64>, bucket_window: usize) -> Vec<Vec<usize>> {
        assert!(batch_size > 0, "batch size must be positive");
        let mut order: Vec<usize> = (0..self.len()).collect();
        let mut rng = shuffle.map(ChaCha8Rng::seed_from_u64);
        if let Some(rng) = rng.as_mut() {
            shuffle_in_place(&mut order, rng);
        }
        let bucket = bucket_window > 1;
        if bucket {
            for window in order.chunks_mut(batch_size * bucket_window) {
                window.sort_by_key(|&i| self.sequences[i].ids.len());
            }
        }
        let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
        if bucket && let Some(rng) = rng.as_mut() {
            shuffle_in_place(&mut batches, rng);
        }
        batches
    }
}

/// Fisher–Yates with a given generator (no dependence on `rand`'s slice
/// helpers, whose algorithm may change between versions).
fn shuffle_in_place<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}
