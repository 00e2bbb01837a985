#!/usr/bin/env python3
"""One {"text": paragraph} JSON line per blank-line-separated paragraph of a corpus file.

Training packs these into --seq-len rows; evaluation scores each one.
Usage: scripts/paragraphs_to_jsonl.py CORPUS.txt > OUT.jsonl
"""
import json
import sys

text = open(sys.argv[1], encoding="utf-8").read()
for paragraph in text.split("\n\n"):
    paragraph = paragraph.strip()
    if paragraph:
        print(json.dumps({"text": paragraph}, ensure_ascii=False))
