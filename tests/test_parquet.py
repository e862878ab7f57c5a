"""Parquet export: the files round-trip byte for byte, only kept rows go out, HF datasets loads them."""

import io
import json
import sys

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import prepare_output, write_classes, write_pairs
from datasetgan.formats.parquet import export_parquet
from datasetgan.labels import LabelClass

CLASSES = [LabelClass("background", (0, 0, 0)), LabelClass("skin", (200, 150, 120))]
NAMES = ["0000000010", "0000000011", "0000000012"]


@pytest.fixture
def dataset(tmp_path):
    folder = prepare_output(tmp_path / "data")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    masks = rng.integers(0, 2, (3, 8, 8), dtype=np.uint8)
    write_pairs(folder, NAMES, images, masks, CLASSES)
    write_classes(folder, CLASSES)
    records = [{"name": n, "seed": 10 + i, "score": 0.1 * i, "kept": i != 1} for i, n in enumerate(NAMES)]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def read_rows(paths) -> list[dict]:
    return [row for path in paths for row in pq.read_table(path).to_pylist()]


def test_round_trip_of_kept_rows(dataset, tmp_path):
    paths = export_parquet(dataset, tmp_path / "out", rows_per_file=1)
    assert [p.name for p in paths] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    rows = read_rows(paths)
    assert [(r["name"], r["seed"], r["score"]) for r in rows] == [(NAMES[0], 10, 0.0), (NAMES[2], 12, 0.2)]
    for row in rows:
        assert row["image"]["bytes"] == (dataset / "images" / f"{row['name']}.png").read_bytes()
        assert row["mask"]["bytes"] == (dataset / "masks" / f"{row['name']}.png").read_bytes()
        decoded = np.asarray(Image.open(io.BytesIO(row["mask"]["bytes"])))
        assert np.array_equal(decoded, np.asarray(Image.open(dataset / "masks" / f"{row['name']}.png")))
    metadata = pq.read_schema(paths[0]).metadata
    assert json.loads(metadata[b"datasetgan_classes"]) == json.loads((dataset / "classes.json").read_text())
    assert json.loads(metadata[b"huggingface"])["info"]["features"]["mask"] == {"_type": "Image"}


def test_without_manifest_every_pair_goes_out(dataset, tmp_path):
    (dataset / "manifest.jsonl").unlink()
    rows = read_rows(export_parquet(dataset, tmp_path / "out"))
    assert [r["name"] for r in rows] == NAMES and all(r["seed"] is None for r in rows)


def test_a_smaller_export_removes_stale_shards(dataset, tmp_path):
    export_parquet(dataset, tmp_path / "out", rows_per_file=1)
    paths = export_parquet(dataset, tmp_path / "out")
    assert sorted((tmp_path / "out").iterdir()) == paths


def test_missing_pyarrow_says_what_to_install(dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(DatasetGANError, match=r"pip install datasetgan\[parquet\]"):
        export_parquet(dataset, tmp_path / "out")


def test_hugging_face_datasets_loads_images_and_masks(dataset, tmp_path):
    paths = export_parquet(dataset, tmp_path / "out")
    loaded = datasets.load_dataset("parquet", data_files=[str(p) for p in paths], split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(loaded.features["image"], datasets.Image) and isinstance(loaded.features["mask"], datasets.Image)
    assert loaded["seed"] == [10, 12]
    mask = np.asarray(loaded[1]["mask"])
    assert np.array_equal(mask, np.asarray(Image.open(dataset / "masks" / f"{NAMES[2]}.png")))
