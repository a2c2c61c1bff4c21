"""Greedy decoding with format drafts: the answer a guard writes, in fewer forward passes.

A guard's answer after its verdict token follows a fixed format ("unsafe" is followed by "\\nS",
a category number by ",S" or the end). Each step feeds a row's last token *plus the tokens the
format predicts next* (the draft) and reads the greedy token at every position. A draft token
is kept only while it equals the greedy token the model produced at the position before it, so
the answer is greedy decoding's (speculative decoding with a rule-based draft and greedy
verification; equal up to float summation order, as with batching); a wrong draft costs only
the wasted positions, never a different answer.
Llama Guard's "unsafe\\nS9<|eot_id|>" then takes one decode pass after the prefill instead of four.

The first draft can ride along with the prefill: the engine appends the verdict token and its
draft ("unsafe", "\\n", "S") after every prompt, and reads the verdict at the position before
them (causal attention: the appended tokens cannot change it). A row that turns out unsafe has
its first decode step done already; the others drop those positions. The cost is three more
prompt tokens for every row; the saving is one whole forward pass for every unsafe row.

Backends provide a :class:`Stepper` (one forward over a [rows, width] block of tokens, then
``commit`` of how many positions of each row were real); the loop is shared by all of them.
"""

from __future__ import annotations

import re
from typing import Callable, Protocol, Sequence, cast

Drafter = Callable[[Sequence[int]], list[int]]
GreedyAt = Callable[[int, int], int]  # (row, position) -> the greedy next token there


class Stepper(Protocol):
    max_chunk: int  # positions one step may feed per row (1: no drafting)
    pending: tuple[int, ...]  # tokens the prefill already fed after every prompt (may be empty)

    def pending_greedy(self) -> GreedyAt:
        """The greedy next token at each ``pending`` position (may be computed only when asked)."""
        ...

    def step(self, tokens: list[list[int]]) -> GreedyAt:
        """Feed a [rows, width] block after each row's cache; the greedy next token at each position
        (may be computed only when asked: verification stops reading at a row's first miss)."""
        ...

    def commit(self, kept: list[int]) -> None:
        """Row i's first ``kept[i]`` fed positions were real; the rest are dropped from its context."""
        ...


class BranchingStepper(Stepper, Protocol):
    """A stepper whose prefill also fed ``branches`` side by side after ``pending`` (the PyTorch one)."""

    branches: tuple[int, ...]

    def branch_greedy(self, row: int, token: int) -> int:
        """The greedy token after branch ``token`` for ``row``."""
        ...

    def take_branches(self, taken: list[int | None]) -> None:
        """Row i's context goes on after branch ``taken[i]`` (None: after what it kept of the draft)."""
        ...


Until = Callable[[int, list[int]], bool]  # (row, tokens so far) -> the answer is complete


def greedy_decode(stepper: Stepper, first: Sequence[int], max_new: int | Sequence[int], stop_ids: set[int],
                  drafter: Drafter | None = None, until: Until | None = None) -> list[list[int]]:
    """Greedy token ids for each row, ``first`` included, up to a stop id, ``max_new`` tokens (one
    bound, or one per row) or ``until(row, tokens)`` saying the row's answer is complete.

    An ``until`` with a ``finished(row, tokens)`` method is told once per row, the moment that row is
    complete, with its final tokens, while the other rows go on decoding: the engine answers that
    row's caller then (iteration-level batching), not when the slowest row of the batch ends."""
    limits = [max_new] * len(first) if isinstance(max_new, int) else list(max_new)
    stop = _Stop(stop_ids, limits, until)
    out = [[t] for t in first]
    done = [stop(i, tokens) for i, tokens in enumerate(out)]
    if stepper.pending:
        _take_pending(stepper, out, done, stop)
    # A stepper that verifies drafts takes a family's longest draft whole (LlavaGuard's JSON scaffolding).
    width_cap = max(stepper.max_chunk, 1 + getattr(drafter, "longest", 0)) if stepper.max_chunk > 1 else 1
    while not all(done):
        chunks = [_chunk(tokens, finished, limits[i], width_cap, drafter)
                  for i, (tokens, finished) in enumerate(zip(out, done))]
        width = max(len(c) for c in chunks)
        # Rows with a shorter draft are filled with their last token; filler is never verified, so never kept.
        predicted = stepper.step([c + [c[-1]] * (width - len(c)) for c in chunks])
        # A finished row rides along until the batch ends; nothing of it is read (kept 0).
        stepper.commit([0 if done[i] else _accept(out, done, i, chunk, predicted, stop)
                        for i, chunk in enumerate(chunks)])
    return out


class _Stop:
    """When a row is finished: a stop token, its token bound, or its ``until``."""

    def __init__(self, stop_ids: set[int], limits: list[int], until: Until | None):
        self.ids, self.limits, self.until = stop_ids, limits, until
        self.finished = getattr(until, "finished", None)
        self.told: set[int] = set()

    def __call__(self, row: int, tokens: list[int]) -> bool:
        done = (tokens[-1] in self.ids or len(tokens) >= self.limits[row]
                or (self.until is not None and self.until(row, tokens)))
        if done and self.finished is not None and row not in self.told:
            self.told.add(row)
            self.finished(row, tokens)
        return done


def _take_pending(stepper: Stepper, out: list[list[int]], done: list[bool], stop: _Stop) -> None:
    """Verify the prefill's draft for rows whose first token is the one it started with; drop it for the rest.

    A stepper whose prefill also fed ``branches`` side by side after the draft (each seeing the
    prompt, the draft and itself) knows what follows each of them: a row that kept the whole draft
    and whose next greedy token is a branch takes the branch's greedy token too, with no pass."""
    chunk = list(stepper.pending)
    rows = [i for i, tokens in enumerate(out) if not done[i] and tokens[0] == chunk[0]]
    kept = [0] * len(out)
    branches = getattr(stepper, "branches", ())
    branching = cast(BranchingStepper, stepper)
    taken: list[int | None] = [None] * len(out)
    if rows:  # the pending positions are computed only when some row reads them
        greedy = stepper.pending_greedy()
        for i in rows:
            kept[i] = _accept(out, done, i, chunk, greedy, stop)
            if branches and kept[i] == len(chunk) and not done[i] and out[i][-1] in branches:
                taken[i] = out[i][-1]
                out[i].append(branching.branch_greedy(i, out[i][-1]))
                done[i] = stop(i, out[i])
    stepper.commit(kept)
    if any(t is not None for t in taken):
        branching.take_branches(taken)


def _accept(out: list[list[int]], done: list[bool], row: int, chunk: list[int], greedy: GreedyAt, stop: _Stop) -> int:
    """Append what row ``row`` really produced from ``chunk``; how many fed positions were real."""
    accepted = _verify(chunk, row, greedy, stop.ids)[: stop.limits[row] - len(out[row])]
    out[row].extend(accepted)
    done[row] = stop(row, out[row])
    return len(accepted)


def _chunk(tokens: list[int], finished: bool, max_new: int, max_chunk: int, drafter: Drafter | None) -> list[int]:
    if finished or drafter is None or max_chunk <= 1:
        return [tokens[-1]]
    room = max_new - len(tokens) - 1  # the verified step always adds one token of its own
    return [tokens[-1], *drafter(tokens)[: min(room, max_chunk - 1)]]


def _verify(chunk: list[int], row: int, greedy: GreedyAt, stop_ids: set[int]) -> list[int]:
    """The greedy tokens this step really produced: position j counts while chunk[j] was right."""
    accepted = []
    for j in range(len(chunk)):
        token = greedy(row, j)
        accepted.append(token)
        if token in stop_ids or j + 1 >= len(chunk) or chunk[j + 1] != token:
            break
    return accepted


def argmax_rows(logits) -> list[int]:
    """Greedy token per row of a [rows, vocab] float tensor (first index on ties, as torch's).

    On CPU through numpy: torch's argmax over a 128k vocabulary took 250-290 us a row on the
    2-core CI CPU, numpy's vectorised one 18 us; a request reads five or six of them.
    """
    if logits.device.type == "cpu":
        return logits.detach().float().numpy().argmax(-1).tolist()
    return logits.argmax(-1).tolist()


class FormatDrafter:
    """Drafts from (regex, text) rules on the answer decoded so far; the first rule that matches wins."""

    def __init__(self, tokenizer, rules: Sequence[tuple[str, str]], prefix: str = ""):
        self.tokenizer = tokenizer
        self.prefix = prefix  # the family's answer prefix, so rules see the whole answer text
        self.rules = [(re.compile(pattern), tokenizer.encode(text, add_special_tokens=False)) for pattern, text in rules]
        self.longest = max((len(draft) for _, draft in self.rules), default=0)

    def __call__(self, tokens: Sequence[int]) -> list[int]:
        text = self.prefix + self.tokenizer.decode(list(tokens), skip_special_tokens=False)
        for pattern, draft in self.rules:
            if pattern.search(text):
                return draft
        return []
