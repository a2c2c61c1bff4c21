"""``make demo``: both demo guards behind one real server — start, classify through the client, stop.

Starts ``guardedge serve --model demo --model demo-llavaguard`` on a free loopback port, waits for
health SERVING, classifies each family's demo requests concurrently through the gRPC client (Llama
Guard 3 Vision: text, images, responses, custom and excluded policies; LlavaGuard: a safe photo,
a safe colour, hazard colours, an excluded category, a custom policy, one with its rationale),
each request naming its model, prints the answers, then sends SIGTERM and checks the server
drained and exited 0. Exit status 1 unless every sample is as expected and the stop was clean.
The LlavaGuard demo is shown once its builder is installed (runtime/models.py ALIASES).

    python -m guardedge.runtime.demo.run
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor

from guardedge.runtime.models import ALIASES
from guardedge.runtime.service.background import spawn_server
from guardedge.runtime.service.client import GuardClient, response_to_json

# alias -> "module:function" giving its samples (request dicts with ``expected``).
SAMPLES: dict[str, str] = {
    "demo": "guardedge.runtime.demo.samples:samples",
    "demo-llavaguard": "guardedge.runtime.demo.llavaguard_samples:samples",
}


def _answer(result: dict) -> str:
    """A verdict in the samples' ``expected`` spelling: "safe" or "unsafe S1,S2"."""
    return result["verdict"] + (" " + ",".join(result["categories"]) if result["verdict"] == "unsafe" else "")


def available_demos() -> list[str]:
    """The demo aliases whose builder is installed (the LlavaGuard demo lands separately)."""
    return [alias for alias in SAMPLES if _installed(ALIASES[alias].split(":")[0])]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing too
        return False


def cases_for(aliases: list[str]) -> list[dict]:
    """Every sample of every shown demo, each naming its model (the server's first model is the default)."""
    out = []
    for alias in aliases:
        module, name = SAMPLES[alias].split(":")
        out += [{**case, "model": alias} for case in getattr(importlib.import_module(module), name)()]
    return out


def main() -> int:
    aliases = available_demos()
    for alias in aliases:  # assemble each demo here, with progress, rather than silently in the server
        module, name = ALIASES[alias].split(":")
        getattr(importlib.import_module(module), name)(progress=True)
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


def _print(cases: list[dict], results: list[dict]) -> None:
    print(f"{'model':<16} {'request':<22} {'expected':<10} {'verdict':<12} {'categories':<10} {'P(unsafe)':>9}  {'server ms':>9}  note")
    as_expected = 0
    for case, result in zip(cases, results):
        ok = _answer(result) == case["expected"]
        as_expected += ok
        note = "" if ok else f"not as expected{': ' + result['error'] if result['error'] else ''}"
        print(f"{case['model']:<16} {case['request_id']:<22} {case['expected']:<10} {result['verdict']:<12} "
              f"{','.join(result['categories']):<10} {result['unsafe_probability']:>9.3f}  "
              f"{result['timings']['total_s'] * 1000:>9.1f}  {note}")
        if result.get("rationale"):
            print(f"{'':<16} rationale: {result['rationale']}")
    print(f"{as_expected}/{len(cases)} as expected (tiny demo models; their held-out metrics: guardedge demo metrics)")


if __name__ == "__main__":
    sys.exit(main())
