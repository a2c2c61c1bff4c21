"""Bulk annotation: run a guard over a whole dataset, resumably (``guardedge annotate``).

    guardedge annotate --model demo-llavaguard --input photos/ --out labels/
    guardedge annotate --model demo --input shards/ --out labels/ --ray          # on a Ray cluster

Modules, one concern each:
- ``sources``: items from a folder of images, a JSONL of classify requests, Parquet or CSV
  (``tables``) and WebDataset tar shards (``shards``), streamed, each with a stable key;
- ``policy``: the command's policy options, and the model and policy identities rows carry;
- ``rows``: one output row per item (a verdict or an error) and its Arrow schema;
- ``keys``: the compact index of keys already annotated (16 bytes a key);
- ``sink``: the output directory: header, part files committed by rename, resumption;
- ``runner``: the single-machine pipeline (parallel preprocessing, engine batches, signals);
- ``summary``: counts, throughput and the ``--report`` Markdown;
- ``ray_path``: the same on a Ray cluster (imported only with ``--ray``);
- ``command``: the argparse face, light enough for ``guardedge --help``.

Design and alternatives: docs/decisions/0013-bulk-annotation.md; usage: docs/annotate.md.
"""
