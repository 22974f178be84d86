#!/usr/bin/env python3
"""Serving benchmark: N requests with a ShareGPT-like synthetic length mix against a running
`farsight serve`, C at a time, streaming. Reports output tok/s, TTFT and inter-token latency
percentiles as JSON. Standard library only (runs on the bare GPU machine).

  tools/serve_bench.py --url http://127.0.0.1:8123 --n 1000 --concurrency 64 --out result.json
"""
import argparse
import http.client
import json
import math
import random
import threading
import time
import urllib.parse


a_max_prompt = [2048, 1024]  # longest prompt, longest output


def lengths(rng, n):
    # ShareGPT-like: long-tailed prompts (median ~150 tokens) and outputs (median ~200 tokens)
    out = []
    for _ in range(n):
        p = int(min(a_max_prompt[0], max(4, rng.lognormvariate(math.log(150), 0.9))))
        o = int(min(a_max_prompt[1], max(8, rng.lognormvariate(math.log(200), 0.7))))
        out.append((p, o))
    return out


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100.0 * len(xs)))]


def one(url, model, prompt_ids, max_tokens, rec):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt_ids, "max_tokens": max_tokens, "temperature": 0,
                       "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        rec["error"] = f"{resp.status} {resp.read()[:200]!r}"
        return
    times, usage = [], None
    buf = b""
    while True:
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    continue
                obj = json.loads(data)
                if obj.get("usage"):
                    usage = obj["usage"]
                if obj.get("choices") and obj["choices"][0].get("text"):
                    times.append(time.perf_counter())
    t1 = time.perf_counter()
    rec.update(start=t0, end=t1, ttft=(times[0] - t0) if times else None,
               itl=[b - a for a, b in zip(times, times[1:])],
               out_tokens=(usage or {}).get("completion_tokens", len(times)),
               prompt_tokens=(usage or {}).get("prompt_tokens", len(prompt_ids)))
    conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8123")
    ap.add_argument("--model", default="")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=128000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    ap.add_argument("--label", default="")
    ap.add_argument("--max-prompt", type=int, default=2048)
    ap.add_argument("--max-output", type=int, default=1024)
    a = ap.parse_args()
    a_max_prompt[0], a_max_prompt[1] = a.max_prompt, a.max_output
    if not a.model:  # the server's only model
        u = urllib.parse.urlparse(a.url)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        c.request("GET", "/v1/models")
        a.model = json.loads(c.getresponse().read())["data"][0]["id"]
    rng = random.Random(a.seed)
    reqs = [([rng.randrange(min(1000, a.vocab // 4), a.vocab) for _ in range(p)], o) for p, o in lengths(rng, a.n)]
    recs = [dict() for _ in reqs]
    nxt = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(reqs):
                return
            try:
                one(a.url, a.model, reqs[i][0], reqs[i][1], recs[i])
            except Exception as e:  # noqa: BLE001
                recs[i]["error"] = repr(e)

    t0 = time.perf_counter()
    ths = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in recs if "error" not in r]
    out_tok = sum(r["out_tokens"] for r in ok)
    in_tok = sum(r["prompt_tokens"] for r in ok)
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    itl = [x for r in ok for x in r["itl"]]
    res = {
        "label": a.label, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "requests": a.n, "completed": len(ok), "errors": [r["error"] for r in recs if "error" in r][:5],
        "concurrency": a.concurrency, "wall_s": wall,
        "prompt_tokens": in_tok, "output_tokens": out_tok, "output_tok_s": out_tok / wall,
        "total_tok_s": (in_tok + out_tok) / wall, "requests_per_s": len(ok) / wall,
        "ttft_ms": {"p50": 1e3 * pct(ttft, 50), "p99": 1e3 * pct(ttft, 99)} if ttft else None,
        "itl_ms": {"p50": 1e3 * pct(itl, 50), "p99": 1e3 * pct(itl, 99)} if itl else None,
    }
    print(json.dumps(res, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
