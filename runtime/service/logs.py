"""Structured logs for the server: one JSON object per line, or plain text for people.

Records carry request ids, status codes and timings through ``extra={"fields": {...}}``. By
policy the server never logs prompt text or image bytes; only sizes and ids.

Every line is one record, whatever a caller sends: values are truncated (a 1 M-character
request_id used to make a 1.66 MB line), and in text mode control characters and newlines are
escaped, so a request_id cannot forge a line or drive the terminal. Libraries' output goes
through the same handler: Python warnings (Pillow's) are captured, transformers' own handler is
removed so its records propagate, and gRPC's C core is kept quiet unless GRPC_VERBOSITY is set.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

MAX_VALUE_CHARS = 1024  # a field or message longer than this is cut
MAX_EXC_CHARS = 8192
_configured = False


def clip(value: object, limit: int = MAX_VALUE_CHARS) -> object:
    """``value`` with any string cut to ``limit`` characters (and the cut marked)."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}...(+{len(value) - limit} chars)"
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [clip(v, limit) for v in value[:32]]
    return clip(str(value), limit)


def escape(text: str) -> str:
    """Control characters (newlines, ESC) as visible escapes: one record, one line, inert."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": clip(record.getMessage()),
        }
        entry.update({str(k)[:64]: clip(v) for k, v in getattr(record, "fields", {}).items()})
        if record.exc_info:
            entry["exc"] = clip(self.formatException(record.exc_info), MAX_EXC_CHARS)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{escape(str(k))}={escape(str(clip(v)))}" for k, v in getattr(record, "fields", {}).items())
        message = escape(str(clip(record.getMessage())))
        line = f"{record.levelname.lower():<7} {record.name}: {message}" + (f"  {fields}" if fields else "")
        if record.exc_info:  # a traceback is the one multi-line record, indented under its line
            trace = str(clip(self.formatException(record.exc_info), MAX_EXC_CHARS))
            line += "\n" + "\n".join("    " + escape(t) for t in trace.splitlines())
        return line


def configure(log_format: str, level: str) -> None:
    """Route the root logger, Python warnings and library loggers to stderr in ``log_format``."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # gRPC's C core writes its own lines to stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    global _configured
    _configured = True
    adopt_library_loggers(load=False)  # importing transformers here would delay listening


def adopt_library_loggers(load: bool = True) -> None:
    """Make loggers that bring their own handler (transformers does) propagate to ours instead.

    The server calls it on the loading thread before a model loads (``load``: import
    transformers' logging first, so its handler is gone before it logs) and again after;
    does nothing unless :func:`configure` ran (an embedding application keeps its own setup).
    """
    if not _configured:
        return
    if load or "transformers.utils.logging" in sys.modules:
        try:  # transformers installs its handler on first use: ask it to propagate instead
            from transformers.utils import logging as hf_logging

            hf_logging.disable_default_handler()
            hf_logging.enable_propagation()
        except ImportError:
            pass
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.handlers and name.split(".")[0] != "guardedge":
            logger.handlers[:] = []
            logger.propagate = True
