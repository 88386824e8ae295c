"""Stripe-like object ids: ``<prefix>_<salt><counter>``, unique for the life of the process.

The counter is one process-wide ``itertools.count`` (``next()`` on it is atomic under the GIL, so threads
never draw the same number), written in base 62 and left-padded to a fixed width; the salt is a random
string of fixed length drawn at import, so an emulator restarted on the same state file does not reissue
its predecessor's ids. Distinct counters therefore always give distinct ids.

The first version cut the salt shorter as the counter grew longer to keep ids 14 characters: counter ``b``
gave ``<salt[:13]>b`` and counter ``<salt[12]>b`` gave the same string, so a freshly started emulator
handed out a few dozen ids twice (issue 14: 2,107 customers created, 2,077 distinct ids).
"""

from __future__ import annotations

import itertools
import random
import string

ALNUM = string.ascii_letters + string.digits
COUNTER_WIDTH = 6  # 62**6 ~ 5.7e10 ids before an id grows by one character (still unique)

_rand = random.Random()  # uniqueness, not secrecy (SystemRandom costs a syscall per character)
_counter = itertools.count(1)


def random_token(n: int = 14, alphabet: str = ALNUM) -> str:
    return "".join(_rand.choices(alphabet, k=n))


_SALT = random_token(24)


def _base62(num: int) -> str:
    digits = []
    while num:
        num, r = divmod(num, 62)
        digits.append(ALNUM[r])
    return "".join(reversed(digits))


def new_id(prefix: str, length: int = 14) -> str:
    """``prefix_`` + ``length`` characters (more after 62**6 ids): a fixed-length salt, then the counter."""
    tail = _base62(next(_counter)).rjust(COUNTER_WIDTH, ALNUM[0])
    return f"{prefix}_{_SALT[: max(length - COUNTER_WIDTH, 4)]}{tail}"
