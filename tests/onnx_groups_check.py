"""The check every ONNX export test runs on its fixture: the architecture plug-in's module groups
name the export's nodes (a renamed wrapper weight would otherwise leave a group silently
unquantized, or un-kept by ``--keep``).

    from onnx_groups_check import assert_groups_name_nodes
    assert_groups_name_nodes(onnx_dir, config, ("vision", "decoder"))
"""

from __future__ import annotations

from pathlib import Path


def assert_groups_name_nodes(onnx_dir: Path, config: dict, components: tuple[str, ...]) -> dict:
    """Every group's patterns in each component match MatMul nodes, no node is in two groups, every
    decoder weight MatMul is in a group, and the head group names exactly one node (the one
    head rows attach to). Returns (component, node) -> its groups."""
    import onnx

    from guardedge.export.onnx_export import head_node
    from guardedge.export.onnx_groups import group_patterns, matching_nodes
    from guardedge.runtime.architectures import architecture_class

    groups = architecture_class(config).quant_groups(config)
    graphs = {c: onnx.load(str(Path(onnx_dir) / f"{c}.onnx"), load_external_data=False) for c in components}
    owners: dict[tuple[str, str], list[str]] = {}
    for component, graph in graphs.items():
        for name, patterns in group_patterns(groups, component).items():
            nodes = matching_nodes(graph, patterns)
            assert nodes, (name, component, patterns)
            for node in nodes:
                owners.setdefault((component, node), []).append(name)
    assert all(len(names) == 1 for names in owners.values()), [k for k, v in owners.items() if len(v) > 1]
    decoder = graphs["decoder"].graph
    weights = {i.name for i in decoder.initializer}
    matmuls = {("decoder", n.name) for n in decoder.node if n.op_type == "MatMul" and set(n.input) & weights}
    assert matmuls <= set(owners), sorted(matmuls - set(owners))[:5]  # every decoder weight belongs to a group
    head = [g.name for g in groups if g.kind == "head"]
    assert [k for k, v in owners.items() if v == head] == [("decoder", head_node(graphs["decoder"], groups, "decoder"))]
    return owners
