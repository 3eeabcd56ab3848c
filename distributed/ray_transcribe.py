#!/usr/bin/env python3
"""Transcribe a directory of recordings on a Ray cluster with the npuwhisper command.

    .venv/bin/python distributed/ray_transcribe.py INPUT_DIR OUTPUT_DIR --address HEAD:6379 \\
        [--format srt,vtt,json] [--model M] [--set PROPERTY=VALUE ...] [--per-node-jobs N]

One Ray actor per node holds one long-lived `npuwhisper --files-from -` process (one loaded
model, N jobs) and is fed one path per call; the driver hands the next file to whichever actor
finishes one. INPUT_DIR and OUTPUT_DIR must be the same paths on every node (a shared
filesystem): npuwhisper writes each output through a temporary file renamed over it, so an
output is whole or absent. A killed worker or lost node restarts its actor and Ray retries the
calls it had; the new npuwhisper runs with --skip-existing, so a file finished before the loss
is not written again. Files already done are skipped, failures end up in one JSON Lines report,
and the exit status is 0 only when every file succeeded (1: some failed, 2: usage or cluster
error, 130: interrupted). See README, "More than one machine".
"""

import argparse
import ctypes
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

# The extensions the npuwhisper command picks up in a directory (cli/src/main.rs, MEDIA).
MEDIA = {
    "wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "wma", "mka", "aiff", "aif", "mp4", "m4v",
    "mkv", "webm", "mov", "avi", "ts", "mts", "mpg", "mpeg", "3gp", "amr",
}  # fmt: skip
EXTENSIONS = {"srt": "srt", "vtt": "vtt", "txt": "txt", "json": "json"}
REPO = Path(__file__).resolve().parent.parent


def list_media(input_dir):
    found = []
    for root, dirs, files in os.walk(input_dir, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            if name.rsplit(".", 1)[-1].lower() in MEDIA and "." in name:
                found.append(os.path.abspath(os.path.join(root, name)))
    return found


def outputs_of(path, output_dir, formats):
    stem = os.path.splitext(os.path.basename(path))[0]
    return [os.path.join(output_dir, f"{stem}.{EXTENSIONS[f]}") for f in formats]


def _not_utf8(path):
    try:
        path.encode()
        return False
    except UnicodeEncodeError:
        return True


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input_dir", metavar="INPUT_DIR", help="directory walked for media files")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="where <stem>.<format> go (made if missing)")
    p.add_argument("--address", required=True, help="the Ray cluster, HEAD_IP:PORT (ray start --head --port)")
    p.add_argument("--format", default="srt", help="output formats, comma-separated: srt,vtt,txt,json")
    p.add_argument("--model", help="model name in the models directory (default: npuwhisper's, tiny.en)")
    p.add_argument("--set", action="append", default=[], metavar="PROPERTY=VALUE",
                   help="any npuwhisper element property, passed to npuwhisper --set")  # fmt: skip
    p.add_argument("--per-node-jobs", type=int, default=1, metavar="N",
                   help="recordings at once on each node, sharing that node's loaded model")  # fmt: skip
    p.add_argument("--threads", type=int, help="compute threads of each node's npuwhisper (0 = every core)")
    p.add_argument("--npuwhisper", metavar="PATH",
                   help="the npuwhisper command, the same path on every node (default: this checkout's "
                        "target/release/npuwhisper, else npuwhisper on PATH)")  # fmt: skip
    p.add_argument("--report", metavar="FILE",
                   help="JSON Lines report, one line per file (default: OUTPUT_DIR/ray_transcribe.report.jsonl)")  # fmt: skip
    p.add_argument("--max-retries", type=int, default=3, help="Ray retries of a file whose worker was lost")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    a.formats = [f.strip() for f in a.format.split(",") if f.strip()]
    bad = [f for f in a.formats if f not in EXTENSIONS]
    if bad or not a.formats:
        p.error(f"--format: unknown {bad or 'empty'}; choose from {','.join(EXTENSIONS)}")
    if a.per_node_jobs < 1:
        p.error("--per-node-jobs must be 1 or more")
    if a.npuwhisper is None:
        built = REPO / "target/release/npuwhisper"
        a.npuwhisper = str(built) if built.is_file() else shutil.which("npuwhisper")
        if a.npuwhisper is None:
            p.error("no npuwhisper command: build it (cargo build --release) or pass --npuwhisper PATH")
    return a


def _die_with_parent():
    # Runs in the child before exec: SIGTERM when the Ray worker dies, so npuwhisper drops its
    # unfinished temporary files and exits instead of writing an output a retry writes again.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Transcriber:
    """A Ray actor: one npuwhisper process reading paths on stdin and answering one JSON line each."""

    def __init__(self, command, output_dir, formats):
        self.output_dir, self.formats = output_dir, formats
        self.lock = threading.Lock()
        self.waiting = {}  # input path -> [event, result]
        started = threading.Event()

        # PR_SET_PDEATHSIG fires when the thread that forked exits: fork from one that lives as
        # long as this process, whichever thread Ray runs the constructor on.
        def keeper():
            self.proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_die_with_parent,
                text=True, bufsize=1,
            )  # fmt: skip
            started.set()
            self.proc.wait()

        threading.Thread(target=keeper, daemon=True).start()
        started.wait()
        threading.Thread(target=self._read, daemon=True).start()
        import ray

        self.node = socket.gethostname()
        self.node_id = ray.get_runtime_context().get_node_id()

    def _read(self):
        for line in self.proc.stdout:
            try:
                result = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                slot = self.waiting.pop(result.get("input"), None)
            if slot:
                slot[1] = result
                slot[0].set()
        # npuwhisper ended while this worker lives: a crash. Ending the worker makes Ray restart
        # the actor and retry its calls, as for a lost worker.
        print(f"ray_transcribe: npuwhisper exited with {self.proc.wait()}", file=sys.stderr, flush=True)
        os._exit(1)

    def transcribe(self, path):
        # Temporary files of an earlier attempt at this file, whose npuwhisper was killed outright
        # (Ray kills a dead driver's workers and their children with SIGKILL): nothing else
        # writes them now, as the driver gives a file to one worker at a time.
        for out in outputs_of(path, self.output_dir, self.formats):
            for stale in glob.glob(os.path.join(glob.escape(self.output_dir), f".{glob.escape(os.path.basename(out))}.*.part")):
                try:
                    os.remove(stale)
                except FileNotFoundError:
                    pass
        slot = [threading.Event(), None]
        with self.lock:
            self.waiting[path] = slot
            self.proc.stdin.write(path + "\n")
            self.proc.stdin.flush()
        slot[0].wait()
        result = slot[1]
        result["node"], result["node_id"] = self.node, self.node_id
        return result

    def __ray_shutdown__(self):
        # The driver let go of this actor: npuwhisper stops at the end of its input.
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.terminate()


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    import ray
    from ray.exceptions import RayActorError, RayError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from tqdm import tqdm

    input_dir = os.path.abspath(a.input_dir)
    output_dir = os.path.abspath(a.output_dir)
    if not os.path.isdir(input_dir):
        print(f"ray_transcribe: '{a.input_dir}' is not a directory", file=sys.stderr)
        return 2
    os.makedirs(output_dir, exist_ok=True)
    files = list_media(input_dir)
    if not files:
        print(f"ray_transcribe: no media files in '{a.input_dir}'", file=sys.stderr)
        return 2
    writers = {}
    for f in files:
        for o in outputs_of(f, output_dir, a.formats):
            if o in writers:
                print(f"ray_transcribe: '{writers[o]}' and '{f}' would both be written to '{o}'", file=sys.stderr)
                return 2
            writers[o] = f
    report_path = a.report or os.path.join(output_dir, "ray_transcribe.report.jsonl")

    results = {}
    todo = deque()
    for f in files:
        unsendable = "\n" in f or "\r" in f or not f.isprintable() or _not_utf8(f)
        if unsendable:  # the workers take one UTF-8 path a line
            results[f] = {"input": f, "status": "failed", "error": "path not UTF-8 or with a control character"}
        elif all(os.path.isfile(o) for o in outputs_of(f, output_dir, a.formats)):
            results[f] = {"input": f, "status": "skipped", "audio_seconds": None, "wall_seconds": 0.0, "error": None}
        else:
            todo.append(f)

    options = ["--quiet", "-o", output_dir, "-f", ",".join(a.formats), "-j", str(a.per_node_jobs)]
    if a.model:
        options += ["--model", a.model]
    if a.threads is not None:
        options += ["--threads", str(a.threads)]
    for s in a.set:
        options += ["--set", s]
    command = [a.npuwhisper, "--files-from", "-", "--report", "-", "--skip-existing", *options]

    # A bad model or property: said once here, not by every worker (the driver's machine has
    # the same set-up as the nodes).
    check = subprocess.run([a.npuwhisper, "--files-from", "/dev/null", *options], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    if check.returncode != 0:
        print(f"ray_transcribe: {check.stderr.strip()}", file=sys.stderr)
        return 2

    started = time.monotonic()
    interrupted = False
    # Ray waits minutes for a GCS that is not there: look first.
    host, _, port = a.address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError) as e:
        print(f"ray_transcribe: no Ray cluster at {a.address} (ray start --head --port=...): {e}", file=sys.stderr)
        return 2
    try:
        ray.init(address=a.address, logging_level="WARNING", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        print(f"ray_transcribe: cannot join the Ray cluster at {a.address}: {e}", file=sys.stderr)
        return 2
    try:
        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
        if not nodes:
            print("ray_transcribe: the cluster has no live node with a CPU", file=sys.stderr)
            return 2
        actor_class = ray.remote(Transcriber)
        # One per node, each taking one of its CPUs; soft, so that an actor whose node is lost
        # may come back on another node with a CPU free.
        actors = [
            actor_class.options(
                num_cpus=1, max_restarts=-1, max_task_retries=a.max_retries, max_concurrency=a.per_node_jobs,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=True),
            ).remote(command, output_dir, a.formats)
            for n in nodes
        ] if todo else []  # fmt: skip
        bar = tqdm(total=len(files), initial=len(files) - len(todo), unit="file", disable=a.quiet, mininterval=1,
                   desc=f"{len(nodes)} node(s)", file=sys.stderr)  # fmt: skip
        running = {}
        load = {actor: 0 for actor in actors}  # calls in flight on each usable actor
        resent = {}  # file -> times the driver gave it to another actor

        def fill():
            for actor in list(load):
                while load[actor] < a.per_node_jobs and todo:
                    f = todo.popleft()
                    running[actor.transcribe.remote(f)] = (f, actor, time.monotonic())
                    load[actor] += 1

        fill()
        failed = 0
        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in done:
                f, actor, sent = running.pop(ref)
                if actor in load:
                    load[actor] -= 1
                try:
                    r = ray.get(ref)
                    r["call_seconds"] = time.monotonic() - sent  # wall_seconds plus Ray's share
                except RayActorError as e:
                    # Ray's retries ran out, as they do within a second when a whole node is
                    # gone before the cluster has noticed: the file goes to another actor, and
                    # this one gets no more work.
                    load.pop(actor, None)
                    resent[f] = resent.get(f, 0) + 1
                    if resent[f] <= a.max_retries and load:
                        todo.appendleft(f)
                        fill()
                        continue
                    r = {"input": f, "status": "failed", "error": f"worker lost: {type(e).__name__}: {e}"}
                except RayError as e:
                    r = {"input": f, "status": "failed", "error": f"{type(e).__name__}: {e}"}
                fill()
                results[f] = r
                if r["status"] not in ("ok", "skipped"):
                    failed += 1
                    bar.set_postfix(failed=failed)
                bar.update(1)
        # Files no actor was left to take.
        for f in todo:
            results[f] = {"input": f, "status": "failed", "error": "no worker left"}
        bar.close()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        ray.shutdown()

    wall = time.monotonic() - started
    lines = [results.get(f, {"input": f, "status": "interrupted"}) for f in files]
    tmp = f"{report_path}.{os.getpid()}.part"
    with open(tmp, "w") as out:
        for line in lines:
            out.write(json.dumps(line) + "\n")
    os.replace(tmp, report_path)

    count = lambda s: sum(1 for r in lines if r["status"] == s)  # noqa: E731
    ok, skipped = count("ok"), count("skipped")
    bad = [r for r in lines if r["status"] not in ("ok", "skipped")]
    audio = sum(r.get("audio_seconds") or 0 for r in lines if r["status"] == "ok")
    for r in bad:
        print(f"ray_transcribe: {r['input']}: {r['status']}: {r.get('error')}", file=sys.stderr)
    speed = f" ({audio / wall:.1f}x realtime)" if audio and wall else ""
    print(f"ray_transcribe: {ok} transcribed, {len(bad)} failed, {skipped} skipped; {audio:.1f} s of audio "
          f"in {wall:.1f} s{speed}; report: {report_path}", file=sys.stderr)  # fmt: skip
    if interrupted:
        return 130
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
