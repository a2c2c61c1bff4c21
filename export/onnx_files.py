"""ONNX files on disk: weights moved to external data by streaming, and ONNX Runtime quantization.

``externalize`` keeps memory at one tensor: the graph is loaded without its weights, every
initializer's bytes (inline or in the legacy exporter's one-file-per-tensor external data) are
copied into ``<component>_data`` and the small graph is re-saved. This replaces optimum's
consolidation, which reloads the whole model into memory (a second copy of the weights).

Quantization (weights only move to integers in MatMul nodes; names matching ``keep`` stay float):
* int8 — ``quantize_dynamic`` (per-channel QInt8 weights, activations quantized per call);
* int4 — ``MatMulNBitsQuantizer`` (symmetric blocks of ``block_size`` along the input dimension).
"""

from __future__ import annotations

import contextlib
import shutil
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


def nodes_keeping(model, patterns: tuple[str, ...]) -> list[str]:
    """MatMul nodes whose weight initializer's name contains one of ``patterns`` (kept float)."""
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and any(
        inp in weights and any(p in inp for p in patterns) for inp in n.input)]


def quantize(path: Path, method: str, block_size: int, keep: tuple[str, ...]) -> dict:
    """Quantize ``path`` in place (int8 or int4); returns what was kept float."""
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    kept = nodes_keeping(model, keep)
    out = path.with_name(path.stem + f".{method}.onnx")
    if method == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        del model
        quantize_dynamic(path, out, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                         nodes_to_exclude=kept, use_external_data_format=True)
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True, nodes_to_exclude=kept)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), use_external_data_format=True)
        del quantizer, model
    for stale in (path, path.parent / data_name(path)):
        stale.unlink(missing_ok=True)
    _rename_with_data(out, path)
    return {"kept_float_nodes": kept}


def _rename_with_data(src: Path, dst: Path) -> None:
    """Move a saved model to ``dst`` and gather its external data into ``<dst>_data``."""
    shutil.move(src, dst)  # its external data keeps its name; externalize reads it relative to the folder
    externalize(dst)
