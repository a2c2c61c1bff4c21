"""guardedge.export: turn a guard model into deployable artifacts, each with a manifest.

    guardedge export quantize --model demo --bits 4 --out OUT     # bitsandbytes 8/4-bit (quantize.py)
    guardedge export onnx --model demo --out OUT [--quantize int8] # ONNX + ONNX Runtime (onnx_export.py)
    guardedge export verify OUT                                    # hashes + parity smoke (verify.py)

Every artifact directory is self-describing (runtime/artifact.py: manifest.json with the recipe,
the source's identity, library versions, validation figures and every file's sha256) and loads
with ``guardedge classify --model OUT`` / ``guardedge serve --model OUT``. This package imports
the runtime; the runtime never imports it (the CLI finds ``export`` through an entry point).
"""
