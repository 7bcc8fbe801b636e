#!/usr/bin/env python3
"""Reference zero-shot scores with Hugging Face transformers, to check `paretoqc eval --tasks`.

  python3 scripts/ref_tasks.py (--gguf FILE | --model DIR) [--tasks all] [--limit N]
                               [--task-dir data/tasks] [--threads N] [--json FILE]
                               [--compare PARETOQC.json]

Reads the same requests files as paretoqc (written independently here, from lm-eval-harness's
definitions): documents in file order, OLMo's unconditional copies (doc_id >= 1000000) skipped,
and for the test_rc_5shot variants (arc_easy, arc_challenge, openbookqa) `doc.query` as the
zero-shot context. Each pair is tokenized as lm-eval's HFLM does (trailing context whitespace
moved to the continuation; context+continuation encoded whole, split at the context's token
count; no special tokens; at most max_position_embeddings input tokens, cut on the left). The
model runs in float32 with eager attention, the choices of one document as one right-padded
batch, the lm_head on the continuation's rows only; log-softmax in float32 as lm-eval. acc: argmax of summed log-likelihoods; acc_norm: of
log-likelihood / len(choice) in characters; stderr sqrt(p(1-p)/(n-1)).

--json writes the results in paretoqc's --json shape (tasks[].scores[].loglikelihoods).
--compare reads paretoqc's --json output and prints, per task, both engines' acc and acc_norm,
the largest |difference| of a choice's log-likelihood and the number of documents whose
prediction differs.
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

TASKS = {  # name: (folder, variant, zero-shot context from doc.query?)
    "arc_easy": ("arc_easy", "test_rc_5shot", True),
    "arc_challenge": ("arc_challenge", "test_rc_5shot", True),
    "boolq": ("boolq", "rc_0shot", False),
    "piqa": ("piqa", "rc_0shot", False),
    "siqa": ("socialiqa", "rc_0shot", False),
    "hellaswag": ("hellaswag", "rc_0shot", False),
    "openbookqa": ("openbookqa", "test_rc_5shot", True),
    "winogrande": ("winogrande", "rc_0shot", False),
}
UNCONDITIONAL = 1_000_000


def read_docs(path, from_query, limit):
    """[(doc_id, gold, [(context, continuation), ...])] in file order."""
    docs, order = {}, []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            did = r["doc_id"]
            if did >= UNCONDITIONAL:
                continue
            if did not in docs:
                if limit is not None and len(order) == limit:
                    break
                docs[did] = []
                order.append(did)
            ctx = r["request"]["context"]
            if from_query:
                q = r["doc"]["query"]
                assert ctx.endswith(q), f"{path}: doc {did}: context does not end with doc.query"
                ctx = q
            docs[did].append((r["idx"], r["label"], ctx, r["request"]["continuation"]))
    out = []
    for did in order:
        reqs = sorted(docs[did])
        assert [r[0] for r in reqs] == list(range(len(reqs))), f"doc {did}: bad idx"
        out.append((did, reqs[0][1], [(c, k) for _, _, c, k in reqs]))
    return out


def encode_pair(tok, context, continuation, max_len):
    n_space = len(context) - len(context.rstrip())
    if n_space:
        continuation = context[-n_space:] + continuation
        context = context[:-n_space]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tok(context, add_special_tokens=False)["input_ids"])
    cont = whole[n_ctx:]
    return whole[-(max_len + 1):], len(cont)


def choice_len(continuation):
    return len(continuation[1:] if continuation.startswith(" ") else continuation)


def score_doc(torch, model, tok, choices, max_len):
    """Summed log-likelihood of each choice's continuation, and the tokens run. The choices of a
    document run as one right-padded batch (padding after a sequence cannot change its rows:
    the model is causal); the lm_head is applied to the continuation's rows only."""
    seqs = [encode_pair(tok, c, k, max_len) for c, k in choices]
    inputs = [s[:-1] for s, _ in seqs]
    width = max(len(i) for i in inputs)
    ids = torch.zeros((len(inputs), width), dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for b, i in enumerate(inputs):
        ids[b, : len(i)] = torch.tensor(i)
        mask[b, : len(i)] = 1
    lls = []
    with torch.no_grad():
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        for b, (s, n) in enumerate(seqs):
            rows = hidden[b, len(s) - 1 - n: len(s) - 1]
            logp = torch.log_softmax(model.lm_head(rows).float(), dim=-1)
            target = torch.tensor(s[-n:])
            lls.append(float(logp.gather(1, target[:, None]).sum()))
    return lls, sum(len(i) for i in inputs)


def argmax(xs):
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def metric(hits, n):
    p = hits / n
    return {"value": p, "stderr": math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else None}


def compare(ours, path):
    with open(path) as f:
        theirs = {t["task"]: t for t in json.load(f)["tasks"]}
    print(f"\ncomparison with {path} (paretoqc) on the same documents:")
    print(f"|{'Tasks':<14}|{'Docs':>5}|{'acc pqc':>8}|{'acc hf':>8}|{'norm pqc':>8}|{'norm hf':>8}"
          f"|{'max|Δll|':>9}|{'pred diff':>9}|")
    print(f"|{'-' * 14}|{'-' * 4}:|{'-' * 7}:|{'-' * 7}:|{'-' * 7}:|{'-' * 7}:|{'-' * 8}:|{'-' * 8}:|")
    worst = 0.0
    for t in ours["tasks"]:
        p = theirs.get(t["task"])
        if p is None:
            print(f"|{t['task']:<14}| not in {path}")
            continue
        pd = {s["doc_id"]: s for s in p["scores"]}
        common = [s for s in t["scores"] if s["doc_id"] in pd]
        dmax, ndiff = 0.0, 0
        for s in common:
            q = pd[s["doc_id"]]
            dmax = max(dmax, max(abs(a - b) for a, b in zip(s["loglikelihoods"], q["loglikelihoods"])))
            ndiff += (s["pred"] != q["pred"]) + (s["pred_norm"] != q["pred_norm"])
        worst = max(worst, dmax)
        print(f"|{t['task']:<14}|{len(common):>5}|{p['acc']['value']:>8.4f}|{t['acc']['value']:>8.4f}"
              f"|{p['acc_norm']['value']:>8.4f}|{t['acc_norm']['value']:>8.4f}|{dmax:>9.2e}|{ndiff:>9}|")
    print(f"largest |Δ log-likelihood| over all choices: {worst:.3e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--gguf", help="a GGUF model file")
    src.add_argument("--model", help="a Hugging Face model directory")
    ap.add_argument("--tasks", default="all", help="comma-separated task names, or all")
    ap.add_argument("--limit", type=int, default=None, help="first N documents of each task")
    ap.add_argument("--task-dir", default="data/tasks")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--compare", help="paretoqc's --json output to compare with")
    args = ap.parse_args()
    names = list(TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",")]
    for n in names:
        if n not in TASKS:
            ap.error(f"unknown task {n}; known: {', '.join(TASKS)}")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    if args.gguf:
        path = os.path.abspath(args.gguf)
        where, kw = os.path.dirname(path), {"gguf_file": os.path.basename(path)}
    else:
        where, kw = args.model, {}
    tok = AutoTokenizer.from_pretrained(where, **kw)
    tv = tuple(int(p) for p in transformers.__version__.split(".")[:2])
    kw["dtype" if tv >= (4, 56) else "torch_dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(where, attn_implementation="eager", **kw)
    model.eval()
    max_len = model.config.max_position_embeddings

    out = {"model": args.gguf or args.model, "engine": f"transformers {transformers.__version__}",
           "limit": args.limit, "max_len": max_len, "tasks": []}
    start = time.perf_counter()
    for name in names:
        folder, variant, from_query = TASKS[name]
        path = os.path.join(args.task_dir, folder, variant, "requests.jsonl.gz")
        if not os.path.exists(path):
            sys.exit(f"{path}: missing; run scripts/get-data")
        docs = read_docs(path, from_query, args.limit)
        scores, tokens, t0 = [], 0, time.perf_counter()
        for did, gold, choices in docs:
            lls, n = score_doc(torch, model, tok, choices, max_len)
            tokens += n
            lens = [choice_len(k) for _, k in choices]
            scores.append({"doc_id": did, "gold": gold, "loglikelihoods": lls, "lengths": lens,
                           "pred": argmax(lls),
                           "pred_norm": argmax([ll / max(n, 1) for ll, n in zip(lls, lens)])})
        acc = metric(sum(s["pred"] == s["gold"] for s in scores), len(scores))
        norm = metric(sum(s["pred_norm"] == s["gold"] for s in scores), len(scores))
        out["tasks"].append({"task": name, "source": path, "documents": len(scores), "acc": acc,
                             "acc_norm": norm, "tokens": tokens, "scores": scores})
        print(f"{name}: {len(scores)} documents, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    out["seconds"] = time.perf_counter() - start
    n = len(out["tasks"])
    out["average"] = {"acc": sum(t["acc"]["value"] for t in out["tasks"]) / n,
                      "acc_norm": sum(t["acc_norm"]["value"] for t in out["tasks"]) / n}

    print(f"|{'Tasks':<14}|{'Docs':>5}|{'Metric':<8}|{'Value':>6}|   |{'Stderr':>6}|")
    print("|--------------|----:|--------|-----:|---|-----:|")
    for t in out["tasks"]:
        for i, m in enumerate(["acc", "acc_norm"]):
            se = t[m]["stderr"]
            print(f"|{t['task'] if i == 0 else '':<14}|{t['documents'] if i == 0 else '':>5}|{m:<8}"
                  f"|{t[m]['value']:>6.4f}| ± |{'N/A' if se is None else f'{se:.4f}':>6}|")
    print(f"|{'average':<14}|{'':>5}|{'acc':<8}|{out['average']['acc']:>6.4f}|   |{'':>6}|")
    print(f"|{'':<14}|{'':>5}|{'acc_norm':<8}|{out['average']['acc_norm']:>6.4f}|   |{'':>6}|")
    tokens = sum(t["tokens"] for t in out["tasks"])
    print(f"model: {out['model']} ({out['engine']}, float32, {args.threads} threads)")
    print(f"documents: {sum(t['documents'] for t in out['tasks'])}, tokens run: {tokens}, "
          f"seconds: {out['seconds']:.1f}")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
        print(f"wrote {args.json}")
    if args.compare:
        compare(out, args.compare)


if __name__ == "__main__":
    main()
