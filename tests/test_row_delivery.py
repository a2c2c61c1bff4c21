"""Each row of a batch is answered the moment its own answer is complete (issue 19, item 5).

The decode loop tells ``until.finished(row, tokens)`` once per row as it completes, while the other
rows go on; the engine turns that into ``on_verdict(row, verdict)``; the batcher answers that row's
caller then. The latency it buys is measured by ``guardedge bench hostile --cases mixed`` (not here).
"""

from __future__ import annotations

import asyncio
import threading
import time

from test_decoding import EOT, ScriptedModel, ScriptedSteps

from guardedge.runtime.decoding import greedy_decode


class Watch:
    def __init__(self, steps: ScriptedSteps):
        self.steps, self.told = steps, []

    def __call__(self, row, tokens):
        return False

    def finished(self, row, tokens):
        self.told.append((row, list(tokens), self.steps.passes))


def test_the_decode_loop_tells_each_row_when_it_finishes_while_the_rest_go_on():
    model = ScriptedModel([[5, EOT], [5, 6, 7, 8, 9, EOT], [EOT]])
    steps = ScriptedSteps(model, 3, max_chunk=1)
    watch = Watch(steps)
    out = greedy_decode(steps, [4, 4, 4], 64, {EOT}, until=watch)
    assert sorted(row for row, _, _ in watch.told) == [0, 1, 2]
    told = {row: (tokens, passes) for row, tokens, passes in watch.told}
    assert all(told[row][0] == out[row] for row in range(3))  # the final answer, as returned
    # Row 0 was told after its second pass, row 1 only at the end: row 0 did not wait for row 1.
    assert told[0][1] == 2 and told[1][1] == steps.passes == 6 and told[2][1] == 1


def test_a_plain_until_still_works():
    model = ScriptedModel([[5, 6, EOT]])
    out = greedy_decode(ScriptedSteps(model, 1, max_chunk=1), [4], 64, {EOT}, until=lambda row, tokens: len(tokens) >= 2)
    assert out == [[4, 5]]


def test_the_engine_delivers_a_safe_row_before_an_unsafe_row_decodes(demo_engine):
    from service_support import SAFE, UNSAFE

    prepared = [demo_engine.prepare(demo_engine.parse(r)) for r in (UNSAFE, SAFE)]
    told = []
    verdicts = demo_engine.run(prepared, on_verdict=lambda row, verdict: told.append((row, verdict, time.perf_counter())))
    assert [row for row, _, _ in told] == [1, 0]  # the safe row needs no decoding: answered after the prefill
    assert [v for _, v, _ in sorted(told, key=lambda t: t[0])] == verdicts
    assert verdicts[1].verdict == "safe" and verdicts[0].verdict == "unsafe"
    assert verdicts[1].timings.inference < verdicts[0].timings.inference  # each row's own time to its answer


def test_the_batcher_answers_a_row_while_its_batch_still_runs(demo_engine):
    from guardedge.runtime.service.batcher import Batcher

    release = threading.Event()

    class SlowSecondRow:
        """Answers row 0 at once, then holds the batch until released (a long rationale row)."""

        model_dir = demo_engine.model_dir

        def run(self, batch, threshold=None, on_verdict=None):
            verdicts = demo_engine.run(batch)
            on_verdict(0, verdicts[0])
            assert release.wait(30)
            on_verdict(1, verdicts[1])
            return verdicts

    async def scenario():
        batcher = Batcher(SlowSecondRow(), max_batch_size=2, max_queue_size=4, max_queue_delay_s=0.2)
        batcher.start()
        prepared = [demo_engine.prepare(demo_engine.parse({"messages": [{"role": "user", "content": f"hi {i}"}]}))
                    for i in range(2)]
        for _ in prepared:
            batcher.admit()
        first, second = (asyncio.ensure_future(batcher.submit(p, None)) for p in prepared)
        result = await asyncio.wait_for(first, 10)  # while the batch is still running
        assert not second.done() and result.batch_size == 2
        release.set()
        await asyncio.wait_for(second, 10)
        await batcher.close()

    asyncio.run(scenario())
