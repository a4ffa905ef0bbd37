"""Independent, reproducible random streams: one per part of the generator.

Each part (population, orders, web events chunk 7, ...) draws from its own
stream derived from the seed and the part's name, so changing how much one
part draws never changes what another part produces.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str, *index: int) -> np.random.Generator:
    """Return the random generator of part ``name`` (and optional chunk ``index``) for ``seed``."""
    key = [int(seed), zlib.crc32(name.encode("utf-8")), *map(int, index)]
    return np.random.default_rng(np.random.SeedSequence(key))
