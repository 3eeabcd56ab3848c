"""A two-node Ray cluster on this machine for the tests and the benchmark: `ray start --head`
and `ray start --address` on ports of their own, each with its own temporary directory under one
root, started in new sessions so that stopping it kills exactly its processes (`ray stop` would
kill every Ray process of the machine, other people's too)."""

import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# Ray replaces 127.0.0.1 and localhost by the machine's network address; another loopback
# address keeps every connection on this machine.
IP = "127.0.0.2"
RAY = str(Path(__file__).resolve().parent.parent / ".venv/bin/ray")


def _bindable(port):
    with socket.socket() as s:
        try:
            s.bind((IP, port))
            return True
        except OSError:
            return False


class _Ports:
    """Ports for one cluster, each used once. Taken below the kernel's ephemeral range, so that no
    other process's outgoing connection takes one between choosing it and Ray binding it, and
    chosen as whole blocks, so that a node's worker range never overlaps another port of the
    cluster (Ray refuses to start then)."""

    def __init__(self):
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
        self.top = min(low, 65536)
        self.used = set()
        self.rng = random.Random()

    def block(self, n):
        for _ in range(10000):
            base = self.rng.randrange(10000, self.top - n)
            span = range(base, base + n)
            if self.used.isdisjoint(span) and all(_bindable(p) for p in span):
                self.used.update(span)
                return base
        raise RuntimeError(f"no {n} free ports in a row below {self.top}")

    def node_args(self):
        p = [self.block(1) for _ in range(6)]
        workers = self.block(51)
        return [
            f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}", f"--metrics-export-port={p[2]}",
            f"--dashboard-agent-listen-port={p[3]}", f"--dashboard-agent-grpc-port={p[4]}",
            f"--runtime-env-agent-port={p[5]}", f"--min-worker-port={workers}", f"--max-worker-port={workers + 50}",
        ]  # fmt: skip


class LocalCluster:
    """`with LocalCluster(nodes=2) as c:` ... c.address; stopped on leaving, even on failure."""

    def __init__(self, nodes=2, cpus_per_node=1):
        self.nodes, self.cpus = nodes, cpus_per_node
        self.root = tempfile.mkdtemp(prefix="npuwhisper-ray-")
        self.sessions = []
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")

    def _start(self, args, name):
        tmp = os.path.join(self.root, name)
        os.makedirs(tmp)
        cmd = [RAY, "start", "--disable-usage-stats", f"--num-cpus={self.cpus}",
               f"--node-ip-address={IP}", f"--temp-dir={tmp}", *args]  # fmt: skip
        p = subprocess.Popen(cmd, env=self.env, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
        self.sessions.append(p.pid)
        out, _ = p.communicate(timeout=180)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out}")

    def __enter__(self):
        try:
            ports = _Ports()
            gcs = ports.block(1)
            self.address = f"{IP}:{gcs}"
            self._start(["--head", f"--port={gcs}", "--include-dashboard=false", *ports.node_args()], "head")
            for k in range(1, self.nodes):
                self._start([f"--address={self.address}", *ports.node_args()], f"node{k}")
            self._wait_nodes()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_nodes(self, timeout=120):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            out = subprocess.run([RAY, "status", f"--address={self.address}"], env=self.env, capture_output=True,
                                 text=True).stdout  # fmt: skip
            active = out.split("Active:", 1)[-1].split("Pending:", 1)[0]
            if active.count("node_") >= self.nodes:
                return
            time.sleep(1)
        raise RuntimeError(f"the cluster did not show {self.nodes} nodes:\n{out}")

    def __exit__(self, *exc):
        self.stop()

    def processes(self, node=None):
        """Pids of every process this cluster started (of one node: 0 the head, 1 …): in its
        sessions, naming its directory, or below those."""
        procs = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read().decode(errors="replace")
            except OSError:
                continue
            procs[int(d)] = (int(stat[1]), int(stat[3]), cmd)  # ppid, session, cmdline
        if node is None:
            ours = {pid for pid, (_, sid, cmd) in procs.items() if sid in self.sessions or self.root in cmd}
        else:
            ours = {pid for pid, (_, sid, _) in procs.items() if sid == self.sessions[node]}
        grew = True
        while grew:
            below = {pid for pid, (ppid, _, _) in procs.items() if ppid in ours} - ours
            grew = bool(below)
            ours |= below
        ours.discard(os.getpid())
        return sorted(ours)

    def kill_node(self, node):
        """A machine lost: every process of that node killed at once."""
        for pid in self.processes(node):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self):
        for _ in range(50):
            left = self.processes()
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        subprocess.run(["rm", "-rf", self.root])
