"""Reads subtitle files with independent parsers (srt, webvtt-py) and prints one JSON object:
the cues of each, with lines, duration and reading speed. Fails (exit 1) when a parser refuses
a file. Usage: check_subtitles.py FILE.srt|FILE.vtt...
"""
import json
import sys

import srt
import webvtt


def cues_of(path):
    if path.endswith(".srt"):
        with open(path, encoding="utf-8") as f:
            subs = list(srt.parse(f.read(), ignore_errors=False))
        return [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs]
    return [(seconds(c.start), seconds(c.end), c.text) for c in webvtt.read(path)]


def seconds(stamp):
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


out = {}
for path in sys.argv[1:]:
    cues = []
    for start, end, text in cues_of(path):
        lines = text.split("\n")
        duration = end - start
        chars = len(text)
        cues.append({"start": start, "end": end, "lines": lines, "duration": duration,
                     "cps": chars / duration if duration > 0 else float("inf")})
    out[path] = cues
print(json.dumps(out))
