"""``make demo``: every demo guard behind one real server — start, classify through the client, stop.

Starts ``guardedge serve --model demo --model demo-llavaguard`` on a free loopback port, waits for
health SERVING, classifies each family's demo requests concurrently through the gRPC client (Llama
Guard 3 Vision: text, images, responses, custom and excluded policies; LlavaGuard: a safe photo,
a safe colour, hazard colours, an excluded category, a custom policy, one with its rationale),
each request naming its model, prints the answers, then sends SIGTERM and checks the server
drained and exited 0. Exit status 1 unless every sample is as expected and the stop was clean.
Every installed demo (runtime/demos.py) is served and shown; the first is the server's default.

    python -m guardedge.runtime.demo.run
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

from guardedge.runtime.demos import demos
from guardedge.runtime.service.background import spawn_server
from guardedge.runtime.service.client import GuardClient, response_to_json


def _answer(result: dict) -> str:
    """A verdict in the samples' ``expected`` spelling: "safe" or "unsafe S1,S2"."""
    return result["verdict"] + (" " + ",".join(result["categories"]) if result["verdict"] == "unsafe" else "")


def available_demos() -> list[str]:
    """Every installed demo's alias, ``demo`` first (the server's default model)."""
    return sorted(demos(), key=lambda alias: (alias != "demo", alias))


def cases_for(aliases: list[str]) -> list[dict]:
    """Every sample of every shown demo, each naming its model (the server's first model is the default)."""
    return [{**case, "model": alias} for alias in aliases for case in demos()[alias].samples()]


def main() -> int:
    aliases = available_demos()
    for alias in aliases:  # assemble each demo here, with progress, rather than silently in the server
        demos()[alias].build(progress=True)
    args = [arg for alias in aliases[1:] for arg in ("--model", alias)]
    args += ["--metrics-port", "-1", "--log-format", "text", "--log-level", "warning", "--max-queue-delay-ms", "5"]
    cases = cases_for(aliases)
    with spawn_server(aliases[0], *args) as (server, port):
        results = _classify_all(f"127.0.0.1:{port}", cases)
    code = server.returncode
    print(f"server stopped cleanly after SIGTERM (exit {code})" if code == 0 else f"server exited {code}")
    wrong = [case["request_id"] for case, result in zip(cases, results) if _answer(result) != case["expected"]]
    if code != 0 or wrong:
        print(f"demo failed: expected a clean stop and every sample as expected (not: {', '.join(wrong) or 'none'})", file=sys.stderr)
        return 1
    return 0


def _classify_all(address: str, cases: list[dict]) -> list[dict]:
    with GuardClient(address, timeout=120) as client:
        client.wait_until_serving(timeout=300)
        for model in client.list_models().models:
            print(f"server: {address} SERVING  model: {model.name} ({model.family}, {model.variant})")
        requests = [{k: v for k, v in case.items() if k != "expected"} for case in cases]
        with ThreadPoolExecutor(len(requests)) as pool:  # concurrent calls: the server batches them
            results = list(pool.map(lambda request: response_to_json(client.classify(request)), requests))
    _print(cases, results)
    return results


def widths(cases: list[dict]) -> tuple[int, int]:
    """The model and request columns' widths: at least 16 and 22, wider for longer names."""
    return max([16, *(len(c["model"]) for c in cases)]), max([22, *(len(c["request_id"]) for c in cases)])


def _print(cases: list[dict], results: list[dict]) -> None:
    m, r = widths(cases)
    print(f"{'model':<{m}} {'request':<{r}} {'expected':<18} {'verdict':<12} {'categories':<10} {'P(unsafe)':>9}  {'server ms':>9}  note")
    as_expected = 0
    for case, result in zip(cases, results):
        ok = _answer(result) == case["expected"]
        as_expected += ok
        note = "" if ok else f"not as expected{': ' + result['error'] if result['error'] else ''}"
        print(f"{case['model']:<{m}} {case['request_id']:<{r}} {case['expected']:<18} {result['verdict']:<12} "
              f"{','.join(result['categories']):<10} {result['unsafe_probability']:>9.3f}  "
              f"{result['timings']['total_s'] * 1000:>9.1f}  {note}")
        if result.get("rationale"):
            print(f"{'':<{m}} rationale: {result['rationale']}")
    print(f"{as_expected}/{len(cases)} as expected (tiny demo models; their held-out metrics: guardedge demo metrics)")


if __name__ == "__main__":
    sys.exit(main())
