"""`datasetgan demo` end to end at tiny size: a random 64 px generator, the shipped annotations,
a few samples and segmenter steps; the real steps all run."""

import json

import torch

from datasetgan.demo import DemoConfig, run_demo
from datasetgan.experiments import BenchConfig
from datasetgan.formats.dataset import read_manifest
from datasetgan.segment.recipe import RECIPE, SELF_TRAINING

from conftest import make_tiny_generator

TINY = {"members": 2, "min_epochs": 0, "max_epochs": 1, "hidden": [16, 8], "batch_size": 1024}


def test_tiny_demo_writes_its_report_with_every_row(tmp_path, loads, capsys):
    generator = make_tiny_generator(tmp_path / "tiny64.safetensors", resolution=64)  # the annotations are 64 px
    segmenter = RECIPE.model_copy(update={"steps": 2, "batch_size": 4, "checkpoints": 2})
    cfg = DemoConfig(generator=str(generator), interpreter=TINY, n_generate=20, n_test=8, n_unlabelled=4,
                     segmenter=segmenter, self_training=SELF_TRAINING.model_copy(update={"steps": 2}))
    summary = run_demo(tmp_path / "out", torch.device("cpu"), cfg)

    assert len(summary) == 4 and all(0 <= miou <= 1 for miou in summary.values()), summary
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == summary
    page = (tmp_path / "out" / "report.html").read_text()
    assert all(name in page for name in summary) and str(generator) in page
    assert (tmp_path / "out" / "kept.png").is_file() and (tmp_path / "out" / "dropped.png").is_file()
    records = read_manifest(tmp_path / "out" / "workspace" / "datasets" / "synthetic", kept_only=False)
    assert len(records) == 20 and sum(not r["kept"] for r in records) == 2  # the 10 % most uncertain
    printed = capsys.readouterr().out
    assert "| training data | mIoU % |" in printed and "2 steps" in printed
    assert loads == {"generator": 1}  # one generator for the demo; the trained interpreter is never read back


def test_demo_and_bench_train_with_one_recipe():
    assert DemoConfig().segmenter == BenchConfig().segmenter == RECIPE
    assert DemoConfig().self_training == BenchConfig().self_training == SELF_TRAINING
    assert RECIPE.steps is not None  # sets of 16 and of thousands of images get the same optimisation
