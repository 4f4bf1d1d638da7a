"""Byzantine attack profiles for tests and demos: what a faulty node does to its own honest update.

Update attacks are pure functions ``attack.apply(update, observed=None, rng=None) -> tensor``; ``observed`` is
the list of honest updates the attacker can see (ALIE and IPM need it). Behaviour attacks are flags that the
node (or the Trainer) honours: label_flip (Trainer(label_flip=True)), garbage (send random bytes instead of a
valid encoding: :func:`garbage_payload`), stale (send with round r - 1), equivocate (send two different
updates for one round: :func:`equivocation_pair`).

Config strings: ``"name"`` or ``"name:param"``, e.g. "sign_flip", "scale:10", "gaussian:1.0", "alie:1.5",
"ipm:0.5"; :func:`parse_attack` returns an :class:`Attack`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _stack(observed) -> torch.Tensor:
    if observed is None or len(observed) == 0:
        raise ValueError("this attack needs the honest updates it observed")
    return torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in observed])


def sign_flip(update, param, observed, rng):
    return -update


def scale(update, param, observed, rng):
    return update * param


def gaussian(update, param, observed, rng):
    return update + torch.randn(update.shape, generator=rng, dtype=torch.float64) * param


def zero(update, param, observed, rng):
    return torch.zeros_like(update)


def alie(update, param, observed, rng):
    """A Little Is Enough (Baruch et al. 2019): mean + tau * std of the observed honest updates."""
    honest = _stack(observed)
    return honest.mean(0) + param * honest.std(0, unbiased=honest.shape[0] > 1)


def ipm(update, param, observed, rng):
    """Inner-product manipulation (Xie et al. 2020): -tau times the mean of the observed honest updates."""
    return -param * _stack(observed).mean(0)


def unchanged(update, param, observed, rng):
    return update


@dataclass(frozen=True)
class AttackSpec:
    function: object
    default: float | None
    flag: str | None = None  # behaviour the node/trainer must honour


ATTACKS: dict[str, AttackSpec] = {
    "none": AttackSpec(unchanged, None),
    "sign_flip": AttackSpec(sign_flip, None),
    "scale": AttackSpec(scale, 10.0),
    "gaussian": AttackSpec(gaussian, 1.0),
    "zero": AttackSpec(zero, None),
    "alie": AttackSpec(alie, 1.5),
    "ipm": AttackSpec(ipm, 0.5),
    "label_flip": AttackSpec(unchanged, None, "label_flip"),
    "garbage": AttackSpec(unchanged, None, "garbage"),
    "stale": AttackSpec(unchanged, None, "stale"),
    "equivocate": AttackSpec(unchanged, None, "equivocate"),
}


@dataclass(frozen=True)
class Attack:
    name: str
    param: float | None = None
    seed: int = 0

    @property
    def flag(self) -> str | None:
        return ATTACKS[self.name].flag

    @property
    def needs_observed(self) -> bool:
        return self.name in ("alie", "ipm")

    def apply(self, update: torch.Tensor, observed=None, rng: torch.Generator | None = None) -> torch.Tensor:
        """The (float32, same shape) update the attacker sends instead of ``update``."""
        if rng is None:
            rng = torch.Generator().manual_seed(self.seed)
        original = torch.as_tensor(update)
        result = ATTACKS[self.name].function(original.to(torch.float64), self.param, observed, rng)
        return result.to(torch.float32).reshape(original.shape)


def parse_attack(text: str, seed: int = 0) -> Attack:
    """Parse "name" or "name:param" (ValueError on unknown names or bad parameters)."""
    name, _, raw = str(text).strip().partition(":")
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {sorted(ATTACKS)}")
    spec = ATTACKS[name]
    if raw:
        if spec.default is None:
            raise ValueError(f"attack {name!r} takes no parameter")
        try:
            param = float(raw)
        except ValueError:
            raise ValueError(f"attack parameter {raw!r} is not a number") from None
        if not math.isfinite(param):
            raise ValueError("attack parameter must be finite")
    else:
        param = spec.default
    return Attack(name, param, seed)


def garbage_payload(length: int, seed: int = 0) -> bytes:
    """Random bytes of the given length, to send instead of a valid encoding."""
    generator = torch.Generator().manual_seed(seed)
    return bytes(torch.randint(0, 256, (length,), generator=generator, dtype=torch.uint8).tolist())


def stale_round(current_round: int) -> int:
    """The round number a stale attacker stamps on its message."""
    return max(current_round - 1, 0)


def equivocation_pair(update: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two different updates for the same round: the honest one and a sign-flipped, perturbed copy."""
    generator = torch.Generator().manual_seed(seed)
    other = -update.to(torch.float32) + torch.randn(update.shape, generator=generator) * 1e-3
    return update.to(torch.float32).clone(), other
