#!/usr/bin/env python3
"""Corpus WER after Whisper's English text normalizer, as ../shared/bench/peer_faster_whisper.py computes it.

  score_wer.py [--counts] PAIRS.json

PAIRS.json: a list of {"ref": reference text, "hyp": transcript}. Both sides go through
whisper_normalizer.english.EnglishTextNormalizer, then jiwer.wer over the whole list (total
errors / total reference words). Prints one line: WER <percent>; with --counts
WER <percent> ERRORS <word errors> WORDS <reference words>.
"""
import json
import sys

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer


def main():
    args = sys.argv[1:]
    counts = bool(args) and args[0] == "--counts"
    if counts:
        args = args[1:]
    if len(args) != 1:
        sys.exit(__doc__)
    with open(args[0], encoding="utf-8") as f:
        pairs = json.load(f)
    if not pairs:
        sys.exit(f"{args[0]}: no pairs")
    norm = EnglishTextNormalizer()
    refs = [norm(p["ref"]) for p in pairs]
    hyps = [norm(p["hyp"]) for p in pairs]
    if counts:
        out = jiwer.process_words(refs, hyps)
        errors = out.substitutions + out.deletions + out.insertions
        words = out.substitutions + out.deletions + out.hits
        print(f"WER {100 * out.wer:.4f} ERRORS {errors} WORDS {words}")
    else:
        print(f"WER {100 * jiwer.wer(refs, hyps):.4f}")


if __name__ == "__main__":
    main()
