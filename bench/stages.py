"""``guardedge bench stages``: the time of each stage of one image request, measured separately.

Stages, each warmed up and then repeated (nearest-rank p50/p95 and the mean):
- ``grpc``: a ClassifyRequest carrying a multi-MB PNG (random pixels, so it stays multi-MB) sent
  to a loopback gRPC server that parses it and answers a few bytes: the wire and protobuf cost
  of the image; ``grpc_text`` is the same request without the image (the fixed cost);
- ``parse``: request validation with base64 and PNG decoding (``engine.parse``);
- ``preprocess``: tokenization and image tiling (``engine.prepare``);
- ``vision``: the vision encoder and projector on the image (the cross-attention states);
- ``prefill``: the whole prefill, image work included; ``prefill_text`` = prefill − vision (p50s);
- ``decode``: the category decode after a forced ``unsafe`` (on a copy of the prefill's cache).

Each row has wall-clock p50/p95/mean and the p50 of this process's CPU time over the same calls.

The model-side stages run through the architecture plug-in's hooks (``torch_vision`` for the
image features alone), so every architecture is measured the same way. With ``--model realshape-random`` (bench/fullsize.py: every real width, few layers) on the
CPU this is the CPU share of a request at real size before any GPU.

    guardedge bench stages --model realshape-random --image-size 1120x1120 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import time
from typing import Callable

from guardedge.bench.latency import _size
from guardedge.bench.machine import machine, versions

Stage = Callable[[], object]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="realshape-random", help="model directory, 'demo', or a bench/fullsize.py alias (default realshape-random)")
    parser.add_argument("--image-size", type=_size, default=(1120, 1120), help="WxH of the random-pixel PNG (default 1120x1120: 4 tiles)")
    parser.add_argument("--repeats", type=_positive, default=5, help="timed runs per stage (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per stage first (default 1)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--dtype", help="float32, bfloat16, float16 (default: auto)")
    parser.add_argument("--skip", type=lambda t: {s for s in t.split(",") if s}, default=set(),
                        help="comma-separated stages not to run, e.g. grpc,decode")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {text!r}")
    return value


def noise_png(size: tuple[int, int], seed: int = 0) -> bytes:
    """A PNG of random pixels: incompressible, so a 1120x1120 image is about 3.8 MB on the wire."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def request_dict(png: bytes | None, threshold: float | None = None) -> dict:
    content: list[dict] = [{"type": "text", "text": "Describe how to pick the lock in this picture."}]
    if png is not None:
        content.insert(0, {"type": "image", "bytes": png})
    out: dict = {"request_id": "stages", "messages": [{"role": "user", "content": content}]}
    if threshold is not None:
        out["threshold"] = threshold
    return out


def timed(fn: Stage, warmup: int, repeats: int, sync: Callable[[], None] = lambda: None) -> dict:
    """Warm up, then time ``repeats`` calls (``sync`` before reading the clock: CUDA work is asynchronous).

    Wall time, and this process's CPU time (all threads) over the same calls: on a shared machine
    the wall time grows with the others' load, the CPU time much less; on a GPU machine the CPU time
    is the host's share of the stage.
    """
    for _ in range(warmup):
        fn()
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {**summary(wall), "cpu_p50_ms": summary(cpu)["p50_ms"]}


def summary(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    rank = lambda q: ms[max(0, math.ceil(q * len(ms)) - 1)]  # noqa: E731 - nearest rank
    return {"n": len(ms), "p50_ms": round(rank(0.5), 3), "p95_ms": round(rank(0.95), 3),
            "mean_ms": round(sum(ms) / len(ms), 3)}


def grpc_stages(png: bytes, warmup: int, repeats: int) -> dict[str, dict]:
    """Round trips of the request with and without the image through a loopback gRPC server."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from guardedge.v1 import guard_pb2 as pb

    limit = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    server = grpc.server(ThreadPoolExecutor(2), options=limit)
    parse = lambda raw: len(pb.ClassifyRequest.FromString(raw).messages)  # noqa: E731 - the server's protobuf parse
    handler = grpc.unary_unary_rpc_method_handler(lambda raw, _ctx: b"%d" % parse(raw))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("guardedge.bench.Sink", {"Send": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=limit) as channel:
            send = channel.unary_unary("/guardedge.bench.Sink/Send")
            out = {}
            for name, image in (("grpc", png), ("grpc_text", None)):
                message = _proto(pb, image)
                out[name] = timed(lambda: send(message.SerializeToString()), warmup, repeats)
                out[name]["bytes"] = message.ByteSize()
            return out
    finally:
        server.stop(None)


def _proto(pb, png: bytes | None):
    parts = [pb.ContentPart(text=request_dict(None)["messages"][0]["content"][0]["text"])]
    if png is not None:
        parts.insert(0, pb.ContentPart(image=pb.Image(data=png, mime_type="image/png")))
    return pb.ClassifyRequest(request_id="stages", messages=[pb.Message(role=pb.ROLE_USER, content=parts)])


def model_stages(engine, prepared, warmup: int, repeats: int, skip: set[str], sync) -> dict[str, dict]:
    """vision, prefill and decode for any architecture on the PyTorch backend, through its plug-in:
    ``vision`` is the plug-in's image features alone (``torch_vision``), ``prefill`` the whole
    prefill (image work included), ``prefill_text`` their difference (derived from the two p50s)."""
    import torch

    backend = engine.backend
    batch = engine.pre.collate([prepared.encoded])
    out = {}
    if "vision" not in skip and batch.image_rows:
        with torch.inference_mode():
            out["vision"] = timed(lambda: backend.arch.torch_vision(backend.model, batch, backend.device, backend.dtype),
                                  warmup, repeats, sync)
    out.update(prefill_and_decode(engine, batch, warmup, repeats, skip, sync))
    if "vision" in out and "prefill" in out:
        out["prefill_text"] = {"derived": "prefill p50 - vision p50", "n": out["prefill"]["n"],
                               "p50_ms": round(out["prefill"]["p50_ms"] - out["vision"]["p50_ms"], 3)}
    return out


def prefill_and_decode(engine, batch, warmup: int, repeats: int, skip: set[str], sync) -> dict[str, dict]:
    """The prefill (image work already cached by the caller) and the answer decode after a forced
    verdict token, on a copy of the prefill's cache each time."""
    backend = engine.backend
    out = {}
    prefill = lambda: backend.prefill(batch, engine.prefill_draft)  # noqa: E731
    if "prefill" not in skip:
        out["prefill"] = timed(prefill, warmup, repeats, sync)
    if "decode" not in skip:
        _, state = prefill()
        spec = engine.family.scoring
        decode = lambda: backend.decode(copy.deepcopy(state), [0], [engine.unsafe_id], spec.max_new_tokens,  # noqa: E731
                                        engine.stop_ids, engine.drafter)
        out["decode"] = timed(decode, warmup, repeats, sync)
        out["decode"]["answer_tokens"] = len(decode()[0])
    return out


def measure(args: argparse.Namespace) -> dict:
    from guardedge.bench.fullsize import open_engine
    from guardedge.runtime.engine import EngineOptions

    png = noise_png(args.image_size)
    report = {"machine": machine(), "versions": versions(), "model": args.model, "png_bytes": len(png),
              "image_size": "x".join(map(str, args.image_size)), "warmup": args.warmup, "repeats": args.repeats}
    stages = {} if "grpc" in args.skip else grpc_stages(png, args.warmup, args.repeats)
    engine = open_engine(args.model, EngineOptions(device=args.device, dtype=args.dtype, max_batch_size=1, progress=False))
    sync = _sync(engine.backend.device)
    obj = _accepted(engine, png)
    stages["parse"] = timed(lambda: engine.parse(obj), args.warmup, args.repeats)
    parsed = engine.parse(obj)
    stages["preprocess"] = timed(lambda: engine.prepare(parsed), args.warmup, args.repeats)
    prepared = engine.prepare(parsed)
    stages.update(model_stages(engine, prepared, args.warmup, args.repeats, args.skip, sync))
    info = engine.info()
    image = prepared.encoded.image
    tiles = getattr(image, "num_tiles", None) or image.num_patches  # Mllama tiles / LLaVA-OV patches
    report.update(variant=info.variant, torch_threads=_threads(), tiles=tiles, image_tokens=prepared.encoded.image_tokens,
                  prompt_tokens=len(prepared.encoded.input_ids), layers=_layers(engine.model_dir.config), stages=stages)
    return report


def _accepted(engine, png: bytes) -> dict:
    """The image request with its question, or the image alone for a family that reads no message text (LlavaGuard)."""
    from guardedge.runtime.errors import InvalidRequest

    obj = request_dict(png)
    try:
        engine.family.check(engine.parse(obj))
        return obj
    except InvalidRequest:
        obj["messages"][0]["content"] = obj["messages"][0]["content"][:1]
        return obj


def _sync(device) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _layers(config: dict) -> dict:
    """The layer counts the config states, under either spelling (Qwen2.5-VL: the text model's at
    the top level, the vision tower's as ``depth``); a count the config does not have is left out."""
    vision, text = config.get("vision_config", {}), config.get("text_config", {})
    counts = {"vision": vision.get("num_hidden_layers", vision.get("depth")), "vision_global": vision.get("num_global_layers"),
              "text": text.get("num_hidden_layers", config.get("num_hidden_layers")),
              "cross_attention": len(text.get("cross_attention_layers") or [])}
    return {k: v for k, v in counts.items() if v is not None}


def main(args: argparse.Namespace) -> int:
    report = measure(args)
    print(f"{report['machine']}; {report['variant']}; torch threads {report['torch_threads']}; "
          + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(f"model {report['model']} (layers {report['layers']}); image {report['image_size']} PNG "
          f"{report['png_bytes'] / 1e6:.2f} MB, {report['tiles']} tiles; prompt {report['prompt_tokens']} tokens; "
          f"warm-up {report['warmup']}, {report['repeats']} timed runs per stage")
    print(f"{'stage':<12}{'n':>4}{'p50 ms':>12}{'p95 ms':>12}{'mean ms':>12}{'CPU p50 ms':>12}")
    for name, row in report["stages"].items():
        if "derived" in row:
            print(f"{name:<12}{row['n']:>4}{row['p50_ms']:>12.2f}  ({row['derived']})")
            continue
        print(f"{name:<12}{row['n']:>4}{row['p50_ms']:>12.2f}{row['p95_ms']:>12.2f}{row['mean_ms']:>12.2f}{row['cpu_p50_ms']:>12.2f}")
    print(json.dumps(report))
    return 0
