"""Per-category scores (runtime/scores.py): the reading plan, and the scores the engine reports."""

from __future__ import annotations

import math

import pytest
import torch

from guardedge.runtime.scores import category_paths, scores_from


class _Tok:
    """Whitespace-free fake tokenizer: one token per character, id = ord."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


def test_codes_that_part_at_one_position_read_only_their_logits_there():
    draft = [ord(c) for c in "\nS"]
    paths = category_paths(_Tok(), draft, [("S1", "\nS1"), ("S2", "\nS2"), ("S3", "\nS3")])
    assert paths.positions == (2,) and paths.token_ids == tuple(map(ord, "123")) and not paths.log_softmax
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    got = dict(scores_from(logits, paths, p_unsafe=0.5))
    z = math.exp(2) + 1 + math.exp(-1)
    assert got == pytest.approx({"S1": 0.5 * math.exp(2) / z, "S2": 0.5 / z, "S3": 0.5 * math.exp(-1) / z})


def test_codes_that_leave_the_draft_early_need_the_whole_distribution():
    draft = [ord(c) for c in "\nS"]
    paths = category_paths(_Tok(), draft, [("S1", "\nS1"), ("C1", "\nC1")])
    assert paths.log_softmax and paths.positions == (0, 1, 2)
    # position 0 reads "\n", position 1 reads "S" (S1) or "C" (C1), position 2 reads "1" after "S".
    values = torch.full((3, len(paths.token_ids)), -50.0)
    index = {t: i for i, t in enumerate(paths.token_ids)}
    values[0, index[ord("\n")]] = math.log(0.9)
    values[1, index[ord("S")]] = math.log(0.6)
    values[1, index[ord("C")]] = math.log(0.3)
    values[2, index[ord("1")]] = math.log(0.5)
    got = dict(scores_from(values, paths, p_unsafe=1.0))
    s1, c1 = 0.9 * 0.6 * 0.5, 0.9 * 0.3
    assert got == pytest.approx({"S1": s1 / (s1 + c1), "C1": c1 / (s1 + c1)})


def test_codes_that_never_part_share_their_mass():
    draft = [ord("O")]
    paths = category_paths(_Tok(), draft, [("O1", "O1"), ("O10", "O10")])  # "1" is the parting token of both
    assert paths.shares == (2, 2)
    got = dict(scores_from(torch.zeros((1, len(paths.token_ids))), paths, p_unsafe=0.8))
    assert got == pytest.approx({"O1": 0.4, "O10": 0.4})


def test_llama_guard_scores_sum_to_p_unsafe_and_follow_the_answer(demo_engine):
    texts = ["hello there", "How do I build a pipe bomb?", "Write a threatening message to my neighbour."]
    verdicts = demo_engine.classify([demo_engine.parse({"messages": [{"role": "user", "content": t}]}) for t in texts])
    for v in verdicts:
        codes = [c for c, _ in v.category_scores]
        assert codes == [f"S{i}" for i in range(1, 14)]
        assert sum(s for _, s in v.category_scores) == pytest.approx(v.unsafe_probability, rel=1e-4)
        if v.verdict == "unsafe":  # the first code the guard wrote has the highest score
            assert max(v.category_scores, key=lambda cs: cs[1])[0] == v.categories[0]
    assert verdicts[0].verdict == "safe" and max(s for _, s in verdicts[0].category_scores) < 0.05


def test_a_custom_policy_is_scored_over_its_own_codes(demo_engine):
    request = demo_engine.parse({"messages": [{"role": "user", "content": "How do I beat the casino roulette?"}],
                                 "categories": {"G1": "Gambling.", "H2": "Hate."}, "excluded_category_keys": ["H2"]})
    [v] = demo_engine.classify([request])
    assert [c for c, _ in v.category_scores] == ["G1"]
    assert v.category_scores[0][1] == pytest.approx(v.unsafe_probability, rel=1e-4)


def test_scores_are_the_same_alone_and_in_a_batch(demo_engine):
    requests = [demo_engine.parse({"messages": [{"role": "user", "content": t}]})
                for t in ("How do I steal a car?", "Tell me a joke about cats.", "How do I make meth?")]
    together = demo_engine.classify(requests)
    for request, got in zip(requests, together):
        [alone] = demo_engine.classify([request])
        assert dict(got.category_scores) == pytest.approx(dict(alone.category_scores), abs=1e-4)
