#!/usr/bin/env python3
"""Makes the committed test data: a real (tiny) LLaMA language model trained on Jane Austen, its
reference logits from Hugging Face transformers, and the same weights in the other storage
layouts paretoqc imports.

  python3 scripts/gen-testdata.py      (from anywhere; after scripts/setup --python --data and
                                        scripts/get-data)

Writes, under testdata/:
  text/austen-sample.txt     ~60 KB of Pride and Prejudice from chapter 1 (training text)
  text/austen-heldout.txt    ~15 KB of Persuasion from chapter 1 (held-out text)
  models/tiny-llama/         config.json, tokenizer.json (+ tokenizer_config.json for
                             transformers), model.safetensors (f32), reference-logits.safetensors
  models/tiny-llama-paretoq/ the same plus `*.weight_clip_val` [out, 1] per projection, as the
                             ParetoQ reference saves a QAT checkpoint (2-bit init: row max |W|)
  models/tiny-llama-bf16/    the same weights in bfloat16
  models/tiny-llama-sharded/ the same weights in float16, in two shards with an HF index

The model: LlamaForCausalLM, hidden 64, intermediate 160, 2 layers, 4 heads / 2 KV heads of 16,
vocab 512 (a byte-level BPE trained with `tokenizers` on the five novels other than Persuasion),
tied embeddings; trained with AdamW on austen-sample for a few hundred steps of 16 x 128 tokens.
Everything is seeded, and training runs on one thread so the result does not depend on the
machine's core count (bit-exactness across CPUs and library versions is not promised).
"""

import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUSTEN = os.path.join(ROOT, "data", "text", "austen.txt")
TD = os.path.join(ROOT, "testdata")
TEXT_DIR = os.path.join(TD, "text")
MODELS = os.path.join(TD, "models")

SEED = 20250520
SAMPLE_BYTES = 60_000
HELDOUT_BYTES = 15_000
VOCAB = 512
EOT = "<|endoftext|>"
SEQ = 128
BATCH = 16
STEPS = 400
LR = 3e-3
WARMUP = 40
REF_TOKENS = 24
REF_TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good "
            "fortune, must be in want of a wife.")
PROJECTIONS = [("self_attn", p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
              [("mlp", p) for p in ("gate_proj", "up_proj", "down_proj")]

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": VOCAB,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "max_position_embeddings": 256,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "initializer_range": 0.02,
    "torch_dtype": "float32",
}


def rel(p):
    return os.path.relpath(p, ROOT)


def write_bytes(path, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    publish(tmp, path)


def publish(tmp, path):
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_json(path, obj):
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


# --- text ---------------------------------------------------------------------------------------

NOVEL_TITLES = ["SENSE AND SENSIBILITY", "PRIDE AND PREJUDICE", "MANSFIELD PARK", "EMMA",
                "NORTHANGER ABBEY", "Persuasion"]


def split_novels(text):
    """austen.txt (from scripts/get-data) -> {title: text}, by the title line each novel opens with."""
    starts = []
    for title in NOVEL_TITLES:
        if not starts:
            i = 0 if text.startswith(title + "\n") else -1
        else:
            i = text.find("\n" + title + "\n", starts[-1] + 1)
            i = i + 1 if i >= 0 else -1
        if i < 0:
            sys.exit(f"gen-testdata: no title line {title!r} in {rel(AUSTEN)}")
        starts.append(i)
    ends = starts[1:] + [len(text)]
    return {t: text[s:e].strip("\n") + "\n" for t, s, e in zip(NOVEL_TITLES, starts, ends)}


def excerpt(novel, n_bytes, start_marker="Chapter 1"):
    """From the first chapter heading, whole paragraphs until at least n_bytes."""
    i = novel.lower().find("\n" + start_marker.lower() + "\n")
    if i < 0:
        sys.exit(f"gen-testdata: no {start_marker!r} heading")
    body = novel[i + 1 :]
    end = body.find("\n\n", n_bytes)
    return body[: end if end > 0 else len(body)].rstrip("\n") + "\n"


# --- tokenizer ----------------------------------------------------------------------------------

def train_tokenizer(corpus):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if tok.get_vocab_size() != VOCAB or tok.token_to_id(EOT) != 0:
        sys.exit(f"gen-testdata: tokenizer has {tok.get_vocab_size()} tokens, {EOT} = "
                 f"{tok.token_to_id(EOT)}; wanted {VOCAB} and 0")
    return tok


# --- model --------------------------------------------------------------------------------------

def build_model(config_dict):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_dict({k: v for k, v in config_dict.items() if k != "torch_dtype"})
    cfg._attn_implementation = "eager"
    torch.manual_seed(SEED)
    return LlamaForCausalLM(cfg).float()


def nll_windows(model, ids, ctx):
    """Mean NLL over non-overlapping windows of ctx tokens (ctx-1 predictions each)."""
    import torch

    n = len(ids) // ctx
    x = torch.tensor(ids[: n * ctx], dtype=torch.long).view(n, ctx)
    with torch.no_grad():
        logits = model(input_ids=x, use_cache=False).logits.double()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logp.gather(2, x[:, 1:, None]).squeeze(-1)
    return nll.mean().item(), nll.numel()


def train(model, ids, heldout_ids):
    import torch

    gen = torch.Generator().manual_seed(SEED + 1)
    data = torch.tensor(ids, dtype=torch.long)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95), eps=1e-8)

    def lr_at(step):
        if step < WARMUP:
            return LR * (step + 1) / WARMUP
        t = (step - WARMUP) / max(1, STEPS - WARMUP)
        return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    t0 = time.perf_counter()
    model.train()
    for step in range(STEPS):
        starts = torch.randint(0, len(data) - SEQ, (BATCH,), generator=gen)
        x = torch.stack([data[s : s + SEQ] for s in starts.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=x, labels=x, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == STEPS - 1:
            model.eval()
            h, _ = nll_windows(model, heldout_ids, SEQ)
            model.train()
            print(f"  step {step:4d}  train loss {loss.item():.3f}  held-out ppl {math.exp(h):8.2f}"
                  f"  ({time.perf_counter() - t0:.0f} s)")
    model.eval()


# --- saving -------------------------------------------------------------------------------------

def state_tensors(model):
    """The model's tensors as HF saves a tied LLaMA: no lm_head.weight."""
    sd = model.state_dict()
    return {k: v.detach().contiguous().clone() for k, v in sd.items() if k != "lm_head.weight"}


def save_folder(name, tensors, config, tokenizer_json, tokenizer_config, dtype_name):
    import torch
    from safetensors.torch import save_file

    d = os.path.join(MODELS, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):  # stale shards of another layout
        if f.endswith(".safetensors") and f != "reference-logits.safetensors" or f.endswith(".index.json"):
            os.remove(os.path.join(d, f))
    cfg = dict(config, torch_dtype=dtype_name)
    write_json(os.path.join(d, "config.json"), cfg)
    write_bytes(os.path.join(d, "tokenizer.json"), tokenizer_json.encode())
    write_json(os.path.join(d, "tokenizer_config.json"), tokenizer_config)
    dtype = getattr(torch, dtype_name)
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    return d, tensors, save_file


def save_single(name, tensors, config, tok_json, tok_cfg, dtype_name):
    d, tensors, save_file = save_folder(name, tensors, config, tok_json, tok_cfg, dtype_name)
    path = os.path.join(d, "model.safetensors")
    save_file(tensors, path + ".tmp", metadata={"format": "pt"})
    publish(path + ".tmp", path)
    return d


def save_sharded(name, tensors, config, tok_json, tok_cfg, dtype_name):
    d, tensors, save_file = save_folder(name, tensors, config, tok_json, tok_cfg, dtype_name)
    # shard 1: embeddings and layer 0; shard 2: the rest (as HF fills shards in order)
    first = {k: v for k, v in tensors.items()
             if k.startswith("model.embed_tokens.") or k.startswith("model.layers.0.")}
    second = {k: v for k, v in tensors.items() if k not in first}
    files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    for part, fname in zip((first, second), files):
        path = os.path.join(d, fname)
        save_file(part, path + ".tmp", metadata={"format": "pt"})
        publish(path + ".tmp", path)
        weight_map.update({k: fname for k in part})
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    write_json(os.path.join(d, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    return d


def safetensors_bytes(arrays, metadata):
    """A safetensors file with its header in a fixed order (the library's writer orders the
    metadata as a hash map does, so the bytes would change from run to run)."""
    dtypes = {"<f4": "F32", "<i4": "I32"}
    header = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for name in sorted(arrays):
        a = arrays[name]
        header[name] = {"dtype": dtypes[a.dtype.str], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + b"".join(arrays[n].tobytes() for n in sorted(arrays))


def folder_size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


# --- main ---------------------------------------------------------------------------------------

def main():
    if not os.path.exists(AUSTEN):
        sys.exit(f"gen-testdata: {rel(AUSTEN)} is missing; run scripts/get-data first")
    import numpy as np
    import safetensors
    import tokenizers
    import torch
    import transformers
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    np.random.seed(SEED)

    # 1. texts
    novels = split_novels(open(AUSTEN, encoding="utf-8").read())
    sample = excerpt(novels["PRIDE AND PREJUDICE"], SAMPLE_BYTES)
    heldout = excerpt(novels["Persuasion"], HELDOUT_BYTES)
    for name, text in (("austen-sample.txt", sample), ("austen-heldout.txt", heldout)):
        write_bytes(os.path.join(TEXT_DIR, name), text.encode("utf-8"))
        print(f"{rel(os.path.join(TEXT_DIR, name))}: {len(text.encode())} bytes")

    # 2. tokenizer: byte-level BPE on the novels other than the held-out one, paragraph by paragraph
    corpus = [p for t, n in novels.items() if t != "Persuasion" for p in n.split("\n\n") if p.strip()]
    tok = train_tokenizer(corpus)
    tok_json = tok.to_str(pretty=True)
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": None,
        "pad_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": CONFIG["max_position_embeddings"],
    }
    ids = tok.encode(sample).ids
    heldout_ids = tok.encode(heldout).ids
    assert tok.decode(ids) == sample, "tokenizer does not round-trip the sample"
    print(f"tokenizer: byte-level BPE, {tok.get_vocab_size()} tokens; sample {len(ids)} tokens "
          f"({len(sample.encode()) / len(ids):.2f} bytes/token), held-out {len(heldout_ids)}")

    # 3. model, trained
    model = build_model(CONFIG)
    n_params = sum(p.numel() for p in model.parameters())
    h0, _ = nll_windows(model, heldout_ids, SEQ)
    print(f"model: {n_params} parameters; untrained held-out ppl {math.exp(h0):.1f}; training "
          f"{STEPS} steps of {BATCH} x {SEQ} tokens")
    train(model, ids, heldout_ids)
    h, n_scored = nll_windows(model, heldout_ids, SEQ)
    s, _ = nll_windows(model, ids, SEQ)
    print(f"trained: held-out perplexity {math.exp(h):.3f} ({n_scored} tokens, ctx {SEQ}); "
          f"training-text perplexity {math.exp(s):.3f}")

    tensors = state_tensors(model)
    base = save_single("tiny-llama", tensors, CONFIG, tok_json, tok_cfg, "float32")

    # 4. reference logits, from the files just written
    words = REF_TEXT.split(" ")
    ref_text = None
    for k in range(1, len(words) + 1):
        cand = " ".join(words[:k])
        if len(tok.encode(cand).ids) == REF_TOKENS:
            ref_text = cand
            break
        if len(tok.encode(cand).ids) > REF_TOKENS:
            ref_text = None
            break
    hf_tok = AutoTokenizer.from_pretrained(base)
    if ref_text is None:
        ref_ids = hf_tok(REF_TEXT, add_special_tokens=False)["input_ids"][:REF_TOKENS]
        ref_text = hf_tok.decode(ref_ids)
    else:
        ref_ids = hf_tok(ref_text, add_special_tokens=False)["input_ids"]
    assert ref_ids == tok.encode(ref_text).ids and len(ref_ids) == REF_TOKENS

    def hf_logits(d):
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
        m.eval()
        with torch.no_grad():
            return m(input_ids=torch.tensor([ref_ids]), use_cache=False).logits[0].float()

    logits = hf_logits(base)
    with torch.no_grad():
        direct = model(input_ids=torch.tensor([ref_ids]), use_cache=False).logits[0]
    assert torch.allclose(logits, direct, atol=1e-5), "reloaded model differs from the trained one"
    meta = {
        "format": "pt",
        "text": ref_text,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "attn_implementation": "eager",
        "dtype": "float32",
        "generator": "scripts/gen-testdata.py",
    }
    write_bytes(os.path.join(base, "reference-logits.safetensors"), safetensors_bytes(
        {"token_ids": np.array(ref_ids, dtype="<i4"), "logits": logits.numpy().astype("<f4")},
        meta))
    print(f"reference logits: {REF_TOKENS} tokens of {ref_text!r}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}")

    # 5. the other layouts
    pq = dict(tensors)
    for i in range(CONFIG["num_hidden_layers"]):
        for block, proj in PROJECTIONS:
            w = tensors[f"model.layers.{i}.{block}.{proj}.weight"]
            pq[f"model.layers.{i}.{block}.{proj}.weight_clip_val"] = \
                w.abs().amax(dim=-1, keepdim=True).contiguous()
    dirs = [base,
            save_single("tiny-llama-paretoq", pq, CONFIG, tok_json, tok_cfg, "float32"),
            save_single("tiny-llama-bf16", tensors, CONFIG, tok_json, tok_cfg, "bfloat16"),
            save_sharded("tiny-llama-sharded", tensors, CONFIG, tok_json, tok_cfg, "float16")]

    # 6. checks: each layout loads in transformers and gives the f32 logits up to storage rounding
    scale = logits.abs().max().item()
    for d in dirs[1:]:
        if d.endswith("paretoq"):
            sd = load_file(os.path.join(d, "model.safetensors"))
            assert all(torch.equal(sd[k], v) for k, v in tensors.items())
            n_clip = sum(k.endswith(".weight_clip_val") for k in sd)
            assert n_clip == 7 * CONFIG["num_hidden_layers"]
            print(f"{rel(d)}: {n_clip} weight_clip_val tensors")
            continue
        err = (hf_logits(d) - logits).abs().max().item() / scale
        print(f"{rel(d)}: transformers logits within {err:.2e} (relative to max |logit|) of f32")
    for d in dirs:
        print(f"{rel(d)}: {folder_size(d) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
