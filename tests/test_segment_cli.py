"""`datasetgan segment train` and `segment eval` as a user meets them: tiny real data, real
training, files checked against an independent evaluation, and every bad input refused in
one line without touching what is already on disk."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from datasetgan.cli import app
from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import read_manifest
from datasetgan.pipeline import Pipeline
from datasetgan.segment.data import labelled_names, load_labelled
from datasetgan.segment.train import evaluate, load_segmenter

CPU = torch.device("cpu")
runner = CliRunner()


def ok(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.stdout


def refused(*args) -> str:
    """The command fails with a one-line DatasetGANError; -> its message."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1 and isinstance(result.exception, DatasetGANError), repr(result.exception)
    message = str(result.exception)
    assert "\n" not in message
    return message


def render(folder: Path, n: int, split: str) -> Path:
    ok("world", "render", "--n", n, "--resolution", 32, "--split", split, "--out", folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """12 training and 10 test world images at 32 px, and a 2-epoch run trained on them."""
    root = tmp_path_factory.mktemp("segment")
    train, test = render(root / "train", 12, "real_train"), render(root / "test", 10, "real_test")
    ok("segment", "train", train, "--out", root / "run", "--epochs", 2, "--batch-size", 4, "--val-fraction", 0.25,
       "--device", "cpu")
    return {"train": train, "test": test, "run": root / "run", "root": root}


def test_train_writes_config_log_and_a_checkpoint_per_epoch(data):
    run = data["run"]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(0 <= r["val_miou"] <= 1 for r in log)
    config = json.loads((run / "config.json").read_text())
    assert config["train_images"] == 9 and len(config["val_names"]) == 3
    assert set(config["val_names"]) < set(labelled_names(data["train"]))
    assert config["segmenter"]["epochs"] == 2 and config["classes"][0] == "background"
    for record in log:
        with safe_open(str(run / f"epoch-{record['epoch']:03d}.safetensors"), "pt") as handle:
            assert json.loads(handle.metadata()["extra"])["val_miou"] == record["val_miou"]
    best = max(log, key=lambda r: r["val_miou"])  # max keeps the earliest of equals, as training does
    assert (run / "best.safetensors").read_bytes() == (run / f"epoch-{best['epoch']:03d}.safetensors").read_bytes()
    assert not list(run.glob(".*tmp"))


def test_the_same_seed_gives_the_same_bytes(data, tmp_path):
    ok("segment", "train", data["train"], "--out", tmp_path / "again", "--epochs", 2, "--batch-size", 4,
       "--val-fraction", 0.25)
    for name in ("config.json", "log.jsonl", "epoch-002.safetensors", "best.safetensors"):
        assert (tmp_path / "again" / name).read_bytes() == (data["run"] / name).read_bytes(), name


def test_eval_report_equals_an_independent_evaluation_of_best(data, tmp_path):
    printed = ok("segment", "eval", data["run"], data["test"], "--out", tmp_path / "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    model, info = load_segmenter(data["run"] / "best.safetensors", CPU)
    images, masks, classes = load_labelled(data["test"])
    scores = evaluate(model, images, masks, len(classes), CPU).as_dict(info["classes"])
    assert report["images"] == 10 and report["classes"] == info["classes"]
    assert report["miou"] == pytest.approx(scores["miou"])
    assert report["pixel_accuracy"] == pytest.approx(scores["pixel_accuracy"])
    assert report["iou"] == pytest.approx(scores["iou"], nan_ok=True)
    assert np.array(report["confusion"]).sum() == (masks != 255).sum()
    assert f"mIoU {100 * scores['miou']:.1f} %" in printed and "eyebrow" in printed
    picture = Image.open(tmp_path / "report" / "confusion.png")
    assert picture.mode == "RGB" and picture.width > 10 * 28 and picture.height > 10 * 28
    ok("segment", "eval", data["run"] / "best.safetensors", data["test"], "--out", tmp_path / "again")
    for name in ("confusion.png", "report.json"):  # the run's best, or the same file named: the same bytes
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "report" / name).read_bytes(), name


def test_five_fold_selection_scores_each_fold_with_its_chosen_checkpoint(data, tmp_path):
    ok("segment", "eval", data["run"], data["test"], "--out", tmp_path, "--folds", 5, "--seed", 1)
    report = json.loads((tmp_path / "report.json").read_text())
    folds = report["cross_validation"]["fold_results"]
    names = labelled_names(data["test"])
    assert sorted(n for f in folds for n in f["selected_on"]) == sorted(names)  # the folds partition the images
    images, masks, classes = load_labelled(data["test"])
    for fold in folds:
        rest = [i for i, name in enumerate(names) if name not in fold["selected_on"]]
        chosen, _ = load_segmenter(data["run"] / fold["checkpoint"], CPU)
        assert fold["miou"] == pytest.approx(evaluate(chosen, images[rest], masks[rest], len(classes), CPU).miou)
        own = [i for i, name in enumerate(names) if name in fold["selected_on"]]
        on_fold = {path.name: evaluate(load_segmenter(path, CPU)[0], images[own], masks[own], len(classes), CPU).miou
                   for path in sorted(data["run"].glob("epoch-*.safetensors"))}
        assert fold["checkpoint"] == max(on_fold, key=on_fold.get)  # the first of equals, as eval does
        assert fold["selection_miou"] == pytest.approx(on_fold[fold["checkpoint"]])
    mious = [f["miou"] for f in folds]
    assert report["miou"] == pytest.approx(np.mean(mious)) and report["miou_std"] == pytest.approx(np.std(mious))


def test_training_on_a_generated_dataset_uses_its_kept_samples(annotated_workspace, tmp_path):
    Pipeline(annotated_workspace, "cpu").train(progress=False)
    dataset = Pipeline(annotated_workspace, "cpu").generate("ds", 10, drop_uncertain=0.3, batch_size=5,
                               progress=False)
    kept = {r["name"] for r in read_manifest(dataset)}
    ok("segment", "train", dataset, "--out", tmp_path / "run", "--epochs", 1, "--batch-size", 3)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train_images"] + len(config["val_names"]) == len(kept) == 7
    assert set(config["val_names"]) <= kept and config["classes"] == ["background", "bright", "dark"]


def copy_folder(folder: Path, copy: Path, rename_class: bool = False) -> Path:
    """A copy of a labelled folder; `rename_class` gives class 1 another name in classes.json."""
    shutil.copytree(folder, copy)
    if rename_class:
        payload = json.loads((folder / "classes.json").read_text())
        payload["classes"][1]["name"] = "face"
        (copy / "classes.json").write_text(json.dumps(payload))
    return copy


def test_class_lists_must_match(data, tmp_path):
    renamed = copy_folder(data["test"], tmp_path / "renamed", rename_class=True)
    message = refused("segment", "train", data["train"], "--out", tmp_path / "run", "--val", renamed)
    assert "class lists differ" in message and not (tmp_path / "run").exists()
    assert "class lists differ" in refused("segment", "eval", data["run"], renamed, "--out", tmp_path / "report")


def test_bad_folders_are_refused(data, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "classes.json is missing" in refused("segment", "train", tmp_path / "empty", "--out", tmp_path / "r")
    no_images = tmp_path / "no-images"
    for sub in ("images", "masks"):
        (no_images / sub).mkdir(parents=True)
    (no_images / "classes.json").write_bytes((data["test"] / "classes.json").read_bytes())
    assert "holds no images" in refused("segment", "eval", data["run"], no_images, "--out", tmp_path / "r")
    unmasked = copy_folder(data["test"], tmp_path / "unmasked")
    next((unmasked / "masks").iterdir()).unlink()
    assert "have no mask" in refused("segment", "train", unmasked, "--out", tmp_path / "r")
    assert "is not a folder" in refused("segment", "train", tmp_path / "missing", "--out", tmp_path / "r")
    assert "does not exist" in refused("segment", "eval", tmp_path / "missing", data["test"], "--out", tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_checkpoints_must_be_segmenters_and_runs_must_hold_them(data, tmp_path, tiny_generator):
    report = tmp_path / "report"
    assert "not a datasetgan segmenter checkpoint" in refused("segment", "eval", tiny_generator, data["test"],
                                                              "--out", report)
    empty_run = tmp_path / "empty-run"
    empty_run.mkdir()
    assert "holds no best.safetensors" in refused("segment", "eval", empty_run, data["test"], "--out", report)
    assert "holds no epoch-NNN" in refused("segment", "eval", empty_run, data["test"], "--out", report, "--folds", 2)
    assert "give the run folder" in refused("segment", "eval", data["run"] / "best.safetensors", data["test"],
                                            "--out", report, "--folds", 2)


def test_fold_counts_are_checked(data, tmp_path):
    assert "at least 2" in refused("segment", "eval", data["run"], data["test"], "--out", tmp_path, "--folds", 1)
    message = refused("segment", "eval", data["run"], data["test"], "--out", tmp_path, "--folds", 11)
    assert "number of test images (10)" in message


def test_failures_keep_what_is_written(data, tmp_path):
    report = tmp_path / "report"
    ok("segment", "eval", data["run"], data["test"], "--out", report)
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    refused("segment", "eval", data["run"], copy_folder(data["test"], tmp_path / "renamed", True), "--out", report)
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before
    run_files = {p.name: p.read_bytes() for p in data["run"].iterdir()}
    assert "already holds a segmenter run" in refused("segment", "train", data["train"], "--out", data["run"])
    assert {p.name: p.read_bytes() for p in data["run"].iterdir()} == run_files


def test_bad_settings_are_refused_before_anything_is_written(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    assert "never downloaded" in refused("segment", "train", data["train"], "--out", out, "--pretrained")
    assert "not both" in refused("segment", "train", data["train"], "--out", out, "--val", data["test"],
                                 "--val-fraction", 0.2)
    assert "below 1" in refused("segment", "train", data["train"], "--out", out, "--val-fraction", 1)
    assert "epochs" in refused("segment", "train", data["train"], "--out", out, "--epochs", 0)
    assert "at least 2" in refused("segment", "train", data["train"], "--out", out, "--batch-size", 1)
    assert "unknown segmenter 'unet'" in refused("segment", "train", data["train"], "--out", out, "--arch", "unet")
    assert not out.exists()


def test_the_command_line_prints_one_line_and_exits_1(tmp_path):
    result = subprocess.run([sys.executable, "-m", "datasetgan", "segment", "eval", str(tmp_path / "nothing"),
                             str(tmp_path), "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nothing'} does not exist: give a segmenter "
                                                  "checkpoint or a `segment train` run folder"]


def test_self_training_and_transfer_augmentation_runs_record_what_they_did(data, tmp_path):
    unlabelled = render(tmp_path / "unlabelled", 6, "gan_train")
    summary = json.loads(ok("segment", "train", data["train"], "--out", tmp_path / "run", "--epochs", 1,
                            "--batch-size", 4, "--val-fraction", 0.25, "--unlabelled", unlabelled,
                            "--self-training", "pseudo-labels", "--transfer-augment", "--pseudo-class-share", 0.3))
    assert summary["unlabelled_images"] == 6 and len(summary["pseudo_labelled"]) == 1
    assert 0.3 <= summary["pseudo_labelled"][0] <= 1  # each predicted class keeps at least its surest 30 %
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["unlabelled"] == str(unlabelled) and config["self_training"]["class_share"] == 0.3
    assert config["self_training"]["method"] == "pseudo-labels"
    assert config["segmenter"]["transfer_augment"] is True and (tmp_path / "run" / "best.safetensors").is_file()
    assert "unlabelled" not in json.loads((data["run"] / "config.json").read_text())  # a plain run's file is as before

    summary = json.loads(ok("segment", "train", data["train"], "--out", tmp_path / "mt", "--epochs", 2,
                            "--batch-size", 4, "--val-fraction", 0.25, "--unlabelled", unlabelled))
    assert summary["unlabelled_images"] == 6 and summary["epochs"] == 2  # the mean teacher's epochs are the run's
    config = json.loads((tmp_path / "mt" / "config.json").read_text())
    assert config["self_training"] == {"method": "mean-teacher", "ema": 0.99, "confidence": 0.968}
    assert len((tmp_path / "mt" / "log.jsonl").read_text().splitlines()) == 2


def test_bad_unlabelled_folders_are_refused_before_anything_is_written(data, tmp_path):
    out = tmp_path / "run"
    (tmp_path / "empty").mkdir()
    assert "holds no images" in refused("segment", "train", data["train"], "--out", out, "--unlabelled",
                                        tmp_path / "empty")
    bigger = render(tmp_path / "bigger", 2, "gan_train")
    for path in (bigger / "images").iterdir():
        Image.open(path).resize((48, 48)).save(path)
    assert "48x48, the training images 32x32" in refused("segment", "train", data["train"], "--out", out,
                                                         "--unlabelled", bigger)
    assert "is not a folder" in refused("segment", "train", data["train"], "--out", out, "--unlabelled",
                                        tmp_path / "missing")
    assert "threshold" in refused("segment", "train", data["train"], "--out", out, "--unlabelled", bigger,
                                  "--pseudo-threshold", 1.5)
    assert "unknown self-training method 'fixmatch'" in refused("segment", "train", data["train"], "--out", out,
                                                                "--unlabelled", bigger, "--self-training", "fixmatch")
    assert not out.exists()
