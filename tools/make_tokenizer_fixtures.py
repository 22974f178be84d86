#!/usr/bin/env python3
"""Generate tests/fixtures/tokenizer/hf_corpus.json: a corpus of tricky strings encoded and
decoded by Hugging Face transformers' AutoTokenizer (tokenizers backend) for every shared
tokenizer. Needs `pip install tokenizers transformers` (no network access to the hub: it loads
the local folders in ../shared). Run from the repository root:
    python3 tools/make_tokenizer_fixtures.py
"""
import json
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
import transformers  # noqa: E402
import tokenizers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
TOKENIZERS = {
    "llama2": "tokenizers/llama2",
    "mistral-v0.3": "tokenizers/mistral-v0.3",
    "llama3": "tokenizers/llama3",
    "qwen2.5": "tokenizers/qwen2.5",
    "gpt2": "tokenizers/gpt2",
    "stories260K": "models/stories260K",
    "docs-27M": "models/docs-27M",
}

CORPUS = [
    "",
    " ",
    "Hello world",
    " Hello world",
    "Hello  world   with    runs     of      spaces",
    "trailing spaces   ",
    "\ttabs\tand\t\ttabs",
    "line one\nline two\n\nline four\r\nwindows\rcr",
    "\n\n\n",
    " \n \t \n",
    "I'm sure you'll see they've done it, haven't they? He'd've said 'yes'.",
    "SHOUTING: I'M, YOU'RE, IT'S, WE'VE",
    "1234567890 12 123 1234 12345 3.14159 1,000,000 0x1F 2024-01-31",
    "99999999999999999999999999999999",
    "café naïve résumé façade Ångström Zürich",
    "e\u0301 (combining acute) vs \u00e9; A\u030a vs \u00c5; \ufb01 ligature; \u2126 ohm",
    "\u1100\u1161\u11a8 (jamo) \uac01 (syllable) 한국어 텍스트입니다",
    "中文文本，包含标点。日本語のテキスト、カタカナ。",
    "Привет, мир! Ελληνικά κείμενα.",
    "مرحبا بالعالم! هذا نص عربي.",
    "עברית: שלום עולם",
    "हिन्दी पाठ और कुछ संख्याएँ १२३",
    "ไทย ภาษาไทย",
    "emoji: 😀 😶‍🌫️ 👨‍👩‍👧‍👦 👍🏽 🏳️‍🌈 🇫🇷",
    "🦙🦙🦙 llama.cpp 🚀",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }\n",
    "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
    "{\"key\": [1, 2, {\"nested\": null}], \"b\": true}",
    "https://example.com/path?q=1&r=two#frag user@example.org",
    "<s> is a special token look-alike, and so is </s> and <unk>",
    "<s>[INST] What is 2+2? [/INST] 4</s>",
    "text<|eot_id|>more<|begin_of_text|>x<|start_header_id|>user<|end_header_id|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>",
    "<|endoftext|>after end<|endoftext|>",
    "[INST][/INST][TOOL_CALLS] [AVAILABLE_TOOLS]",
    "almost special: <|eot_id| <|im_start <s >",
    "Hello World and SPECIAL WORD and special word, Tok tok Toks <tag> <MASK>  x",
    "!!!!!!?????......------======",
    "'''''```````\"\"\"\"",
    "a\u00a0b\u2009c\u3000d\u200be\ufeff",
    "zero width joiner\u200d and non joiner\u200c",
    "\u2581already has metaspace\u2581chars",
    "Ġ and Ċ are byte-level characters",
    "tab\tnew\nline\u2028sep\u2029para\u0085nel",
    "MiXeD CaSe WoRdS And ALLCAPS",
    "ﬃ ﬄ ℌ ① ㎞ ｆｕｌｌｗｉｄｔｈ",
    "a" * 200,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Once upon a time, there was a little girl named Lily.",
    "\u0000 nul and \u0007 bell and \u007f del",
    "\U0001F600\U0001F601\U0001F602 emoji run",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters 𝟘𝟙𝟚",
]


def main():
    out = {
        "generated_by": "tools/make_tokenizer_fixtures.py",
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "corpus": CORPUS,
        "tokenizers_": {},
    }
    mismatches = 0
    for name, rel in TOKENIZERS.items():
        path = os.path.join(SHARED, rel)
        auto = AutoTokenizer.from_pretrained(path)
        raw = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        cases = []
        for s in CORPUS:
            with_sp = auto(s, add_special_tokens=True)["input_ids"]
            no_sp = auto(s, add_special_tokens=False)["input_ids"]
            if raw.encode(s, add_special_tokens=True).ids != with_sp:
                mismatches += 1
                print(f"note: {name}: AutoTokenizer differs from raw tokenizers on {s!r}",
                      file=sys.stderr)
            cases.append({
                "ids": with_sp,
                "ids_no_special": no_sp,
                "decoded": auto.decode(with_sp, skip_special_tokens=False),
                "decoded_skip_special": auto.decode(with_sp, skip_special_tokens=True),
            })
        out["tokenizers_"][name] = {
            "path": rel,
            "bos_token_id": auto.bos_token_id,
            "eos_token_id": auto.eos_token_id,
            "cases": cases,
        }
    out["tokenizers"] = out.pop("tokenizers_")
    dst = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "hf_corpus.json")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {dst}: {len(CORPUS)} strings x {len(TOKENIZERS)} tokenizers "
          f"({mismatches} AutoTokenizer/raw differences)")


if __name__ == "__main__":
    main()
