"""Prefix caching for the PyTorch backend: the KV cache of a prompt's leading text, kept and reused
by later prompts that start with the same tokens (what vLLM calls automatic prefix caching).

Why: a guard's prompt opens with its policy (Llama Guard 4: the task line and the category list,
~145 of the demo's 234 tokens with one image), the same for every request under the same policy.
A request whose first tokens match a kept prefix feeds only the rest; the kept keys and values
are the ones its own prefill would compute (causal attention: a position sees only what precedes
it), so answers are the same up to float summation order.

What is kept: after a prefill that found no match, the first prompt's text up to its first image
(the KV of an image depends on its pixels, which the token ids do not name) or up to its last
token (which must be fed: its logits are the verdict's). A later prompt reuses the longest common
token prefix it shares with an entry, when that is at least ``min_tokens``. ``entries`` bounds the
memory (each entry: layers x 2 x kv heads x tokens x head size); the least recently used goes.

Only architectures that declare ``prefix_reuse`` take part (the KV of their leading text depends
on nothing after it, and their positions continue by one per token: Llama 4); the backend asks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch

from guardedge.runtime.architectures import Encoded

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, kv heads, tokens, head size]


@dataclass(frozen=True)
class Hit:
    """The tokens every prompt of a batch takes from one kept entry."""

    tokens: int
    kv: KV  # the entry's tensors (``tokens`` of them are used; never written to)


def reusable(item: Encoded) -> int:
    """How many leading tokens of a prompt could come from a kept prefix: its text before the
    first image, never its last token."""
    end = len(item.input_ids) - 1
    return min(end, item.image_positions[0]) if item.images else end


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class PrefixCache:
    """At most ``entries`` prefixes, least recently used first out; safe to share between threads."""

    def __init__(self, entries: int = 4, min_tokens: int = 32):
        if entries < 1 or min_tokens < 1:
            raise ValueError(f"a prefix cache needs entries >= 1 and min_tokens >= 1 (got {entries}, {min_tokens})")
        self.entries, self.min_tokens = entries, min_tokens
        self._kept: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0  # batches served from an entry / not (read by tests and benches)

    def lookup(self, items: Sequence[Encoded]) -> Hit | None:
        """The entry sharing the longest prefix with every prompt of ``items`` (at least ``min_tokens``)."""
        heads = [item.input_ids[: reusable(item)] for item in items]
        with self._lock:
            best, best_key = 0, None
            for key in self._kept:
                length = min(common_length(key, head) for head in heads)
                if length > best:
                    best, best_key = length, key
            if best_key is None or best < self.min_tokens:
                self.misses += 1
                return None
            self._kept.move_to_end(best_key)
            self.hits += 1
            return Hit(best, self._kept[best_key])

    def remember(self, item: Encoded, kv: KV) -> None:
        """Keep ``item``'s reusable prefix, whose per-layer keys and values are ``kv`` (copied here)."""
        length = reusable(item)
        if length < self.min_tokens:
            return
        key = tuple(item.input_ids[:length])
        entry = [(k[:, :, :length].clone(), v[:, :, :length].clone()) for k, v in kv]
        with self._lock:
            self._kept[key] = entry
            self._kept.move_to_end(key)
            while len(self._kept) > self.entries:
                self._kept.popitem(last=False)

    def __len__(self) -> int:
        return len(self._kept)
