"""The keys already annotated, in 16 bytes a key: what resumption skips and duplicates hit.

A dataset of 8.7 M images has 8.7 M keys; a Python set of their strings would take ~1 GB. Each
key is stored as its 128-bit BLAKE2b digest (a collision among 10^9 keys has probability below
10^-20) in a sorted NumPy array, with the most recent additions in a small set that is merged
into the array every ``MERGE_EVERY`` keys. Memory: 16 bytes a key, plus at most ``MERGE_EVERY``
recent digests (~20 MB).

    index = KeyIndex(); index.add_many(keys_read_back); index.add("photos/cat.png") -> True (new)
"""

from __future__ import annotations

import hashlib
from typing import Iterable

MERGE_EVERY = 200_000


def digest(key: str) -> bytes:
    # NumPy's fixed-width bytes drop trailing NULs: stored and looked-up digests are stripped alike.
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest().rstrip(b"\0")


class KeyIndex:
    def __init__(self):
        import numpy as np

        self._sorted = np.empty(0, dtype="S16")
        self._recent: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def __contains__(self, key: str) -> bool:
        return self._has(digest(key))

    def add(self, key: str) -> bool:
        """Record ``key``; False if it was already there."""
        d = digest(key)
        if self._has(d):
            return False
        self._recent.add(d)
        if len(self._recent) >= MERGE_EVERY:
            self._merge()
        return True

    def add_many(self, keys: Iterable[str]) -> int:
        """Record keys (duplicates among them are counted once); returns how many were new."""
        return sum(self.add(k) for k in keys)

    def _has(self, d: bytes) -> bool:
        if d in self._recent:
            return True
        import numpy as np

        i = int(np.searchsorted(self._sorted, d))
        return i < len(self._sorted) and bytes(self._sorted[i]) == d

    def _merge(self) -> None:
        import numpy as np

        self._sorted = np.union1d(self._sorted, np.array(sorted(self._recent), dtype="S16"))
        self._recent.clear()
