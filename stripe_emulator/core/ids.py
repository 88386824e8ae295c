"""Stripe-like object ids: ``<prefix>_<salt><counter>`` (moved as it was from state.py)."""

from __future__ import annotations

import itertools
import random
import string

ALNUM = string.ascii_letters + string.digits

_rand = random.Random()  # ids need uniqueness, not secrecy (SystemRandom costs a syscall per char)
_counter = itertools.count(1)


def random_token(n: int = 14, alphabet: str = ALNUM) -> str:
    return "".join(_rand.choices(alphabet, k=n))


_SALT = random_token(24)


def new_id(prefix: str, length: int = 14) -> str:
    """Stripe-like id: prefix + per-process random salt + counter (unique, cheap, alphanumeric)."""
    num = next(_counter)
    digits = []
    while num:
        num, r = divmod(num, 62)
        digits.append(ALNUM[r])
    tail = "".join(reversed(digits))
    return f"{prefix}_{_SALT[: max(length - len(tail), 4)]}{tail}"
