"""PyTorch + transformers + peft reference for `cargo xtask bench`.

Runs one workload with the same shapes, targets, ranks and thread count as
`benches/src/workload.rs` and prints one JSON line with the same fields
(`tool` is "pytorch"). LoRA-XS is built the way the paper's code builds it:
a peft LoRA layer whose `lora_A` / `lora_B` are frozen truncated-SVD
factors (`A = Sigma_r V_r^T`, `B = U_r`, from scikit-learn's TruncatedSVD
with 10 iterations) with a trainable r x r matrix between them.

Usage: python bench.py --workload train-lora-xs --model DIR [--device cpu|cuda]
Installed by `cargo xtask bench --setup` into benches/torch_reference/.venv.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

TARGETS_XS = ["query", "value", "attention.output.dense", "output.dense"]
WORKLOADS = [
    "train-lora-xs", "train-lora", "train-vera", "train-full",
    "infer-base", "infer-lora-xs", "infer-lora-xs-merged", "infer-lora-xs-factored",
    "svd-exact", "svd-randomized-10",
    "adapter-save", "adapter-load-stored-factors",
    "train-glue-sst2", "train-glue-mrpc", "gemm-step",
    "train-decoder-lora-xs", "generate-decoder-base", "generate-decoder-lora-xs",
]
TARGETS_DECODER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Tokens each prompt of the generate-decoder-* workloads generates
# (`NEW_TOKENS` in benches/src/workload.rs).
NEW_TOKENS = 32


def status_kib(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line[len(key):].strip().split()[0])
    except OSError:
        pass
    return 0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return status_kib("VmRSS:") * 1024


def peak_rss():
    return status_kib("VmHWM:") * 1024


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def token_batch(batch, seq, vocab, device):
    g = np.random.default_rng(17)
    ids = g.integers(1000, vocab, size=(batch, seq))
    ids[:, 0] = 101
    ids[:, -1] = 102
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long, device=device),
        "token_type_ids": torch.zeros((batch, seq), dtype=torch.long, device=device),
        "attention_mask": torch.ones((batch, seq), dtype=torch.long, device=device),
    }


def paper_svd(weight, rank, n_iter=10):
    """The paper's initialisation: scikit-learn TruncatedSVD (randomized,
    n_iter=10) on the weight; returns A = Sigma V^T (r x in), B = U (out x r)."""
    from sklearn.decomposition import TruncatedSVD

    w = weight.detach().float().cpu().numpy()
    svd = TruncatedSVD(n_components=rank, n_iter=n_iter, random_state=0)
    svd.fit(w)
    reduced = svd.transform(w)  # U Sigma, out x r
    _ = svd.inverse_transform(reduced)  # the paper's code also reconstructs
    sigma = svd.singular_values_
    u = reduced / sigma
    a = sigma[:, None] * svd.components_
    return torch.tensor(a, dtype=weight.dtype), torch.tensor(u, dtype=weight.dtype)


def exact_svd(weight, rank):
    u, s, vh = torch.linalg.svd(weight.detach().float().cpu(), full_matrices=False)
    return (s[:rank, None] * vh[:rank]), u[:, :rank]


def target_linears(model, targets):
    out = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(
            name == t or name.endswith("." + t) for t in targets
        ):
            out.append((name, module))
    return out


def lora_xs(model, rank, svd=paper_svd, std=1e-5, targets=TARGETS_XS, alpha=16):
    """Wraps `model` in peft LoRA and turns every LoRA layer into LoRA-XS."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0)
    model = get_peft_model(model, config)
    for _, module in model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            a, b = svd(module.get_base_layer().weight, rank)
            lin_a = module.lora_A["default"]
            lin_a.weight.data.copy_(a)
            module.lora_B["default"].weight.data.copy_(b)
            lin_a.weight.requires_grad_(False)
            module.lora_B["default"].weight.requires_grad_(False)
            latent = nn.Linear(rank, rank, bias=False).to(a.device)
            nn.init.normal_(latent.weight, std=std)
            module.lora_A["default"] = XsDown(lin_a, latent)
    return model


class XsDown(nn.Module):
    """`R (A x)`: the frozen down projection A followed by the trainable r x r
    latent matrix, in the slot of peft's `lora_A` (peft reads `.weight` for
    the dtype, hence the property)."""

    def __init__(self, a, latent):
        super().__init__()
        self.a = a
        self.latent = latent

    @property
    def weight(self):
        return self.a.weight

    def forward(self, x):
        return self.latent(self.a(x))


def count_trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def prepared_inputs(args):
    """What `loraxs-workload --workload W --prepare` wrote for this workload."""
    path = os.path.join(args.scratch, f"{args.workload}-inputs.json")
    if not os.path.isfile(path):
        raise SystemExit(
            f"{path} is missing: run `loraxs-workload --workload {args.workload} --prepare "
            f"--scratch {args.scratch}` first (cargo xtask bench does)"
        )
    return json.load(open(path))


def run_glue(args):
    """One epoch on the batches loraxs's GLUE trainer trains on (written by
    `loraxs-workload --workload W --prepare`): the same examples, padding and
    order, LoRA-XS r=16 on the paper's four targets, a classification head,
    AdamW with loraxs's parameter groups (adapter / head rates, no weight
    decay on biases and LayerNorm), the linear schedule with warm-up,
    dropout on. A step's time runs from the batch's tensors being built to
    the optimiser step's end; the first `max(warmup, 1)` steps are warm-up.
    BERT's head (pooler dense + tanh, classifier) costs what loraxs's
    RoBERTa-style head (dense + tanh, out_proj) costs."""
    from transformers import AutoModelForSequenceClassification

    spec = prepared_inputs(args)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=spec["num_labels"]
    )
    if spec["regression"]:
        model.config.problem_type = "regression"
    model = lora_xs(model, spec["rank"])
    head, adapter = [], []
    for name, p in model.named_parameters():
        if "classifier" in name or "pooler" in name:
            p.requires_grad_(True)
            head.append((name, p))
        elif p.requires_grad:
            adapter.append((name, p))

    def groups(named, lr):
        decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
        no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
        return [
            {"params": decay, "lr": lr, "weight_decay": spec["weight_decay"]},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]

    opt = torch.optim.AdamW(groups(adapter, spec["lr"]) + groups(head, spec["head_lr"]))
    total = len(spec["batches"])
    warm = int(np.ceil(spec["warmup_ratio"] * total))

    def factor(step):
        if step < warm:
            return step / warm
        return max(0.0, (total - step) / max(1, total - warm))

    schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    model.to(device).train()
    values = count_trainable(model)
    skip = max(args.warmup, 1)
    times, losses, timed_examples = [], [], 0
    setup = reset_peak()
    for i, b in enumerate(spec["batches"]):
        t0 = time.perf_counter()
        inputs = {
            k: torch.tensor(b[k], dtype=torch.long, device=device)
            for k in ("input_ids", "token_type_ids", "attention_mask")
        }
        dtype = torch.float32 if spec["regression"] else torch.long
        labels = torch.tensor(b["labels"], dtype=dtype, device=device)
        out = model(**inputs, labels=labels)
        out.loss.backward()
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        loss = out.loss.item()
        sync(device)
        elapsed = (time.perf_counter() - t0) * 1e3
        n = len(b["labels"])
        losses.append((loss, n))
        if i + 1 == skip:
            setup = reset_peak()
        if i >= skip:
            times.append(elapsed)
            timed_examples += n
    if not times:
        raise SystemExit(f"{args.workload}: {total} steps, none left after {skip} warm-up steps")
    seen = sum(n for _, n in losses)
    report = timing_report(
        args, device, times, setup,
        values=values,
        file_bytes=None,
        last_loss=losses[-1][0],
        examples_per_s=timed_examples / (sum(times) / 1e3),
        examples=timed_examples,
        mean_loss=sum(l * n for l, n in losses) / seen,
    )
    print(json.dumps(report))


def timed(args, device, step):
    """`args.warmup` untimed calls of `step`, then `args.reps` timed ones:
    the times in ms and the resident memory before the first call."""
    setup = reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return times, setup


def timing_report(args, device, times, setup, **extra):
    """The JSON line's fields, as `loraxs-workload` prints them."""
    return {
        "tool": "pytorch",
        "backend": f"torch-{device.type}",
        "workload": args.workload,
        "batch": args.batch,
        "seq": args.seq,
        "threads": torch.get_num_threads(),
        "times_ms": times,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "setup_rss_bytes": setup,
        "peak_rss_bytes": peak_rss(),
        **extra,
        "versions": versions(),
    }


def versions():
    return {
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "peft": __import__("peft").__version__,
        "sklearn": __import__("sklearn").__version__,
    }


def load_decoder(folder):
    """The decoder from the one GGUF file in `folder`, dequantised to f32 by
    transformers' GGUF loader (as loraxs reads the same file)."""
    from transformers import AutoModelForCausalLM

    ggufs = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if len(ggufs) != 1:
        raise SystemExit(f"{folder}: expected one .gguf file, found {ggufs}")
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=ggufs[0], dtype=torch.float32)


def run_decoder(args):
    """The *-decoder-* workloads: a LoRA-XS r=64 training step (next-token
    loss on every position) and greedy generation with the KV cache."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = load_decoder(args.model)
    vocab = model.config.vocab_size
    g = np.random.default_rng(17)
    ids = torch.tensor(g.integers(0, vocab, size=(args.batch, args.seq)), dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    w = args.workload
    extra = {"values": None, "file_bytes": None, "last_loss": None}
    if w != "generate-decoder-base":
        std = 1e-5 if w.startswith("train") else 0.01
        model = lora_xs(model, 64, svd=exact_svd, std=std, targets=TARGETS_DECODER, alpha=64)
    model.to(device)
    last = [0.0]
    if w == "train-decoder-lora-xs":
        model.train()
        extra["values"] = count_trainable(model)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)

        def step():
            out = model(input_ids=ids, attention_mask=mask, labels=ids)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            last[0] = out.loss.item()
            sync(device)

        tokens = args.batch * args.seq
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0,
                )
            assert out.shape[1] == args.seq + NEW_TOKENS, out.shape
            sync(device)

        tokens = args.batch * NEW_TOKENS
    times, setup = timed(args, device, step)
    if w.startswith("train"):
        extra["last_loss"] = last[0]
    extra["tokens_per_s"] = tokens / (statistics.median(times) / 1e3)
    report = timing_report(args, device, times, setup, **extra)
    if device.type == "cuda":
        report["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(report))


def run(args):
    from transformers import AutoModel, AutoModelForSequenceClassification

    if args.workload.startswith("train-glue-"):
        return run_glue(args)
    if "-decoder-" in args.workload:
        return run_decoder(args)

    torch.manual_seed(0)
    device = torch.device(args.device)
    vocab = json.load(open(os.path.join(args.model, "config.json")))["vocab_size"]
    inputs = token_batch(args.batch, args.seq, vocab, device)
    w = args.workload
    extra = {"values": None, "file_bytes": None, "last_loss": None}

    if w.startswith("train-"):
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
        if w == "train-full":
            for p in model.parameters():
                p.requires_grad_(True)
        else:
            if w == "train-lora-xs":
                model = lora_xs(model, 16)
            else:
                from peft import LoraConfig, VeraConfig, get_peft_model

                config = (
                    LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"])
                    if w == "train-lora"
                    else VeraConfig(r=256, target_modules=["query", "value"])
                )
                model = get_peft_model(model, config)
            for name, p in model.named_parameters():
                if "classifier" in name:
                    p.requires_grad_(True)
        model.to(device).train()
        extra["values"] = count_trainable(model)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
        labels = torch.arange(args.batch, device=device) % 2
        last = [0.0]

        def step():
            out = model(**inputs, labels=labels)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            last[0] = out.loss.item()
            sync(device)

    elif w.startswith("infer-"):
        model = AutoModel.from_pretrained(args.model)
        # peft's unmerged forward is always the factored one.
        if w in ("infer-lora-xs", "infer-lora-xs-factored"):
            model = lora_xs(model, 16, std=0.01)
        elif w == "infer-lora-xs-merged":
            with torch.no_grad():
                for _, lin in target_linears(model, TARGETS_XS):
                    a, b = paper_svd(lin.weight, 16)
                    r = torch.randn(16, 16) * 0.01
                    lin.weight += (16 / 16) * b @ r @ a
        model.to(device).eval()

        def step():
            with torch.inference_mode():
                out = model(**inputs).last_hidden_state
                _ = out.cpu()
            sync(device)

    elif w == "gemm-step":
        # Only the matrix products of a train-lora-xs step, the shapes loraxs
        # lists (`loraxs-workload --workload gemm-step --prepare`).
        shapes = prepared_inputs(args)["shapes"]
        operands = [
            (torch.rand(b, m, k, device=device) * 2 - 1, torch.rand(b, k, n, device=device) * 2 - 1)
            for b, m, k, n in shapes
        ]
        extra["flops"] = float(sum(2 * b * m * k * n for b, m, k, n in shapes))

        def step():
            for a, b in operands:
                torch.matmul(a, b)
            sync(device)

    elif w.startswith("svd-"):
        model = AutoModel.from_pretrained(args.model)
        svd = paper_svd if w == "svd-randomized-10" else exact_svd
        linears = target_linears(model, TARGETS_XS)

        def step():
            for _, lin in linears:
                a, b = svd(lin.weight, 16)
                _ = (a.to(device), b.to(device))
            sync(device)

    elif w.startswith("adapter-"):
        from peft import get_peft_model_state_dict, set_peft_model_state_dict
        from safetensors.torch import load_file

        model = lora_xs(AutoModel.from_pretrained(args.model), 16, std=0.01).to(device)
        scratch = tempfile.mkdtemp(dir=args.scratch)
        model.save_pretrained(scratch)
        path = os.path.join(scratch, "adapter_model.safetensors")
        extra["file_bytes"] = os.path.getsize(path)
        extra["values"] = sum(t.numel() for t in get_peft_model_state_dict(model).values())

        if w == "adapter-save":
            def step():
                model.save_pretrained(scratch)
        else:
            def step():
                state = load_file(path, device=str(device))
                set_peft_model_state_dict(model, state)
                sync(device)
    else:
        raise SystemExit(f"unknown workload {w}; known: {', '.join(WORKLOADS)}")

    times, setup = timed(args, device, step)
    if w.startswith("train-"):
        extra["last_loss"] = last[0]
    report = timing_report(args, device, times, setup, **extra)
    if device.type == "cuda":
        report["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(report))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="train-lora-xs")
    p.add_argument("--model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--scratch", default=tempfile.gettempdir())
    p.add_argument("--list", action="store_true")
    args = p.parse_args()
    if args.list:
        print("\n".join(WORKLOADS))
        return
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    if not args.model:
        raise SystemExit("--model DIR is required")
    os.makedirs(args.scratch, exist_ok=True)
    run(args)


if __name__ == "__main__":
    main()
