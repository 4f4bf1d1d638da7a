"""Local differential privacy at the update: clip, add Gaussian noise, account the privacy spent, stop at a budget.

What a node does each round it contributes (swarm/node/contributor.py, in the training thread, before the update is
compressed and signed, so no other member ever sees the raw update):

1. clip the update its Trainer returns (the gradient or K steps' pseudo-gradient, one flat vector) to L2 norm C:
   ``u <- u * min(1, C / ||u||)``;
2. add noise ``N(0, (sigma * C)^2 I)`` drawn from the node's own torch Generator, seeded from ``os.urandom``: the
   noise must not be predictable by peers (a peer that could replay it would subtract it). It is local and never
   replicated (the replicated state is a function of the signed, already noisy updates), so nondeterminism here
   is fine;
3. account one step of the subsampled Gaussian mechanism with Opacus' RDP accountant
   (``opacus.accountants.RDPAccountant``; a maintained library, not a hand-written analysis) and persist its
   history in the node's store before the update leaves the node.

Before each round the node asks whether one more step would take epsilon (at delta) past its budget; if so it stops
contributing (it keeps following, validating and committing the chain), logs it once and shows it in /status.

Why this gives record-level DP for the node's own data, and where the analysis is approximate
-----------------------------------------------------------------------------------------------
The released update of a round is ``M(D) = clip_C(u(S)) + N(0, (sigma C)^2 I)``, where ``S`` is the multiset of
records the round's K * accumulation local batches drew from the node's N records. Take neighbouring datasets D
and D' = D plus one record x (add/remove adjacency). If the round never drew x, the update is the same function of
the same batches; if it did, both updates are clipped to norm C, so they differ by at most **2C** (they may point in
opposite directions: update-level clipping bounds each update, not each record's share of it, as DP-SGD's
per-example clipping would). The Gaussian noise is therefore ``sigma / 2`` times the sensitivity, and each round is
one step of the sampled Gaussian mechanism (Mironov, Talwar, Zhang 2019, the analysis Opacus implements) with noise
multiplier ``sigma / 2`` and sampling rate q, the probability that x is drawn in the round:

    q = 1 - (1 - B / N) ** (K * accumulation)      (B batch size, K local steps, N local records)

which is what the accountant is fed (``ACCOUNTED_NOISE = sigma / 2``): the epsilon shown is Opacus' epsilon for
those steps. Composition over rounds is the accountant's RDP composition; the rounds' parameters (the state each
round starts from) depend on earlier noisy releases only, which adaptive composition allows. Because the whole
update is clipped, it does not matter how many times x was drawn, nor what the local optimizer (SGD, AdamW,
momentum, FedProx) did with it: the guarantee needs no per-example gradients.

Approximate, honestly:
- The analysis assumes Poisson sampling (each record in or out of a round independently with probability q). The
  trainers draw fixed-size batches with replacement (swarm/training/tasks/*.py ``train_batches``). The q above
  over-estimates x's real inclusion probability ``1 - (1 - 1/N) ** (B K accumulation)``, but with fixed batch sizes
  the other records' draws are not independent of x's, so the Poisson bound is an approximation (the same one
  Opacus users make with shuffled fixed-size batches).
- It is record-level DP for the node's own records, against everyone who sees its signed updates (every member and
  anyone they leak to); it says nothing about the other members' data, and nothing at the level of a whole node
  (a node's participation itself is public).
- The RDP-to-(epsilon, delta) conversion is Opacus' (``get_privacy_spent`` over its default orders); epsilon is an
  upper bound, and a round whose update was sealed but dropped (the swarm moved on) is still counted (conservative).
- Floating-point Gaussian sampling is not the ideal continuous mechanism (Mironov 2012's attack on the Laplace
  mechanism's low bits applies in principle); not addressed here.
- Training ahead (``training.train_ahead``) uses the data again for an update that may be dropped unreleased: only
  released updates cost privacy, so that is free.

A smaller C (a node override) changes the noise's scale with it (sigma * C) and so not epsilon: privacy depends on
sigma alone; C trades bias (clipping) against the noise's absolute size in the aggregate.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from swarm.config import ConfigError, Genesis, NodeConfig

log = logging.getLogger("swarm.privacy")

SENSITIVITY_IN_C = 2.0  # one record moves a clipped update by at most 2C (see the module docstring)


@dataclass(frozen=True)
class PrivacySettings:
    clip_norm: float
    noise_multiplier: float
    delta: float
    epsilon_budget: float

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.clip_norm

    @property
    def accounted_noise(self) -> float:
        """The noise multiplier the accountant is fed: noise std over the record-level sensitivity (2C)."""
        return self.noise_multiplier / SENSITIVITY_IN_C


# (key, stricter is smaller?) for the node override
_STRICTER_SMALLER = (("clip_norm", True), ("noise_multiplier", False), ("delta", True), ("epsilon_budget", True))


def settings_of(genesis: Genesis, config: NodeConfig, source: str = "node config") -> PrivacySettings | None:
    """The node's privacy settings: the genesis' (None when its privacy section is off), each tightened by the node
    config's ``privacy`` override; a looser override, or one without privacy in the genesis, is refused naming the
    key."""
    spec, override = genesis.privacy, config.privacy
    given = {key: getattr(override, key) for key, _ in _STRICTER_SMALLER if getattr(override, key) is not None}
    if not spec.enabled:
        if given:
            key = next(iter(given))
            raise ConfigError(source, f"privacy.{key}", "the genesis has no privacy section enabled; a node's "
                                                        "privacy override only tightens the genesis' settings")
        return None
    if not math.isfinite(spec.epsilon_budget):
        raise ConfigError(config.genesis, "privacy.epsilon_budget", "must be finite")
    values = {key: getattr(spec, key) for key, _ in _STRICTER_SMALLER}
    for key, smaller in _STRICTER_SMALLER:
        if key not in given:
            continue
        mine, theirs = given[key], values[key]
        looser = mine > theirs if smaller else mine < theirs
        if looser:
            want = "at most" if smaller else "at least"
            raise ConfigError(source, f"privacy.{key}",
                              f"looser than the genesis ({mine} against {theirs}): a node may only tighten privacy, "
                              f"so this must be {want} {theirs}")
        values[key] = mine
    return PrivacySettings(**values)


def sample_rate(batch_size: int, local_steps: int, accumulation: int, records: int) -> float:
    """q = 1 - (1 - B/N)^(K * accumulation): the probability that one given local record is used in a round (an
    over-estimate of it for batches drawn with replacement; see the module docstring)."""
    if records < 1 or batch_size < 1 or local_steps < 1 or accumulation < 1:
        raise ValueError("need records, batch_size, local_steps and accumulation >= 1")
    per_batch = min(1.0, batch_size / records)
    return 1.0 - (1.0 - per_batch) ** (local_steps * accumulation)


def new_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A Generator seeded from the OS's entropy: its noise cannot be predicted by peers (nor reproduced)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1))
    return generator


def clip(update: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """``update`` scaled down to L2 norm at most ``clip_norm`` (a new tensor; unchanged if already within it)."""
    norm = float(torch.linalg.vector_norm(update.detach().double()))
    if not math.isfinite(norm):
        raise ValueError("the update is not finite; nothing to clip")
    if norm <= clip_norm:
        return update.clone()
    # the factor rounds in float32: shave a hair off so that the result is within C, not C plus an ulp
    return update * (clip_norm / norm * (1.0 - 1e-6))


def add_noise(update: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(update.shape, generator=generator, dtype=update.dtype, device=update.device)
    return update + noise * std


def accountant(history: Any = None):
    """An Opacus RDP accountant, with the history (``[(noise_multiplier, sample_rate, steps), ...]``) restored."""
    from opacus.accountants import (
        RDPAccountant,  # imported only where privacy is on (a second of import)
    )
    acc = RDPAccountant()
    acc.history = [(float(z), float(q), int(n)) for z, q, n in (history or [])]
    return acc


class PrivacyBudgetExhausted(RuntimeError):
    """Releasing one more update would exceed the node's epsilon budget."""


class PrivacyGuard:
    """One node's privacy: clipping and noise for each released update, the accountant and the budget.

    ``persist(history)`` is called with the accountant's history (plain lists) after each accounted step, before the
    update leaves the node (the node writes it to its store's meta, fsynced, so a restart never resets the spent
    budget). Thread-safety: ``privatize`` runs in the training thread, the readers (``view``) on the event loop; they
    read a few floats set atomically. ``may_contribute`` and ``privatize`` compute Opacus' epsilon (~0.1 s): call
    them off the event loop."""

    def __init__(self, settings: PrivacySettings, rate: float, history: Any = None,
                 persist: Callable[[list], None] | None = None):
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"sample rate must be in (0, 1], got {rate}")
        self.settings, self.rate = settings, rate
        self.accountant = accountant(history)
        self._persist = persist
        self._generator = new_generator()
        self._next: tuple[int, float] | None = None  # (rounds, epsilon after one more): ~0.1 s to compute
        self.epsilon = self._epsilon(self.accountant)
        self.exhausted = False
        self._said_exhausted = False
        if self.accountant.history:
            self.may_contribute()  # a budget already spent before a restart is said at start

    @property
    def rounds(self) -> int:
        return sum(n for _, _, n in self.accountant.history)

    def history(self) -> list[list]:
        return [[z, q, n] for z, q, n in self.accountant.history]

    def _epsilon(self, acc) -> float:
        return float(acc.get_epsilon(self.settings.delta)) if acc.history else 0.0

    def epsilon_after_next(self) -> float:
        """Epsilon if one more round were released (computed once per round: Opacus takes ~0.1 s)."""
        rounds = self.rounds
        if self._next is None or self._next[0] != rounds:
            trial = accountant(self.accountant.history)
            trial.step(noise_multiplier=self.settings.accounted_noise, sample_rate=self.rate)
            self._next = (rounds, self._epsilon(trial))
        return self._next[1]

    def may_contribute(self) -> bool:
        """Whether one more round stays within the budget; past it, says so once (log) and stays exhausted."""
        if not self.exhausted:
            after = self.epsilon_after_next()
            if after > self.settings.epsilon_budget:
                self.exhausted = True
                if not self._said_exhausted:
                    self._said_exhausted = True
                    log.warning("privacy budget reached: epsilon %.4f spent over %d rounds (delta %g); one more round "
                                "would make it %.4f, over the budget %g. This node stops contributing updates; it "
                                "keeps following, validating and committing the chain", self.epsilon, self.rounds,
                                self.settings.delta, after, self.settings.epsilon_budget)
        return not self.exhausted

    def privatize(self, update: torch.Tensor) -> torch.Tensor:
        """Clip, add noise, account the step and persist the accountant, in that order; the result may leave."""
        s = self.settings
        if self.exhausted or self.epsilon_after_next() > s.epsilon_budget:
            self.exhausted = True
            raise PrivacyBudgetExhausted(f"one more update would take epsilon past the budget {s.epsilon_budget:g}")
        after = self.epsilon_after_next()
        released = add_noise(clip(update.detach().to(torch.float32), s.clip_norm), s.noise_std, self._generator)
        self.accountant.step(noise_multiplier=s.accounted_noise, sample_rate=self.rate)
        if self._persist is not None:
            self._persist(self.history())
        self.epsilon = after  # the accountant's epsilon for exactly this history
        return released

    def view(self) -> dict:
        s = self.settings
        return {"epsilon": self.epsilon, "delta": s.delta, "budget": s.epsilon_budget, "rounds": self.rounds,
                "exhausted": self.exhausted, "noise_multiplier": s.noise_multiplier, "clip_norm": s.clip_norm,
                "sample_rate": self.rate}


def check_delta(settings: PrivacySettings, records: int, source: str = "node config") -> None:
    """delta must be below 1/N: at delta >= 1/N, (epsilon, delta)-DP allows publishing one record outright."""
    if settings.delta * records >= 1.0:
        raise ConfigError(source, "privacy.delta",
                          f"{settings.delta:g} is not below 1/N for this node's {records} local records "
                          f"(1/N = {1.0 / records:.3g}); set a smaller privacy.delta in the node config")


META_KEY = "privacy_accountant"  # the store meta key holding the accountant's history


def node_settings(genesis: Genesis, config: NodeConfig, trainer) -> tuple[PrivacySettings, float] | None:
    """A node's privacy settings and its sampling rate from its trainer's data and local steps, checked (at start,
    before the store is opened); None when the genesis has privacy off."""
    settings = settings_of(genesis, config)
    if settings is None:
        return None
    records = int(trainer.data.train_size)
    check_delta(settings, records)
    rate = sample_rate(trainer.batch_size, trainer.local_steps, trainer.opt.grad_accum, records)
    log.info("differential privacy: clip %g, noise multiplier %g (std %g), sample rate %.4g (%d records, batch %d, "
             "%d local steps x %d), delta %g, epsilon budget %g", settings.clip_norm, settings.noise_multiplier,
             settings.noise_std, rate, records, trainer.batch_size, trainer.local_steps, trainer.opt.grad_accum,
             settings.delta, settings.epsilon_budget)
    return settings, rate


def node_guard(chosen: tuple[PrivacySettings, float] | None, store) -> PrivacyGuard | None:
    """The node's guard, its accountant restored from ``store``'s meta (``get_meta``/``put_meta``) and saved there,
    fsynced, after each step: a restarted node goes on from the privacy it already spent."""
    if chosen is None:
        return None
    settings, rate = chosen
    return PrivacyGuard(settings, rate, store.get_meta(META_KEY),
                        lambda history: store.put_meta(META_KEY, history, durable=True))
