#!/usr/bin/env python3
"""Benchmark (not a test) of distributed/ray_transcribe.py on this machine: one node, then two
nodes of a local cluster, against one npuwhisper process on the same files. Prints files per
second, audio hours per hour and Ray's share per file. README, "More than one machine".

    .venv/bin/python distributed/bench_ray.py [COPIES]   (COPIES of the 21 eval clips, default 2)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from local_cluster import LocalCluster  # noqa: E402
from test_ray_transcribe import CLIPS, DRIVER, EVAL, NPUWHISPER, PYTHON  # noqa: E402


def line(name, files, audio, wall, extra=""):
    print(f"{name:<34} {files / wall:6.2f} files/s  {audio / wall:7.1f} audio h/h  ({files} files, "
          f"{audio:.0f} s audio, {wall:.1f} s){extra}", flush=True)  # fmt: skip


def main():
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    work = Path(tempfile.mkdtemp(prefix="npuwhisper-ray-bench-"))
    inp = work / "in"
    inp.mkdir()
    for k in range(copies):
        for c in CLIPS:
            shutil.copy(EVAL / c, inp / f"{k}-{c}")
    files = sorted(inp.iterdir())
    print(f"load average before: {os.getloadavg()}", flush=True)
    try:
        for jobs in (1, 2):
            out = work / f"single-j{jobs}"
            rep = work / f"single-j{jobs}.jsonl"
            t0 = time.monotonic()
            subprocess.run([NPUWHISPER, "--quiet", "-j", str(jobs), "-o", str(out), "--report", str(rep),
                            *map(str, files)], check=True, stderr=subprocess.DEVNULL)  # fmt: skip
            wall = time.monotonic() - t0
            audio = sum(json.loads(x)["audio_seconds"] for x in rep.read_text().splitlines())
            line(f"one npuwhisper process, -j {jobs}", len(files), audio, wall)
        for nodes in (1, 2):
            with LocalCluster(nodes=nodes) as c:
                # Start-up alone: one file (connecting, starting the actors, loading the model).
                one = work / f"one-{nodes}"
                one.mkdir()
                shutil.copy(files[0], one)
                t0 = time.monotonic()
                subprocess.run([PYTHON, DRIVER, str(one), str(work / f"one-out-{nodes}"), "--address", c.address,
                                "--quiet"], env=c.env, check=True, stderr=subprocess.DEVNULL)  # fmt: skip
                print(f"ray_transcribe of one file on {nodes} node(s): {time.monotonic() - t0:.1f} s", flush=True)
                out = work / f"ray-{nodes}"
                t0 = time.monotonic()
                subprocess.run([PYTHON, DRIVER, str(inp), str(out), "--address", c.address, "--quiet"],
                               env=c.env, check=True, stderr=subprocess.DEVNULL)  # fmt: skip
                wall = time.monotonic() - t0
                rows = [json.loads(x) for x in (out / "ray_transcribe.report.jsonl").read_text().splitlines()]
                audio = sum(r["audio_seconds"] for r in rows)
                share = sum(r["call_seconds"] - r["wall_seconds"] for r in rows) / len(rows)
                line(f"ray_transcribe, {nodes} node(s) of 1 CPU", len(files), audio, wall,
                     f"; Ray's share per file {share * 1000:.0f} ms")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
