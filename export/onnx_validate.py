"""Check an ONNX export against the PyTorch source on the same inputs, as the export's last step.

* ``parity`` (float exports): the same collated batches through both backends — each demo sample
  alone (batch 1), all of them together (a mixed batch with and without images), images of several
  aspect ratios alone and together, a text-only batch — then max |Δlogit| at the scored position,
  first-token (verdict) equality and, for rows that decode, equality of the decoded tokens.
* agreement (any export, the figure for int8/int4) over the same set plus the aspect-ratio
  requests: export/agreement.py, shared with ``guardedge export quantize``.
"""

from __future__ import annotations


ASPECT_SIZES = ((56, 56), (96, 64), (200, 50), (50, 200), (120, 120))  # 1x1, 2x1-ish, 1x4, 4x1, 2x2 tiles


def validation_requests(held_out: int, family: str = "llama-guard-3-vision") -> list:
    """The family's smoke requests, image requests at several aspect ratios (in the shape the family
    accepts: an image with a question, else the image alone), then ``held_out`` held-out requests."""
    from guardedge.export.agreement import held_out_requests, smoke_requests
    from guardedge.runtime.families import get_family
    from guardedge.runtime.requests import parse_request

    categories = get_family(family).default_categories()
    fixed = [parse_request(r, categories) for r in smoke_requests(family)]
    return fixed + aspect_requests(get_family(family)) + held_out_requests(held_out, family)


def aspect_requests(family) -> list:
    """One request per ASPECT_SIZES image, each in the first shape ``family.check`` accepts."""
    from guardedge.runtime.errors import InvalidRequest
    from guardedge.runtime.requests import parse_request

    out = []
    for w, h in ASPECT_SIZES:
        image = {"type": "image", "data": _png((200, 30, 30), (w, h))}
        for content in ([image, {"type": "text", "text": "What do you see in this image?"}], [image]):
            request = parse_request({"request_id": f"aspect-{w}x{h}", "messages": [{"role": "user", "content": content}]},
                                    family.default_categories())
            try:
                family.check(request)
            except InvalidRequest:
                continue
            out.append(request)
            break
    return out


def _png(colour: tuple[int, int, int], size: tuple[int, int]) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def smoke_count(family: str) -> int:
    from guardedge.export.agreement import smoke_requests

    return len(smoke_requests(family))


def engine_for(model_dir, backend):
    """An Engine over ``backend`` with the directory's tokenizer and image processor (as load_engine builds it)."""
    from guardedge.runtime.engine import EngineOptions, build_engine

    return build_engine(model_dir, EngineOptions(max_batch_size=8, progress=False), backend=backend)


def parity_batches(n_fixed: int, n_samples: int) -> list[list[int]]:
    """Index lists: every fixed request alone, the samples together, the aspect ratios together (when
    there are any), a pair (Llama Guard: text only)."""
    alone = [[i] for i in range(n_fixed)]
    shaped = [list(range(n_samples, n_fixed))] if n_fixed > n_samples else []
    return alone + [list(range(n_samples))] + shaped + [[0, 1]]


def reference_outputs(torch_engine, requests: list, batches: list[list[int]]) -> list[tuple]:
    """PyTorch's side of the parity check, kept small (last-position logits, first tokens, decoded
    rows) so the PyTorch model can be freed before ONNX Runtime loads: one copy of the weights
    in memory at a time, which is what makes the check affordable at 11B."""
    eng = torch_engine
    prepared = [eng.prepare(r) for r in requests]
    out = []
    for index in batches:
        logits, state = eng.backend.prefill(eng.pre.collate([prepared[i].encoded for i in index]))
        first = logits.argmax(-1).tolist()
        todo = [i for i, t in enumerate(first) if t != eng.safe_id]
        decoded = eng.backend.decode(state, todo, [first[i] for i in todo], eng.family.scoring.max_new_tokens, eng.stop_ids) if todo else []
        out.append((logits, first, dict(zip(todo, decoded))))
        del state
    return out


def parity(onnx_engine, requests: list, batches: list[list[int]], reference: list[tuple], stop_above: float = float("inf")) -> dict:
    """Max |Δlogit|, verdict and decode equality of the ONNX engine against ``reference_outputs``
    (stops early once |Δlogit| exceeds ``stop_above``: the export fails anyway)."""
    eng = onnx_engine
    prepared = [eng.prepare(r) for r in requests]
    worst, rows, first_equal, decoded_equal, decoded = 0.0, 0, 0, 0, 0
    for index, (ref_logits, ref_first, ref_decoded) in zip(batches, reference):
        got_logits, got_state = eng.backend.prefill(eng.pre.collate([prepared[i].encoded for i in index]))
        worst = max(worst, float((ref_logits - got_logits).abs().max()))
        if worst > stop_above:
            break
        got_first = got_logits.argmax(-1).tolist()
        rows += len(index)
        first_equal += sum(a == b for a, b in zip(ref_first, got_first))
        if ref_decoded:
            todo = list(ref_decoded)
            got = eng.backend.decode(got_state, todo, [ref_first[i] for i in todo], eng.family.scoring.max_new_tokens, eng.stop_ids)
            decoded += len(todo)
            decoded_equal += sum(ref_decoded[i] == g for i, g in zip(todo, got))
        del got_state
    return {"batches": len(batches), "rows": rows, "max_abs_delta_logit": worst,
            "first_tokens_equal": first_equal, "decoded_rows": decoded, "decoded_equal": decoded_equal}
