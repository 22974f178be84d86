#!/usr/bin/env bash
# Encoding speed: farsight vs Hugging Face tokenizers (Python), single-threaded, same text,
# same machine, same run. Usage: tools/bench_tokenizer.sh [MODEL_DIR] [FARSIGHT_BIN]
# The ~12 MB English text is generated here from local sources (licenses, docs, Python
# docstrings) and is not committed. Needs `pip install tokenizers` for the Python side
# (a .venv in the repository root is used when present). BENCH_WHOLE=1 also times HF on the
# whole text as one string (very slow in HF: minutes).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODEL="${1:-$ROOT/../shared/tokenizers/llama3}"
BIN="${2:-$ROOT/build/farsight}"
PY="python3"
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
TEXT="${BENCH_TEXT:-/tmp/farsight_bench_english.txt}"

if [ ! -s "$TEXT" ]; then
  "$PY" - "$TEXT" <<'PY'
import glob, inspect, io, os, pkgutil, sys, contextlib
parts = []
for f in sorted(glob.glob("/usr/share/common-licenses/*")):
    if os.path.isfile(f):
        parts.append(open(f, encoding="utf-8", errors="ignore").read())
for f in sorted(glob.glob("/usr/share/doc/*/README*") + glob.glob("/usr/share/doc/*/copyright")):
    if os.path.isfile(f) and not f.endswith(".gz"):
        parts.append(open(f, encoding="utf-8", errors="ignore").read())
# Python standard-library docstrings (English prose).
import warnings
warnings.simplefilter("ignore")
for m in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
    if m.name.startswith(("_", "test", "idlelib", "tkinter", "turtle", "antigravity", "this")):
        continue
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            mod = __import__(m.name)
    except BaseException:
        continue
    for _, obj in inspect.getmembers(mod):
        doc = getattr(obj, "__doc__", None)
        if isinstance(doc, str) and len(doc) > 200:
            parts.append(doc)
text = "\n\n".join(parts)
target = 12 * 1000 * 1000
while len(text.encode("utf-8")) < target:  # repeat when the sources are small
    text = text + "\n\n" + text
data = text.encode("utf-8")[:target].decode("utf-8", errors="ignore")
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write(data)
print(f"generated {sys.argv[1]}: {len(data.encode('utf-8'))/1e6:.2f} MB", file=sys.stderr)
PY
fi

echo "text: $TEXT ($(stat -c %s "$TEXT") bytes), tokenizer: $MODEL"
"$BIN" tokenize -m "$MODEL" --bench "$TEXT"
TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 "$PY" - "$MODEL" "$TEXT" ${BENCH_WHOLE:+--whole} <<'PY'
import sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
text = open(sys.argv[2], encoding="utf-8").read()
mb = len(text.encode("utf-8")) / 1e6
# Paragraph chunks (split on blank lines, separators kept), as farsight's --bench does.
chunks, start = [], 0
while start < len(text):
    end = text.find("\n\n", start)
    end = len(text) if end < 0 else end + 2
    chunks.append(text[start:end])
    start = end
t0, c0 = time.perf_counter(), time.process_time()
n = sum(len(e.ids) for e in tok.encode_batch(chunks, add_special_tokens=False))
s, cs = time.perf_counter() - t0, time.process_time() - c0
print(f"hf tokenizers, {len(chunks)} paragraphs: {mb:.2f} MB -> {n} tokens in {s:.3f} s: "
      f"{mb/s:.2f} MB/s (cpu {cs:.3f} s: {mb/cs:.2f} MB/s)")
if "--whole" in sys.argv:
    t0 = time.perf_counter()
    ids = tok.encode(text, add_special_tokens=False).ids
    s = time.perf_counter() - t0
    print(f"hf tokenizers, whole text as one string: {len(ids)} tokens in {s:.3f} s: {mb/s:.2f} MB/s")
PY
