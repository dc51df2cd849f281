"""Loads a loraxs export with transformers + peft and records what they compute.

    python tools/check_export.py BASE_DIR PEFT_DIR MERGED_DIR OUT.safetensors

BASE_DIR is the Hugging Face encoder folder the adapter was trained on,
PEFT_DIR what `cargo xtask export --to peft` wrote, MERGED_DIR what
`--to merged` wrote. OUT holds the inputs (two padded sentences) and the
last hidden states of the base model, of the base with the PEFT adapter
(`PeftModel.from_pretrained`) and of the merged folder, with the SHA-256 of
the adapter and merged weight files in its metadata. The Rust test
`export` (crates/loraxs-models/tests/integration/export.rs) runs this when
LORAXS_TORCH_PYTHON names a Python with torch, transformers and peft, and
otherwise checks loraxs against the committed copy of OUT.
"""

import hashlib
import sys

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

SENTENCES = [
    "LoRA-XS trains an r x r matrix between frozen SVD factors.",
    "A short one.",
]


def sha256(path):
    """SHA-256 of a safetensors file's tensors: for each name in sorted
    order, the name, a zero byte and the raw little-endian data (the
    header's metadata order is not stable, so the file's bytes are not)."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(path, "np") as f:
        for name in sorted(f.keys()):
            h.update(name.encode())
            h.update(b"\0")
            h.update(f.get_tensor(name).astype(f.get_tensor(name).dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def hidden(model, batch):
    with torch.inference_mode():
        return model(**batch).last_hidden_state.contiguous()


def main():
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
            "adapter_sha256": sha256(f"{peft_dir}/adapter_model.safetensors"),
            "merged_sha256": sha256(f"{merged_dir}/model.safetensors"),
            "peft_vs_merged_max_abs": str(float((peft_hidden - merged_hidden).abs().max())),
        },
    )


if __name__ == "__main__":
    main()
