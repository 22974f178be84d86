#!/usr/bin/env python3
"""farsight serve against the official `openai` Python client, plus a load test.

Usage: test_openai.py FARSIGHT_BINARY MODEL_DIR CHAT_TEMPLATE
Starts the server on 127.0.0.1 (a free port), always kills it at the end, and ends with the
line 'N passed, M failed'.
"""
import concurrent.futures as cf
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request

import openai

BIN, MODEL, TEMPLATE = sys.argv[1], sys.argv[2], sys.argv[3]
KEY = "sk-farsight-test"
results = []  # (name, ok, detail)
figures = []


def check(name, fn):
    t0 = time.time()
    try:
        fn()
        results.append((name, True, ""))
        print(f"PASS {name} ({time.time() - t0:.1f}s)", flush=True)
    except Exception as e:  # noqa: BLE001
        results.append((name, False, repr(e)))
        print(f"FAIL {name}: {e!r}", flush=True)
        traceback.print_exc()


class Server:
    def __init__(self, *extra):
        self.proc = subprocess.Popen(
            [BIN, "serve", "-m", MODEL, "--host", "127.0.0.1", "--port", "0", "--api-key", KEY,
             "--served-model-name", "stories", "--chat-template", TEMPLATE, *extra],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.port = None
        self.log = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.kill()
            raise RuntimeError("server did not start: " + "".join(self.log))
        threading.Thread(target=self._drain, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.port}"

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def client(self, key=KEY):
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, timeout=120)

    def metrics(self):
        text = urllib.request.urlopen(self.base + "/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main():
    srv = Server()
    try:
        run_all(srv)
    finally:
        srv.kill()
    check("graceful shutdown on SIGTERM finishes in-flight work, exit 0", graceful_shutdown)
    for f in figures:
        print("FIGURE", f)
    passed = sum(1 for r in results if r[1])
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def run_all(srv):
    c = srv.client()

    def models():
        ms = c.models.list()
        assert [m.id for m in ms.data] == ["stories"], ms

    def chat():
        r = c.chat.completions.create(model="stories", messages=[{"role": "user", "content": "Tell me a story"}],
                                      max_tokens=30, temperature=0)
        assert r.choices[0].message.role == "assistant"
        assert len(r.choices[0].message.content) > 10, r
        assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 5
        assert r.choices[0].finish_reason in ("stop", "length")

    def chat_stream():
        plain = c.chat.completions.create(model="stories", messages=[{"role": "user", "content": "A cat"}],
                                          max_tokens=40, temperature=0)
        s = c.chat.completions.create(model="stories", messages=[{"role": "user", "content": "A cat"}],
                                      max_tokens=40, temperature=0, stream=True,
                                      stream_options={"include_usage": True})
        text, usage, finish = "", None, None
        for ch in s:
            if ch.usage:
                usage = ch.usage
            for x in ch.choices:
                text += x.delta.content or ""
                finish = x.finish_reason or finish
        assert text == plain.choices[0].message.content, (text, plain.choices[0].message.content)
        assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens
        assert finish == plain.choices[0].finish_reason

    def completions():
        r = c.completions.create(model="stories", prompt="Once upon a time", max_tokens=20, temperature=0, logprobs=2)
        assert r.choices[0].text.startswith(", there was a little girl named Lily"), r.choices[0].text
        assert len(r.choices[0].logprobs.token_logprobs) == r.usage.completion_tokens
        s = c.completions.create(model="stories", prompt="Once upon a time", max_tokens=20, temperature=0, stream=True)
        assert "".join(ch.choices[0].text for ch in s if ch.choices) == r.choices[0].text

    def bad_key():
        try:
            srv.client(key="wrong").models.list()
        except openai.AuthenticationError as e:
            assert e.status_code == 401
            return
        raise AssertionError("no AuthenticationError")

    def bad_request():
        for kw in ({"max_tokens": -1}, {"temperature": "hot"}, {"prompt": "x" * 5000}):
            args = {"model": "stories", "prompt": "Once", **kw}
            try:
                c.completions.create(**args)
            except openai.BadRequestError as e:
                assert e.status_code == 400 and e.body and e.body.get("message"), e
                continue
            raise AssertionError(f"no BadRequestError for {kw}")
        try:
            c.completions.create(model="nope", prompt="x")
        except openai.NotFoundError:
            pass
        else:
            raise AssertionError("no NotFoundError for an unknown model")

    check("models list", models)
    check("chat", chat)
    check("chat streaming equals non-streaming", chat_stream)
    check("completions (+logprobs, +streaming)", completions)
    check("bad key -> AuthenticationError", bad_key)
    check("bad request -> BadRequestError", bad_request)
    check("load test: 300 requests, 32 at a time, twice; RSS flat", lambda: load_test(srv))


def load_test(srv):
    rng = random.Random(1234)
    words = "Tim Sue Lily Ben the a dog cat ball park sun tree happy sad big little ran jumped played saw".split()
    # 40 distinct prompts of mixed lengths, each with its own output length.
    jobs = []
    for i in range(40):
        n = rng.choice([3, 8, 20, 60, 150])
        prompt = "Once upon a time " + " ".join(rng.choice(words) for _ in range(n))
        jobs.append((prompt, rng.choice([8, 16, 32, 64, 100]), i % 4 == 3))  # (prompt, max_tokens, chat?)
    c = srv.client()

    def call(job, stream=False, disconnect=False):
        prompt, mt, is_chat = job
        if is_chat:
            kw = dict(model="stories", messages=[{"role": "user", "content": prompt}], max_tokens=mt, temperature=0)
            if not stream:
                return c.chat.completions.create(**kw).choices[0].message.content
            s = c.chat.completions.create(stream=True, **kw)
            get = lambda ch: ch.choices[0].delta.content or "" if ch.choices else ""  # noqa: E731
        else:
            kw = dict(model="stories", prompt=prompt, max_tokens=mt, temperature=0)
            if not stream:
                return c.completions.create(**kw).choices[0].text
            s = c.completions.create(stream=True, **kw)
            get = lambda ch: ch.choices[0].text if ch.choices else ""  # noqa: E731
        text = ""
        for k, ch in enumerate(s):
            text += get(ch)
            if disconnect and k == 2:
                s.close()  # hang up mid-stream
                return None
        return text

    expected = [call(j) for j in jobs]  # one at a time
    requests_ = []
    for i in range(300):
        stream = i % 2 == 0
        disconnect = stream and i % 10 == 0  # 30 of 300 = 10%
        requests_.append((i % len(jobs), stream, disconnect))
    rng.shuffle(requests_)
    rss = []
    for run in range(2):
        t0 = time.time()
        with cf.ThreadPoolExecutor(32) as ex:
            futs = [ex.submit(call, jobs[j], s, d) for (j, s, d) in requests_]
            outs = [f.result() for f in futs]
        wall = time.time() - t0
        bad = [(j, o, expected[j]) for (j, s, d), o in zip(requests_, outs) if not d and o != expected[j]]
        assert not bad, f"{len(bad)} wrong outputs, e.g. {bad[0]}"
        # Disconnected streams are cancelled and every block is freed (cached-free ones aside).
        for _ in range(100):
            m = srv.metrics()
            if m['farsight_kv_blocks{state="used"}'] == 0 and m["farsight_num_requests_running"] == 0:
                break
            time.sleep(0.05)
        assert m['farsight_kv_blocks{state="used"}'] == 0, m
        assert m["farsight_num_requests_waiting"] == 0, m
        assert m['farsight_request_success_total{finish_reason="abort"}'] >= 30 * (run + 1) - 5, m
        rss.append(srv.rss_kb())
        cached_free = m['farsight_kv_blocks{state="cached_free"}']
        aborted = m['farsight_request_success_total{finish_reason="abort"}']
        figures.append(f"load run {run + 1}: 300 requests (32 concurrent, 150 streaming, 30 disconnected) in "
                       f"{wall:.1f}s; kv used 0, cached-free {cached_free:.0f}; aborted total {aborted:.0f}; "
                       f"preemptions {m['farsight_num_preemptions_total']:.0f}; "
                       f"prefix-cache hit tokens {m['farsight_prefix_cache_hits_total']:.0f}; VmRSS {rss[-1]} kB")
    growth = rss[1] - rss[0]
    figures.append(f"RSS growth between identical runs: {growth} kB")
    assert growth < max(0.05 * rss[0], 8192), f"RSS grew {rss[0]} -> {rss[1]} kB"


def graceful_shutdown():
    srv = Server()
    try:
        c = srv.client()
        out = {}

        def long_request():
            out["r"] = c.completions.create(model="stories", prompt="Once", max_tokens=300, temperature=0,
                                            extra_body={"ignore_eos": True})

        t = threading.Thread(target=long_request)
        t.start()
        for _ in range(200):
            if srv.metrics()["farsight_num_requests_running"] > 0:
                break
            time.sleep(0.01)
        srv.proc.send_signal(signal.SIGTERM)
        t.join(60)
        rc = srv.proc.wait(60)
        assert rc == 0, f"exit code {rc}: {''.join(srv.log)}"
        assert out["r"].usage.completion_tokens == 300, out
        try:
            urllib.request.urlopen(srv.base + "/health", timeout=2)
        except OSError:
            pass
        else:
            raise AssertionError("still accepting connections after SIGTERM")
    finally:
        srv.kill()


if __name__ == "__main__":
    main()
