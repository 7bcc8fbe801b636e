#!/usr/bin/env python3
"""Copies the first few documents of each zero-shot task into testdata/tasks/ (the fixture that
tests/tasks.rs scores with the tiny model), in the layout of data/tasks/.

  python3 scripts/gen-task-fixture.py [--docs 4]

Needs data/tasks/ (scripts/get-data). The requests are copied unchanged, line by line: the first
--docs documents of each file, and for arc_easy also their unconditional copies
(doc_id >= 1000000), which the reader must skip. gzip with mtime 0, so reruns are byte-identical.
"""

import argparse
import gzip
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ["arc_easy/test_rc_5shot", "arc_challenge/test_rc_5shot", "boolq/rc_0shot",
         "piqa/rc_0shot", "socialiqa/rc_0shot", "hellaswag/rc_0shot",
         "openbookqa/test_rc_5shot", "winogrande/rc_0shot"]
UNCONDITIONAL = 1_000_000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=4)
    args = ap.parse_args()
    for rel in FILES:
        src = os.path.join(ROOT, "data", "tasks", rel, "requests.jsonl.gz")
        keep, ids = [], []
        with gzip.open(src, "rt", encoding="utf-8") as f:
            for line in f:
                doc_id = json.loads(line)["doc_id"]
                if doc_id < UNCONDITIONAL and doc_id not in ids:
                    if len(ids) == args.docs:
                        if not rel.startswith("arc_easy"):
                            break
                        continue
                    ids.append(doc_id)
                if doc_id in ids or doc_id - UNCONDITIONAL in ids:
                    keep.append(line)
        dest = os.path.join(ROOT, "testdata", "tasks", rel, "requests.jsonl.gz")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write("".join(keep).encode("utf-8"))
        print(f"{os.path.relpath(dest, ROOT)}: {len(ids)} documents, {len(keep)} requests")


if __name__ == "__main__":
    main()
