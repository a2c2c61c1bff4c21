"""Module groups in an ONNX export, and quantizing some of them: what ``export onnx`` recipes,
``export sensitivity --backend onnx`` and ``--keep auto`` share.

A group (runtime/architectures: ``ModuleGroup.onnx``) names its weights in each component as
``"component:pattern"``; a MatMul belongs to it when its weight initializer's name or the node's
own name contains the pattern (the decoder's weights keep their module paths; the vision
component's folded weights do not, but its node names do).

Methods (weights only move to integers in MatMul nodes):
* ``int8`` — weight-only 8-bit blocks (``MatMulNBits`` bits=8, symmetric, ``block_size``);
* ``int8-dynamic`` — ``quantize_dynamic``: per-channel int8 weights AND int8 activations, scaled per call;
* ``int4`` — weight-only 4-bit blocks (``MatMulNBits`` bits=4).

Head rows: with ``head_rows`` (token ids) a quantized output layer gets a float MatMul for those
rows whose logits overwrite the quantized ones (``ScatterElements`` on the last axis), the ONNX
twin of runtime/backends/head_rows.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

Method = Literal["int8", "int8-dynamic", "int4"]
METHODS: tuple[str, ...] = ("int8", "int8-dynamic", "int4")


def weight_of(node, weights: set[str]) -> str | None:
    return next((i for i in node.input if i in weights), None)


def matching_nodes(model, patterns: Sequence[str]) -> list[str]:
    """MatMul nodes whose weight initializer or node name contains one of ``patterns``."""
    weights = {i.name for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        weight = weight_of(node, weights) if node.op_type == "MatMul" else None
        if weight is not None and any(p in weight or p in node.name for p in patterns):
            out.append(node.name)
    return out


def group_patterns(groups, component: str) -> dict[str, tuple[str, ...]]:
    """group name -> its patterns in ``component`` (groups with none there are left out)."""
    out = {}
    for g in groups:
        patterns = tuple(p.split(":", 1)[1] for p in g.onnx if p.split(":", 1)[0] == component)
        if patterns:
            out[g.name] = patterns
    return out


def quantize(path: Path, method: Method, block_size: int, exclude: Sequence[str] = (), include: Sequence[str] | None = None,
             head_rows: dict | None = None) -> dict:
    """Quantize ``path`` in place: the MatMul nodes named in ``include`` (None: every one with a
    constant weight) except those in ``exclude``. ``head_rows``: ``{"node": the head's MatMul,
    "ids": [...]}`` to keep those output rows float when the head is quantized. Returns what was kept float."""
    import onnx

    from guardedge.export.onnx_files import data_name, externalize

    model = onnx.load(str(path), load_external_data=True)
    weights = {i.name for i in model.graph.initializer}
    candidates = [n.name for n in model.graph.node if n.op_type == "MatMul" and weight_of(n, weights)]
    chosen = [n for n in candidates if (include is None or n in include) and n not in exclude]
    kept = [n for n in candidates if n not in chosen]
    summary = {"kept_float_nodes": kept, "quantized_nodes": len(chosen), "head_rows": 0}
    if not chosen:
        return summary
    rows = _head_rows_before(model, head_rows) if head_rows and head_rows["node"] in chosen else None
    out = path.with_name(path.stem + f".{method}.onnx")
    _quantize_nodes(model, path, out, method, block_size, kept)
    del model
    for stale in (path, path.parent / data_name(path)):
        stale.unlink(missing_ok=True)
    out.rename(path)  # its external data keeps its own name; externalize gathers it into <path>_data
    if rows is not None:
        _add_head_rows(path, rows)
        summary["head_rows"] = len(rows["ids"])
    externalize(path)
    return summary


def _quantize_nodes(model, path: Path, out: Path, method: Method, block_size: int, kept: list[str]) -> None:
    """Every MatMul with a constant weight but those in ``kept`` (both quantizers' ``nodes_to_include``
    ADD nodes to their op-type rule rather than restrict it, so exclusion is the one way to choose)."""
    if method == "int8-dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # MatMulConstBOnly is quantize_dynamic's default: activation x activation products stay float.
        quantize_dynamic(path, out, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                         nodes_to_exclude=kept, use_external_data_format=True)
        return
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    bits = 8 if method == "int8" else 4
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=True, nodes_to_exclude=kept)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), use_external_data_format=True)


def _head_rows_before(model, head_rows: dict) -> dict:
    """The float rows [hidden, k] of the head's weight for ``ids``, its input and output names."""
    import numpy as np
    from onnx import numpy_helper

    node = next(n for n in model.graph.node if n.name == head_rows["node"])
    weights = {i.name: i for i in model.graph.initializer}
    weight = numpy_helper.to_array(weights[weight_of(node, set(weights))])  # [hidden, vocab] (pre-transposed)
    ids = np.asarray(head_rows["ids"], dtype=np.int64)
    return {"input": node.input[0], "output": node.output[0], "ids": ids, "rows": np.ascontiguousarray(weight[:, ids])}


def _add_head_rows(path: Path, rows: dict) -> None:
    """After quantization: logits = ScatterElements(quantized logits, ids, hidden @ float rows, axis=-1),
    inserted right after the quantized head (whose consumers come later in the graph)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    sources = {e.value for i in model.graph.initializer for e in i.external_data if e.key == "location"}
    onnx.load_external_data_for_model(model, str(path.parent))
    graph, out = model.graph, rows["output"]
    quantized = out + "/quantized"
    last = max(k for k, node in enumerate(graph.node) if out in node.output)
    graph.node[last].output[:] = [quantized if o == out else o for o in graph.node[last].output]
    graph.initializer.extend([numpy_helper.from_array(rows["rows"], "head_rows.weight"),
                              numpy_helper.from_array(rows["ids"], "head_rows.ids")])
    added = [
        helper.make_node("MatMul", [rows["input"], "head_rows.weight"], ["head_rows/logits"], name="/head_rows/MatMul"),
        helper.make_node("Shape", ["head_rows/logits"], ["head_rows/shape"], name="/head_rows/Shape"),
        helper.make_node("Expand", ["head_rows.ids", "head_rows/shape"], ["head_rows/index"], name="/head_rows/Expand"),
        helper.make_node("ScatterElements", [quantized, "head_rows/index", "head_rows/logits"], [out], axis=-1,
                         name="/head_rows/ScatterElements"),
    ]
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes[: last + 1] + added + nodes[last + 1 :])
    location = path.name + "_data.rows"
    onnx.save(model, str(path), save_as_external_data=True, location=location)
    for name in sources - {location}:
        (path.parent / name).unlink(missing_ok=True)
