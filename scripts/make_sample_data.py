#!/usr/bin/env python3
"""Writes examples/tiny_sample{,_eval}.jsonl: pre-tokenized sequences with learnable structure
for the README's first command until qpeft ships a pretrained model. Each row cycles through
a 64-token "alphabet" with its own start and stride, so a frozen random model with a LoRA
adapter can learn both which tokens occur and how they follow each other.
Deterministic; run from the repository root."""
import json
import random


ALPHABET = [100 + 397 * i for i in range(64)]  # spread over the 32000-token vocabulary


def rows(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start, stride = rng.randrange(64), rng.choice([1, 3, 5, 7])
        length = rng.randrange(48, 129)
        ids = [ALPHABET[(start + stride * t) % 64] for t in range(length)]
        out.append({"input_ids": ids})
    return out


for name, n, seed in (("tiny_sample", 400, 1), ("tiny_sample_eval", 40, 2)):
    with open(f"examples/{name}.jsonl", "w") as f:
        for r in rows(n, seed):
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
