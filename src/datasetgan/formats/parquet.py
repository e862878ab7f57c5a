"""Export a dataset folder as Parquet shards that Hugging Face `datasets` loads directly.

    load_dataset("parquet", data_files="OUT/*.parquet")  ->  name, image, mask, seed, score

`image` and `mask` are stored as HF Image features (a struct of the file's bytes and its name;
the bytes are the PNG files as written, never re-encoded), declared in the schema metadata under
"huggingface"; the dataset's classes.json travels in the metadata under "datasetgan_classes".
"""

import json
from dataclasses import dataclass
from pathlib import Path

from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import MANIFEST, list_pairs, read_classes, read_manifest
from datasetgan.fileio import atomic_write

ROW_GROUP = 100  # rows per Parquet row group: bounds memory while writing and when a reader seeks
SHARD_GLOB = "train-*-of-*.parquet"
HF_FEATURES = {
    "name": {"dtype": "string", "_type": "Value"},
    "image": {"_type": "Image"},
    "mask": {"_type": "Image"},
    "seed": {"dtype": "int64", "_type": "Value"},
    "score": {"dtype": "float64", "_type": "Value"},
}


@dataclass
class ExportRow:
    name: str
    image: Path
    mask: Path
    seed: int | None
    score: float | None


def export_parquet(dataset_dir: str | Path, out: str | Path, rows_per_file: int = 1000) -> list[Path]:
    """Write the dataset's (kept) pairs as out/train-NNNNN-of-NNNNN.parquet; returns the shard paths."""
    pa, pq = import_pyarrow()
    dataset_dir, out = Path(dataset_dir), Path(out)
    if rows_per_file < 1:
        raise DatasetGANError(f"rows_per_file must be at least 1, got {rows_per_file}")
    read_classes(dataset_dir)  # fail early, with its message, on a missing or broken classes.json
    rows = export_rows(dataset_dir)
    if not rows:
        raise DatasetGANError(f"{dataset_dir}: no kept rows in manifest.jsonl, nothing to export")
    schema = arrow_schema(pa, (dataset_dir / "classes.json").read_text())
    chunks = [rows[i : i + rows_per_file] for i in range(0, len(rows), rows_per_file)]
    paths = [out / f"train-{i:05d}-of-{len(chunks):05d}.parquet" for i in range(len(chunks))]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetGANError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    for path, chunk in zip(paths, chunks):
        atomic_write(path, lambda tmp: write_shard(pa, pq, tmp, schema, chunk))
    for stale in set(out.glob(SHARD_GLOB)) - set(paths):  # shards of an earlier, larger export
        stale.unlink()
    return paths


def import_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise DatasetGANError("Parquet export needs pyarrow: pip install datasetgan[parquet]") from exc
    return pyarrow, pyarrow.parquet


def export_rows(dataset_dir: Path) -> list[ExportRow]:
    """Every pair, or with a manifest only the kept ones, in manifest order, with seed and score."""
    pairs = {image.stem: (image, mask) for image, mask in list_pairs(dataset_dir)}
    if not (dataset_dir / MANIFEST).is_file():
        return [ExportRow(name, *pairs[name], seed=None, score=None) for name in pairs]
    rows = []
    for record in read_manifest(dataset_dir, kept_only=True):
        if record["name"] not in pairs:
            raise DatasetGANError(f"{dataset_dir / MANIFEST}: kept sample {record['name']!r} has no image and mask")
        rows.append(ExportRow(record["name"], *pairs[record["name"]], seed=record["seed"], score=record["score"]))
    return rows


def arrow_schema(pa, classes_text: str):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # the layout of HF's Image feature
    fields = [("name", pa.string()), ("image", image), ("mask", image), ("seed", pa.int64()), ("score", pa.float64())]
    metadata = {"huggingface": json.dumps({"info": {"features": HF_FEATURES}}), "datasetgan_classes": classes_text}
    return pa.schema(fields, metadata=metadata)


def write_shard(pa, pq, path: str, schema, rows: list[ExportRow]) -> None:
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(rows), ROW_GROUP):
            group = [row_record(row) for row in rows[start : start + ROW_GROUP]]
            writer.write_table(pa.Table.from_pylist(group, schema=schema))


def row_record(row: ExportRow) -> dict:
    return {
        "name": row.name,
        "image": {"bytes": row.image.read_bytes(), "path": row.image.name},
        "mask": {"bytes": row.mask.read_bytes(), "path": row.mask.name},
        "seed": row.seed,
        "score": row.score,
    }
