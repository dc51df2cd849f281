#!/usr/bin/env bash
# One prepared run for a machine with N NVIDIA GPUs (issue #14, GPU part):
# one GLUE run (the quick profile's SST-2 LoRA-XS r=16 run on MiniLM, one
# epoch) trained with --devices 1 and --devices N, each timed; the
# records (examples/s in each) land in target/cuda-scale/. Needs the model
# (cargo xtask fetch model minilm) and LORAXS_DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
n=$(nvidia-smi --list-gpus | wc -l)
echo "$n GPU(s)"; nvidia-smi --query-gpu=name,memory.total --format=csv
out=target/cuda-scale
rm -rf "$out"; mkdir -p "$out"
for devices in 1 "$n"; do
  start=$(date +%s)
  cargo xtask reproduce glue --backend cuda --profile quick --tasks sst2 --methods lora-xs \
    --epochs 1 --devices "$devices" --quiet \
    --results "$out/devices-$devices.jsonl" --checkpoints "$out/ckpt-$devices"
  echo "devices $devices: $(( $(date +%s) - start )) s wall"
  grep -o '"examples_per_second":[0-9.]*' "$out/devices-$devices.jsonl"
done
