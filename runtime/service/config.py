"""Server configuration: flags > environment (GUARDEDGE_*) > TOML file > defaults, validated once.

    config = load_config(flags={"port": 50051}, env=os.environ, file=Path("guardedge.toml"))

Every setting has one name used everywhere: the TOML key, the flag (``--max-batch-size``) and the
environment variable (``GUARDEDGE_MAX_BATCH_SIZE``). One has no flag on purpose: ``tokens``
(a secret on a command line is visible to every user of the machine; use ``token_file`` or
``GUARDEDGE_TOKENS``). Lists (``models``, ``tokens``) are comma-separated in the environment.
Errors name the setting and where its value came from, so the fix is obvious.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "GUARDEDGE_"


class ConfigError(ValueError):
    """A setting is missing, malformed or inconsistent; the message says which and how to fix it."""


@dataclass(frozen=True)
class ServerConfig:
    models: tuple[str, ...] = ("demo",)  # "demo" or local directories; the first is the default
    host: str = "127.0.0.1"  # loopback unless you mean it
    port: int = 50051  # 0: any free port (see port_file)
    port_file: str = ""  # write the bound port here once listening
    # Batching (see docs/service.md): a batch starts as soon as the engine is free; it waits up to
    # max_queue_delay_ms for more requests only if fewer than max_batch_size are queued.
    max_batch_size: int = 8
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 64  # admitted and not yet running; more are refused at once
    # Rows x longest prompt per batch. Batched attention materialises rows x length^2 masks, so
    # this bounds a batch's extra memory to about 4.4 x max_batch_tokens^2 bytes (290 MB at
    # 8192); a longer prompt runs alone, where memory grows linearly. 0: no budget.
    max_batch_tokens: int = 8192
    preprocess_workers: int = 2  # shared by the models, each in turn (runtime/service/workers.py)
    # Per model: bytes of images admitted and not yet encoded, by their headers (runtime/service/admission.py);
    # a request whose image does not fit is refused at once. One image larger than this alone is admitted.
    max_decoded_bytes: int = 512 * 1024 * 1024
    # Limits.
    max_message_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 36_000_000
    max_text_tokens: int = 0  # largest prompt in tokens; 0: what the model accepts (its context minus the answer)
    # Model.
    device: str = "auto"
    dtype: str = "auto"
    threshold: float = -1.0  # < 0: the guard's greedy answer decides
    threads: int = 0  # torch/ONNX Runtime threads; 0: the CPU quota (runtime/threads.py)
    # Prompt prefixes (the policy) whose KV cache each PyTorch model keeps for reuse, where its
    # architecture allows it (runtime/backends/prefix_cache.py: Llama 4); 0: none.
    prefix_cache: int = 4
    # Security.
    token_file: str = ""  # one bearer token per line; GUARDEDGE_TOKENS (comma-separated) also works
    tokens: tuple[str, ...] = ()
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""  # set: mutual TLS, clients must present a certificate signed by it
    allow_insecure: bool = False  # listen beyond loopback with neither TLS nor tokens (refused otherwise)
    # Operations.
    grace_seconds: float = 30.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464  # 0: any free port; -1: no metrics endpoint
    # The HTTP API (/v1/moderations, /v1/classify, /v1/safety/run-shield; runtime/service/http_api.py) on
    # ``host``, with the gRPC port's TLS and tokens. -1: off; 0: any free port.
    http_port: int = -1
    log_format: str = "json"  # json | text
    log_level: str = "info"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.tokens)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert)


SETTINGS = {f.name: f for f in fields(ServerConfig)}


def load_config(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    file: str | Path | None = None,
) -> ServerConfig:
    """Merge the sources (flags win) and validate; raise :class:`ConfigError` naming what to fix."""
    values: dict[str, tuple[object, str]] = {}  # name -> (value, where it was set)
    if file:
        values.update(_from_file(Path(file)))
    values.update(_from_env(env or {}))
    values.update({k: (v, f"--{k.replace('_', '-')}") for k, v in (flags or {}).items() if v is not None})
    # Every problem is reported at once: a value of the wrong type keeps its default, so the other
    # rules are still checked; only an unreadable or unknown-keyed file stops at once.
    problems: list[str] = []
    converted: dict[str, Any] = {}  # each setting's value, of its own type
    for name, (value, source) in values.items():
        try:
            converted[name] = _convert(name, value, source)
        except ConfigError as exc:
            problems.append(str(exc))
    if "tokens" in converted and not converted["tokens"]:
        # GUARDEDGE_TOKENS="," used to start with auth silently off: a typo must not open the door.
        problems.append(f"{values['tokens'][1]}={values['tokens'][0]!r}: tokens are configured but none is given; "
                        "give at least one token, or unset it to run without tokens")
    config = ServerConfig(**converted)
    try:
        config = dataclasses.replace(config, tokens=config.tokens + _read_tokens(config.token_file))
    except ConfigError as exc:
        problems.append(str(exc))
    _validate(config, problems)
    return config


def _from_file(path: Path) -> dict[str, tuple[object, str]]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    return {k: (v, f"{path}:{k}") for k, v in data.items()}


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[object, str]]:
    out: dict[str, tuple[object, str]] = {}
    for name in SETTINGS:
        key = ENV_PREFIX + name.upper()
        if key in env and env[key] != "":
            out[name] = (env[key], key)
    return out


def _convert(name: str, value: Any, source: str) -> object:
    """Coerce strings (environment) and TOML values (any type: checked here) to the setting's type."""
    if name not in SETTINGS:
        raise ConfigError(f"{source}: unknown setting {name!r}")
    spec = SETTINGS[name]  # every setting has a default or a default factory
    default = spec.default_factory() if callable(spec.default_factory) else spec.default
    try:
        if isinstance(default, bool):
            return _bool(value)
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        kind = {tuple: "list of strings", bool: "boolean (true/false)"}.get(type(default), type(default).__name__)
        raise ConfigError(f"{source}={value!r}: {name} must be {'an' if kind == 'int' else 'a'} {kind}") from None


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ValueError


def _read_tokens(path: str) -> tuple[str, ...]:
    if not path:
        return ()
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"token_file {path}: cannot read it ({exc.strerror})") from None
    tokens = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not tokens:
        raise ConfigError(f"token_file {path} has no tokens (one per line; '#' starts a comment)")
    return tokens


def model_name(spec: str) -> str:
    """The name a model is served under: 'demo', or its directory's name."""
    return "demo" if spec == "demo" else Path(spec).expanduser().resolve().name


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def _validate(c: ServerConfig, earlier: list[str] | None = None) -> None:
    problems = list(earlier or [])
    if not c.models:
        problems.append("models: give at least one model ('demo' or a local directory)")
    names = [model_name(m) for m in c.models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"models: several models would be served as {duplicates}; names come from directory names, so give each a distinct directory name")
    if not 0 <= c.port <= 65535:
        problems.append(f"port: {c.port} is not a TCP port (0-65535; 0 picks a free one)")
    if not -1 <= c.http_port <= 65535:
        problems.append(f"http_port: {c.http_port} is not a TCP port (0 picks a free one, -1 turns the HTTP API off)")
    if c.http_port > 0 and (c.http_port == c.port or (c.http_port == c.metrics_port and c.metrics_host == c.host)):
        problems.append(f"http_port: {c.http_port} is also the gRPC or metrics port; give the HTTP API its own port")
    if not -1 <= c.metrics_port <= 65535:
        problems.append(f"metrics_port: {c.metrics_port} is not a TCP port (0 picks a free one, -1 turns metrics off)")
    for name in ("max_batch_size", "max_queue_size", "preprocess_workers", "max_image_bytes", "max_image_pixels", "max_decoded_bytes"):
        if getattr(c, name) < 1:
            problems.append(f"{name}: must be at least 1, got {getattr(c, name)}")
    if c.max_message_bytes < 1024:
        problems.append(f"max_message_bytes: {c.max_message_bytes} is too small for any request (at least 1024)")
    if c.max_image_bytes > c.max_message_bytes:
        problems.append(f"max_image_bytes ({c.max_image_bytes}) exceeds max_message_bytes ({c.max_message_bytes}); an image that size could never arrive")
    if c.threads < 0:
        problems.append(f"threads: {c.threads} is negative (0 follows the CPU quota)")
    if c.max_queue_delay_ms < 0 or c.grace_seconds < 0 or c.max_text_tokens < 0 or c.max_batch_tokens < 0 or c.prefix_cache < 0:
        problems.append("max_queue_delay_ms, grace_seconds, max_text_tokens, max_batch_tokens and prefix_cache must not be negative")
    from guardedge.runtime.models import aliases  # the demo guards guardedge builds itself

    for spec in c.models:
        if spec not in aliases() and not Path(spec).expanduser().is_dir():
            problems.append(f"models: {spec} is not a directory (give {' or '.join(map(repr, aliases()))} or a local model directory)")
    if not (is_loopback(c.host) or c.tls_enabled or c.tokens or c.allow_insecure):
        problems.append(f"host: {c.host} is reachable from other machines, and neither TLS (tls_cert/tls_key) nor tokens "
                        "(token_file) is set: anyone who can reach it could use it. Configure one, or set "
                        "allow_insecure (--allow-insecure) if the network itself is trusted")
    if c.threshold > 1:
        problems.append(f"threshold: {c.threshold} is above 1 (use 0..1, or a negative value for the greedy answer)")
    if c.log_format not in ("json", "text"):
        problems.append(f"log_format: {c.log_format!r}; use 'json' or 'text'")
    if c.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append(f"log_level: {c.log_level!r}; use debug, info, warning or error")
    if bool(c.tls_cert) != bool(c.tls_key):
        problems.append("tls_cert and tls_key go together: give both (PEM files) or neither")
    if c.tls_client_ca and not c.tls_cert:
        problems.append("tls_client_ca (mutual TLS) needs tls_cert and tls_key for the server itself")
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(c, name)
        if path and not Path(path).is_file():
            problems.append(f"{name}: {path} does not exist")
    for token in c.tokens:
        if len(token) < 16 or any(ch.isspace() for ch in token):
            problems.append("tokens: each bearer token must be at least 16 characters, without spaces")
            break
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
