"""Datasets: a user's rows -> the records their model expects, validated up front.

``load_items(DataSpec(source, ...), adapter, noised_blocks)`` reads JSONL / Parquet files,
folders of them, the demo benchmark (``safety:SPLIT[:N]``) and the Hateful Memes and
MM-SafetyBench layouts; every text goes through the model's own tokenizer, every image through
the model's image processor, and every bad row gets a one-line :class:`DataError`.
"""

from hybridcert.datasets.items import Dataset, ImageData, Item, TokenData, load_dataset, load_items
from hybridcert.datasets.sources import MM_SAFETYBENCH_KINDS, MM_SAFETYBENCH_TEXT
from hybridcert.datasets.spec import DataError, DataSpec, parse_columns, parse_label_map

__all__ = ["MM_SAFETYBENCH_KINDS", "MM_SAFETYBENCH_TEXT", "DataError", "DataSpec", "Dataset",
           "ImageData", "Item", "TokenData", "load_dataset", "load_items", "parse_columns",
           "parse_label_map"]
