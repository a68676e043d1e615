#!/usr/bin/env python3
"""bpe.py: GPT-2 byte-level BPE encoder/decoder for the demo models' tokenizer files.

Reads a model folder's vocab.json and merges.txt (the opt-relu-shakespeare tokenizer,
shared by relu-llama-shakespeare) and reproduces GPT-2's scheme with the standard
library only:
  - pre-tokenization by GPT-2's pattern
      's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
    implemented as a hand-written scanner (pretokenize) over unicodedata categories,
    so that the `regex` module is not needed (\\p{L}: category L*, \\p{N}: N*,
    \\s: str.isspace());
  - each piece's UTF-8 bytes mapped through GPT-2's bytes_to_unicode table;
  - merges applied lowest rank first (GPT-2's bpe());
  - no prefix space; special tokens are not parsed out of text (callers prepend
    the BOS id themselves).
Usage as a program: bpe.py MODEL_DIR [FILE] prints the ids of FILE (or stdin).
"""
import json
import os
import sys
import unicodedata

CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character table."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
            + list(range(ord("\xae"), ord("\xff") + 1)))
    table = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _is_letter(c):
    return unicodedata.category(c)[0] == "L"


def _is_number(c):
    return unicodedata.category(c)[0] == "N"


def _is_other(c):
    return not (c.isspace() or _is_letter(c) or _is_number(c))


def pretokenize(text):
    """Split text exactly as GPT-2's pre-tokenizer pattern does (alternatives in order)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        # 1. contractions (case-sensitive, as in GPT-2's pattern)
        m = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
        if m:
            out.append(m)
            i += len(m)
            continue
        # 2-4. optional single space, then a run of one class
        j = i + 1 if text[i] == " " and i + 1 < n else i
        matched = False
        for cls in (_is_letter, _is_number, _is_other):
            if j < n and cls(text[j]):
                k = j + 1
                while k < n and cls(text[k]):
                    k += 1
                out.append(text[i:k])
                i = k
                matched = True
                break
        if matched:
            continue
        # 5. \s+(?!\S): the whitespace run, minus its last char when a non-space follows
        k = i
        while k < n and text[k].isspace():
            k += 1
        if k == i:   # cannot happen: every char is letter, number, other or space
            raise ValueError("pretokenize: stuck at offset %d" % i)
        if k == n:
            out.append(text[i:k])
            i = k
        elif k - i >= 2:
            out.append(text[i:k - 1])
            i = k - 1
        else:
            # 6. \s+ : a single whitespace char followed by a non-space
            out.append(text[i:k])
            i = k
    return out


class Tokenizer:
    """vocab.json + merges.txt of a model folder; encode(str) -> ids, decode(ids) -> str."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "vocab.json"), encoding="utf-8") as f:
            self.vocab = json.load(f)
        self.inv = {i: s for s, i in self.vocab.items()}
        self.ranks = {}
        with open(os.path.join(model_dir, "merges.txt"), encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line or line.startswith("#version"):
                    continue
                a, b = line.split(" ")
                self.ranks[(a, b)] = len(self.ranks)
        self.b2u = bytes_to_unicode()
        self.u2b = {u: b for b, u in self.b2u.items()}
        self.cache = {}

    def _bpe(self, piece):
        word = list(piece)
        while len(word) > 1:
            best, best_rank = None, None
            for k in range(len(word) - 1):
                r = self.ranks.get((word[k], word[k + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = k, r
            if best is None:
                break
            a, b = word[best], word[best + 1]
            merged, k = [], 0
            while k < len(word):     # merge every occurrence of the pair, left to right
                if k < len(word) - 1 and word[k] == a and word[k + 1] == b:
                    merged.append(a + b)
                    k += 2
                else:
                    merged.append(word[k])
                    k += 1
            word = merged
        return word

    def encode(self, text):
        ids = []
        for piece in pretokenize(text):
            got = self.cache.get(piece)
            if got is None:
                mapped = "".join(self.b2u[b] for b in piece.encode("utf-8"))
                got = [self.vocab[s] for s in self._bpe(mapped)]
                self.cache[piece] = got
            ids.extend(got)
        return ids

    def decode_bytes(self, ids):
        out = bytearray()
        for i in ids:
            s = self.inv[i]
            if all(c in self.u2b for c in s):
                out.extend(self.u2b[c] for c in s)
            else:   # special tokens such as </s> are spelled literally
                out.extend(s.encode("utf-8"))
        return bytes(out)

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print("usage: bpe.py MODEL_DIR [FILE]   print the token ids of FILE (default stdin)")
        return 0 if len(argv) >= 2 else 2
    tok = Tokenizer(argv[1])
    text = open(argv[2], encoding="utf-8").read() if len(argv) > 2 else sys.stdin.read()
    print(" ".join(str(i) for i in tok.encode(text)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
