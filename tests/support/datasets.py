"""A small parquet dataset, as the hub's datasets hold them, for the dataset tests of both
hubs (test_gateway_datasets.py, test_matrixhub.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROWS = [{"text": f"sentence {n}", "label": n % 3} for n in range(500)]
CARD = "---\nlicense: mit\ntask_categories:\n- text-classification\n---\n# Sentences\n"


def parquet_dataset(folder: Path) -> Path:
    """``folder`` with a card and ROWS in two parquet files under data/ (the layout
    `datasets.load_dataset` finds a train split in)."""
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text(CARD)
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table.slice(0, 300), folder / "data" / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(300), folder / "data" / "train-00001-of-00002.parquet")
    return folder
