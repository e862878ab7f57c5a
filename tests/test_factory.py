"""Dataset generation: complete, deterministic, resumable after kill -9, shardable."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datasetgan import factory, workflow
from datasetgan.errors import DatasetGANError
from datasetgan.formats.masks import load_mask


@pytest.fixture
def trained(annotated_workspace):
    workflow.train(annotated_workspace, device="cpu", progress=False)
    return annotated_workspace


def files(folder: Path) -> dict[str, bytes]:
    """Every data file of a dataset (not the per-batch bookkeeping), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.parent.name != "parts"}


def test_generation_writes_a_complete_manifest(trained):
    folder = factory.generate(trained, "ds", 10, batch_size=4, drop_uncertain=0.2, device="cpu", progress=False)
    records = factory.read_manifest(folder, kept_only=False)
    assert [r["seed"] for r in records] == list(range(10))
    assert sum(not r["kept"] for r in records) == 2
    dropped = {r["seed"] for r in records if not r["kept"]}
    top_two = {r["seed"] for r in sorted(records, key=lambda r: -r["score"])[:2]}
    assert dropped == top_two  # the most uncertain, not a slice of the middle
    for record in records:
        mask = load_mask(folder / "masks" / f"{record['name']}.png")
        assert mask.shape == (32, 32) and mask.max() < trained.num_classes
        assert (folder / "images" / f"{record['name']}.png").is_file()
        assert (folder / "uncertainty" / f"{record['name']}.png").is_file()
    assert json.loads((folder / "classes.json").read_text())["classes"][1]["name"] == "bright"


def test_same_seeds_give_the_same_bytes(trained):
    a = factory.generate(trained, "a", 6, batch_size=3, device="cpu", progress=False)
    b = factory.generate(trained, "b", 6, batch_size=3, device="cpu", progress=False)
    assert files(a) == files(b)


def test_redoing_an_unfinished_batch_restores_identical_files(trained):
    folder = factory.generate(trained, "ds", 8, batch_size=4, device="cpu", progress=False)
    reference = files(folder)
    (folder / "parts" / "0000000004.jsonl").unlink()  # as if killed before the batch was recorded
    (folder / "images" / "0000000005.png").unlink()
    (folder / "manifest.jsonl").unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / "images" / f".0000000005.png.{int(dead.stdout)}.0a1b2c3d.tmp").write_bytes(b"half a png")
    factory.generate(trained, "ds", 8, batch_size=4, device="cpu", progress=False)
    assert files(folder) == reference  # the killed writer's temporary is gone too


def test_kill_minus_nine_then_resume_matches_an_uninterrupted_run(trained):
    script = (
        "import sys, torch; from datasetgan import factory; from datasetgan.workspace import Workspace; "
        "torch.set_num_threads(1); "  # as this process (conftest), so both runs reduce in the same order
        "factory.generate(Workspace.open(sys.argv[1]), 'killed', 120, batch_size=2, device='cpu', progress=False)"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(trained.root)])
    parts = trained.datasets_dir / "killed" / "parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("*.jsonl"))) < 3 and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (trained.datasets_dir / "killed" / "manifest.jsonl").exists(), "killed too late to test a resume"
    folder = factory.generate(trained, "killed", 120, batch_size=2, device="cpu", progress=False)
    reference = factory.generate(trained, "straight", 120, batch_size=2, device="cpu", progress=False)
    assert files(folder) == files(reference)
    seeds = [r["seed"] for r in factory.read_manifest(folder, kept_only=False)]
    assert seeds == list(range(120))  # no duplicates, no gaps
    assert not list(folder.rglob("*.tmp"))


def test_shards_merge_into_the_same_dataset(trained):
    for index in range(3):
        factory.generate(trained, f"shard{index}", 12, batch_size=2, shard=(index, 3), device="cpu", progress=False)
    assert not (trained.datasets_dir / "shard0" / "manifest.jsonl").exists()
    merged = factory.merge(trained.datasets_dir / "shard0",
                           [trained.datasets_dir / "shard1", trained.datasets_dir / "shard2"])
    whole = factory.generate(trained, "whole", 12, batch_size=2, device="cpu", progress=False)
    assert files(merged) == files(whole)


def test_resume_with_other_settings_is_refused(trained):
    factory.generate(trained, "ds", 4, batch_size=2, device="cpu", progress=False)
    with pytest.raises(DatasetGANError, match="other settings"):
        factory.generate(trained, "ds", 6, batch_size=2, device="cpu", progress=False)


def test_bad_arguments(trained):
    with pytest.raises(DatasetGANError, match="at least 1"):
        factory.generate(trained, "x", 0, device="cpu")
    with pytest.raises(DatasetGANError, match="drop-uncertain"):
        factory.generate(trained, "x", 4, drop_uncertain=1.5, device="cpu")
    with pytest.raises(DatasetGANError, match="shard"):
        factory.generate(trained, "x", 4, shard=(3, 3), device="cpu")
