"""Per-category scores of a generative guard, read from the pass that decides the verdict.

A generative family (Llama Guard, LlavaGuard) names its categories right after the unsafe
verdict: ``unsafe\\nS9``, ``Unsafe",\\n    "category": "O2: ...``. The engine already feeds the
unsafe verdict and the format's draft after every prompt at prefill (runtime/decoding.py), so the
model's next-token distributions along that answer are computed whatever the verdict. A category's
score is

    score(code) = P(unsafe) * P(code | unsafe)

where P(code | unsafe) is the model's probability of naming ``code`` first, normalised over the
codes of the request's policy: the product of its next-token probabilities along the code's
tokens, up to the first token where it parts from the draft (where the codes part from each other).
For Llama Guard's ``S1``..``S14`` that is the distribution over the number token after
``unsafe\\nS``; for LlavaGuard's ``O1: ...``..``O9: ...`` over the digit after ``"category": "O``.

What the scores are not: independent multi-label probabilities (they sum to P(unsafe)), nor the
probability of every code the answer would list (only the first). Codes whose tokens do not part
within the draft (e.g. ``O1`` and ``O10`` where digits are single tokens) share their common mass
equally; docs/api.md says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class CategoryPaths:
    """How to read one policy's category scores from the drafted prefill.

    ``positions``/``token_ids`` are what the backend is asked for (draft positions, vocabulary ids);
    ``terms[i]`` lists (position index, token index) pairs whose log-probabilities add up to code
    ``codes[i]``'s; ``shares[i]`` codes have exactly the same terms (their mass is split).
    ``log_softmax`` is False when every code ends at one position after identical tokens: then the
    logits of the parting tokens alone decide, and only those output rows are computed.
    """

    codes: tuple[str, ...]
    positions: tuple[int, ...]
    token_ids: tuple[int, ...]
    terms: tuple[tuple[tuple[int, int], ...], ...]
    shares: tuple[int, ...]
    log_softmax: bool


def category_paths(tokenizer, draft: Sequence[int], answers: Sequence[tuple[str, str]]) -> CategoryPaths | None:
    """The reading plan for ``answers`` ((code, text after the unsafe verdict)), given the ``draft``
    tokens fed after the verdict at prefill; None when there is nothing to read (no draft, no codes)."""
    if not answers:
        return None
    paths = []
    for code, text in answers:
        tokens = tokenizer.encode(text, add_special_tokens=False)
        path = []
        for j, token in enumerate(tokens):
            path.append((j, token))
            # The draft carries the answer on while this code's tokens follow it; where they part
            # (or the draft ends, or the code's spelling does), this code's first distinct token is read.
            if j >= len(draft) or token != draft[j] or j + 1 == len(tokens):
                break
        paths.append(tuple(path))
    # One reading position with identical tokens before it: the shared terms and the normaliser
    # cancel out, so only the parting tokens' logits there are read.
    same_prefix = len({path[:-1] for path in paths}) == 1 and len({path[-1][0] for path in paths}) == 1
    shares = tuple(paths.count(path) for path in paths)
    if same_prefix:
        paths = [path[-1:] for path in paths]
    positions = tuple(sorted({p for path in paths for p, _ in path}))
    token_ids = tuple(sorted({t for path in paths for _, t in path}))
    p_index = {p: i for i, p in enumerate(positions)}
    t_index = {t: i for i, t in enumerate(token_ids)}
    terms = tuple(tuple((p_index[p], t_index[t]) for p, t in path) for path in paths)
    return CategoryPaths(tuple(code for code, _ in answers), positions, token_ids, terms, shares, not same_prefix)


def scores_from(values: torch.Tensor, paths: CategoryPaths, p_unsafe: float) -> tuple[tuple[str, float], ...]:
    """(code, P(unsafe) * P(code | unsafe)) from one row's ``values`` [positions, tokens] (logits
    or log-probabilities, as ``paths.log_softmax`` asked)."""
    logp = [sum(float(values[p, t]) for p, t in terms) - math.log(share) for terms, share in zip(paths.terms, paths.shares)]
    top = max(logp)
    weights = [math.exp(v - top) for v in logp]
    total = sum(weights)
    return tuple((code, p_unsafe * w / total) for code, w in zip(paths.codes, weights))
