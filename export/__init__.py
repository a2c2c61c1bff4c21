"""guardedge.export: quantization and ONNX export of guard models (issue 4; not built yet)."""
