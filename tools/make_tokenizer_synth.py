#!/usr/bin/env python3
"""Generate tests/fixtures/tokenizer/synth.json: small BPE tokenizers trained with Hugging Face
`tokenizers` that exercise every supported normalizer, pre-tokenizer, post-processor, decoder and
added-token option, with HF's ids and decodes for the corpus of make_tokenizer_fixtures.py.
Run from the repository root: python3 tools/make_tokenizer_synth.py
"""
import json
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers  # noqa: E402
from tokenizers import pre_tokenizers as pt  # noqa: E402
from tokenizers import processors, trainers  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tokenizer_fixtures import CORPUS, ROOT  # noqa: E402

TRAIN = CORPUS * 3 + [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "Tokenizers split text into pieces, then merge pieces by rank. " * 4,
]


def byte_fallback_vocab(tok):
    """Adds the 256 <0xXX> pieces to a trained BPE vocabulary."""
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    n = max(max(vocab.values()), max((a["id"] for a in j["added_tokens"]), default=-1)) + 1
    for b in range(256):
        key = "<0x%02X>" % b
        if key not in vocab:
            vocab[key] = n
            n += 1
    return Tokenizer.from_str(json.dumps(j))


def train(model, normalizer, pre, vocab_size=600, specials=(), alphabet=None):
    tok = Tokenizer(model)
    if normalizer is not None:
        tok.normalizer = normalizer
    if pre is not None:
        tok.pre_tokenizer = pre
    kw = {}
    if model.continuing_subword_prefix:
        kw["continuing_subword_prefix"] = model.continuing_subword_prefix
    if model.end_of_word_suffix:
        kw["end_of_word_suffix"] = model.end_of_word_suffix
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                  initial_alphabet=alphabet or [], show_progress=False, **kw)
    tok.train_from_iterator(TRAIN, trainer)
    return tok


def variants():
    bl = pt.ByteLevel.alphabet()
    v = {}

    # 1. GPT-2 style with ByteLevel(add_prefix_space) + RobertaProcessing.
    t = train(models.BPE(), None, pt.ByteLevel(add_prefix_space=True), alphabet=bl,
              specials=["<s>", "</s>"])
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.RobertaProcessing(("</s>", t.token_to_id("</s>")),
                                                    ("<s>", t.token_to_id("<s>")))
    v["bytelevel_prefix_roberta"] = t

    # 2. Split behaviours + Digits + Punctuation, then ByteLevel without regex.
    for beh in ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"]:
        for inv in [False, True]:
            pre = pt.Sequence([
                pt.Split(Regex(r"\s+|[,.!?]"), behavior=beh, invert=inv),
                pt.Digits(individual_digits=True),
                pt.ByteLevel(add_prefix_space=False, use_regex=False),
            ])
            t = train(models.BPE(), normalizers.Strip(), pre, alphabet=bl, vocab_size=500)
            t.decoder = decoders.ByteLevel()
            v[f"split_{beh}{'_invert' if inv else ''}"] = t
    t = train(models.BPE(), None, pt.Sequence([
        pt.Split(" ", behavior="merged_with_next"), pt.Digits(individual_digits=False),
        pt.Punctuation(behavior="contiguous"), pt.ByteLevel(add_prefix_space=False, use_regex=False)]),
        alphabet=bl, vocab_size=500)
    t.decoder = decoders.ByteLevel()
    v["split_string_digits_punct"] = t

    # 3. SentencePiece style: Metaspace + byte fallback, each prepend scheme, split on/off.
    for scheme in ["always", "first", "never"]:
        for split in [True, False]:
            t = train(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True), None,
                      pt.Metaspace(prepend_scheme=scheme, split=split),
                      specials=["<unk>", "<s>", "</s>"], vocab_size=500)
            t = byte_fallback_vocab(t)
            t.decoder = decoders.Sequence([decoders.Metaspace(prepend_scheme=scheme),
                                           decoders.ByteFallback(), decoders.Fuse()])
            t.post_processor = processors.TemplateProcessing(
                single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
            v[f"metaspace_{scheme}{'_split' if split else ''}"] = t

    # 4. Normalizers: NFKC + Lowercase + Replace(regex) + Prepend; Whitespace pre-tokenizer;
    #    unk without byte fallback; continuing-subword prefix and end-of-word suffix.
    t = train(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"),
              normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(),
                                    normalizers.Replace(Regex(r"\d+"), "#")]),
              pt.Whitespace(), specials=["[UNK]"], vocab_size=500)
    v["nfkc_lower_whitespace_prefix"] = t
    t = train(models.BPE(unk_token="[UNK]", end_of_word_suffix="</w>"),
              normalizers.Sequence([normalizers.NFD(), normalizers.Strip(left=True, right=False)]),
              pt.WhitespaceSplit(), specials=["[UNK]"], vocab_size=500)
    t.decoder = decoders.BPEDecoder(suffix="</w>")
    v["nfd_whitespacesplit_suffix"] = t
    t = train(models.BPE(unk_token="<unk>"),
              normalizers.Sequence([normalizers.NFC(), normalizers.Prepend("\u2581"),
                                    normalizers.Replace(" ", "\u2581")]), None,
              specials=["<unk>"], vocab_size=500)
    t.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.Strip(" ", 1, 0)])
    v["nfc_prepend_replace"] = t
    t = train(models.BPE(unk_token="<unk>"), normalizers.NFKD(),
              pt.Metaspace(prepend_scheme="always"), specials=["<unk>"], vocab_size=400)
    t.decoder = decoders.Metaspace()
    v["nfkd_metaspace"] = t

    # 5. Added tokens: special and not, lstrip/rstrip/single_word/normalized.
    t = train(models.BPE(), normalizers.Lowercase(), pt.ByteLevel(add_prefix_space=False),
              alphabet=bl, vocab_size=500)
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken("<|special|>", special=True),
                          AddedToken("<MASK>", lstrip=True, rstrip=True, special=True),
                          AddedToken("[INST]", special=True, single_word=True)])
    t.add_tokens([AddedToken("hello world", normalized=True),
                  AddedToken("Special Word", normalized=True),
                  AddedToken("Tok", normalized=False, single_word=True),
                  AddedToken("<tag>", normalized=False, lstrip=True),
                  AddedToken("emoji😀", normalized=True, rstrip=True)])
    t.post_processor = processors.TemplateProcessing(
        single="<|special|> $A <MASK>",
        special_tokens=[("<|special|>", t.token_to_id("<|special|>")),
                        ("<MASK>", t.token_to_id("<MASK>"))])
    v["added_tokens"] = t

    # 6. ignore_merges and the "a b" string spelling of merges.
    t = train(models.BPE(ignore_merges=True), None,
              pt.Sequence([pt.Split(Regex(r"\p{L}+|\p{N}{1,3}|[^\p{L}\p{N}]+"), "isolated"),
                           pt.ByteLevel(add_prefix_space=False, use_regex=False)]),
              alphabet=bl, vocab_size=600)
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False),
                                            processors.TemplateProcessing(single="$A")])
    v["ignore_merges"] = t
    return v


def main():
    out = {"generated_by": "tools/make_tokenizer_synth.py", "corpus": CORPUS, "tokenizers": {}}
    for name, tok in variants().items():
        j = json.loads(tok.to_str())
        if name == "ignore_merges":  # the legacy "a b" spelling of merges
            j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
            tok = Tokenizer.from_str(json.dumps(j))
        cases = []
        for s in CORPUS:
            ids = tok.encode(s, add_special_tokens=True).ids
            cases.append({
                "ids": ids,
                "ids_no_special": tok.encode(s, add_special_tokens=False).ids,
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            })
        out["tokenizers"][name] = {"tokenizer_json": json.dumps(j, ensure_ascii=False),
                                   "cases": cases}
    dst = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "synth.json")
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {dst}: {len(out['tokenizers'])} tokenizers x {len(CORPUS)} strings")


if __name__ == "__main__":
    main()
