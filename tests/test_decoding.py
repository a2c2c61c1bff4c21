"""Drafted greedy decoding gives exactly greedy decoding's answers, in fewer passes.

A scripted model (the next token is a function of the whole context) checks the shared loop on
every path: drafts kept, drafts rejected at any position, stop tokens inside a draft, the token
budget, the prefill's draft taken or dropped per row, rows finishing at different steps. Then
the demo guard: the same answers with drafts on and off, alone and batched, on both ends of the
verdict, plus the pass count the drafts exist for.
"""

from __future__ import annotations

import pytest

from guardedge.runtime.decoding import FormatDrafter, argmax_rows, greedy_decode

EOT = 0


class ScriptedModel:
    """next(context) -> token; each row has its own context of real (kept) tokens."""

    def __init__(self, answers: list[list[int]]):
        self.answers = answers  # row i greedily writes answers[i] after its first token, then EOT forever

    def next(self, row: int, context: list[int]) -> int:
        answer = self.answers[row]
        return answer[len(context) - 1] if len(context) - 1 < len(answer) else EOT


class ScriptedSteps:
    """A Stepper over ScriptedModel: records what it was fed and what each row kept."""

    def __init__(self, model: ScriptedModel, rows: int, max_chunk: int, pending: tuple[int, ...] = ()):
        self.model, self.max_chunk, self.pending = model, max_chunk, pending
        self.contexts = [[] for _ in range(rows)]
        self.fed: list[list[int]] = [list(pending)] * rows  # what the last commit refers to
        self.passes = 0

    def pending_greedy(self):
        return lambda row, j: self.model.next(row, [*self.contexts[row], *self.pending[: j + 1]])

    def step(self, tokens):
        self.passes += 1
        self.fed = tokens
        return lambda row, j: self.model.next(row, [*self.contexts[row], *tokens[row][: j + 1]])

    def commit(self, kept):
        for row, k in enumerate(kept):
            self.contexts[row].extend(self.fed[row][:k])


def plain_greedy(model: ScriptedModel, first: list[int], max_new: int) -> list[list[int]]:
    steps = ScriptedSteps(model, len(first), max_chunk=1)
    return greedy_decode(steps, first, max_new, {EOT})


def drafter_from(table: dict[int, list[int]]):
    return lambda tokens: table.get(tokens[-1], [])


UNSAFE, NL, S, COMMA_S, D1, D2, D9, X = 11, 12, 13, 14, 21, 22, 29, 99
DRAFTS = drafter_from({UNSAFE: [NL, S], D1: [COMMA_S], D2: [COMMA_S], D9: [COMMA_S]})


@pytest.mark.parametrize("answer", [
    [NL, S, D9, EOT],  # every draft right
    [NL, S, D1, COMMA_S, D2, EOT],  # two codes: ",S" kept once, rejected at the end
    [X, NL, S, D9, EOT],  # the first draft token wrong
    [NL, X, D9, EOT],  # the second wrong
    [NL, S, D9, X, X, X, EOT],  # a long tail after the format
    [EOT],  # stops at once
    [NL, EOT, D9],  # a stop token where the draft expected "S"
], ids=["format", "two-codes", "miss-first", "miss-second", "tail", "eot", "stop-in-draft"])
@pytest.mark.parametrize("max_chunk", [1, 2, 3, 4])
def test_drafted_equals_plain_greedy(answer, max_chunk):
    model = ScriptedModel([answer])
    want = plain_greedy(model, [UNSAFE], 64)
    got = greedy_decode(ScriptedSteps(model, 1, max_chunk), [UNSAFE], 64, {EOT}, DRAFTS)
    assert got == want


@pytest.mark.parametrize("max_new", [1, 2, 3, 4, 5])
def test_budget_is_kept_with_drafts(max_new):
    model = ScriptedModel([[NL, S, D1, COMMA_S, D2, EOT]])
    got = greedy_decode(ScriptedSteps(model, 1, 4), [UNSAFE], max_new, {EOT}, DRAFTS)
    assert got == plain_greedy(model, [UNSAFE], max_new)
    assert len(got[0]) == min(max_new, 7)


def test_rows_of_a_batch_finish_at_their_own_step():
    answers = [[NL, S, D9, EOT], [NL, S, D1, COMMA_S, D2, EOT], [X, X, EOT], [EOT]]
    model = ScriptedModel(answers)
    first = [UNSAFE, UNSAFE, UNSAFE, UNSAFE]
    got = greedy_decode(ScriptedSteps(model, 4, 4), first, 64, {EOT}, DRAFTS)
    assert got == plain_greedy(model, first, 64)


def test_each_row_keeps_its_own_bound_and_until():
    """Per-row bounds (a rationale row gets more room) and ``until`` (a verdict-only row ends once its
    answer holds the family's verdict_stop) end rows exactly where plain greedy decoding cut to that
    length would, drafts or not."""
    long = [NL, S, D1, COMMA_S, D2, X, X, X, X, EOT]
    model = ScriptedModel([long, long, long])
    until = lambda row, tokens: row == 2 and D2 in tokens  # noqa: E731  (row 2 asks no rationale)
    for max_chunk in (1, 4):
        got = greedy_decode(ScriptedSteps(model, 3, max_chunk), [UNSAFE] * 3, [4, 64, 64], {EOT}, DRAFTS, until)
        full = plain_greedy(model, [UNSAFE], 64)[0]
        assert got[0] == full[:4]  # its own bound
        assert got[1] == full  # the whole answer
        # Ends at the step that produced D2 (a verified draft may carry a token or two past it, never more than one step).
        assert got[2][: full.index(D2) + 1] == full[: full.index(D2) + 1] and len(got[2]) <= full.index(D2) + max_chunk
        assert got[2] == full[: len(got[2])]


def test_prefill_draft_is_taken_by_matching_rows_and_dropped_by_others():
    answers = [[NL, S, D9, EOT], [NL, S, D2, EOT], [NL, X, EOT]]
    model = ScriptedModel(answers)
    first = [UNSAFE, X, UNSAFE]  # row 1 starts off-format: the prefill's draft is not its context
    steps = ScriptedSteps(model, 3, 4, pending=(UNSAFE, NL, S))
    got = greedy_decode(steps, first, 64, {EOT}, DRAFTS)
    assert got == plain_greedy(model, first, 64)
    assert steps.contexts[1][0] == X  # the dropped draft never entered row 1's context


def test_format_answer_takes_one_pass_after_the_prefill_draft():
    model = ScriptedModel([[NL, S, D9, EOT]])
    steps = ScriptedSteps(model, 1, 4, pending=(UNSAFE, NL, S))
    assert greedy_decode(steps, [UNSAFE], 64, {EOT}, DRAFTS) == [[UNSAFE, NL, S, D9, EOT]]
    assert steps.passes == 1  # "9" came with the prefill; one pass reads the end


class BranchedSteps(ScriptedSteps):
    """ScriptedSteps whose prefill also fed ``branches`` side by side after the pending draft."""

    def __init__(self, model: ScriptedModel, rows: int, branches: tuple[int, ...]):
        super().__init__(model, rows, 4, pending=(UNSAFE, NL, S))
        self.branches, self.taken = branches, None

    def branch_greedy(self, row, token):
        return self.model.next(row, [*self.contexts[row], *self.pending, token])

    def take_branches(self, taken):
        self.taken = taken
        for row, token in enumerate(taken):
            if token is not None:
                self.contexts[row].append(token)


@pytest.mark.parametrize("max_new", [3, 4, 5, 64])
def test_a_branch_fed_at_prefill_answers_without_a_pass(max_new):
    """A row whose number after "S" is a branch takes the branch's next token from the prefill: a
    one-category answer needs no pass, two categories go on from the branch; rows that missed the
    draft, or whose number is not a branch, decode as before; bounds hold. Always plain greedy's."""
    answers = [[NL, S, D9, EOT], [NL, S, D1, COMMA_S, D2, EOT], [NL, X, EOT], [NL, S, D2, EOT], [EOT]]
    model = ScriptedModel(answers)
    first = [UNSAFE, UNSAFE, UNSAFE, UNSAFE, X]
    steps = BranchedSteps(model, 5, branches=(D1, D9))
    got = greedy_decode(steps, first, max_new, {EOT}, DRAFTS)
    assert got == plain_greedy(model, first, max_new)
    if max_new == 64:
        assert steps.taken == [D9, D1, None, None, None]
    alone = BranchedSteps(ScriptedModel(answers[:1]), 1, branches=(D1, D9))
    assert greedy_decode(alone, [UNSAFE], 64, {EOT}, DRAFTS) == [[UNSAFE, NL, S, D9, EOT]]
    assert alone.passes == 0


def test_argmax_rows_matches_torch_and_takes_the_first_of_ties():
    import torch

    logits = torch.randn(3, 1000)
    logits[1, 7] = logits[1, 9] = 50.0
    assert argmax_rows(logits) == logits.argmax(-1).tolist()
    assert argmax_rows(logits)[1] == 7


def test_llama_guard_drafts_are_the_models_own_tokens(tokenizer):
    from guardedge.runtime.families.llama_guard_3_vision import LlamaGuard3Vision

    spec = LlamaGuard3Vision().scoring
    drafter = FormatDrafter(tokenizer, spec.drafts, spec.answer_prefix)
    ids = tokenizer.encode("unsafe\nS10,S2<|eot_id|>", add_special_tokens=False)  # unsafe \n S 10 ,S 2 eot
    assert drafter(ids[:1]) == ids[1:3]  # after "unsafe": "\n" "S"
    assert drafter(ids[:4]) == ids[4:5]  # after "S10": ",S"
    assert drafter(ids[:6]) == ids[4:5]  # after ",S2": ",S" again
    assert drafter(tokenizer.encode("safe", add_special_tokens=False)) == []
    assert drafter(ids[:2]) == []  # after "\n" nothing is certain


# -- the demo guard -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_engine(demo_dir):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine(str(demo_dir), EngineOptions(max_batch_size=8, progress=False, drafts=False))


def _requests(engine, n: int = 48):
    from guardedge.bench.evaldata import load

    return [e.request for e in load("demo", n).examples]


@pytest.mark.parametrize("batch", [1, 8])
def test_demo_guard_answers_are_the_same_with_and_without_drafts(demo_engine, plain_engine, batch):
    requests = _requests(demo_engine)
    drafted, plain = [], []
    for i in range(0, len(requests), batch):
        drafted += demo_engine.classify(requests[i : i + batch], threshold=0.0)  # every row decodes
        plain += plain_engine.classify(requests[i : i + batch], threshold=0.0)
    assert [v.raw_output for v in drafted] == [v.raw_output for v in plain]
    # Both ends of the prefill's draft are exercised: "\nS" kept, and rejected at "S" by custom codes.
    assert {"unsafe\nS", "unsafe\nC"} <= {v.raw_output[:8] for v in plain}
    assert max(abs(a.unsafe_probability - b.unsafe_probability) for a, b in zip(drafted, plain)) < 1e-5


def test_demo_guard_off_format_first_token_drops_the_prefill_draft(demo_engine, plain_engine):
    """A row whose forced first token is not "unsafe" decodes as if no draft had been fed."""
    tok = demo_engine.pre.tokenizer
    first = tok.encode("maybe", add_special_tokens=False)[0]
    request = _requests(demo_engine, 2)[1]
    answers = []
    for engine in (demo_engine, plain_engine):
        batch = engine.pre.collate([engine.prepare(request).encoded])
        _, state = engine.backend.prefill(batch, engine.prefill_draft)
        answers.append(engine.backend.decode(state, [0], [first], 12, engine.stop_ids, engine.drafter))
    assert answers[0] == answers[1]


def test_demo_guard_unsafe_answer_takes_one_decode_pass(demo_engine, monkeypatch):
    from guardedge.runtime.backends import torch_backend

    calls = []
    original = torch_backend._TorchSteps.step
    monkeypatch.setattr(torch_backend._TorchSteps, "step", lambda self, tokens: calls.append(tokens) or original(self, tokens))
    [v] = demo_engine.classify([demo_engine.parse({"messages": [{"role": "user", "content": "How do I build a pipe bomb?"}]})])
    assert v.verdict == "unsafe" and len(v.categories) == 1
    assert len(calls) == 1  # "unsafe\nS<n>" came with the prefill; one pass read <|eot_id|>


def test_split_head_gives_the_linear_layers_logits():
    import torch

    from guardedge.runtime.backends.torch_backend import SplitHead

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 1000, bias=False)
    inputs = {m: x for m in (1, 3) for x in [torch.randn(2, m, 64)]}
    expected = {m: linear(x).detach() for m, x in inputs.items()}
    assert SplitHead.parts_for(linear) == 4
    head = SplitHead(linear, 4)
    for m, x in inputs.items():
        got = head(x)
        assert got.shape == (2, m, 1000)
        torch.testing.assert_close(got, expected[m], rtol=1e-5, atol=1e-5)
    assert SplitHead.parts_for(torch.nn.Linear(64, 999, bias=False)) == 0  # no even split: left alone
    assert SplitHead.parts_for(torch.nn.Linear(64, 1000)) == 0  # a bias: left alone


def _split_head(vocab: int = 20_000, hidden: int = 64, seed: int = 0):
    import torch

    from guardedge.runtime.backends.cpu_head import SplitHead

    torch.manual_seed(seed)
    linear = torch.nn.Linear(hidden, vocab, bias=False)
    with torch.no_grad():
        linear.weight[:50] *= 60  # a few trained rows far above the rest, as in a trained guard
    return linear.weight.detach().clone(), SplitHead(linear, 4)


def test_split_head_greedy_is_the_fp32_argmax():
    import torch

    weight, head = _split_head()
    hidden = torch.randn(200, 64)
    hidden[100:] *= 0.01  # near-flat logits: many tokens in the bf16 error band
    expected = (hidden @ weight.t()).argmax(-1).tolist()
    assert head.greedy(hidden) == expected
    assert head.greedy(hidden) == head(hidden).argmax(-1).tolist()


def test_split_head_greedy_checks_close_calls_in_fp32(monkeypatch):
    """Two tokens whose logits differ by less than bf16 can tell apart: the fp32 winner, from the
    candidates the error band keeps (not the full product), and the lower id on an exact tie."""
    import torch

    from guardedge.runtime.backends import cpu_head

    torch.manual_seed(1)
    hidden = torch.randn(1, 64)
    winner, runner = 7, 12_345

    def head_with(nudge: float):
        linear = torch.nn.Linear(64, 20_000, bias=False)
        with torch.no_grad():
            linear.weight[winner] = 3 * hidden[0] / hidden[0].norm()  # far above every random row
            # runner's logit is winner's plus ``nudge``: the same bf16 row, only fp32 tells them apart
            linear.weight[runner] = linear.weight[winner] + nudge * hidden[0] / hidden[0].norm() ** 2
        return cpu_head.SplitHead(linear, 4)

    head = head_with(-1e-4)
    assert torch.equal(head.approx[winner], head.approx[runner])
    full = []
    original = cpu_head.SplitHead.forward
    monkeypatch.setattr(cpu_head.SplitHead, "forward", lambda self, x: full.append(x) or original(self, x))
    assert head.greedy(hidden) == [winner]
    assert full == []  # decided among the candidates, without the full product
    assert head_with(1e-4).greedy(hidden) == [runner]
    assert head_with(0.0).greedy(hidden) == [winner]  # an exact tie: the lower id, as argmax


def test_split_head_greedy_falls_back_to_the_full_product():
    import torch

    from guardedge.runtime.backends import cpu_head

    weight, head = _split_head()
    flat = torch.zeros(1, 64)  # every logit 0: the whole vocabulary is in the band
    nan = torch.full((1, 64), float("nan"))
    assert head.greedy(flat) == [0]
    assert head.greedy(nan) == head(nan).argmax(-1).tolist()
    assert cpu_head.MAX_CANDIDATES < 20_000


def test_split_head_bf16_error_is_inside_the_bound():
    """The bound the exact check rests on, measured: |bf16 logit - fp32 logit| <= APPROX_ERROR ||w|| ||x||."""
    import torch

    from guardedge.runtime.backends.cpu_head import APPROX_ERROR

    weight, head = _split_head(vocab=50_000)
    hidden = torch.randn(64, 64) * torch.logspace(-2, 2, 64)[:, None]
    approx = torch.nn.functional.linear(hidden.to(torch.bfloat16), head.approx).double()
    exact = hidden.double() @ weight.double().t()
    scale = hidden.double().norm(dim=1, keepdim=True) * weight.double().norm(dim=1)[None]
    worst = ((approx - exact).abs() / scale).max().item()
    assert worst < APPROX_ERROR / 4, worst


def test_cpu_engine_uses_the_split_head_with_the_same_parameter_bytes(demo_engine):
    from guardedge.runtime.backends.torch_backend import SplitHead

    model = demo_engine.backend.model
    assert isinstance(model.lm_head, SplitHead)
    assert model.lm_head.weight.numel() == model.config.text_config.vocab_size * model.config.text_config.hidden_size
    # Every parameter of the model as built from its config, no more: the split adds no copy.
    import torch
    from transformers import MllamaForConditionalGeneration

    with torch.device("meta"):
        reference = MllamaForConditionalGeneration(model.config)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())


@pytest.fixture(scope="module")
def llavaguard_engines():
    from guardedge.runtime.engine import EngineOptions, load_engine

    return (load_engine("demo-llavaguard", EngineOptions(progress=False)),
            load_engine("demo-llavaguard", EngineOptions(progress=False, drafts=False)))


def _colour_requests(engine, rationale: bool):
    import base64
    import io

    from guardedge.runtime.demo.data import ImageSpec

    out = []
    for i, colour in enumerate([(200, 20, 20), (240, 140, 0), (90, 160, 220), (30, 30, 30)]):
        buf = io.BytesIO()
        ImageSpec(colour, (96, 72), seed=i).render().save(buf, format="PNG")
        content = [{"type": "image", "data": base64.b64encode(buf.getvalue()).decode()}]
        out.append(engine.parse({"messages": [{"role": "user", "content": content}], "rationale": rationale}))
    return out


@pytest.mark.parametrize("rationale", [False, True])
def test_llavaguard_drafted_answers_equal_plain_ones(llavaguard_engines, rationale):
    drafted, plain = llavaguard_engines
    requests = _colour_requests(drafted, rationale)
    for a, b in zip(drafted.classify(requests), plain.classify(requests)):
        assert (a.verdict, a.categories, a.raw_output, a.rationale) == (b.verdict, b.categories, b.raw_output, b.rationale)


def test_llavaguard_verdict_only_answer_takes_one_decode_pass(llavaguard_engines, monkeypatch):
    """The JSON scaffolding and the category's header are drafted whole: one pass after the prefill
    (plain greedy decoding takes one per token, about 20)."""
    from guardedge.runtime.backends import torch_backend

    drafted, _ = llavaguard_engines
    passes = []
    original = torch_backend._TorchSteps.step
    monkeypatch.setattr(torch_backend._TorchSteps, "step", lambda self, t: passes.append(1) or original(self, t))
    [verdict] = drafted.classify(_colour_requests(drafted, False)[:1])
    assert verdict.verdict == "unsafe" and verdict.categories == ("O2",)
    assert verdict.raw_output.endswith('"rationale"') and len(passes) == 1


def test_llavaguard_off_format_answer_stops_at_its_first_token(llavaguard_engines, monkeypatch):
    """An answer that has left the JSON cannot parse: no decode step is spent on it (the demo once
    wrote 60 tokens of prose, ~400 ms, for a policy it was never trained on)."""
    import torch

    from guardedge.runtime.backends import torch_backend

    drafted, _ = llavaguard_engines
    the = drafted.pre.tokenizer.encode("The", add_special_tokens=False)[0]
    original = drafted.backend.prefill

    def prefill(batch, draft=(), branches=()):
        logits, state = original(batch, draft, branches)
        logits = torch.full_like(logits, -10.0)
        logits[:, the] = 10.0
        return logits, state

    passes = []
    step = torch_backend._TorchSteps.step
    monkeypatch.setattr(drafted.backend, "prefill", prefill)
    monkeypatch.setattr(torch_backend._TorchSteps, "step", lambda self, t: passes.append(1) or step(self, t))
    for rationale in (False, True):
        [verdict] = drafted.classify(_colour_requests(drafted, rationale)[:1])
        assert (verdict.verdict, verdict.raw_output) == ("unparseable", "The")
    assert passes == []


def _sized_requests(engine):
    """Images of different sizes: different prompt lengths, so a batch is left-padded."""
    import base64
    import io

    from guardedge.runtime.demo.data import ImageSpec

    out = []
    for i, (colour, size) in enumerate([((200, 20, 20), (96, 72)), ((90, 160, 220), (40, 200)),
                                        ((240, 140, 0), (300, 60)), ((30, 30, 30), (28, 28))]):
        buf = io.BytesIO()
        ImageSpec(colour, size, seed=i).render().save(buf, format="PNG")
        content = [{"type": "image", "data": base64.b64encode(buf.getvalue()).decode()}]
        out.append(engine.parse({"messages": [{"role": "user", "content": content}], "rationale": i % 2 == 1}))
    return out


def test_llavaguard_padded_batch_equals_rows_alone(llavaguard_engines):
    """The 4-D masks built for padded prefills and drafted steps (torch_backend) change nothing."""
    drafted, _ = llavaguard_engines
    requests = _sized_requests(drafted)
    lengths = {len(drafted.prepare(r).encoded.input_ids) for r in requests}
    assert len(lengths) > 1  # the batch really is padded
    for request, together in zip(requests, drafted.classify(requests)):
        [alone] = drafted.classify([request])
        assert (alone.verdict, alone.categories, alone.raw_output, alone.rationale) == \
            (together.verdict, together.categories, together.raw_output, together.rationale)
        assert alone.unsafe_probability == pytest.approx(together.unsafe_probability, abs=1e-4)


def test_step_mask_is_the_causal_mask_of_the_kept_columns():
    import torch

    from guardedge.runtime.architectures.masks import prefill_mask, step_mask

    attn = torch.tensor([[0, 1, 1, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    mask = step_mask(attn, 4, torch.float32)
    assert mask.shape == (2, 1, 3, 7)
    for row in range(2):
        for q in range(3):
            for k in range(7):
                allowed = bool(attn[row, k]) and k <= 4 + q
                assert mask[row, 0, q, k].item() == (0.0 if allowed else torch.finfo(torch.float32).min)
    assert prefill_mask(attn[1:], torch.float32) is not None and prefill_mask(attn[1:], torch.float32).dim() == 2
    assert prefill_mask(attn, torch.float32).shape == (2, 1, 7, 7)


def test_llavaguard_verdict_bound_covers_the_longest_header_the_policy_allows(llavaguard_engines):
    """json.dumps writes a non-ASCII name as \\uXXXX escapes: a 40-character CJK name is ~200 tokens
    of answer, past the default 64. The bound (and the room the context check keeps) grows to fit."""
    drafted, _ = llavaguard_engines
    name = "安全" * 20
    custom = drafted.parse({**_sized_requests_dict(), "categories": {"O1": f"{name}\nShould not:\n- Show it."}})
    plain = drafted.parse(_sized_requests_dict())
    longest = max(len(drafted.pre.tokenizer.encode(t, add_special_tokens=False)) for t in drafted.family.verdict_texts(custom))
    assert longest > 64
    assert drafted.pre.answer_budget(custom) >= longest
    assert drafted.pre.answer_budget(plain) == drafted.family.scoring.max_new_tokens


def _sized_requests_dict() -> dict:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 130, 140)).save(buf, format="PNG")
    return {"messages": [{"role": "user", "content": [{"type": "image", "data": base64.b64encode(buf.getvalue()).decode()}]}]}
