#!/usr/bin/env python3
"""Reference outputs of all-MiniLM-L6-v2 from Hugging Face transformers.

Writes crates/loraxs-models/tests/fixtures/minilm_parity.safetensors: the
token ids, token type ids and attention masks the Hugging Face tokenizer
produces for a few sentences and sentence pairs (padded to the longest),
and the model's last hidden state and pooled output for them, in float32.
The Rust parity test feeds the same text through loraxs's tokenizer and
encoder and compares.

Also writes minilm_gradients.safetensors: the training path's reference,
LoRA-XS on MiniLM built here from torch.linalg.svd (not from loraxs), its
last hidden state and PyTorch autograd's gradients of a fixed scalar loss
with respect to every R and to the word embeddings (see minilm_gradients).

Usage (torch, transformers and safetensors from PyPI):
    python tools/make_fixtures.py MODEL_DIR
    python tools/make_fixtures.py smollm2 GGUF_FILE   (needs `gguf` from PyPI too)
    python tools/make_fixtures.py gemma-tiny         (a random tiny Gemma and its logits)
    python tools/make_fixtures.py bert-tiny          (a random tiny BERT + word-level tokenizer
                                                      for loraxs-serve's fast tests)
    python tools/make_fixtures.py spm-tiny TEXT_FILE  (a SentencePiece BPE vocabulary trained on
                                                      TEXT_FILE, written as a Llama GGUF; needs
                                                      `sentencepiece` and `gguf`)
where MODEL_DIR holds config.json, model.safetensors and tokenizer.json
(e.g. datasets/cache/models/all-MiniLM-L6-v2 after `cargo xtask fetch model minilm`).
"""
import json
import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

SINGLES = [
    "The movie was surprisingly good.",
    "A gripping, beautifully shot thriller that never lets go!",
    "no",
]
PAIRS = [
    ("A man is playing a guitar.", "Someone plays an instrument."),
    ("The cat sat on the mat.", "Dogs bark loudly at night, don't they?"),
]


def main() -> None:
    if sys.argv[1] == "smollm2":
        smollm2_logits(pathlib.Path(sys.argv[2]))
        return
    if sys.argv[1] == "gemma-tiny":
        gemma_tiny()
        return
    if sys.argv[1] == "bert-tiny":
        bert_tiny()
        return
    if sys.argv[1] == "spm-tiny":
        spm_tiny(pathlib.Path(sys.argv[2]))
        return
    model_dir = pathlib.Path(sys.argv[1])
    out = pathlib.Path(__file__).resolve().parent.parent / "crates/loraxs-models/tests/fixtures"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()

    tensors = {}
    for name, batch in [
        ("single", tokenizer(SINGLES, padding=True, truncation=True, max_length=128, return_tensors="pt")),
        (
            "pair",
            tokenizer(
                [a for a, _ in PAIRS],
                [b for _, b in PAIRS],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            ),
        ),
    ]:
        with torch.no_grad():
            output = model(**batch)
        tensors[f"{name}.input_ids"] = batch["input_ids"].to(torch.int64)
        tensors[f"{name}.token_type_ids"] = batch["token_type_ids"].to(torch.int64)
        tensors[f"{name}.attention_mask"] = batch["attention_mask"].to(torch.int64)
        tensors[f"{name}.last_hidden_state"] = output.last_hidden_state.contiguous()
        tensors[f"{name}.pooler_output"] = output.pooler_output.contiguous()

    import transformers

    metadata = {
        "singles": json.dumps(SINGLES),
        "pairs": json.dumps(PAIRS),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    path = out / "minilm_parity.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    tiny_roberta(out / "tiny-roberta")
    minilm_gradients(model, tokenizer, out / "minilm_gradients.safetensors")


def tiny_roberta(out: pathlib.Path) -> None:
    """A tiny randomly initialised RoBERTa (no public checkpoint is reachable
    offline): its config.json and model.safetensors as RobertaForMaskedLM
    saves them (keys prefixed `roberta.`, an `lm_head` the encoder ignores,
    no pooler), plus its outputs on a padded batch."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(1)
    config = RobertaConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=24,
        max_position_embeddings=20,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
    )
    model = RobertaForMaskedLM(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    input_ids = torch.tensor([[0, 5, 17, 33, 9, 2], [0, 44, 8, 2, 1, 1]])
    attention_mask = (input_ids != 1).to(torch.int64)
    with torch.no_grad():
        hidden = model.roberta(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    save_file(
        {"input_ids": input_ids, "attention_mask": attention_mask, "last_hidden_state": hidden.contiguous()},
        str(out / "expected.safetensors"),
    )
    for extra in ["generation_config.json"]:
        (out / extra).unlink(missing_ok=True)
    print(f"wrote {out}")


GRAD_RANK = 8
GRAD_ALPHA = 16.0
GRAD_TARGETS = ("attention.self.query", "attention.self.value", "attention.output.dense", "output.dense")


def loss_weights(n: int) -> "torch.Tensor":
    """The fixed weights P of the scalar loss `sum(hidden * P)`: cos(0.7 i)
    over the flattened last hidden state (the Rust test forms the same)."""
    return torch.cos(0.7 * torch.arange(n, dtype=torch.float64))


def minilm_gradients(model, tokenizer, path: pathlib.Path) -> None:
    """LoRA-XS (rank 8, alpha 16, the paper's GLUE targets) on MiniLM in
    float64, written independently of loraxs: A = Sigma_r V_r^T and B = U_r
    from torch.linalg.svd with loraxs's documented sign convention (the
    entry of largest magnitude in each u_i is positive), R drawn here, and
    `y = W x + b + s * B R A x`. Stores R, the last hidden state, and the
    gradients of `sum(hidden * P)` with respect to every R and to the rows
    of the word embeddings the batch uses."""
    import copy

    torch.manual_seed(2)
    model = copy.deepcopy(model).double().eval()  # eval: dropout off
    for p in model.parameters():
        p.requires_grad_(False)
    scale = GRAD_ALPHA / GRAD_RANK
    tensors = {}
    adapters = {}

    class XsLinear(torch.nn.Module):
        def __init__(self, base, a, b, r):
            super().__init__()
            self.base, self.a, self.b, self.r = base, a, b, r

        def forward(self, x):
            return self.base(x) + scale * (((x @ self.a.T) @ self.r.T) @ self.b.T)

    for name, module in list(model.named_modules()):
        if not isinstance(module, torch.nn.Linear) or not name.endswith(GRAD_TARGETS):
            continue
        if not name.startswith("encoder.layer."):
            continue
        u, s, vh = torch.linalg.svd(module.weight.detach(), full_matrices=False)
        u, s, vh = u[:, :GRAD_RANK].clone(), s[:GRAD_RANK], vh[:GRAD_RANK].clone()
        for j in range(GRAD_RANK):
            i = torch.argmax(u[:, j].abs())
            if u[i, j] < 0:
                u[:, j] = -u[:, j]
                vh[j] = -vh[j]
        a = torch.diag(s) @ vh
        # Rounded to float32 first: the test loads exactly these values.
        r = (0.05 * torch.randn(GRAD_RANK, GRAD_RANK)).double().requires_grad_(True)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, XsLinear(module, a, u, r))
        adapters[name] = r
    assert len(adapters) == 4 * model.config.num_hidden_layers, sorted(adapters)

    batch = tokenizer(
        [a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, truncation=True, max_length=128, return_tensors="pt"
    )
    embeddings = model.embeddings.word_embeddings.weight
    embeddings.requires_grad_(True)
    hidden = model(**batch).last_hidden_state
    loss = (hidden.flatten() * loss_weights(hidden.numel())).sum()
    loss.backward()

    rows = torch.unique(batch["input_ids"])
    tensors["input_ids"] = batch["input_ids"].to(torch.int64)
    tensors["token_type_ids"] = batch["token_type_ids"].to(torch.int64)
    tensors["attention_mask"] = batch["attention_mask"].to(torch.int64)
    tensors["last_hidden_state"] = hidden.detach().float().contiguous()
    tensors["loss"] = loss.detach().float().reshape(1)
    tensors["word_embeddings.rows"] = rows.to(torch.int64)
    tensors["word_embeddings.grad"] = embeddings.grad[rows].float().contiguous()
    for name, r in adapters.items():
        tensors[f"{name}.lora_xs.R"] = r.detach().float().contiguous()
        tensors[f"{name}.lora_xs.R.grad"] = r.grad.float().contiguous()
    metadata = {"rank": str(GRAD_RANK), "alpha": str(GRAD_ALPHA), "precision": "float64 reference, stored as float32"}
    save_file(tensors, str(path), metadata=metadata)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


DECODER_PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "The capital of France is",
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
]
# Every 192nd vocabulary id: 256 columns of the logits, enough to compare
# them everywhere without committing 49,152 floats per token.
LOGIT_STRIDE = 192
# Greedy continuation of each prompt by `generate` (left-padded batch).
GREEDY_TOKENS = 24


def smollm2_logits(gguf_file: pathlib.Path) -> None:
    """SmolLM2-135M-Instruct (GGUF Q4_1) as transformers dequantises and runs
    it, in float32 with eager attention: the tokenizer's ids of three
    prompts, left-padded into one batch (the `generate` convention: position
    ids count real tokens only), and the logits of every token at every
    LOGIT_STRIDE-th vocabulary id plus each token's argmax id and logit;
    `generate`'s greedy continuation of the batch (GREEDY_TOKENS, padded
    after the end-of-sequence token); a chat rendered by the template."""
    from transformers import AutoModelForCausalLM

    out = pathlib.Path(__file__).resolve().parent.parent / "crates/loraxs-models/tests/fixtures"
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in DECODER_PROMPTS]
    t = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (t - len(i)) + i for i in ids])
    attention_mask = torch.tensor([[0] * (t - len(i)) + [1] * len(i) for i in ids])
    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    with torch.no_grad():
        greedy = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=GREEDY_TOKENS, do_sample=False,
            pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
        )[:, t:]
    columns = torch.arange(0, logits.shape[-1], LOGIT_STRIDE)
    top = logits.max(dim=-1)
    tensors = {
        "input_ids": input_ids.to(torch.int64),
        "attention_mask": attention_mask.to(torch.int64),
        "columns": columns.to(torch.int64),
        "logits": logits[:, :, columns].contiguous(),
        "argmax": top.indices.to(torch.int64),
        "max": top.values.contiguous(),
        "greedy": greedy.to(torch.int64).contiguous(),
    }
    import transformers

    chat = [
        {"role": "user", "content": "What is 12 + 30?"},
        {"role": "assistant", "content": "12 + 30 = 42.\n#### 42"},
        {"role": "user", "content": "And 7 × 6?"},
    ]
    metadata = {
        "prompts": json.dumps(DECODER_PROMPTS),
        "chat": json.dumps(chat),
        "chat_rendered": tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True),
        "chat_ids": json.dumps(tokenizer(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True), add_special_tokens=False).input_ids),
        "gguf": gguf_file.name,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    path = out / "smollm2_parity.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def gemma_tiny() -> None:
    """A tiny Gemma (1) with seeded random weights, saved as a Hugging Face
    folder, and its logits on two fixed rows: the parity fixture of loraxs's
    Gemma path (GeGLU, (1 + w) norms, embeddings scaled by sqrt(hidden)).
    No real Gemma is reachable from these machines; the architecture is
    what is checked."""
    from safetensors.torch import save_file
    from transformers import GemmaConfig, GemmaForCausalLM

    out = pathlib.Path(__file__).resolve().parent.parent / "crates/loraxs-models/tests/fixtures"
    folder = out / "gemma_tiny"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = GemmaConfig(
        vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=128, hidden_activation="gelu_pytorch_tanh",
    )
    model = GemmaForCausalLM(config).eval()
    with torch.no_grad():
        # Norm weights are zeros at init ((1 + w) = 1): make them matter.
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.3)
    model.save_pretrained(folder, safe_serialization=True)
    ids = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()
    path = out / "gemma_tiny_logits.safetensors"
    save_file({"input_ids": ids.to(torch.int64).contiguous(), "logits": logits.contiguous()}, str(path))
    print(f"wrote {folder} and {path} ({path.stat().st_size} bytes)")


BERT_TINY_WORDS = (
    "the a an is was and or not very good bad great awful movie film plot actor "
    "cat dog man woman plays guitar music sat on mat night loud quiet it this that "
    "i you we they love hate like fine boring fun . , ! ?"
).split()


def bert_tiny() -> None:
    """A tiny randomly initialised BERT with a pooler (as BertModel saves
    it) and a word-level tokenizer.json over a few dozen words, for
    loraxs-serve's tests: a whole model folder of ~60 KB that loads in
    milliseconds. Weights are scaled up (std 0.2) so an adapter visibly
    changes the outputs."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    out = pathlib.Path(__file__).resolve().parent.parent / "crates/loraxs-serve/tests/fixtures/tiny-bert"
    out.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + BERT_TINY_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.save(str(out / "tokenizer.json"))

    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        type_vocab_size=2,
        pad_token_id=0,
        initializer_range=0.2,
    )
    model = BertModel(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    for extra in ["generation_config.json"]:
        (out / extra).unlink(missing_ok=True)
    print(f"wrote {out}")


SPM_TEXTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "  two leading spaces,   three inside, and a tab\there.",
    "Line one\nLine two\n\nLine four",
    "Unseen: zebra-quokka 1234567 \u00e9t\u00e9 na\u00efve \u4e2d\u6587 \U0001f600 \u00d7 \u2248",
    "<s>[INST] What is 12 + 30? [/INST] 12 + 30 = 42.</s>",
    "",
    " ",
]
# Llama-2's chat template (as in its tokenizer_config.json), shortened to
# the parts the test renders.
LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def spm_tiny(text_file: pathlib.Path) -> None:
    """A Llama-style SentencePiece vocabulary and its GGUF: what a Llama-2
    or Mistral GGUF carries (`tokenizer.ggml.model` = `llama`: pieces,
    scores, token types, no merges), without the model. SentencePiece BPE
    is trained on TEXT_FILE with Llama's settings (byte fallback, split
    digits, dummy prefix, no normalisation, ids 0/1/2 = <unk>/<s>/</s>);
    the GGUF is written as llama.cpp's converter writes the vocabulary
    (token types 1 normal, 2 unknown, 3 control, 6 byte). The fixture holds
    the ids transformers' GGUF tokenizer conversion gives SPM_TEXTS, the ids
    SentencePiece itself gives, and the decoded texts. No real Llama GGUF
    is reachable from these machines; the vocabulary format is what is
    checked."""
    import gguf
    import sentencepiece as spm
    import transformers
    from transformers import AutoTokenizer

    out = pathlib.Path(__file__).resolve().parent.parent / "crates/loraxs-models/tests/fixtures"
    folder = out / "spm_tiny"
    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / "spm"
    spm.SentencePieceTrainer.train(
        input=str(text_file), model_prefix=str(prefix), model_type="bpe", vocab_size=600,
        byte_fallback=True, split_digits=True, add_dummy_prefix=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, character_coverage=0.9995, input_sentence_size=20000, shuffle_input_sentence=False,
        num_threads=1, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i)
                     else 6 if sp.is_byte(i) else 1)
    path = folder / "spm-tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(LLAMA2_TEMPLATE)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for extra in [".vocab", ".model"]:
        pathlib.Path(str(prefix) + extra).unlink(missing_ok=True)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=path.name)
    hf = [tok(t, add_special_tokens=False).input_ids for t in SPM_TEXTS]
    hf_bos = [tok(t).input_ids for t in SPM_TEXTS]
    # SentencePiece with special tokens parsed as llama.cpp does: the text
    # split at `<s>`/`</s>`, each other piece encoded on its own (with its
    # dummy prefix, as Meta's Llama-2 chat code encodes `[INST]` turns).
    import re

    def reference(text):
        ids = []
        for piece in re.split(r"(<s>|</s>)", text):
            if piece in ("<s>", "</s>"):
                ids.append(sp.piece_to_id(piece))
            elif piece:
                ids.extend(sp.encode(piece))
        return ids

    ref = [reference(t) for t in SPM_TEXTS]
    decoded = [tok.decode(i) for i in hf]
    chat = [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "42."}]
    fixture = {
        "texts": SPM_TEXTS,
        "transformers_ids": hf,
        "transformers_ids_with_bos": hf_bos,
        "sentencepiece_ids": ref,
        "transformers_decoded": decoded,
        "sentencepiece_decoded": [sp.decode(i) for i in ref],
        "chat": chat,
        "chat_rendered": tok.apply_chat_template(chat, tokenize=False),
        "transformers": transformers.__version__,
        "sentencepiece": spm.__version__,
        "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "",
    }
    (folder / "expected.json").write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    for a, b, t in zip(hf, ref, SPM_TEXTS):
        if a != b:
            print(f"transformers and sentencepiece differ on {t!r}:\n  {a}\n  {b}")
    print(f"wrote {path} ({path.stat().st_size} bytes) and {folder / 'expected.json'}")


if __name__ == "__main__":
    main()
