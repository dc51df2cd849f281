//! Batching: padding to the longest, deterministic shuffles, bucketing.

use loraxs_data::{Label, TokenizedSet};
use loraxs_tokenizer::TokenSequence;

fn set(lengths: &[usize]) -> TokenizedSet {
    TokenizedSet {
        sequences: lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| TokenSequence {
                ids: vec![100 + i as u32; n],
                type_ids: vec![0; n],
            })
            .collect(),
        labels: (0..lengths.len()).map(|i| Label::Class(i % 2)).collect(),
        pad_id: 0,
    }
}

#[test]
fn batches_pad_to_their_longest_member() {
    let s = set(&[3, 5, 2]);
    let b = s.batch(&[0, 2]);
    assert_eq!((b.tokens.batch, b.tokens.seq_len), (2, 3));
    assert_eq!(b.tokens.input_ids, vec![100, 100, 100, 102, 102, 0]);
    assert_eq!(b.tokens.attention_mask, vec![1, 1, 1, 1, 1, 0]);
    assert_eq!(b.labels, vec![Label::Class(0), Label::Class(0)]);
}

#[test]
fn epochs_cover_every_example_once_and_shuffle_by_seed() {
    let s = set(&(1..=103).map(|i| i % 17 + 1).collect::<Vec<_>>());
    for bucket in [0, 1, 4, 50] {
        let epoch = s.epoch(8, Some(7), bucket);
        let mut seen: Vec<usize> = epoch.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
        assert_eq!(epoch, s.epoch(8, Some(7), bucket), "same seed, same order");
        assert_ne!(epoch, s.epoch(8, Some(8), bucket), "another seed, another order");
    }
    assert_eq!(s.epoch(10, None, 0)[0], (0..10).collect::<Vec<_>>());
}

/// Tokens of an epoch's padded batches of 16 (seed `seed`, window `w`).
fn padded_tokens(s: &TokenizedSet, seed: u64, w: usize) -> usize {
    s.epoch(16, Some(seed), w)
        .iter()
        .map(|b| {
            let t = s.batch(b).tokens;
            t.batch * t.seq_len
        })
        .sum()
}

#[test]
fn bucketing_reduces_padding() {
    let s = set(&(0..400).map(|i| (i * 37) % 120 + 1).collect::<Vec<_>>());
    let (plain, bucketed) = (padded_tokens(&s, 1, 0), padded_tokens(&s, 1, 50));
    let real: usize = s.sequences.iter().map(|q| q.ids.len()).sum();
    assert!(bucketed * 10 < plain * 6, "bucketed {bucketed} vs plain {plain}");
    assert!(
        bucketed * 10 < real * 11,
        "bucketed {bucketed} vs {real} real tokens"
    );
}

#[test]
fn the_bucket_window_trades_padding_for_mixed_batches() {
    let s = set(&(0..400).map(|i| (i * 37) % 120 + 1).collect::<Vec<_>>());
    let padded = |w: usize| padded_tokens(&s, 3, w);
    // A window of one batch sorts nothing: the plain shuffled order.
    assert_eq!(s.epoch(16, Some(3), 1), s.epoch(16, Some(3), 0));
    let (plain, small, whole) = (padded(0), padded(4), padded(50));
    assert!(
        whole < small && small < plain,
        "padding {whole} < {small} < {plain}"
    );
    // The mean spread of lengths inside a batch: a window as large as the
    // epoch makes every batch one narrow length band of the whole set; a
    // 4-batch window keeps about a quarter of the random spread.
    let spread = |w: usize| {
        let batches = s.epoch(16, Some(3), w);
        let total: usize = batches
            .iter()
            .map(|b| {
                let lens: Vec<usize> = b.iter().map(|&i| s.sequences[i].ids.len()).collect();
                lens.iter().max().unwrap() - lens.iter().min().unwrap()
            })
            .sum();
        total as f64 / batches.len() as f64
    };
    let (random, small, whole) = (spread(1), spread(4), spread(50));
    assert!(whole * 8.0 < random, "one band per batch: {whole} vs {random}");
    assert!(
        small * 8.0 > random && small < random,
        "mixed: {small} vs {random}"
    );
}
