#!/usr/bin/env python3
"""Corpus WER after Whisper's English text normalizer, as ../shared/bench/peer_faster_whisper.py computes it.

  score_wer.py PAIRS.json

PAIRS.json: a list of {"ref": reference text, "hyp": transcript}. Both sides go through
whisper_normalizer.english.EnglishTextNormalizer, then jiwer.wer over the whole list (total
errors / total reference words). Prints one line: WER <percent>.
"""
import json
import sys

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        pairs = json.load(f)
    if not pairs:
        sys.exit(f"{sys.argv[1]}: no pairs")
    norm = EnglishTextNormalizer()
    refs = [norm(p["ref"]) for p in pairs]
    hyps = [norm(p["hyp"]) for p in pairs]
    wer = jiwer.wer(refs, hyps)
    print(f"WER {100 * wer:.4f}")


if __name__ == "__main__":
    main()
