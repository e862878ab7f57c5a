"""The main CLI chain end to end, each step a real `python -m datasetgan` process on a tiny generator:
init, sample, import (masks), train, generate, export (parquet), segment train, segment eval.

The "person" is the brightness rule of conftest; each test checks the files one step wrote and the
numbers it printed against those files and the steps before it.
"""

import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from conftest import TINY_INTERPRETER, brightness_mask, make_tiny_generator

CLASSES = ["background", "bright", "dark"]
CANDIDATES = 4
GENERATED, DROP = 6, 0.34  # round(6 * 0.34) = 2 most uncertain samples dropped, 4 kept


def datasetgan(*args, cwd: Path) -> str:
    """One CLI step in its own process (the environment passed through, one thread); -> its stdout."""
    result = subprocess.run([sys.executable, "-m", "datasetgan", *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"datasetgan {' '.join(map(str, args))}\n{result.stderr}"
    return result.stdout


def index_masks(folder: Path, images: list[Path]) -> Path:
    """The brightness rule's masks of the images, as greyscale index PNGs named after them."""
    folder.mkdir()
    for image in images:
        Image.fromarray(brightness_mask(image)).save(folder / image.name)
    return folder


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    """Runs every step once; -> the folders and what each step printed."""
    root = tmp_path_factory.mktemp("chain")
    ws, data, run = root / "ws", root / "ws" / "datasets" / "synth", root / "run"
    out = {"root": root, "ws": ws, "data": data, "run": run}
    generator = make_tiny_generator(root / "generator.safetensors")
    out["init"] = datasetgan("init", ws, "--generator", generator, "--classes", ",".join(CLASSES), cwd=root)
    config = yaml.safe_load((ws / "datasetgan.yaml").read_text())
    (ws / "datasetgan.yaml").write_text(yaml.safe_dump({**config, "interpreter": TINY_INTERPRETER}))
    out["sample"] = datasetgan("sample", ws, "-n", CANDIDATES, "--device", "cpu", cwd=root)
    out["painted"] = index_masks(root / "painted", sorted((ws / "candidates").glob("*.png")))
    out["import"] = datasetgan("import", ws, out["painted"], "--format", "masks", cwd=root)
    out["train"] = datasetgan("train", ws, "--device", "cpu", cwd=root)
    out["generate"] = datasetgan("generate", ws, "-n", GENERATED, "--name", "synth", "--drop-uncertain", DROP,
                                 "--batch-size", 4, "--device", "cpu", cwd=root)
    out["export"] = datasetgan("export", data, "--out", root / "parquet", "--rows-per-file", 3, cwd=root)
    out["segment train"] = datasetgan("segment", "train", data, "--out", run, "--epochs", 2, "--batch-size", 2,
                                      "--val-fraction", 0, "--device", "cpu", cwd=root)
    out["test"] = real_test_folder(root / "real", out["painted"], ws / "candidates", data / "classes.json")
    out["segment eval"] = datasetgan("segment", "eval", run, out["test"], "--out", root / "report", "--device", "cpu",
                                     cwd=root)
    return out


def real_test_folder(folder: Path, masks: Path, images: Path, classes: Path) -> Path:
    """The painted candidates as a labelled test folder: images/, masks/, classes.json."""
    shutil.copytree(masks, folder / "masks")
    (folder / "images").mkdir()
    for mask in masks.glob("*.png"):
        shutil.copyfile(images / mask.name, folder / "images" / mask.name)
    shutil.copyfile(classes, folder / "classes.json")
    return folder


def test_init_and_sample_write_the_workspace(chain):
    config = yaml.safe_load((chain["ws"] / "datasetgan.yaml").read_text())
    assert [c["name"] for c in config["classes"]] == CLASSES and config["generator"].endswith("generator.safetensors")
    images = sorted((chain["ws"] / "candidates").glob("*.png"))
    assert [p.stem for p in images] == [f"{seed:06d}" for seed in range(CANDIDATES)]
    assert all(Image.open(p).size == (32, 32) for p in images)
    assert (chain["ws"] / "candidates" / "latents.safetensors").is_file()
    assert f"{CANDIDATES} new candidates" in chain["sample"]


def test_import_keeps_the_painted_classes_and_counts_them(chain):
    lines = chain["import"].splitlines()
    assert lines[0] == f"imported {CANDIDATES} annotation(s), 0 replacing earlier ones"
    annotations = {p.name: np.asarray(Image.open(p)) for p in sorted((chain["ws"] / "annotations").glob("*.png"))}
    assert sorted(annotations) == sorted(p.name for p in chain["painted"].glob("*.png"))
    counts = dict.fromkeys(CLASSES + ["ignore"], 0)
    for name, annotation in annotations.items():
        painted = np.asarray(Image.open(chain["painted"] / name))
        assert ((annotation == painted) | (annotation == 255)).all()  # small fragments may become ignore
        assert (annotation == painted).mean() > 0.9
        for i, cls in enumerate(CLASSES):
            counts[cls] += int((annotation == i).sum())
        counts["ignore"] += int((annotation == 255).sum())
    assert lines[-1] == "pixels: " + ", ".join(f"{name} {count}" for name, count in counts.items())


def test_train_saves_the_interpreter(chain):
    report = json.loads(chain["train"])
    assert report["annotated"] == CANDIDATES and report["batches"] > 0
    assert math.isfinite(report["final_loss"]) and report["final_loss"] > 0
    assert Path(report["saved"]) == chain["ws"] / "interpreter" and any(Path(report["saved"]).iterdir())


def test_generate_drops_the_most_uncertain(chain):
    records = [json.loads(line) for line in (chain["data"] / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == GENERATED and len({r["seed"] for r in records}) == GENERATED
    kept = [r for r in records if r["kept"]]
    dropped = [r for r in records if not r["kept"]]
    assert len(dropped) == round(GENERATED * DROP)
    assert min(r["score"] for r in dropped) >= max(r["score"] for r in kept)
    assert f"{GENERATED} samples, {len(kept)} kept, {len(dropped)} most uncertain dropped" in chain["generate"]
    for record in records:
        mask = np.asarray(Image.open(chain["data"] / "masks" / f"{record['name']}.png"))
        assert mask.shape == (32, 32) and mask.max() < len(CLASSES)
        assert Image.open(chain["data"] / "images" / f"{record['name']}.png").size == (32, 32)


def test_export_writes_the_kept_samples_as_parquet(chain):
    paths = sorted((chain["root"] / "parquet").glob("*.parquet"))
    assert chain["export"].startswith(f"wrote {len(paths)} parquet file(s)") and len(paths) == 2
    rows = [row for path in paths for row in pq.read_table(path).to_pylist()]
    manifest = [json.loads(line) for line in (chain["data"] / "manifest.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == [r["name"] for r in manifest if r["kept"]]
    for row in rows:
        mask = np.asarray(Image.open(io.BytesIO(row["mask"]["bytes"])))
        assert np.array_equal(mask, np.asarray(Image.open(chain["data"] / "masks" / f"{row['name']}.png")))
        assert row["image"]["bytes"] == (chain["data"] / "images" / f"{row['name']}.png").read_bytes()


def test_segment_train_learns_from_the_kept_samples(chain):
    summary = json.loads(chain["segment train"])
    config = json.loads((chain["run"] / "config.json").read_text())
    log = [json.loads(line) for line in (chain["run"] / "log.jsonl").read_text().splitlines()]
    kept = sum(json.loads(line)["kept"] for line in (chain["data"] / "manifest.jsonl").read_text().splitlines())
    assert summary["train_images"] == config["train_images"] == kept and config["classes"] == CLASSES
    assert [r["epoch"] for r in log] == [1, 2] and summary["best_epoch"] == 2  # no validation: the last epoch
    assert (chain["run"] / "best.safetensors").read_bytes() == (chain["run"] / "epoch-002.safetensors").read_bytes()


def test_segment_eval_reports_scores_of_its_confusion_matrix(chain):
    report = json.loads((chain["root"] / "report" / "report.json").read_text())
    confusion = np.array(report["confusion"], dtype=np.int64)  # rows: truth, columns: prediction
    painted = [np.asarray(Image.open(p)) for p in sorted((chain["test"] / "masks").glob("*.png"))]
    assert report["images"] == CANDIDATES and report["classes"] == CLASSES
    assert np.array_equal(confusion.sum(1), np.bincount(np.concatenate([m.ravel() for m in painted]), minlength=3))
    assert report["pixel_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    for i, name in enumerate(CLASSES):
        assert report["iou"][name] == pytest.approx(confusion[i, i] / union[i])
    assert report["miou"] == pytest.approx(np.mean(np.diag(confusion) / union))
    assert f"mIoU {100 * report['miou']:.1f} %" in chain["segment eval"]
    assert (chain["root"] / "report" / "confusion.png").is_file()
