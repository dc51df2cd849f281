"""Loads a loraxs export with transformers + peft and records what they compute.

    python tools/check_export.py BASE_DIR PEFT_DIR MERGED_DIR OUT.safetensors
    python tools/check_export.py --classify N BASE_DIR PEFT_DIR MERGED_DIR OUT.safetensors

BASE_DIR is the Hugging Face encoder folder the adapter was trained on,
PEFT_DIR what `cargo xtask export --to peft` wrote, MERGED_DIR what
`--to merged` wrote. OUT holds the inputs (two padded sentences) and the
last hidden states of the base model, of the base with the PEFT adapter
(`PeftModel.from_pretrained`) and of the merged folder, with the SHA-256 of
the adapter and merged weight files in its metadata. The Rust test
`export` (crates/loraxs-models/tests/integration/export.rs) runs this when
LORAXS_TORCH_PYTHON names a Python with torch, transformers and peft, and
otherwise checks loraxs against the committed copy of OUT.

With `--classify N` the exports carry a task head of N outputs
(`cargo xtask export` without `--drop-head`): the PEFT folder is loaded
into `AutoModelForSequenceClassification.from_pretrained(BASE_DIR,
num_labels=N)` (its fresh head replaced by the exported one through
`modules_to_save`), the merged folder by `AutoModelForSequenceClassification`
alone (class, labels and head from its config and weights); OUT holds their
logits (`peft_logits`, `merged_logits`, and `disabled_logits` with PEFT's
adapter disabled, which must be the fresh model's `fresh_logits`) and, in its metadata, the merged
config's `id2label`. The Rust test is `exports_carry_the_task_head`
(crates/loraxs-experiments/tests/experiments.rs).
"""

import sys

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

SENTENCES = [
    "LoRA-XS trains an r x r matrix between frozen SVD factors.",
    "A short one.",
]


def checksum(path):
    """Round-off-tolerant fingerprints of a safetensors file's tensors, as
    `loraxs_models::testing::tensor_checksums` computes them: per tensor
    `[sum v_i cos(0.7 i), sum |v_i|, sqrt(sum v_i^2)]` in float64, as a JSON
    object by name. (An exact hash would tie the record to one CPU: the
    SVD behind the exported factors rounds differently with AVX2 and
    AVX-512.)"""
    import json

    import numpy as np
    from safetensors.numpy import load_file

    out = {}
    for name, v in load_file(path).items():
        v = v.astype(np.float64).ravel()
        w = np.cos(0.7 * np.arange(v.size, dtype=np.float64))
        out[name] = [float(v @ w), float(np.abs(v).sum()), float(np.sqrt((v * v).sum()))]
    return json.dumps(out, sort_keys=True)


def hidden(model, batch):
    with torch.inference_mode():
        return model(**batch).last_hidden_state.contiguous()


def logits(model, batch):
    with torch.inference_mode():
        return model(**batch).logits.contiguous()


def classify(num_labels, base_dir, peft_dir, merged_dir, out):
    import json

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    batch.pop("token_type_ids", None)
    base = AutoModelForSequenceClassification.from_pretrained(
        base_dir, num_labels=num_labels, dtype=torch.float32
    ).eval()
    fresh_logits = logits(base, batch)
    peft = PeftModel.from_pretrained(base, peft_dir).eval()
    peft_logits = logits(peft, batch)
    # The adapter must leave the base untouched (its head under
    # modules_to_save, not written over the base's modules).
    with peft.disable_adapter():
        disabled_logits = logits(peft, batch)
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir, dtype=torch.float32).eval()
    merged_logits = logits(merged, batch)
    save_file(
        {
            "input_ids": batch["input_ids"].to(torch.int64).contiguous(),
            "attention_mask": batch["attention_mask"].to(torch.int64).contiguous(),
            "fresh_logits": fresh_logits,
            "peft_logits": peft_logits,
            "disabled_logits": disabled_logits,
            "merged_logits": merged_logits,
        },
        out,
        metadata={
            "adapter_checksum": checksum(f"{peft_dir}/adapter_model.safetensors"),
            "merged_checksum": checksum(f"{merged_dir}/model.safetensors"),
            "merged_class": type(merged).__name__,
            "merged_id2label": json.dumps({str(k): v for k, v in merged.config.id2label.items()}),
        },
    )


def main():
    if sys.argv[1] == "--classify":
        classify(int(sys.argv[2]), *sys.argv[3:7])
        return
    base_dir, peft_dir, merged_dir, out = sys.argv[1:5]
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    batch.pop("token_type_ids", None)
    base = AutoModel.from_pretrained(base_dir, dtype=torch.float32).eval()
    base_hidden = hidden(base, batch)
    peft = PeftModel.from_pretrained(base, peft_dir).eval()
    peft_hidden = hidden(peft, batch)
    merged = AutoModel.from_pretrained(merged_dir, dtype=torch.float32).eval()
    merged_hidden = hidden(merged, batch)
    save_file(
        {
            "input_ids": batch["input_ids"].to(torch.int64).contiguous(),
            "attention_mask": batch["attention_mask"].to(torch.int64).contiguous(),
            "base_hidden": base_hidden,
            "peft_hidden": peft_hidden,
            "merged_hidden": merged_hidden,
        },
        out,
        metadata={
            "adapter_checksum": checksum(f"{peft_dir}/adapter_model.safetensors"),
            "merged_checksum": checksum(f"{merged_dir}/model.safetensors"),
            "peft_vs_merged_max_abs": str(float((peft_hidden - merged_hidden).abs().max())),
        },
    )


if __name__ == "__main__":
    main()
