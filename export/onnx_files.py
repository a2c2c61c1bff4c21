"""ONNX files on disk: weights moved to external data by streaming.

``externalize`` keeps memory at one tensor: the graph is loaded without its weights, every
initializer's bytes (inline or in the legacy exporter's one-file-per-tensor external data) are
copied into ``<component>_data`` and the small graph is re-saved. This replaces optimum's
consolidation, which reloads the whole model into memory (a second copy of the weights).
Quantization of the components: export/onnx_groups.py.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

_INLINE_LIMIT = 1024  # bytes: smaller tensors (scalars, norms' shapes) stay in the graph
_COPY_CHUNK = 64 * 1024 * 1024


def data_name(onnx_file: Path) -> str:
    return onnx_file.name + "_data"


@contextlib.contextmanager
def streaming_external_data():
    """Within: optimum's export_pytorch leaves a >2 GB export's per-tensor files for ``externalize``."""
    from optimum.exporters.onnx import convert

    original = convert.check_model_uses_external_data
    convert.check_model_uses_external_data = lambda model: False
    try:
        yield
    finally:
        convert.check_model_uses_external_data = original


def externalize(path: Path) -> None:
    """Move every initializer of ``path`` into ``<name>_data`` next to it, one tensor at a time."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    target = path.parent / data_name(path)
    partial = target.with_name(target.name + ".partial")
    sources: set[Path] = set()
    offset = 0
    with open(partial, "wb") as out:
        for tensor in model.graph.initializer:
            length = _write_tensor(tensor, path.parent, out, sources)
            if length is None:
                continue
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", target.name), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += length
    for source in sources:
        if source != target:
            source.unlink(missing_ok=True)
    partial.replace(target)
    onnx.save(model, str(path))


def _write_tensor(tensor, directory: Path, out, sources: set[Path]) -> int | None:
    import onnx

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        info = {e.key: e.value for e in tensor.external_data}
        source = directory / info["location"]
        sources.add(source)
        start = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else source.stat().st_size - start
        with open(source, "rb") as f:
            f.seek(start)
            left = length
            while left:
                chunk = f.read(min(left, _COPY_CHUNK))
                out.write(chunk)
                left -= len(chunk)
        return length
    if len(tensor.raw_data) < _INLINE_LIMIT:
        return None
    out.write(tensor.raw_data)
    length = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    return length
