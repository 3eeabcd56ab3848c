#!/usr/bin/env python3
"""distributed/ray_transcribe.py on a real two-node Ray cluster on this machine (`ray start
--head` and `ray start --address`, ports and temporary directories of their own): 21 eval
recordings and a corrupt one to SRT, a Ray worker killed mid-batch, a driver killed and re-run.
Every output must equal the single-machine npuwhisper output of the same file, be written once,
and no temporary file or cluster process may be left. Run by .ci/run (stage "ray"):

    .venv/bin/python distributed/test_ray_transcribe.py

Ends with the line "N passed, M failed"; exit status 0 only when all passed.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from local_cluster import LocalCluster  # noqa: E402

PYTHON = str(REPO / ".venv/bin/python")
DRIVER = str(HERE / "ray_transcribe.py")
NPUWHISPER = str(REPO / "target/release/npuwhisper")
SHARED = Path(os.environ.get("NPUWHISPER_SHARED_DIR", REPO.parent / "shared"))
EVAL = SHARED / "eval/public"
CLIPS = [f"LJ001-{k:04}.wav" for k in range(1, 21)] + ["jfk.wav"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def outputs(d):
    return sorted(p.name for p in Path(d).glob("*.srt"))


def leftovers(d):
    """Temporary files of npuwhisper (.<name>.<random>.part) left in d."""
    return sorted(p.name for p in Path(d).iterdir() if p.name.endswith(".part"))


def report(path):
    return {Path(j["input"]).name: j for j in map(json.loads, Path(path).read_text().splitlines())}


def driver(cluster, inp, out, *extra, wait=True):
    cmd = [PYTHON, DRIVER, str(inp), str(out), "--address", cluster.address, "--quiet", *extra]
    log("$", " ".join(cmd))
    p = subprocess.Popen(cmd, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return p
    text, _ = p.communicate(timeout=300)
    log(text.rstrip())
    return p.returncode


def wait_for(what, cond, timeout=120):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Inodes:
    """Watches a directory: an output renamed over twice gets a new inode."""

    def __init__(self, d):
        self.d, self.first, self.stop = Path(d), {}, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def scan(self):
        for p in self.d.glob("*.srt"):
            try:
                self.first.setdefault(p.name, p.stat().st_ino)
            except FileNotFoundError:
                pass

    def run(self):
        while not self.stop.is_set():
            self.scan()
            time.sleep(0.05)

    def rewritten(self):
        self.stop.set()
        self.thread.join()
        self.scan()
        return sorted(n for n, ino in self.first.items() if (self.d / n).stat().st_ino != ino)


def same_as_single(out, ref, names):
    differ = [n for n in names if (Path(out) / n).read_bytes() != (Path(ref) / n).read_bytes()]
    assert not differ, f"differ from the single-machine output: {differ}"


def npuwhisper_pids(cluster):
    return [p for p in cluster.processes() if _exe(p) == NPUWHISPER]


def _exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def ppid(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def main():
    # CI's time-out or a kill sends SIGTERM: unwind, so that the cluster is stopped all the same.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="npuwhisper-ray-test-"))
    good, bad = work / "good", work / "with-corrupt"
    good.mkdir()
    bad.mkdir()
    for c in CLIPS:
        shutil.copy(EVAL / c, good / c)
        shutil.copy(EVAL / c, bad / c)
    (bad / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage, not audio")
    names = sorted(c.replace(".wav", ".srt") for c in CLIPS)

    # The single-machine reference: one npuwhisper process, the same files.
    ref = work / "single"
    t0 = time.monotonic()
    subprocess.run([NPUWHISPER, "--quiet", "-o", str(ref), *[str(good / c) for c in CLIPS]], check=True)
    log(f"single-machine npuwhisper: {len(CLIPS)} files in {time.monotonic() - t0:.1f} s")
    assert outputs(ref) == names

    results = []

    def case(name, fn, cluster):
        t = time.monotonic()
        try:
            fn(cluster)
            results.append((name, None))
            log(f"--- ok: {name} ({time.monotonic() - t:.0f} s)")
        except Exception:
            results.append((name, traceback.format_exc()))
            log(f"--- FAILED: {name}\n{traceback.format_exc()}")

    def batch_with_corrupt_file(c):
        out = work / "out1"
        rc = driver(c, bad, out)
        assert rc == 1, f"exit status {rc}, not 1, with a corrupt file"
        rep = report(out / "ray_transcribe.report.jsonl")
        assert rep["corrupt.wav"]["status"] == "failed" and rep["corrupt.wav"]["error"], rep["corrupt.wav"]
        assert all(rep[c]["status"] == "ok" for c in CLIPS), rep
        assert outputs(out) == names, outputs(out)
        same_as_single(out, ref, names)
        assert not leftovers(out), leftovers(out)
        nodes = {rep[c]["node_id"] for c in CLIPS}
        assert len(nodes) == 2, f"files went to {len(nodes)} node(s), not both"

    def lost_mid_batch(c, out, kill):
        """Runs the driver over the good files, calls kill() after 3 outputs, and checks that
        every output arrives, equal to the single run's, renamed into place once. The driver's
        output."""
        out.mkdir()
        watch = Inodes(out)
        p = driver(c, good, out, wait=False)
        wait_for("3 outputs", lambda: len(outputs(out)) >= 3 or p.poll() is not None)
        busy = len(outputs(out))
        kill()
        text, _ = p.communicate(timeout=300)
        log(text.rstrip())
        assert p.returncode == 0, f"exit status {p.returncode}"
        assert busy < len(CLIPS), "the batch had ended before the kill"
        rep = report(out / "ray_transcribe.report.jsonl")
        assert all(rep[x]["status"] in ("ok", "skipped") for x in CLIPS), rep
        assert outputs(out) == names
        same_as_single(out, ref, names)
        assert not leftovers(out), leftovers(out)
        twice = watch.rewritten()
        assert not twice, f"written twice: {twice}"
        return text

    def worker_killed_mid_batch(c):
        child = []

        def kill():
            workers = [q for q in c.processes() if cmdline(q).startswith("ray::Transcriber")]
            assert workers, "no Ray worker runs a Transcriber"
            child.extend(q for q in npuwhisper_pids(c) if ppid(q) == workers[0])
            assert child, "the Transcriber worker has no npuwhisper"
            log(f"killing Ray worker {workers[0]} ({cmdline(workers[0]).strip()})")
            os.kill(workers[0], signal.SIGKILL)

        text = lost_mid_batch(c, work / "out2", kill)
        # Ray's own word (the raylet's, relayed to the driver) that a call in flight was retried.
        assert "so the task will be retried" in text, "no call was in flight on the killed worker"
        assert all(_exe(q) != NPUWHISPER for q in child), "the killed worker's npuwhisper lived on"

    def driver_killed_then_rerun(c):
        out = work / "out3"
        p = driver(c, good, out, "--per-node-jobs", "2", wait=False)
        wait_for("5 outputs", lambda: len(outputs(out)) >= 5 or p.poll() is not None)
        p.kill()
        p.communicate()
        # Ray ends a dead driver's actors; their npuwhisper drops its unfinished file.
        wait_for("the dead driver's workers to end", lambda: not npuwhisper_pids(c), timeout=120)
        # Ray kills those workers' children outright: their temporary files stay, for the
        # re-run to remove; never an output.
        log(f"temporary files left by the killed driver's workers: {leftovers(out)}")
        done = {n: (out / n).stat().st_ino for n in outputs(out)}
        assert 5 <= len(done) < len(CLIPS), f"{len(done)} outputs at the kill"
        log(f"driver killed with {len(done)} of {len(CLIPS)} done")
        rc = driver(c, good, out, "--per-node-jobs", "2")
        assert rc == 0, f"exit status {rc}"
        rep = report(out / "ray_transcribe.report.jsonl")
        redone = sorted(x.replace(".wav", ".srt") for x in CLIPS if rep[x]["status"] == "ok")
        skipped = sorted(x.replace(".wav", ".srt") for x in CLIPS if rep[x]["status"] == "skipped")
        assert skipped == sorted(done), (skipped, sorted(done))
        assert redone == sorted(set(names) - set(done)), redone
        assert all((out / n).stat().st_ino == ino for n, ino in done.items()), "a finished output was written again"
        same_as_single(out, ref, names)
        assert not leftovers(out)

    def node_lost_mid_batch(c):
        def kill():
            log("killing every process of node 1")
            c.kill_node(1)

        lost_mid_batch(c, work / "out4", kill)

    cluster = None
    try:
        t0 = time.monotonic()
        with LocalCluster(nodes=2) as cluster:
            log(f"cluster of 2 nodes at {cluster.address} up in {time.monotonic() - t0:.0f} s")
            case("21 files and a corrupt one on two nodes equal the single-machine output", batch_with_corrupt_file,
                 cluster)  # fmt: skip
            case("a Ray worker killed mid-batch: every output once, complete", worker_killed_mid_batch, cluster)
            case("a killed driver's re-run finishes only the missing files", driver_killed_then_rerun, cluster)
            # Last: the cluster has one node left after it.
            case("a node lost mid-batch: its files done on the other, once", node_lost_mid_batch, cluster)
    except Exception:
        results.append(("cluster", traceback.format_exc()))
        log(traceback.format_exc())
    finally:
        if cluster is not None:
            left = cluster.processes()
            ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
            stray = [line for line in ps.splitlines() if cluster.root in line]
            ok = not left and not stray
            results.append(("the cluster is stopped, no process left", None if ok else f"{left} {stray}"))
        shutil.rmtree(work, ignore_errors=True)

    failed = [(n, e) for n, e in results if e]
    for n, e in results:
        log(f"{'ok    ' if not e else 'FAILED'} {n}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
