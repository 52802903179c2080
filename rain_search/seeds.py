"""Random seeds and streams: one seed per answer, one stream per piece of work.

A search draws its seed once (or takes the caller's) and keys a fresh
generator by where each draw happens, so its answer does not depend on what
else ran before it or beside it.
"""

from __future__ import annotations

import random

import torch


def draw_seed(seed: int | None) -> int:
    """``seed``, or a fresh one when the caller gave none (reported in the result)."""
    return seed if seed is not None else random.SystemRandom().randrange(2**31)


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)
