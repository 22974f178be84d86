#!/usr/bin/env python3
"""Compares fixture JSON files regenerated elsewhere with the committed ones, ignoring version
fields: prints how many leaf values agree. Usage: compare_fixtures.py A1 B1 [A2 B2 ...]"""
import json
import sys

SKIP = {"transformers", "tokenizers_version_", "transformers_version", "tokenizers_version", "jinja2_version", "generated_by", "versions", "generator"}


def leaves(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            if k in SKIP:
                continue
            yield from leaves(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, x


bad = 0
for a, b in zip(sys.argv[1::2], sys.argv[2::2]):
    la, lb = dict(leaves(json.load(open(a)))), dict(leaves(json.load(open(b))))
    same = sum(1 for k in la if k in lb and la[k] == lb[k])
    diff = [k for k in la if k not in lb or la[k] != lb[k]]
    print(f"{b}: {same}/{len(la)} values identical to the committed fixture; {len(diff)} differ")
    for k in diff[:10]:
        print("  differs:", k, repr(la.get(k))[:80], "vs", repr(lb.get(k))[:80])
    bad += len(diff)
sys.exit(1 if bad else 0)
