"""Built-in task ``lm``: a small GPT-style byte-level language model on a corpus that needs no network.

The model: token and position embeddings, ``layers`` pre-norm transformer blocks (causal self-attention with
``heads`` heads, a 4x GELU MLP), a final LayerNorm and an output layer tied to the token embedding. Its shape is
the genesis hyper-parameters (``model.options``): ``layers``, ``width``, ``heads``, ``context``; about 1.04M
parameters by default (layers 5, width 128, heads 4, context 128), 25M+ by configuration (e.g. layers 8,
width 512). No buffers: the causal mask is built by ``scaled_dot_product_attention(is_causal=True)``.

The data (node config ``dataset``): ``stdlib`` (the default), the Python standard library's own ``.py`` files
read from the running interpreter (``sysconfig.get_paths()["stdlib"]``): a fixed, sorted file list (tests,
site-packages and ``__pycache__`` left out), concatenated up to ``corpus_bytes``; the last ``validation_bytes``
are the validation split, the same on every node that runs the same Python version. A user's corpus:
``dataset.custom: module:function`` returning bytes (or ``(train_bytes, validation_bytes)``).
``partition: iid`` deals the training bytes to the nodes in blocks of ``IID_BLOCK`` (node i: blocks i, i+n, ...),
``none`` gives a node all of them.

Metrics: ``loss`` (nats per byte), ``bits_per_byte`` (loss / ln 2) and next-byte ``accuracy``.
"""
from __future__ import annotations

import functools
import math
import os
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from swarm.training.loading import is_import_spec, load_callable

from .base import DataSource, InnerOptimizer, Task, TaskData, TaskError
from .registry import register

VOCAB = 256
IID_BLOCK = 16_384  # bytes dealt to one node at a time by partition "iid"
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "__pycache__", "idlelib", "lib2to3", "turtledemo"}


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(batch, length, width))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, layers: int, width: int, heads: int, context: int):
        super().__init__()
        self.context = context
        self.tok, self.pos = nn.Embedding(VOCAB, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB, bias=False)
        self.head.weight = self.tok.weight  # tied
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:  # GPT-2's scaled init of the residual projections
            nn.init.normal_(block.proj.weight, std=0.02 / math.sqrt(2 * layers))
            nn.init.normal_(block.out.weight, std=0.02 / math.sqrt(2 * layers))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


@functools.lru_cache(maxsize=4)
def stdlib_corpus(budget: int, root: str | None = None) -> bytes:
    """Up to ``budget`` bytes of the standard library's .py files, in sorted relative-path order."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(base):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        files += [Path(folder, n).relative_to(base).as_posix() for n in names if n.endswith(".py")]
    out, size = [], 0
    for rel in sorted(files):
        try:
            data = (base / rel).read_bytes()
        except OSError:
            continue
        out.append(data[:budget - size])
        size += len(out[-1])
        if size >= budget:
            break
    return b"".join(out)


def iid_share(train: bytes, index: int, nodes: int) -> bytes:
    """Node ``index``'s share of the training bytes: every ``nodes``-th block, from block ``index`` on. A
    contiguous 1/n slice of a sorted file list is not iid (each node would see other modules and styles, and
    the averaged models drift apart); dealt blocks spread every node over the whole corpus. Blocks are
    ``IID_BLOCK`` bytes, smaller for a small corpus so that each node gets at least 8. The shares are disjoint
    and cover the training bytes."""
    block = max(1, min(IID_BLOCK, len(train) // (8 * nodes)))
    return b"".join(train[start:start + block] for start in range(index * block, len(train), nodes * block))


@register("lm")
class LanguageModelTask(Task):
    defaults: ClassVar[dict[str, Any]] = {"layers": 5, "width": 128, "heads": 4, "context": 128,
                "corpus_bytes": 2_000_000, "validation_bytes": 65_536}
    default_dataset = "stdlib"
    datasets = ("stdlib",)
    partitions = ("none", "iid")

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        super().__init__(options, seed)
        h = self.hyper
        for key in ("layers", "width", "heads", "context", "corpus_bytes", "validation_bytes"):
            if h[key] < 1:
                raise TaskError(f"model.options.{key}", f"must be >= 1, got {h[key]}")
        if h["width"] % h["heads"]:
            raise TaskError("model.options.heads", f"must divide width ({h['width']}), got {h['heads']}")
        if h["validation_bytes"] <= h["context"] or h["corpus_bytes"] < h["validation_bytes"] + 2 * h["context"]:
            raise TaskError("model.options.validation_bytes", "the validation split needs more than context bytes "
                                                              "and the corpus more than the validation split")

    def build_model(self) -> nn.Module:
        h = self.hyper
        return GPT(h["layers"], h["width"], h["heads"], h["context"])

    def load_data(self, source: DataSource) -> TaskData:
        h = self.hyper
        if source.name == "stdlib":
            corpus = stdlib_corpus(h["corpus_bytes"])
            train, validation = corpus[:-h["validation_bytes"]], corpus[-h["validation_bytes"]:]
        elif is_import_spec(source.name):
            loaded = load_callable(source.name)()
            if isinstance(loaded, (bytes, bytearray)):
                loaded = bytes(loaded)
                train, validation = loaded[:-h["validation_bytes"]], loaded[-h["validation_bytes"]:]
            elif isinstance(loaded, tuple) and len(loaded) == 2 and all(isinstance(p, bytes) for p in loaded):
                train, validation = loaded
            else:
                raise TaskError("dataset.custom", f"{source.name!r} must return bytes or (train, validation) "
                                                  f"bytes for the lm task, got {type(loaded).__name__}")
        else:
            raise TaskError("dataset.name", f"task lm reads a byte corpus: stdlib or a user's 'module:function', "
                                            f"got {source.name!r}")
        if source.partition == "iid":
            train = iid_share(train, source.node_index, source.num_nodes)
        for name, part in (("training", train), ("validation", validation)):
            if len(part) <= h["context"] + 1:
                raise TaskError("dataset", f"this node's {name} bytes ({len(part)}) do not fill one context "
                                           f"window of {h['context'] + 1} bytes (model.options.context)")
        train_arr = np.frombuffer(train, dtype=np.uint8)
        valid_arr = np.frombuffer(validation, dtype=np.uint8)
        return TaskData(train_arr, valid_arr, len(train_arr) - h["context"])

    def train_batches(self, data: TaskData, batch_size: int, rng: np.random.Generator) -> Iterator[Any]:
        windows = np.lib.stride_tricks.sliding_window_view(data.train, self.hyper["context"] + 1)
        while True:
            picked = torch.from_numpy(windows[rng.integers(0, len(windows), size=batch_size)].astype(np.int64))
            yield picked[:, :-1], picked[:, 1:]

    def validation_batches(self, data: TaskData, batch_size: int) -> Iterable[Any]:
        context = self.hyper["context"]
        starts = np.arange(0, len(data.validation) - context, context)  # every byte predicted once
        windows = np.stack([data.validation[s:s + context + 1] for s in starts]).astype(np.int64)
        rows = max(1, batch_size // 8)  # a batch of eval_batch_size / 8 windows
        for i in range(0, len(windows), rows):
            chunk = torch.from_numpy(windows[i:i + rows])
            yield chunk[:, :-1], chunk[:, 1:]

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        total, correct, count = 0.0, 0, 0
        for x, y in batches:
            logits = model(x).reshape(-1, VOCAB).float()
            total += float(F.cross_entropy(logits, y.reshape(-1), reduction="sum"))
            correct += int((logits.argmax(dim=1) == y.reshape(-1)).sum())
            count += y.numel()
        loss = total / max(count, 1)
        return {"loss": loss, "bits_per_byte": loss / math.log(2), "accuracy": correct / max(count, 1)}

    def inner_optimizer(self) -> InnerOptimizer:
        return InnerOptimizer(name="adamw", lr=2e-3, weight_decay=0.1, betas=(0.9, 0.95), warmup_steps=20,
                              grad_clip=1.0)
