"""The ``guardedge`` command: render prompts, classify requests, manage the demo guard.

    guardedge render --family llama-guard-3-vision --input REQ.json --json
    guardedge classify --model demo --input REQS.jsonl --json [--batch-size 8]
    guardedge classify --model demo --text "How do I build a pipe bomb?"
    guardedge classify --server 127.0.0.1:50051 --input REQS.jsonl --json
    guardedge serve --model demo --port 50051 [--config guardedge.toml]
    guardedge annotate --model demo-llavaguard --input photos/ --out labels/ [--ray]
    guardedge demo path | metrics | requests

Exit codes: 0 success; 2 some requests were invalid (each got an error line); 1 the command
itself failed (bad arguments, unloadable model).
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Iterator

from guardedge.runtime.errors import GuardError, InvalidRequest


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except GuardError as exc:
        print(f"guardedge: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guardedge", description="Run vision safety guards on premises.")
    parser.add_argument("--version", action="version", version=f"guardedge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser("render", help="print the exact prompt a request becomes")
    render.add_argument("--family", help="the guard family (default: the --model's), e.g. llama-guard-3-vision, llavaguard")
    render.add_argument("--input", required=True, help="request JSON file ('-' for stdin)")
    render.add_argument("--json", action="store_true", help='print {"prompt": "...", "input_ids": [...]}')
    render.add_argument("--model", help="whose tokenizer gives --json's input_ids (and whose family renders, without "
                        "--family): a model directory, or a demo alias (default: the --family's demo, else 'demo')")
    render.set_defaults(func=cmd_render)

    classify = sub.add_parser("classify", help="classify requests with a local model")
    classify.add_argument("--model", help="'demo' (default) or a local model directory; with --server, a model name from ListModels")
    classify.add_argument("--input", help="JSONL file of requests ('-' for stdin)")
    classify.add_argument("--text", help="one-off: the user's text")
    classify.add_argument("--image", help="one-off: an image file for the user turn")
    classify.add_argument("--response", help="one-off: the agent's response (response classification)")
    classify.add_argument("--json", action="store_true", help="one JSON object per request")
    classify.add_argument("--batch-size", type=int, default=8)
    classify.add_argument("--threshold", type=float, help="unsafe iff P(unsafe) >= this")
    classify.add_argument("--rationale", action="store_true", help="ask a guard that writes one (LlavaGuard) for its rationale")
    classify.add_argument("--family", help="override the guard family the model implies (in-process only)")
    classify.add_argument("--device", default="auto")
    classify.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    classify.add_argument("--prompt-source", choices=["builtin", "model"],
                          help="render with guardedge's format or the model directory's chat template "
                               "(default: the family's choice; docs/api.md)")
    classify.add_argument("--threads", type=int, help="torch/ONNX Runtime threads (default: $GUARDEDGE_THREADS, else the CPU quota)")
    remote = classify.add_argument_group("through a server (guardedge serve)")
    remote.add_argument("--server", metavar="HOST:PORT", help="classify through this server instead of loading a model")
    remote.add_argument("--timeout", type=float, default=60.0, help="deadline per request, seconds")
    remote.add_argument("--token-file", help="file holding the bearer token (else $GUARDEDGE_TOKEN)")
    remote.add_argument("--tls-ca", help="CA certificate (PEM) that signed the server's certificate; turns TLS on")
    remote.add_argument("--tls-cert", help="client certificate (PEM) for mutual TLS")
    remote.add_argument("--tls-key", help="client key (PEM) for mutual TLS")
    remote.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (the server batches them)")
    classify.set_defaults(func=cmd_classify)

    serve = sub.add_parser("serve", help="run the gRPC server (docs/service.md)")
    serve.add_argument("--config", help="TOML file of settings (flags > GUARDEDGE_* environment > file > defaults)")
    serve.add_argument("--model", dest="models", action="append", help="'demo' or a model directory; repeat to serve several (the first is the default)")
    for name, kind, text in _SERVE_FLAGS:
        if kind is bool:  # a switch: absent leaves the environment's or the file's value
            serve.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_const", const=True, default=None, help=text)
        else:
            serve.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=text)
    serve.set_defaults(func=cmd_serve)

    health = sub.add_parser("health", help="exit 0 if a server's gRPC health check says SERVING (container and exec probes)")
    health.add_argument("--server", default=None, metavar="HOST:PORT", help="default 127.0.0.1:$GUARDEDGE_PORT (50051)")
    health.add_argument("--service", default="guardedge.v1.GuardService", help="health service name ('' is the whole server)")
    health.add_argument("--timeout", type=float, default=3.0)
    health.add_argument("--tls-ca", help="CA certificate (PEM) of the server's certificate; turns TLS on")
    health.add_argument("--tls-cert", help="client certificate (PEM) for mutual TLS")
    health.add_argument("--tls-key", help="client key (PEM) for mutual TLS")
    health.set_defaults(func=cmd_health)

    _annotate_command(sub)

    demo = sub.add_parser("demo", help="the bundled demo guard")
    demo.add_argument("action", choices=["path", "metrics", "requests"])
    demo.add_argument("--n", type=int, default=400, help="held-out examples for 'metrics'")
    demo.set_defaults(func=cmd_demo)
    _plugin_commands(sub)
    return parser


def _annotate_command(sub) -> None:
    from guardedge.runtime.annotate import command  # light: the engine, pyarrow and Ray load when it runs

    parser = sub.add_parser("annotate", help="annotate a dataset (folder, JSONL, Parquet, CSV, WebDataset), resumably",
                            description="Annotate every item of a dataset into a Parquet (or JSONL) output; docs/annotate.md.")
    command.configure_parser(parser)
    parser.set_defaults(func=command.main)


def _version() -> str:
    from guardedge.runtime import installed_version

    return installed_version()


def _read_bytes(path: str, what: str) -> bytes:
    """A file's bytes, or exit with one line saying why it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"guardedge: error: {what} {path}: {exc.strerror or exc}") from None


def add_lazy_commands(subparsers, name: str, text: str, commands: dict[str, tuple[str, str]]) -> None:
    """``guardedge NAME CMD``: one parser per CMD from ``commands`` (CMD -> (module, help)).

    Each module exposes ``configure_parser(parser)`` and ``main(args) -> int`` and keeps heavy
    imports inside functions; one whose imports fail (a missing optional extra) still appears,
    and says why when run, so it never breaks the other commands.
    """
    group = subparsers.add_parser(name, help=text)
    sub = group.add_subparsers(dest=f"{name}_command", required=True)
    for command, (module_name, help_text) in commands.items():
        parser = sub.add_parser(command, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            parser.set_defaults(func=lambda args, exc=exc, where=f"{name} {command}": _unavailable(where, exc))
            continue
        module.configure_parser(parser)
        parser.set_defaults(func=module.main)


def _unavailable(where: str, exc: ImportError) -> int:
    print(f"guardedge {where}: this command cannot run here ({exc}); "
          "install the extras: pip install 'guardedge[cpu]' (or [gpu]), and '[bench]' for plots", file=sys.stderr)
    return 1


def _plugin_commands(sub) -> None:
    """Commands other packages add (``guardedge export`` from guardedge.export): the runtime
    finds them through the ``guardedge.commands`` entry point instead of importing them."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="guardedge.commands"):
        entry.load()(sub)


_SERVE_FLAGS = [
    ("host", str, "address to bind (default 127.0.0.1)"),
    ("port", int, "port (default 50051; 0 picks a free one)"),
    ("port_file", str, "write the bound port to this file once listening"),
    ("max_batch_size", int, "largest engine batch (default 8)"),
    ("max_queue_delay_ms", float, "wait up to this long for a partial batch to fill (default 0)"),
    ("max_queue_size", int, "requests that may wait; more get RESOURCE_EXHAUSTED (default 64)"),
    ("max_batch_tokens", int, "rows x longest prompt per batch; longer prompts run alone (default 8192; 0 no budget)"),
    ("max_message_bytes", int, "largest gRPC message (default 32 MiB)"),
    ("max_image_bytes", int, "largest encoded image (default 20 MiB)"),
    ("max_image_pixels", int, "largest image in pixels (default 36e6)"),
    ("max_text_tokens", int, "largest prompt in tokens (default 0: what the model accepts)"),
    ("preprocess_workers", int, "threads decoding images and tokenizing, shared by the models in turn (default 2)"),
    ("max_decoded_bytes", int, "per model: decoded image bytes admitted and not yet encoded (default 512 MiB)"),
    ("device", str, "auto, cpu, cuda, cuda:1, ..."),
    ("dtype", str, "auto, float32, bfloat16, float16"),
    ("threshold", float, "unsafe iff P(unsafe) >= this, for requests that set none"),
    ("threads", int, "torch/ONNX Runtime threads (default 0: the container's CPU quota)"),
    ("prefix_cache", int, "policy prefixes whose KV cache a model keeps for reuse, Llama 4 (default 4; 0 off)"),
    ("token_file", str, "bearer tokens, one per line (also $GUARDEDGE_TOKENS, comma-separated)"),
    ("tls_cert", str, "server certificate (PEM)"),
    ("tls_key", str, "server key (PEM)"),
    ("tls_client_ca", str, "CA for client certificates: mutual TLS"),
    ("allow_insecure", bool, "listen beyond loopback without TLS or tokens (refused otherwise)"),
    ("grace_seconds", float, "on SIGTERM, how long calls in flight may take to finish (default 30)"),
    ("metrics_host", str, "address for /metrics (default 127.0.0.1)"),
    ("metrics_port", int, "Prometheus port (default 9464; 0 any free; -1 off)"),
    ("http_port", int, "HTTP API port on --host: /v1/moderations (OpenAI), /v1/classify, /v1/safety/run-shield (default -1: off; 0 any free)"),
    ("log_format", str, "json (default) or text"),
    ("log_level", str, "debug, info (default), warning, error"),
]


def cmd_serve(args) -> int:
    import asyncio
    import os

    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # before gRPC loads: its C core would write non-JSON lines
    from guardedge.runtime.service import logs
    from guardedge.runtime.service.config import ConfigError, load_config
    from guardedge.runtime.service.server import serve

    flags = {name: getattr(args, name) for name, _, _ in _SERVE_FLAGS}
    flags["models"] = tuple(args.models) if args.models else None
    try:
        config = load_config(flags, os.environ, args.config)
    except ConfigError as exc:
        print(f"guardedge serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_format, config.log_level)
    from guardedge.runtime import threads

    threads.apply(config.threads)
    try:
        code = asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"guardedge serve: {exc}", file=sys.stderr)
        return 2
    _exit_if_threads_busy(code)
    return code


def _exit_if_threads_busy(code: int) -> None:
    """After the drain, exit now even if a model batch or an image decode is still running on a
    thread: Python would wait for it at exit, past the grace period (threads cannot be interrupted)."""
    import os
    import threading
    import time

    end = time.monotonic() + 1.0  # idle pool threads exit within moments of their pool's shutdown
    for thread in [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]:
        thread.join(max(0.0, end - time.monotonic()))
    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if busy:
        logging.getLogger("guardedge.server").warning("exiting with work still running", extra={"fields": {"threads": len(busy)}})
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def cmd_health(args) -> int:
    """One line: the health status; exit 0 only for SERVING (what a HEALTHCHECK or exec probe needs)."""
    import os

    import grpc

    from guardedge.runtime.service.client import GuardClient, Tls

    server = args.server or f"127.0.0.1:{os.environ.get('GUARDEDGE_PORT') or 50051}"
    tls = Tls(args.tls_ca or "", args.tls_cert or "", args.tls_key or "") if (args.tls_ca or args.tls_cert) else None
    with GuardClient(server, tls=tls, timeout=args.timeout, attempts=1) as client:
        try:
            status = client.health(args.service, timeout=args.timeout)
        except grpc.RpcError as error:
            status = f"{error.code().name}: {error.details()}"
    print(f"{server} {args.service or '(server)'}: {status}")
    return 0 if status == "SERVING" else 1


def _read_json(path: str) -> object:
    """One JSON document from a file or stdin, or exit with one line (a JSONL file gets a hint)."""
    text = sys.stdin.read() if path == "-" else _read_bytes(path, "cannot read --input").decode("utf-8", "replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ("; render takes one request, and this looks like JSONL (one request per line): "
                "give one line of it, e.g. head -n1 FILE | guardedge render --input -") if exc.msg == "Extra data" else ""
        raise SystemExit(f"guardedge: error: --input {path} is not a JSON request ({exc.msg} at line {exc.lineno} column {exc.colno}){hint}") from None


def cmd_render(args) -> int:
    from guardedge.runtime.families import choose_family, for_model, get_family
    from guardedge.runtime.families.base import key_renderer
    from guardedge.runtime.models import resolve_model
    from guardedge.runtime.requests import parse_request

    if args.family:
        family = get_family(args.family)
        # A named model prompts in its own architecture's frame (for_model); the family's demo in the default one.
        family = for_model(family, resolve_model(args.model, progress=False).config) if args.model else family
        model = args.model or _family_demo(family.name)
    else:
        model = args.model or "demo"
        family = choose_family(resolve_model(model, progress=False))
    try:
        request = parse_request(_read_json(args.input), family.default_categories(), load_images=False)
        family.check(request)
    except InvalidRequest as exc:
        print(json.dumps(_error_json(exc)) if args.json else f"guardedge: invalid request: {exc}", file=sys.stderr)
        return 2
    keys = family.prompt_keys(request)  # ShieldGemma 2: one prompt per policy; most families one ("")
    if not args.json:
        for key in keys:
            if len(keys) > 1:
                print(f"=== prompt for policy {key} ===")
            print(family.render(request, key=key) if key else family.render(request))
        return 0
    encoder = _prompt_encoder(model)
    prompts = [(key, encoder.encode(key_renderer(family, request, key), request)) for key in keys]
    out: dict = {"prompt": prompts[0][1].text, "input_ids": prompts[0][1].input_ids}
    if len(prompts) > 1:  # every prompt, by key; "prompt"/"input_ids" stay the first's
        out["prompts"] = [{"key": key, "prompt": t.text, "input_ids": t.input_ids} for key, t in prompts]
    print(json.dumps(out))
    return 0


def _family_demo(family: str) -> str:
    """The demo whose tokenizer gives a family's ``render --json`` ids (the family's own demo)."""
    from guardedge.runtime.demos import demo_for_family
    from guardedge.runtime.errors import ModelLoadError

    demo = demo_for_family(family)
    if demo is None:
        raise ModelLoadError(f"the {family} family has no demo whose tokenizer render --json could use; name a model with --model")
    return demo.alias


def _prompt_encoder(model: str):
    """The encoder the engine uses for ``model``'s prompts (its own tokenizer, nothing else loaded)."""
    from transformers import AutoTokenizer

    from guardedge.runtime.models import resolve_model as resolve
    from guardedge.runtime.prompt_tokens import PromptEncoder

    path = resolve(model, progress=False).path
    return PromptEncoder(AutoTokenizer.from_pretrained(str(path), local_files_only=True, fix_mistral_regex=False))


def cmd_classify(args) -> int:
    from guardedge.runtime.engine import EngineOptions, load_engine

    if args.batch_size < 1:
        raise SystemExit("guardedge: --batch-size must be at least 1")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise SystemExit("guardedge: --threshold must be between 0 and 1")
    items, base_dir = _classify_inputs(args)
    if args.rationale:  # a request's own "rationale" wins
        items = [(line, {"rationale": True, **obj} if isinstance(obj, dict) else obj) for line, obj in items]
    if args.server:
        return _classify_remote(args, items, base_dir)
    from guardedge.runtime import threads

    threads.apply(args.threads)
    options = EngineOptions(device=args.device, dtype=args.dtype, threshold=args.threshold,
                            max_batch_size=args.batch_size, prompt_source=args.prompt_source, family=args.family)
    engine = load_engine(args.model or "demo", options)
    failed = False
    for line, result in _classify_stream(engine, items, base_dir, args.batch_size):
        failed |= "error" in result and result.get("verdict") is None
        result["model"] = engine.model_dir.name
        print(json.dumps(result) if args.json else _human(line, result), flush=True)
    return 2 if failed else 0


def _classify_remote(args, items, base_dir) -> int:
    """The in-process classify, through a server: same inputs, same JSON lines, same exit codes."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from guardedge.runtime.service.client import GuardClient, GuardRpcError, Tls, response_to_json

    token = _first_token(Path(args.token_file)) if args.token_file else os.environ.get("GUARDEDGE_TOKEN")
    tls = Tls(args.tls_ca or "", args.tls_cert or "", args.tls_key or "") if (args.tls_ca or args.tls_cert) else None

    def one(item) -> tuple[int, dict]:
        line, obj = item
        try:
            if isinstance(obj, InvalidRequest):
                raise obj
            if isinstance(obj, dict):
                defaults = {"threshold": args.threshold, "model": args.model}
                obj = {**{k: v for k, v in defaults.items() if v is not None}, **obj}
            return line, response_to_json(client.classify(obj, timeout=args.timeout, base_dir=base_dir))
        except InvalidRequest as exc:
            return line, _error_row(_error_json(exc), line, obj)
        except GuardRpcError as exc:
            return line, _error_row(exc.to_json(), line, obj)

    failed = False
    with GuardClient(args.server, token=token, tls=tls, timeout=args.timeout) as client:
        with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
            for line, result in pool.map(one, items):
                failed |= result.get("verdict") is None
                print(json.dumps(result) if args.json else _human(line, result), flush=True)
    return 2 if failed else 0


def _first_token(path: Path) -> str:
    """The first token of a token file (the server's format: one per line, '#' comments)."""
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    raise SystemExit(f"guardedge: {path} holds no token")


def _classify_inputs(args) -> tuple[list[tuple[int, object]], Path | None]:
    if args.input and (args.text or args.image or args.response):
        raise SystemExit("guardedge: use either --input or --text/--image/--response")
    if args.input:
        return list(_jsonl(args.input)), (None if args.input == "-" else Path(args.input).resolve().parent)
    if not (args.text or args.image):
        raise SystemExit("guardedge: give --input FILE, or --text and/or --image")
    content: list[dict] = []
    if args.image:
        content.append({"type": "image", "data": base64.b64encode(_read_bytes(args.image, "cannot read --image")).decode()})
    if args.text:
        content.append({"type": "text", "text": args.text})
    messages = [{"role": "user", "content": content}]
    if args.response:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": args.response}]})
    return [(1, {"messages": messages})], None


def _jsonl(path: str) -> Iterator[tuple[int, object]]:
    try:
        lines = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"guardedge: error: cannot read --input {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, InvalidRequest([_violation("line", f"not valid JSON ({exc.msg} at column {exc.colno})")])


def _violation(field: str, description: str):
    from guardedge.runtime.errors import FieldViolation

    return FieldViolation(field, description)


def _classify_stream(engine, items, base_dir, batch_size) -> Iterator[tuple[int, dict]]:
    """Classify in batches, keeping input order; invalid requests yield error objects in place."""
    pending: list[tuple[int, object]] = []
    for line, obj in items:
        try:
            if isinstance(obj, InvalidRequest):
                raise obj
            pending.append((line, engine.prepare(engine.parse(obj, base_dir))))
        except InvalidRequest as exc:
            yield from _flush(engine, pending)
            pending = []
            yield line, _error_row(_error_json(exc), line, obj)
            continue
        if len(pending) == batch_size:
            yield from _flush(engine, pending)
            pending = []
    yield from _flush(engine, pending)


def _flush(engine, pending) -> Iterator[tuple[int, dict]]:
    lines = iter([line for line, _ in pending])
    for batch in engine.batches([p for _, p in pending]):  # within the engine's padded-token budget
        for verdict in engine.run(batch):
            yield next(lines), verdict.to_json()


def _error_row(error: dict, line: int, obj: object) -> dict:
    """An input line's error result: its line number, and its ``request_id`` when it gave a usable one
    (a caller matching results by id finds its refused requests too)."""
    request_id = obj.get("request_id") if isinstance(obj, dict) else None
    return {**error, "line": line, **({"request_id": request_id} if isinstance(request_id, str) else {})}


def _error_json(exc: InvalidRequest) -> dict:
    return {
        "verdict": None,
        "error": {
            "code": "INVALID_ARGUMENT",
            "message": str(exc),
            "violations": [{"field": v.field, "description": v.description} for v in exc.violations],
        },
    }


def _human(line: int, result: dict) -> str:
    if result.get("verdict") is None:
        return f"#{line}  ERROR  {result['error'].get('code', '')} {result['error']['message']}"
    cats = ",".join(result["categories"])
    extra = f"  ({result['error']})" if result.get("error") else ""
    scores = sorted(result.get("category_scores", {}).items(), key=lambda kv: -kv[1])[:3]
    top = "  top " + " ".join(f"{code}={score:.3f}" for code, score in scores) if scores else ""
    return (f"#{line}  {result['verdict']:<11} {cats:<12} P(unsafe)={result['unsafe_probability']:.3f}  "
            f"{result['timings']['total_s'] * 1000:.0f} ms{top}{extra}")


def cmd_demo(args) -> int:
    if args.action == "path":
        from guardedge.runtime.demo.build import ensure_demo

        print(ensure_demo())
    elif args.action == "metrics":
        from guardedge.runtime.demo.build import ensure_demo, measured_metrics
        from guardedge.runtime.demo.train import EVAL_SIZE, evaluate

        # The default size is cached per engine and data (measured_metrics); other sizes run afresh.
        metrics = measured_metrics() if args.n == EVAL_SIZE else evaluate(ensure_demo(), n=args.n)
        flat = {**{k: v for k, v in metrics.items() if k != "natural"},
                **{f"natural.{k}": v for k, v in metrics.get("natural", {}).items()}}
        width = max(map(len, flat))
        for key, value in flat.items():
            print(f"{key:<{width}}  {value}")
        print(json.dumps(metrics))
    else:
        from guardedge.runtime.demo.samples import write_samples

        write_samples(sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
