#!/usr/bin/env bash
# One prepared run for a machine with an NVIDIA GPU (issue #5, CUDA part):
# the CUDA tests, then `cargo xtask bench` on cuda next to PyTorch on the
# same GPU. Needs the model in datasets/cache (cargo xtask fetch model
# minilm) and the reference's Python (cargo xtask bench --setup, or
# LORAXS_TORCH_PYTHON). Writes docs/results/bench-cuda.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
cargo test --release -p loraxs --features cuda --test cuda -- --ignored --nocapture
cargo xtask bench --backend cuda "$@"
