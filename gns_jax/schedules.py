"""Hand-designed learning-rate schedules of the paper's baselines (Eq. 7).

With T the total number of optimizer steps, alpha_min = mu * alpha_max, T_warm = eta1 * T and T_decay = eta2 * T:

    warmup       alpha_t = t / T_warm * alpha_max                                          for t < T_warm
    polynomial   alpha_t = (alpha_max - alpha_min) (1 - (t - T_warm)/(T_decay - T_warm))^p + alpha_min
    cosine       alpha_t = 1/2 (alpha_max - alpha_min) (1 + cos(pi (t - T_warm)/(T_decay - T_warm))) + alpha_min
    constant     alpha_t = alpha_min

For t >= T_decay the decayed schedules stay at alpha_min (so with eta2 = 0.5 the second half of training runs at
alpha_min). ``constant`` follows the paper's definition literally (alpha_min); a constant baseline at alpha_max is
``Eq7Schedule.constant(alpha_max)``.

Every field is an array, so one compiled training program serves every grid point and grid points can be
``vmap``ped (the same schedule object is evaluated inside the K-step scan at each optimizer step).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

KINDS = ("constant", "polynomial", "cosine")


@struct.dataclass
class Eq7Schedule:
    """A warmup + decay schedule (Eq. 7) as a pytree of arrays; call it with the optimizer step t."""

    kind: jnp.ndarray  # int32 index into KINDS
    alpha_max: jnp.ndarray
    alpha_min: jnp.ndarray
    t_warm: jnp.ndarray  # float, in optimizer steps
    t_decay: jnp.ndarray
    power: jnp.ndarray

    @classmethod
    def from_hparams(cls, kind: str, total_steps: int, alpha_max: float, mu: float = 0.0, eta1: float = 0.0,
                     eta2: float = 1.0, power: float = 1.0) -> Eq7Schedule:
        """Build from the paper's search-space parameters (Tables 5-6): alpha_min = mu alpha_max, T_* = eta_* T."""
        if kind not in KINDS:
            raise ValueError(f"unknown schedule kind {kind!r}; choose one of {KINDS}")
        if not 0.0 <= eta1 <= eta2:
            raise ValueError(f"need 0 <= eta1 <= eta2, got eta1={eta1}, eta2={eta2}")
        f32 = lambda v: jnp.asarray(v, jnp.float32)
        return cls(kind=jnp.asarray(KINDS.index(kind), jnp.int32), alpha_max=f32(alpha_max),
                   alpha_min=f32(mu * alpha_max), t_warm=f32(eta1 * total_steps), t_decay=f32(eta2 * total_steps),
                   power=f32(power))

    @classmethod
    def constant(cls, alpha: float) -> Eq7Schedule:
        """A flat schedule at ``alpha`` (no warmup, no decay)."""
        return cls.from_hparams("constant", 1, alpha_max=alpha, mu=1.0)

    def __call__(self, t) -> jnp.ndarray:
        t = jnp.asarray(t, jnp.float32)
        warm = t / jnp.maximum(self.t_warm, 1.0) * self.alpha_max
        span = jnp.maximum(self.t_decay - self.t_warm, 1.0)
        frac = jnp.clip((t - self.t_warm) / span, 0.0, 1.0)
        delta = self.alpha_max - self.alpha_min
        decayed = jnp.stack([
            self.alpha_min,
            delta * (1.0 - frac) ** self.power + self.alpha_min,
            0.5 * delta * (1.0 + jnp.cos(jnp.pi * frac)) + self.alpha_min,
        ])[self.kind]
        in_warmup = (t < self.t_warm) & (self.kind != 0)
        return jnp.where(in_warmup, warm, decayed)
