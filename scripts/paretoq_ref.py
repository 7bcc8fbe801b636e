#!/usr/bin/env python3
"""The ParetoQ reference model, built from the authors' own code, to check paretoqc against.

  python3 scripts/paretoq_ref.py logits --model DIR --bits B --token-ids 1,2,3 --out F.safetensors
  python3 scripts/paretoq_ref.py train --model DIR --bits B --data FILE --steps N --seq-len L
                                       --batch B --lr LR --out DIR [--threads T] [--seed S]
  python3 scripts/paretoq_ref.py compare-logits A.safetensors B.safetensors
  python3 scripts/paretoq_ref.py compare-qw PARETOQC_QUANTIZE_DIR --model DIR --bits B
  python3 scripts/paretoq_ref.py compare-grads PARETOQC_DIR|ADAM_M.safetensors REF_GRADS.safetensors
  python3 scripts/paretoq_ref.py compare-train DIR_A DIR_B --init MODEL --bits B
  python3 scripts/paretoq_ref.py CMD ARGS + CMD ARGS + ...   (several commands in one process)

(`train --dump-grads F` also writes the first step's clipped gradients; `--precision f64` runs a
float64 model around the float32 quantizer, as a ground truth for float-rounding comparisons.)

The model is transformers' LlamaForCausalLM in float32, loaded from a Hugging Face folder, with the
7 projections of every decoder layer (q/k/v/o_proj, gate/up/down_proj) replaced by the reference
`QuantizeLinear(in, out, bias=False, w_bits=...)` from `models/utils_quant.py` of the ParetoQ copy
shipped in the PyPI wheel torchao==0.18.0 (`torchao/prototype/paretoq/`). The wheel is fetched
with `pip download --no-deps` into data/cache/ on first use and its ParetoQ .py files are read out
of the zip into data/cache/paretoq/; nothing of it is copied into the repository.

Bits are 1, 1.58, 2, 3, 4 (16: no quantization); the reference's w_bits encodes 1.58 as 0.
Scales (`weight_clip_val`, [out, 1] per projection) come from the checkpoint when it has them,
else from the reference train.py rule: 1-bit mean|W|, ternary/2-bit max|W|, 3/4-bit
max|W| / (2^(b-1) - 1), per output row.

`train` follows the reference recipe on the CPU in float32: AdamW (betas 0.9/0.999, eps 1e-8,
weight decay 0) over all parameters (scales included), gradient-norm clipping at 1.0, cosine
schedule without warmup (transformers' get_cosine_schedule_with_warmup), loss = transformers'
causal-LM loss with labels = input_ids. Data: the text is split into documents exactly as
`paretoqc train` does (the `text` field of each line of a .jsonl file, else blank-line separated
paragraphs, each followed by "\\n\\n"), each document tokenized without BOS/EOS, the ids
concatenated and cut into blocks of --seq-len (remainder dropped). By default (--order paretoqc)
the last 5% of the blocks (at least one) are left out and the rest are visited in paretoqc's
seeded order, so the same --seed gives both engines the same batches; --order random uses all
blocks in a torch.randperm order instead. The result is written in the reference's layout with
save_pretrained (safetensors: latent float32 weights plus `*.weight_clip_val`), together with the
tokenizer and `ref_training.json` (losses, seconds per step). The mean wall time of a step
(forward + backward + clipping + optimizer + schedule), excluding the first (warm-up) step, is
printed as `seconds/step: X`.
"""

import argparse
import glob
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, "data", "cache")
REF_DIR = os.path.join(CACHE, "paretoq")
TORCHAO = "torchao==0.18.0"
WHEEL_PREFIX = "torchao/prototype/paretoq/"

PROJECTIONS = (
    ("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
    ("mlp", ("gate_proj", "up_proj", "down_proj")),
)

W_BITS = {"1": 1, "1.58": 0, "2": 2, "3": 3, "4": 4, "16": 16}


def w_bits_of(bits):
    """paretoqc's --bits spelling -> the reference's w_bits (1.58 -> 0)."""
    b = str(bits).strip()
    if b in ("0", "ternary"):
        b = "1.58"
    if b.endswith(".0"):
        b = b[:-2]
    if b not in W_BITS:
        raise SystemExit(f"paretoq_ref: --bits must be one of 1, 1.58, 2, 3, 4, 16 (got {bits!r})")
    return W_BITS[b]


def fetch_reference():
    """Unpacks the reference's .py files from the torchao wheel (downloading it if needed)."""
    marker = os.path.join(REF_DIR, "models", "utils_quant.py")
    if os.path.exists(marker):
        return REF_DIR
    os.makedirs(CACHE, exist_ok=True)
    wheels = sorted(glob.glob(os.path.join(CACHE, "torchao-0.18.0-*.whl")))
    if not wheels:
        print(f"paretoq_ref: fetching {TORCHAO} into {CACHE}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        TORCHAO, "-d", CACHE], check=True)
        wheels = sorted(glob.glob(os.path.join(CACHE, "torchao-0.18.0-*.whl")))
        if not wheels:
            raise SystemExit(f"paretoq_ref: pip download {TORCHAO} left no wheel in {CACHE}")
    tmp = REF_DIR + ".tmp"
    with zipfile.ZipFile(wheels[-1]) as z:
        names = [n for n in z.namelist() if n.startswith(WHEEL_PREFIX) and n.endswith(".py")]
        if not any(n.endswith("models/utils_quant.py") for n in names):
            raise SystemExit(f"paretoq_ref: {wheels[-1]} has no {WHEEL_PREFIX}models/utils_quant.py")
        for n in names:
            dest = os.path.join(tmp, n[len(WHEEL_PREFIX):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(z.read(n))
    if os.path.exists(REF_DIR):
        import shutil
        shutil.rmtree(REF_DIR)
    os.rename(tmp, REF_DIR)
    return REF_DIR


_UQ = None


def utils_quant():
    """The reference `models/utils_quant.py` module (QuantizeLinear & co.)."""
    global _UQ
    if _UQ is None:
        path = os.path.join(fetch_reference(), "models", "utils_quant.py")
        spec = importlib.util.spec_from_file_location("paretoq_reference_utils_quant", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _UQ = mod
    return _UQ


def checkpoint_tensors(model_dir, suffix):
    """Tensors of the folder's safetensors files whose names end with `suffix`."""
    from safetensors import safe_open

    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    out = {}
    for fn in files:
        with safe_open(fn, framework="pt") as f:
            for k in f.keys():
                if k.endswith(suffix):
                    out[k] = f.get_tensor(k)
    return out


def init_scale(w, w_bits):
    """The reference train.py initialization of weight_clip_val, per output row."""
    import torch

    if w_bits == 1:
        return torch.mean(w.abs(), dim=-1, keepdim=True)
    if w_bits in (0, 2):
        return torch.max(torch.abs(w), dim=-1, keepdim=True)[0]
    if w_bits in (3, 4):
        xmax = torch.max(torch.abs(w), dim=-1, keepdim=True)[0]
        return xmax / (2 ** (w_bits - 1) - 1)
    raise NotImplementedError(w_bits)


def build(model_dir, bits, attn="sdpa", verbose=True, scales="auto", precision="f32"):
    """transformers' LlamaForCausalLM (float32) with the reference QuantizeLinear projections.

    scales: "auto" (the checkpoint's weight_clip_val when it has them, else the init rule),
    "checkpoint" (the same), or "init" (always the init rule, ignoring saved scales).
    precision "f64" (a diagnostic): everything in float64 except the projections' latent weights
    and scales, which stay float32 so that Q(W) and its STE masks are the reference's float32
    function; QuantizeLinear casts Q(W) to the activations' dtype itself.
    Returns (model, where the scales came from: "checkpoint" | "init" | "none")."""
    import torch
    import transformers
    from transformers import LlamaForCausalLM

    transformers.logging.set_verbosity_error()  # the weight_clip_val keys are "unexpected" to HF
    transformers.logging.disable_progress_bar()
    w_bits = w_bits_of(bits)
    QuantizeLinear = utils_quant().QuantizeLinear
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                             attn_implementation=attn)
    saved = {} if scales == "init" else checkpoint_tensors(model_dir, ".weight_clip_val")
    used = 0
    for i, layer in enumerate(model.model.layers):
        for block_name, projs in PROJECTIONS:
            block = getattr(layer, block_name)
            for p in projs:
                old = getattr(block, p)
                if getattr(old, "bias", None) is not None:
                    raise SystemExit(f"paretoq_ref: layer {i} {p} has a bias; the reference drops biases")
                new = QuantizeLinear(old.in_features, old.out_features, bias=False, w_bits=w_bits)
                with torch.no_grad():
                    new.weight.copy_(old.weight)
                    if w_bits < 16:
                        key = f"model.layers.{i}.{block_name}.{p}.weight_clip_val"
                        if key in saved:
                            new.weight_clip_val.copy_(saved[key].to(torch.float32).reshape(-1, 1))
                            used += 1
                        else:
                            new.weight_clip_val.copy_(init_scale(new.weight, w_bits))
                setattr(block, p, new)
    n = 7 * len(model.model.layers)
    if w_bits >= 16:
        src = "none"
    elif used == n:
        src = "checkpoint"
    elif used == 0:
        src = "init"
    else:
        raise SystemExit(f"paretoq_ref: {model_dir} has weight_clip_val for {used} of {n} projections")
    if precision == "f64":
        model.double()
        for layer in (model.model.layers if w_bits < 16 else []):
            for block_name, projs in PROJECTIONS:
                for p in projs:
                    q = getattr(getattr(layer, block_name), p)
                    q.float()
    if verbose:
        print(f"paretoq_ref: {model_dir}: w_bits {w_bits}, scales from {src}, {precision}",
              file=sys.stderr)
    return model, src


def cmd_logits(a):
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(a.threads)
    ids = [int(t) for t in a.token_ids.split(",") if t.strip()]
    if not ids:
        raise SystemExit("paretoq_ref: --token-ids is empty")
    model, src = build(a.model, a.bits, attn=a.attn, scales=a.scales, precision=a.precision)
    if a.scales == "checkpoint" and src != "checkpoint":
        raise SystemExit(f"paretoq_ref: {a.model} has no weight_clip_val (--scales checkpoint)")
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0]
    save_file({"logits": logits.contiguous()}, a.out,  # float64 with --precision f64
              metadata={"model": a.model, "bits": str(a.bits), "token_ids": a.token_ids})
    print(f"wrote logits {list(logits.shape)} to {a.out}")


def documents(text, jsonl):
    """Documents of a corpus, as paretoqc's `train::data::documents` splits them."""
    if not jsonl:
        return [p + "\n\n" for p in text.split("\n\n") if p.strip()]
    docs = []
    for i, line in enumerate(text.splitlines()):
        if line.strip():
            v = json.loads(line)
            if not isinstance(v.get("text"), str):
                raise SystemExit(f"paretoq_ref: line {i + 1}: no string field `text`")
            docs.append(v["text"])
    return docs


def paretoqc_order(n, seed):
    """paretoqc's `train::data::shuffled`: a xorshift64 Fisher-Yates order of n blocks."""
    mask = (1 << 64) - 1
    order = list(range(n))
    s = ((seed * 0x9E3779B97F4A7C15) & mask) | 1
    for i in range(n - 1, 0, -1):
        s ^= (s << 13) & mask
        s ^= s >> 7
        s ^= (s << 17) & mask
        j = s % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def cmd_train(a):
    import torch
    from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

    if a.seq_len < 2 or a.batch < 1 or a.steps < 1:
        raise SystemExit("paretoq_ref: --seq-len must be at least 2, --batch and --steps at least 1")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(a.model)
    with open(a.data, encoding="utf-8") as f:
        text = f.read()
    ids = []
    for d in documents(text, a.data.endswith(".jsonl")):
        ids.extend(tok(d, add_special_tokens=False)["input_ids"])
    blocks = [ids[i:i + a.seq_len] for i in range(0, len(ids) - a.seq_len + 1, a.seq_len)]
    if a.order == "paretoqc":
        held = max(len(blocks) // 20, 1)
        blocks = blocks[:len(blocks) - held]
        order = paretoqc_order(len(blocks), a.seed)
    else:
        g = torch.Generator().manual_seed(a.seed)
        order = torch.randperm(len(blocks), generator=g).tolist()
    if not blocks:
        raise SystemExit(f"paretoq_ref: {a.data}: too few tokens ({len(ids)}) for blocks of {a.seq_len}")

    model, src = build(a.model, a.bits, attn=a.attn, precision=a.precision)
    model.config.use_cache = False
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=a.steps)
    n_params = sum(p.numel() for p in params)
    print(f"paretoq_ref: {len(ids)} tokens, {len(blocks)} training blocks of {a.seq_len}; "
          f"{n_params} parameters; {a.threads} threads; torch {torch.__version__}")

    losses, times, lrs = [], [], []
    for step in range(a.steps):
        idx = [order[(step * a.batch + i) % len(order)] for i in range(a.batch)]
        x = torch.tensor([blocks[i] for i in idx], dtype=torch.long)
        t0 = time.perf_counter()
        lrs.append(opt.param_groups[0]["lr"])
        if a.precision == "f64":  # transformers' loss casts the logits to float32
            logits = model(input_ids=x).logits
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        else:
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        if step == 0 and a.dump_grads:
            from safetensors.torch import save_file
            save_file({n: p.grad.detach().contiguous()
                       for n, p in model.named_parameters() if p.grad is not None},
                      a.dump_grads, metadata={"grad_norm_before_clipping": str(float(norm)),
                                              "loss": str(loss.item())})
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        lv = loss.item()
        times.append(time.perf_counter() - t0)
        losses.append(lv)
        if a.verbose:
            print(f"step {step + 1}/{a.steps}: loss {lv:.6f} lr {lrs[-1]:.3e} {times[-1]:.3f}s")

    steady = times[1:] if len(times) > 1 else times
    sps = sum(steady) / len(steady)
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    tok.save_pretrained(a.out)
    with open(os.path.join(a.out, "ref_training.json"), "w") as f:
        json.dump({"model": a.model, "bits": str(a.bits), "scales_from": src, "steps": a.steps,
                   "seq_len": a.seq_len, "batch": a.batch, "lr": a.lr, "seed": a.seed,
                   "order": a.order, "threads": a.threads, "losses": losses, "lrs": lrs,
                   "step_seconds": times, "seconds_per_step": sps}, f, indent=1)
    print(f"final train loss: {losses[-1]:.6f}")
    print(f"wrote {a.out} (latent weights + weight_clip_val)")
    print(f"seconds/step: {sps:.6f}")


def rel_err(a, b):
    """max |a - b| / max |b| (0 when both are all zero)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise SystemExit(f"paretoq_ref: shapes differ: {a.shape} vs {b.shape}")
    d = float(np.abs(a - b).max()) if a.size else 0.0
    m = float(np.abs(b).max()) if b.size else 0.0
    if not (math.isfinite(d) and math.isfinite(m)):
        return float("inf")
    return d / m if m > 0 else (0.0 if d == 0 else float("inf"))


def cmd_compare_logits(a):
    from safetensors.numpy import load_file

    x, y = load_file(a.a)["logits"], load_file(a.b)["logits"]
    print(f"{rel_err(x, y):.3e}")


def run_losses(out):
    """Per-step training losses of a run: the reference's ref_training.json or paretoqc's
    checkpoint/state.json."""
    for fn in ("ref_training.json", os.path.join("checkpoint", "state.json")):
        path = os.path.join(out, fn)
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)["losses"]
    raise SystemExit(f"paretoq_ref: {out}: neither ref_training.json nor checkpoint/state.json")


def load_weights(model_dir):
    from safetensors.numpy import load_file

    out = {}
    for fn in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        out.update(load_file(fn))
    return out


def cmd_compare_train(a):
    """Prints `loss <rel>` (max over steps of |la - lb| / |lb|), then `weights-l2 <rel> <tensor>`
    and `weights-max <rel> <tensor>`: the max over tensors of ||A - B|| / ||B - init|| in the L2
    and the max norm, i.e. the disagreement of the two runs relative to how far training moved
    the tensor (scales: from their init rule)."""
    import numpy as np

    la, lb = run_losses(a.a), run_losses(a.b)
    if len(la) != len(lb):
        raise SystemExit(f"paretoq_ref: {len(la)} vs {len(lb)} losses")
    loss = max(abs(x - y) / abs(y) for x, y in zip(la, lb))
    wa, wb, w0 = load_weights(a.a), load_weights(a.b), load_weights(a.init)
    if "lm_head.weight" in wa and "lm_head.weight" not in wb:
        wb["lm_head.weight"] = wb["model.embed_tokens.weight"]
    if "lm_head.weight" in wb and "lm_head.weight" not in wa:
        wa["lm_head.weight"] = wa["model.embed_tokens.weight"]
    if "lm_head.weight" not in w0 and "lm_head.weight" in wb:
        w0["lm_head.weight"] = w0["model.embed_tokens.weight"]
    if set(wa) != set(wb):
        raise SystemExit(f"paretoq_ref: tensors differ: {sorted(set(wa) ^ set(wb))}")
    w_bits = w_bits_of(a.bits)
    norms = {"l2": lambda v: float(np.sqrt((v * v).sum())), "max": lambda v: float(np.abs(v).max())}
    worst = {n: (0.0, "-") for n in norms}
    for k in sorted(wb):
        if k.endswith(".weight_clip_val"):
            import torch
            w = torch.from_numpy(w0[k[: -len("_clip_val")]].astype(np.float32))
            start = init_scale(w, w_bits).numpy()
        else:
            start = w0[k]
        step = wb[k].astype(np.float64) - start
        diff = wa[k].astype(np.float64) - wb[k]
        for n, norm in norms.items():
            moved, d = norm(step), norm(diff)
            r = d / moved if moved > 0 else (0.0 if d == 0 else float("inf"))
            if r > worst[n][0] or not math.isfinite(r):
                worst[n] = (r, k)
    print(f"loss {loss:.3e}")
    for n in norms:
        print(f"weights-{n} {worst[n][0]:.3e} {worst[n][1]}")


def cmd_compare_grads(a):
    """Prints `grads <rel> <tensor>`: paretoqc's first-step gradient, recovered from the Adam first
    moment of a 1-step run (m = (1 - beta1) g), against the reference's (train --dump-grads);
    the max over tensors of max |g_pqc - g_ref| / max |g_ref|."""
    import numpy as np
    from safetensors.numpy import load_file

    path = a.pqc
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint", "adam_m.safetensors")
    m = load_file(path)
    g = load_file(a.ref_grads)
    if "lm_head.weight" in m and "lm_head.weight" not in g:
        g["lm_head.weight"] = g.get("model.embed_tokens.weight")
    missing = sorted(k for k in g if k not in m)
    if missing:
        raise SystemExit(f"paretoq_ref: paretoqc has no moments for {missing[:5]}")
    worst, name = 0.0, "-"
    for k in sorted(g):
        r = rel_err(m[k].astype(np.float64) / 0.1, g[k])
        if r > worst or not math.isfinite(r):
            worst, name = r, k
    print(f"grads {worst:.3e} {name}")


def cmd_compare_qw(a):
    """Prints `qw <mismatching elements> <of total> <max |diff|> <tensor>`: the reference's Q(W)
    of every projection of --model at --bits (QuantizeLinear applied to an identity matrix, which
    is exact) against the weights of `paretoqc quantize` (a folder of Q(W))."""
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    model, _ = build(a.model, a.bits, verbose=False)
    got = load_weights(a.quantized)
    bad = total = 0
    worst, name = 0.0, "-"
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            for block_name, projs in PROJECTIONS:
                for p in projs:
                    q = getattr(getattr(layer, block_name), p)
                    want = q(torch.eye(q.in_features, dtype=torch.float32)).T.numpy()
                    k = f"model.layers.{i}.{block_name}.{p}.weight"
                    have = got[k]
                    if have.shape != want.shape:
                        raise SystemExit(f"paretoq_ref: {k}: {have.shape} vs {want.shape}")
                    diff = have != want
                    bad += int(diff.sum())
                    total += diff.size
                    d = float(np.abs(have.astype(np.float64) - want).max())
                    if d > worst:
                        worst, name = d, k
    print(f"qw {bad} {total} {worst:.3e} {name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--model", required=True, help="Hugging Face model folder")
        p.add_argument("--bits", required=True, help="1, 1.58, 2, 3, 4 (16 = none)")
        p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
        p.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"),
                       help="transformers attention implementation (default sdpa)")
        p.add_argument("--precision", default="f32", choices=("f32", "f64"),
                       help="f64: a float64 model around the float32 quantizer (diagnostic)")

    p = sub.add_parser("logits", help="fake-quant logits [T, V] of a list of token ids")
    common(p)
    p.add_argument("--token-ids", required=True, help="comma-separated ids, e.g. 1,2,3")
    p.add_argument("--out", required=True, help="output .safetensors (tensor `logits`)")
    p.add_argument("--scales", default="auto", choices=("auto", "checkpoint", "init"),
                   help="weight_clip_val: the checkpoint's if any (auto), the checkpoint's or fail "
                        "(checkpoint), or the init rule even when the checkpoint has some (init)")
    p.set_defaults(fn=cmd_logits)

    p = sub.add_parser("compare-logits",
                       help="max |A - B| / max |B| of the `logits` tensors of two files")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(fn=cmd_compare_logits)

    p = sub.add_parser("compare-grads", help="first-step gradients: paretoqc's (from the Adam "
                       "moment of a 1-step run) against the reference's (train --dump-grads)")
    p.add_argument("pqc", help="output folder of a 1-step `paretoqc train` (or the "
                   "checkpoint/adam_m.safetensors of a run stopped after step 1)")
    p.add_argument("ref_grads", help="the reference's --dump-grads file")
    p.set_defaults(fn=cmd_compare_grads)

    p = sub.add_parser("compare-qw", help="Q(W) of every projection: the reference's against "
                       "the output folder of `paretoqc quantize`; exact comparison")
    p.add_argument("quantized", help="output folder of `paretoqc quantize MODEL --bits B`")
    p.add_argument("--model", required=True, help="the folder that was quantized")
    p.add_argument("--bits", required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.set_defaults(fn=cmd_compare_qw)

    p = sub.add_parser("compare-train", help="two training runs from the same start: losses "
                       "and final weights (paretoqc's checkpoint/state.json or ref_training.json)")
    p.add_argument("a", help="output folder of run A")
    p.add_argument("b", help="output folder of run B")
    p.add_argument("--init", required=True, help="the model both runs started from")
    p.add_argument("--bits", required=True)
    p.set_defaults(fn=cmd_compare_train)

    p = sub.add_parser("train", help="reference QAT on the CPU in float32")
    common(p)
    p.add_argument("--data", required=True, help="plain text or .jsonl with a `text` field")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--order", default="paretoqc", choices=("paretoqc", "random"),
                   help="block order: paretoqc's (same --seed, same batches) or torch.randperm")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--verbose", action="store_true", help="print every step")
    p.add_argument("--dump-grads", metavar="FILE",
                   help="write the first step's gradients (after clipping) as safetensors")
    p.set_defaults(fn=cmd_train)

    # Several commands in one process (torch is slow to import): `CMD ARGS + CMD ARGS + ...`.
    groups = [[]]
    for t in sys.argv[1:]:
        if t == "+":
            groups.append([])
        else:
            groups[-1].append(t)
    for g in groups:
        a = ap.parse_args(g)
        a.fn(a)


if __name__ == "__main__":
    main()
