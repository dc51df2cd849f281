#!/usr/bin/env python3
"""One JSON line per run of the paper's official GLUE script (main_glue.py of
MohammadrezaBanaei/LoRA-XS), from the output folder it writes: the arguments
it ran with, the dev metric after each epoch and the logged training losses
(from trainer_state.json). The runs are compared with loraxs's records in
docs/glue.md ("The official code as anchor"); this script only reads their
outputs.

usage: anchor_record.py OUTPUT_DIR [--wall-seconds S] >> docs/results/glue-anchor.jsonl
"""
import argparse
import glob
import json
import os
import sys

METRIC = {"stsb": "eval_pearson", "cola": "eval_matthews_correlation"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("output_dir")
    ap.add_argument("--wall-seconds", type=float)
    ap.add_argument("--code-commit", default="e50b1a82b5d7b7e87a0c46bc62e07e54f6648d31")
    ap.add_argument("--stack", default="torch 2.3.1 (CPU, 2 threads), transformers 4.40.2, peft 0.10.0")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    states = glob.glob(os.path.join(args.output_dir, "**", "trainer_state.json"), recursive=True)
    if len(states) != 1:
        sys.exit(f"{args.output_dir}: expected one trainer_state.json, found {len(states)}")
    run_dir = os.path.dirname(states[0])
    state = json.load(open(states[0]))
    # The folder name main_glue.py builds: .../<task>/LoRA_init_svd_rank_R_lr_LR_clslr_C_seed_S/output_<time>
    parts = run_dir.split(os.sep)
    config = parts[-2]
    task = parts[-3]
    fields = config.split("_")
    value = lambda key: fields[fields.index(key) + 1]
    metric = METRIC.get(task, "eval_accuracy")
    epochs = [
        {"epoch": round(h["epoch"]), "dev": h[metric], "eval_loss": h["eval_loss"]}
        for h in state["log_history"]
        if metric in h
    ]
    losses = [{"step": h["step"], "epoch": h["epoch"], "loss": h["loss"]}
              for h in state["log_history"] if "loss" in h]
    best = max(epochs, key=lambda e: e["dev"])
    record = {
        "code": "MohammadrezaBanaei/LoRA-XS main_glue.py",
        "code_commit": args.code_commit,
        "stack": args.stack,
        "note": args.note,
        "task": task,
        "metric": metric.removeprefix("eval_"),
        "rank": int(value("rank")),
        "lr": float(value("lr")),
        "cls_lr": float(value("clslr")),
        "seed": int(value("seed")),
        "epochs_run": len(epochs),
        "max_steps": state["max_steps"],
        "best": best,
        "epochs": epochs,
        "train_losses": losses,
        "wall_seconds": args.wall_seconds,
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
