"""``make demo``: the demo guard behind a real server — start, classify through the client, stop.

Starts ``guardedge serve --model demo`` on a free loopback port, waits for health SERVING,
classifies the demo requests (text, images, responses, custom and excluded policies) concurrently
through the gRPC client, prints the answers, then sends SIGTERM and checks the server drained and
exited 0.

    python -m guardedge.runtime.demo.run
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

from guardedge.runtime.demo.build import ensure_demo
from guardedge.runtime.demo.samples import samples
from guardedge.runtime.service.background import spawn_server
from guardedge.runtime.service.client import GuardClient, response_to_json


def _answer(result: dict) -> str:
    """A verdict in the samples' ``expected`` spelling: "safe" or "unsafe S1,S2"."""
    return result["verdict"] + (" " + ",".join(result["categories"]) if result["verdict"] == "unsafe" else "")


def main() -> int:
    ensure_demo()  # assemble the demo guard here, with progress, rather than silently in the server
    args = ("--metrics-port", "-1", "--log-format", "text", "--log-level", "warning", "--max-queue-delay-ms", "5")
    with spawn_server("demo", *args) as (server, port):
        results = _classify_all(f"127.0.0.1:{port}")
    code = server.returncode
    print(f"server stopped cleanly after SIGTERM (exit {code})" if code == 0 else f"server exited {code}")
    wrong = [case["request_id"] for case, result in zip(samples(), results) if _answer(result) != case["expected"]]
    if code != 0 or wrong:
        print(f"demo failed: expected a clean stop and every sample as expected (not: {', '.join(wrong) or 'none'})", file=sys.stderr)
        return 1
    return 0


def _classify_all(address: str) -> list[dict]:
    with GuardClient(address, timeout=60) as client:
        client.wait_until_serving(timeout=120)
        [model] = client.list_models().models
        print(f"server: {address} SERVING  model: {model.name} ({model.variant})")
        cases = samples()
        with ThreadPoolExecutor(len(cases)) as pool:  # concurrent calls: the server batches them
            results = list(pool.map(lambda case: response_to_json(client.classify(case)), cases))
    print(f"{'request':<22} {'expected':<10} {'verdict':<12} {'categories':<10} {'P(unsafe)':>9}  {'server ms':>9}  note")
    as_expected = 0
    for case, result in zip(cases, results):
        ok = _answer(result) == case["expected"]
        as_expected += ok
        note = "" if ok else f"not as expected{': ' + result['error'] if result['error'] else ''}"
        print(f"{case['request_id']:<22} {case['expected']:<10} {result['verdict']:<12} {','.join(result['categories']):<10} "
              f"{result['unsafe_probability']:>9.3f}  {result['timings']['total_s'] * 1000:>9.1f}  {note}")
    print(f"{as_expected}/{len(cases)} as expected (a tiny demo model; its held-out metrics: guardedge demo metrics)")
    return results


if __name__ == "__main__":
    sys.exit(main())
