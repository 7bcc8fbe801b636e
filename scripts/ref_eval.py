#!/usr/bin/env python3
"""Reference perplexity with Hugging Face transformers, to check `paretoqc eval` against.

  python3 scripts/ref_eval.py (--gguf FILE | --model DIR) --text FILE
                              [--ctx 512] [--max-tokens N] [--threads N] [--dump-ids FILE]

The model is loaded in float32 with eager attention (a GGUF file is dequantized by transformers).
The whole text file is tokenized as one string with no BOS or other special tokens, the first
--max-tokens tokens are kept and cut into non-overlapping windows of --ctx tokens (a remainder
shorter than --ctx is dropped). In each window, every position 1..ctx-1 is predicted from its
prefix, so each window scores ctx-1 tokens; perplexity = exp(mean negative log-likelihood over
all scored tokens). tokens/s = scored tokens / wall time of the forward passes (loading and
tokenizing not counted). The last line printed is `perplexity: <value>`.
"""

import argparse
import math
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--gguf", help="a GGUF model file")
    src.add_argument("--model", help="a Hugging Face model directory (config.json, safetensors)")
    ap.add_argument("--text", required=True, help="the text file to score")
    ap.add_argument("--ctx", type=int, default=512, help="window length in tokens (default 512)")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="use only the first N tokens of the text (default: all)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch intra-op threads (default: all cores)")
    ap.add_argument("--ids", metavar="FILE",
                    help="score these token ids (one per line, e.g. from `paretoqc tokenize`) "
                         "instead of tokenizing --text with transformers' tokenizer")
    ap.add_argument("--dump-ids", metavar="FILE",
                    help="write the token ids that are scored (after --max-tokens, before "
                         "dropping the remainder), one per line")
    args = ap.parse_args()
    if args.ctx < 2:
        ap.error("--ctx must be at least 2")

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    if args.gguf:
        path = os.path.abspath(args.gguf)
        where, kw = os.path.dirname(path), {"gguf_file": os.path.basename(path)}
    else:
        where, kw = args.model, {}

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(where, **kw)
    # `torch_dtype` was renamed `dtype` in transformers 4.56
    tv = tuple(int(p) for p in transformers.__version__.split(".")[:2])
    kw["dtype" if tv >= (4, 56) else "torch_dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(where, attn_implementation="eager", **kw)
    model.eval()
    load_s = time.perf_counter() - t0

    if args.ids:
        with open(args.ids) as f:
            ids = [int(line) for line in f if line.strip()]
    else:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
        tok.model_max_length = 1 << 62  # the text is one long string on purpose; windows come after
        ids = tok(text, add_special_tokens=False)["input_ids"]
    n_text = len(ids)
    if args.max_tokens is not None:
        ids = ids[: args.max_tokens]
    if args.dump_ids:
        with open(args.dump_ids, "w") as f:
            f.write("".join(f"{i}\n" for i in ids))
    n_windows = len(ids) // args.ctx
    if n_windows == 0:
        sys.exit(f"ref_eval: only {len(ids)} tokens, fewer than one window of {args.ctx}")

    print(f"model: {args.gguf or args.model} ({sum(p.numel() for p in model.parameters())} "
          f"parameters, loaded in {load_s:.1f} s)")
    print(f"text: {args.text}: {n_text} tokens, using {n_windows} windows of {args.ctx}")
    print(f"threads: {args.threads}, torch {torch.__version__}, transformers {transformers.__version__}")

    nll_sum = 0.0
    scored = 0
    fwd_s = 0.0
    with torch.no_grad():
        for w in range(n_windows):
            x = torch.tensor([ids[w * args.ctx : (w + 1) * args.ctx]], dtype=torch.long)
            t = time.perf_counter()
            logits = model(input_ids=x, use_cache=False).logits[0].float()
            fwd_s += time.perf_counter() - t
            logp = torch.log_softmax(logits[:-1].double(), dim=-1)
            nll = -logp.gather(1, x[0, 1:, None]).sum().item()
            nll_sum += nll
            scored += args.ctx - 1

    print(f"tokens scored: {scored}")
    print(f"forward time: {fwd_s:.2f} s")
    print(f"tokens/s: {scored / fwd_s:.1f}")
    print(f"mean nll: {nll_sum / scored:.6f}")
    print(f"perplexity: {math.exp(nll_sum / scored):.6f}")


if __name__ == "__main__":
    main()
