"""Assemble (and, on request, regenerate) the demo QwenGuard model directory.

The demo QwenGuard is NOT trained: its weights are the seeded initialisation of the real
Qwen2.5-VL classes at tiny widths (layout.py), committed packed
(``weights/demo-qwenguard-<version>.safetensors``, the dense layers in bf16; the 151936 x 64 tied
embedding is regenerated from its seed by runtime/demo/packing.py, so it is not
stored). On first use they are unpacked into a directory laid out like a real QwenGuard v1.2
repository under ``$GUARDEDGE_HOME`` (default ``~/.cache/guardedge``), keyed by a digest of the pack
and of the code that writes the other files.

    python -m guardedge.runtime.demo.qwenguard.build               # assemble (cached)
    python -m guardedge.runtime.demo.qwenguard.build --regenerate  # rewrite the pack from the seed
"""

from __future__ import annotations

from pathlib import Path

from guardedge.runtime.demo.builder import assemble, assemble_once, assembled, assembly_parser, cache_dir, load_tied, meta_model

DEMO_VERSION = "v1"
HERE = Path(__file__).parent
PACK = HERE / "weights" / f"demo-qwenguard-{DEMO_VERSION}.safetensors"
CARD = HERE / "MODEL_CARD.md"
SEED = 1234  # torch's init of the dense layers and the embedding table's PCG64 stream


def demo_dir() -> Path:
    return cache_dir(f"demo-qwenguard-{DEMO_VERSION}", PACK, (HERE / "build.py", HERE / "layout.py", HERE / "tokenizer.py", CARD,
                     HERE.parent.parent / "families" / "templates" / "llavaguard-qwen2_5_vl.jinja"))


def ensure_demo_qwenguard(progress: bool = True) -> Path:
    """Return the demo QwenGuard directory, assembling it first if needed (one builder at a time)."""
    return assemble_once(demo_dir(), f".demo-qwenguard-{DEMO_VERSION}.lock", lambda target: build(target, progress=progress))


def build(target: Path, progress: bool = True, pack: Path = PACK) -> None:
    """Unpack the committed weights into a full model directory at ``target``."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from guardedge.runtime.demo.llavaguard.pack import unpack
    from guardedge.runtime.demo.qwenguard.layout import demo_config, write_layout
    from guardedge.runtime.demo.qwenguard.tokenizer import build_tokenizer

    def write(tmp: Path) -> None:
        model = meta_model(Qwen2_5_VLForConditionalGeneration, demo_config())
        # lm_head is the embedding (tie_word_embeddings), as in the 3B checkpoint
        load_tied(model, unpack(pack, tuple(model.get_input_embeddings().weight.shape)), pack)
        model.save_pretrained(tmp, safe_serialization=True)
        _architectures_on_top(tmp / "config.json")
        write_layout(tmp, build_tokenizer())  # after the weights: save_pretrained writes its own generation_config.json
        (tmp / "README.md").write_text(CARD.read_text())

    assemble(target, write, "demo QwenGuard (random weights)", progress)


def _architectures_on_top(path: Path) -> None:
    """``architectures`` where the published config.json has it: transformers 4.57's Qwen2_5_VLConfig
    forwards the attribute into text_config on save, leaving the top level without it."""
    import json

    config = json.loads(path.read_text())
    config["architectures"] = ["Qwen2_5_VLForConditionalGeneration"]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def regenerate(out: Path = PACK) -> int:
    """The seeded initialisation, packed to ``out`` (what the committed pack is); returns its bytes."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from guardedge.runtime.demo.llavaguard.pack import EMBED, FORMAT, pack
    from guardedge.runtime.demo.qwenguard.layout import demo_config

    torch.manual_seed(SEED)
    model = Qwen2_5_VLForConditionalGeneration(demo_config()).eval()
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        weight.copy_(FORMAT.table_init(EMBED, *weight.shape, seed=SEED))  # regenerated at unpack: nothing of it is stored
    pack(model, SEED, out)
    return out.stat().st_size


def main() -> None:
    parser = assembly_parser("Assemble or regenerate the guardedge demo QwenGuard (random weights)")
    parser.add_argument("--regenerate", action="store_true", help="rewrite the pack from the seeded initialisation")
    args = parser.parse_args()
    if args.regenerate:
        print(f"{PACK}: {regenerate()} bytes")
        return
    print(assembled(demo_dir, ensure_demo_qwenguard, args.force))


if __name__ == "__main__":
    main()
