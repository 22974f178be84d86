#!/usr/bin/env python3
"""Generates tests/fixtures/template/hf_renders.json: chat templates rendered by Hugging Face
transformers, the reference for farsight's Jinja interpreter (tests/template/).

    pip install transformers jinja2     # no torch needed
    python3 tools/make_template_fixtures.py [--shared ../shared] [--out tests/fixtures/template/hf_renders.json]

Templates with a tokenizer beside them (../shared/tokenizers/*, ../shared/models/docs-27M) are
rendered with tokenizer.apply_chat_template(..., tokenize=False); the bare templates in
../shared/templates/ with transformers' own renderer (transformers.utils.chat_template_utils.
render_jinja_template, which apply_chat_template calls), so both go through the same Jinja
environment transformers builds. strftime_now() is pinned to FIXED_NOW.
"""
import argparse
import copy
import datetime as _dt
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import transformers  # noqa: E402
import transformers.utils.chat_template_utils as ctu  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

FIXED_NOW = _dt.datetime(2025, 3, 14, 9, 26, 53)


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW


ctu.datetime = _FixedDatetime  # strftime_now() reads datetime.now()

SYSTEM = "You are a helpful assistant.  Answer briefly.\n"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and country, e.g. Paris, France"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
        "return": {"type": "number", "description": "temperature"},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time (\"HH:MM\") in a time zone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": []},
    },
}


def conv_multi(with_system, end_with_assistant):
    m = []
    if with_system:
        m.append({"role": "system", "content": SYSTEM})
    m += [
        {"role": "user", "content": "Hello! What's 2+2?"},
        {"role": "assistant", "content": "  2 + 2 = 4.\n"},
        {"role": "user", "content": "And in Français, \u00e9t\u00e9 \u2014 \"quoted\" {braces}?"},
    ]
    if end_with_assistant:
        m.append({"role": "assistant", "content": "Quatre. \U0001F600"})
    return m


def conv_tools(args_as_string=False):
    args = {"location": "Paris, France", "unit": "celsius"}
    return [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call12345",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": json.dumps(args) if args_as_string else args,
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": '{"temperature": 22.5}'},
        {"role": "assistant", "content": "It is 22.5 \u00b0C in Paris."},
        {"role": "user", "content": "Thanks!"},
    ]


def scenarios(tid):
    s = [
        ("system_multiturn_gen", conv_multi(True, False), None, True, {}),
        ("system_multiturn_nogen", conv_multi(True, True), None, False, {}),
        ("no_system_gen", conv_multi(False, False), None, True, {}),
        ("single_user_gen", [{"role": "user", "content": "Hi"}], None, True, {}),
    ]
    tools = [WEATHER_TOOL, TIME_TOOL]
    if tid in ("docs-27M",):
        return s
    if "DeepSeek" in tid:
        s.append(("tools", conv_tools(args_as_string=True), tools, True, {}))
        think = conv_multi(False, True)
        think[1]["content"] = "<think>\nadd\n</think>\n\n2 + 2 = 4."
        s.append(("think_split", think, None, False, {}))
    else:
        s.append(("tools", conv_tools(), tools, True, {}))
    if "Llama-3" in tid or tid == "llama3":
        s.append(("tools_in_system", conv_tools(), tools, True, {"tools_in_user_message": False}))
        s.append(("custom_date", conv_multi(True, False), None, True, {"date_string": "01 Jan 2030"}))
    if "Llama-3.1" in tid or "Llama-3.3" in tid or tid == "llama3":
        conv = [
            {"role": "user", "content": "Search the weather"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"type": "function", "function": {"name": "brave_search", "arguments": {"query": "weather Paris"}}}
                ],
            },
            {"role": "ipython", "content": {"result": "sunny", "temp": [20, 21.5]}},
        ]
        s.append(("builtin_tools", conv, None, True, {"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}))
    if "SmolLM3" in tid:
        s.append(("no_thinking", conv_multi(True, True), None, True, {"enable_thinking": False}))
        c = conv_multi(True, False)
        c[0]["content"] = "Be terse. /no_think"
        s.append(("no_think_in_system", c, None, True, {}))
    if "Qwen" in tid or tid == "qwen2.5":
        c = conv_tools()
        c.insert(4, {"role": "tool", "tool_call_id": "call12346", "content": "second result"})
        s.append(("two_tool_results", c, tools, True, {}))
    if "Mistral-Small" in tid:
        c = [
            {"role": "system", "content": [{"type": "text", "text": "Block system."}]},
            {"role": "user", "content": [{"type": "text", "text": "Look: "}, {"type": "image_url", "image_url": "x"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
            {"role": "user", "content": "Thanks"},
        ]
        s.append(("content_blocks", c, None, True, {}))
    return s


TEMPLATE_TOKENS = {
    "llama": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral": ("<s>", "</s>"),
    "qwen": ("", "<|im_end|>"),
    "smol": ("", "<|im_end|>"),
    "deepseek": ("<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"),
}


def tokens_for(name):
    n = name.lower()
    for key, toks in TEMPLATE_TOKENS.items():
        if key in n:
            return toks
    raise KeyError(name)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--shared", default=os.path.join(here, "..", "..", "shared"))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "template", "hf_renders.json"))
    a = ap.parse_args()
    shared = os.path.abspath(a.shared)
    cases = []

    # Bare templates: transformers' renderer.
    tdir = os.path.join(shared, "templates")
    for fn in sorted(os.listdir(tdir)):
        if not fn.endswith(".jinja"):
            continue
        tid = fn[: -len(".jinja")]
        src = open(os.path.join(tdir, fn), encoding="utf-8").read()
        bos, eos = tokens_for(tid)
        for name, msgs, tools, gen, extra in scenarios(tid):
            rendered, _ = ctu.render_jinja_template(
                conversations=[copy.deepcopy(msgs)],
                tools=copy.deepcopy(tools),
                chat_template=src,
                add_generation_prompt=gen,
                bos_token=bos,
                eos_token=eos,
                **copy.deepcopy(extra),
            )
            cases.append(dict(name=f"{tid}/{name}", template_file=f"templates/{fn}", model_dir=None,
                              messages=msgs, tools=tools, add_generation_prompt=gen, bos_token=bos,
                              eos_token=eos, extra=extra, expected=rendered[0]))

    # Tokenizer folders: apply_chat_template.
    dirs = [os.path.join("tokenizers", d) for d in sorted(os.listdir(os.path.join(shared, "tokenizers")))]
    dirs.append(os.path.join("models", "docs-27M"))
    for rel in dirs:
        path = os.path.join(shared, rel)
        if not os.path.exists(os.path.join(path, "tokenizer_config.json")):
            continue
        tok = AutoTokenizer.from_pretrained(path)
        if not tok.chat_template:
            continue
        tid = os.path.basename(rel)
        stm = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
        for name, msgs, tools, gen, extra in scenarios(tid):
            out = tok.apply_chat_template(copy.deepcopy(msgs), tools=copy.deepcopy(tools), tokenize=False,
                                          add_generation_prompt=gen, **copy.deepcopy(extra))
            assert isinstance(out, str), type(out)
            ex = {k: v for k, v in stm.items() if k not in ("bos_token", "eos_token")}
            ex.update(extra)
            cases.append(dict(name=f"{tid}/{name}", template_file=None, model_dir=rel, messages=msgs,
                              tools=tools, add_generation_prompt=gen, bos_token=stm.get("bos_token"),
                              eos_token=stm.get("eos_token"), extra=ex, expected=out))

    doc = {
        "generator": "tools/make_template_fixtures.py",
        "transformers": transformers.__version__,
        "jinja2": __import__("jinja2").__version__,
        "now": FIXED_NOW.isoformat(),
        "cases": cases,
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
