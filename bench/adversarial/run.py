"""The harness: a 4-member cluster with node3 left to the attacker, windows of committed rounds, the audit after."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.adversarial.common import ATTACKER, HONEST, REPO, TARGET, WATCHER


@dataclass
class Window:
    name: str
    seconds: float
    committed: int                      # rounds committed on the watcher during the window
    target: str | None = None
    attacker: dict = field(default_factory=dict)     # what the attacker process reported
    resumed_after_s: float | None = None             # from the attack's end to the next two commits
    local_score: float | None = None                 # the attacker's local score on the target, after
    banned: bool | None = None
    rejected_by_reason: dict = field(default_factory=dict)
    metrics_before: int | None = None
    metrics_after: int | None = None
    rejected_series_after: int | None = None
    api_probes: tuple[int, int] = (0, 0)             # the target's /status answered, asked (one a second)
    peak_fds: int | None = None                      # the target process's open descriptors at their peak
    target_cpu_s: float | None = None                # CPU seconds the target node used during the window
    attacker_cpu_s: float | None = None              # and the attacker process (same machine, same cores)
    target_log_bytes: int | None = None              # how much the target's log grew during the window
    target_term: tuple[int | None, int | None] = (None, None)

    def per_30s(self) -> float:
        return self.committed * 30.0 / self.seconds


@dataclass
class Outcome:
    windows: list[Window]
    verify: dict[str, dict]             # node -> `swarm verify --json` report (and rc)
    chains_agree: bool
    chain_lengths: dict[str, int]
    missing_payloads: dict[str, int]    # node -> payload files named by committed entries but absent
    notes: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> Window:
        return self.windows[0]


def _get(url: str, timeout: float = 3.0):
    from swarm.ops.http_json import get_json
    return get_json(url, timeout)


def _metrics_text(api: str) -> str | None:
    import urllib.request
    try:
        with urllib.request.urlopen(f"{api}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


def _retry(fn, seconds: float = 20.0, interval: float = 0.5):
    deadline = time.monotonic() + seconds
    while True:
        value = fn()
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Bench:
    """One cluster, its windows and its checks. ``log`` gets one line per step (print, or a test's capture)."""

    def __init__(self, folder: Path, window_s: float = 30.0, local_steps: int = 3, log=print,
                 node_fd_limit: int | None = 512):
        from swarm.ops.cluster import Cluster, ClusterOptions, init_cluster
        self.folder, self.window_s, self.log, self.node_fd_limit = folder, window_s, log, node_fd_limit
        # Retention off (0 = keep every snapshot and payload): `swarm verify` then replays every committed round
        # from state_0, so "nothing lost" is checked on the whole chain, not only past the pruning horizon.
        options = ClusterOptions(nodes=4, local_steps=local_steps,
                                 node_overrides={"consensus": {"keep_snapshots": 0, "keep_payload_rounds": 0}})
        self.specs = {s.name: s for s in init_cluster(folder, options)}
        self.cluster = Cluster(folder, list(self.specs.values()))
        self.attackers: list[subprocess.Popen] = []

    # ---- the cluster ----------------------------------------------------------------------------------------
    def start(self, warmup_rounds: int = 3, timeout: float = 180.0) -> None:
        """Start node0..node2 (with at most ``node_fd_limit`` descriptors each, the limit finding 3 ran out of;
        the attackers keep this process's own) and wait for the first rounds."""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if self.node_fd_limit:
            cap = self.node_fd_limit if hard == resource.RLIM_INFINITY else min(self.node_fd_limit, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (cap, hard))
        try:
            for name in HONEST:
                self.cluster.start_node(self.specs[name])
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        deadline = time.monotonic() + timeout
        while min(self.rounds().values()) < warmup_rounds:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no progress before the attacks: {self.rounds()}")
            time.sleep(1)

    def stop(self) -> None:
        for proc in self.attackers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.cluster.stop()

    def status(self, name: str) -> dict | None:
        return _get(f"{self.specs[name].api}/status")

    def rounds(self) -> dict[str, int]:
        return {n: (self.status(n) or {}).get("round", -1) for n in HONEST}

    def watcher_round(self) -> int:
        value = _retry(lambda: (self.status(WATCHER) or {}).get("round"))
        if value is None:
            raise RuntimeError(f"{WATCHER} stopped answering")
        return value

    def attacker_row(self, target: str) -> dict | None:
        def row():
            peers = _get(f"{self.specs[target].api}/peers", 5.0)
            return None if peers is None else next(r for r in peers if r["name"] == ATTACKER)
        return _retry(row, 30.0)

    # ---- one window -----------------------------------------------------------------------------------------
    def window(self, name: str) -> Window:
        target = TARGET.get(name)
        spec = self.specs[target] if target else None
        metrics_before = None
        if spec is not None:
            text = _retry(lambda: _metrics_text(spec.api))
            metrics_before = len(text) if text else None
        term_before = (self.status(target) or {}).get("term") if target else None
        proc = self._launch(name) if name != "baseline" else None
        if proc is not None:
            time.sleep(1.0 if name != "packed_newterm" else 2.0)  # the attacker connects (and builds its messages)
        start_round, started = self.watcher_round(), time.monotonic()
        probes, answered, peak_fds = 0, 0, 0
        pid = self.cluster.procs[target].pid if target else None
        log_path = self.folder / "logs" / f"{target}.log"
        cpu_before = (_cpu_s(pid) if pid else None, _cpu_s(proc.pid) if proc else None)
        log_before = log_path.stat().st_size if target and log_path.exists() else None
        while time.monotonic() - started < self.window_s:
            if target:
                probes += 1
                answered += _get(f"{spec.api}/status", 1.0) is not None
                peak_fds = max(peak_fds, _fds(pid) or 0)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started) % 1.0))
        committed = self.watcher_round() - start_round
        seconds = time.monotonic() - started
        cpu_after = (_cpu_s(pid) if pid else None, _cpu_s(proc.pid) if proc else None)
        result = Window(name, seconds, committed, target)
        if cpu_before[0] is not None and cpu_after[0] is not None:
            result.target_cpu_s = round(cpu_after[0] - cpu_before[0], 1)
        if cpu_before[1] is not None and cpu_after[1] is not None:
            result.attacker_cpu_s = round(cpu_after[1] - cpu_before[1], 1)
        if log_before is not None:
            result.target_log_bytes = log_path.stat().st_size - log_before
        if proc is not None:
            result.attacker = self._finish(proc)
            ended = time.monotonic()
            base = self.watcher_round()
            while self.watcher_round() < base + 2 and time.monotonic() - ended < 90:
                time.sleep(0.25)
            result.resumed_after_s = round(time.monotonic() - ended, 1) if self.watcher_round() >= base + 2 else None
            row = self.attacker_row(target)
            if row is not None:
                result.local_score, result.banned = row["local_score"], row["banned"]
                result.rejected_by_reason = row["rejected_by_reason"]
            text = _retry(lambda: _metrics_text(spec.api))
            if text is not None:
                result.metrics_before, result.metrics_after = metrics_before, len(text)
                result.rejected_series_after = sum(1 for line in text.splitlines()
                                                   if line.startswith("swarm_messages_rejected_total{"))
            result.api_probes, result.peak_fds = (answered, probes), peak_fds
            result.target_term = (term_before, (self.status(target) or {}).get("term"))
        self.log(f"{name}: {committed} rounds in {seconds:.1f} s ({result.per_30s():.1f} per 30 s)"
                 + (f"; attacker {json.dumps(result.attacker)}; resumed after {result.resumed_after_s} s; "
                    f"attacker's local score on {target}: {result.local_score} (banned {result.banned}, "
                    f"{result.rejected_by_reason}); /metrics {result.metrics_before} -> {result.metrics_after} B; "
                    f"{target} /status answered {answered}/{probes}; peak fds {peak_fds}; term "
                    f"{result.target_term}; CPU s target {result.target_cpu_s} attacker {result.attacker_cpu_s}; "
                    f"target log +{result.target_log_bytes} B" if proc is not None else ""))
        return result

    def _launch(self, name: str) -> subprocess.Popen:
        target = self.specs[TARGET[name]]
        seconds = self.window_s + (2.0 if name == "packed_newterm" else 1.0)
        argv = [sys.executable, "-m", "bench.adversarial", "attack", name, "--seconds", f"{seconds:.1f}"]
        if name in ("packed_newterm", "label_streams"):
            argv += ["--target", target.multiaddr, "--key", str(self.folder / "keys" / f"{ATTACKER}.pem"),
                     "--genesis", str(self.folder / "genesis.yaml")]
        else:
            argv += ["--port", str(target.api_port)]
        with open(self.folder / "logs" / f"attack-{name}.err", "wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                    cwd=str(REPO))
        self.attackers.append(proc)
        return proc

    def _finish(self, proc: subprocess.Popen) -> dict:
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {"error": f"attacker exited {proc.returncode} without a report"}

    # ---- after the attacks ----------------------------------------------------------------------------------
    def audit(self) -> tuple[dict, bool, dict, dict]:
        """Every node stopped: `swarm verify --json` on each store, the chains compared, payloads counted."""
        verify, chains, missing = {}, {}, {}
        for name in HONEST:
            data = self.specs[name].data_dir
            run = subprocess.run([sys.executable, "-m", "cli.main", "verify", "--data-dir", str(data), "--json"],
                                 check=False, capture_output=True, text=True, cwd=str(REPO), timeout=300)
            try:
                report = json.loads(run.stdout)
            except json.JSONDecodeError:
                report = {"ok": False, "stdout": run.stdout[-400:], "stderr": run.stderr[-400:]}
            report["rc"] = run.returncode
            verify[name] = report
            chains[name], missing[name] = _chain_and_missing(data)
        lengths = {name: len(chain) for name, chain in chains.items()}
        common = min(lengths.values())
        agree = len({tuple(chain[:common]) for chain in chains.values()}) == 1
        return verify, agree, lengths, missing

    def run(self, attacks: list[str], baseline_after: bool = True) -> Outcome:
        """A baseline window, one window per attack, another baseline (the box's drift), then the audit."""
        windows = [self.window("baseline")]
        for name in attacks:
            windows.append(self.window(name))
        if baseline_after:
            windows.append(dataclasses.replace(self.window("baseline"), name="baseline_after"))
        self.cluster.stop()
        verify, agree, lengths, missing = self.audit()
        return Outcome(windows, verify, agree, lengths, missing)


def _chain_and_missing(data_dir: Path) -> tuple[list[bytes], int]:
    """The chain's digests in round order, and how many payload files its entries name (past the node's
    pruning horizon) are not on disk."""
    from consensus.messages import entry_from_plain
    from swarm.ledger.store import Store, payload_file
    store = Store(data_dir, read_only=True)
    try:
        rows = list(store.rows())
        pruned_through = int(store.get_meta("payloads_pruned_through", 0) or 0)
    finally:
        store.close()
    missing = sum(not payload_file(data_dir, digest).exists()
                  for row in rows if row.round > pruned_through
                  for digest in entry_from_plain(row.entry).gradient_digests)
    return [row.digest for row in rows], missing


# ================================================================================================ report

