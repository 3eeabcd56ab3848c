#!/usr/bin/env python3
"""Word times from faster-whisper (CTranslate2, float32, greedy) as the reference for ours.

  word_times.py MODEL_DIR AUDIO

Prints a JSON list of {"word", "start", "end"} in seconds.
"""
import json
import sys

from faster_whisper import WhisperModel


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model = WhisperModel(sys.argv[1], device="cpu", compute_type="float32", cpu_threads=2)
    segments, _ = model.transcribe(sys.argv[2], beam_size=1, language="en", word_timestamps=True,
                                   vad_filter=False)
    words = [{"word": w.word, "start": w.start, "end": w.end} for s in segments for w in s.words]
    print(json.dumps(words))


if __name__ == "__main__":
    main()
