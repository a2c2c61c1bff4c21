"""runtime/backends/prefix_cache.py: what is kept, what a lookup returns, and who keeps prefixes.

The answers a kept prefix gives (transformers' logits and greedy tokens) are checked on a tiny
Llama 4 in tests/test_llama4.py; here the bookkeeping, with no model.
"""

from __future__ import annotations

import pytest
import torch

from guardedge.runtime.architectures import Encoded
from guardedge.runtime.backends.prefix_cache import PrefixCache, common_length, reusable


def _kv(tokens: int, layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(1, 2, tokens, 4), torch.randn(1, 2, tokens, 4)) for _ in range(layers)]


def test_reusable_text_ends_before_the_first_image_and_the_last_token():
    assert reusable(Encoded(list(range(10)))) == 9
    assert reusable(Encoded(list(range(10)), images=["im"], image_positions=[4], image_tokens=3, image_lengths=[3])) == 4
    assert common_length([1, 2, 3], [1, 2, 4, 5]) == 2 and common_length([1, 2], [1, 2, 3]) == 2


def test_lookup_takes_the_longest_shared_prefix_of_the_whole_batch():
    cache = PrefixCache(entries=4, min_tokens=3)
    policy_a, policy_b = list(range(100, 140)), list(range(100, 110)) + list(range(500, 530))
    cache.remember(Encoded(policy_a + [1, 2, 3]), _kv(43))
    cache.remember(Encoded(policy_b + [1, 2, 3]), _kv(43))
    hit = cache.lookup([Encoded(policy_a + [7, 8]), Encoded(policy_a + [1, 9])])
    assert hit is not None and hit.tokens == 40  # the batch shares 40 tokens with entry a; b only 10
    assert cache.lookup([Encoded(policy_a + [7]), Encoded([5] * 50)]) is None  # one prompt shares nothing
    assert (cache.hits, cache.misses) == (1, 1)


def test_short_prefixes_are_neither_kept_nor_used():
    cache = PrefixCache(entries=2, min_tokens=32)
    cache.remember(Encoded(list(range(20))), _kv(20))
    assert len(cache) == 0
    cache.remember(Encoded(list(range(40))), _kv(40))
    assert cache.lookup([Encoded(list(range(31)) + [999, 1000])]) is None  # 31 shared < 32
    assert cache.lookup([Encoded(list(range(32)) + [999, 1000])]).tokens == 32


def test_entries_are_copies_and_the_least_recently_used_goes():
    cache = PrefixCache(entries=2, min_tokens=2)
    source = _kv(10)
    cache.remember(Encoded(list(range(11))), source)
    original = source[0][0][:, :, :10].clone()
    source[0][0].zero_()  # the backend's cache goes on growing and changing: the entry must not
    hit = cache.lookup([Encoded(list(range(11)))])
    assert torch.equal(hit.kv[0][0], original) and hit.kv[0][0].shape[2] == 10
    cache.remember(Encoded([7] * 11), _kv(10))
    cache.lookup([Encoded(list(range(11)))])  # a is used again: b is now the oldest
    cache.remember(Encoded([8] * 11), _kv(10))
    assert len(cache) == 2
    assert cache.lookup([Encoded([7] * 11)]) is None and cache.lookup([Encoded(list(range(11)))]) is not None


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="entries >= 1"):
        PrefixCache(entries=0)


def test_only_architectures_that_allow_it_keep_prefixes(demo_engine):
    """Llama Guard 3 Vision's image comes before its policy (and Mllama's text cross-attends it):
    nothing of its prompt could be reused, so its backend keeps nothing; Llama 4 declares reuse."""
    from guardedge.runtime.architectures.llama4 import Llama4

    assert demo_engine.backend.prefixes is None
    assert getattr(demo_engine.backend.arch, "prefix_reuse", False) is False
    assert Llama4.prefix_reuse is True
