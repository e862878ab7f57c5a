"""Dataset generation: complete, deterministic, resumable after kill -9, shardable."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datasetgan import factory
from datasetgan.errors import DatasetGANError
from datasetgan.factory import FIRST_SEED
from datasetgan.formats.dataset import read_manifest, sample_name
from datasetgan.formats.masks import load_mask
from datasetgan.pipeline import Pipeline


@pytest.fixture
def trained(annotated_workspace):
    Pipeline(annotated_workspace, "cpu").train(progress=False)
    return annotated_workspace


def files(folder: Path) -> dict[str, bytes]:
    """Every data file of a dataset (not the per-batch bookkeeping), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.parent.name != "parts"}


def test_generation_writes_a_complete_manifest(trained):
    folder = Pipeline(trained, "cpu").generate("ds", 10, batch_size=4, drop_uncertain=0.2, progress=False)
    records = read_manifest(folder, kept_only=False)
    assert [r["seed"] for r in records] == list(range(FIRST_SEED, FIRST_SEED + 10))
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
    a = Pipeline(trained, "cpu").generate("a", 6, batch_size=3, progress=False)
    b = Pipeline(trained, "cpu").generate("b", 6, batch_size=3, progress=False)
    assert files(a) == files(b)


def test_redoing_an_unfinished_batch_restores_identical_files(trained):
    folder = Pipeline(trained, "cpu").generate("ds", 8, batch_size=4, progress=False)
    reference = files(folder)
    (folder / "parts" / f"{sample_name(FIRST_SEED + 4)}.jsonl").unlink()  # as if killed before the batch was recorded
    (folder / "images" / f"{sample_name(FIRST_SEED + 5)}.png").unlink()
    (folder / "manifest.jsonl").unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = f".{sample_name(FIRST_SEED + 5)}.png.{int(dead.stdout)}.0a1b2c3d.tmp"
    (folder / "images" / orphan).write_bytes(b"half a png")
    Pipeline(trained, "cpu").generate("ds", 8, batch_size=4, progress=False)
    assert files(folder) == reference  # the killed writer's temporary is gone too


def test_kill_minus_nine_then_resume_matches_an_uninterrupted_run(trained):
    script = (
        "import sys, torch; from datasetgan.pipeline import Pipeline; "
        "torch.set_num_threads(1); "  # as this process (conftest), so both runs reduce in the same order
        "Pipeline.open(sys.argv[1], 'cpu').generate('killed', 120, batch_size=2, progress=False)"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(trained.root)])
    parts = trained.datasets_dir / "killed" / "parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("*.jsonl"))) < 3 and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (trained.datasets_dir / "killed" / "manifest.jsonl").exists(), "killed too late to test a resume"
    folder = Pipeline(trained, "cpu").generate("killed", 120, batch_size=2, progress=False)
    reference = Pipeline(trained, "cpu").generate("straight", 120, batch_size=2, progress=False)
    assert files(folder) == files(reference)
    seeds = [r["seed"] for r in read_manifest(folder, kept_only=False)]
    assert seeds == list(range(FIRST_SEED, FIRST_SEED + 120))  # no duplicates, no gaps
    assert not list(folder.rglob("*.tmp"))


def test_shards_merge_into_the_same_dataset(trained):
    for index in range(3):
        Pipeline(trained, "cpu").generate(f"shard{index}", 12, batch_size=2, shard=(index, 3), progress=False)
    assert not (trained.datasets_dir / "shard0" / "manifest.jsonl").exists()
    merged = factory.merge(trained.datasets_dir / "shard0",
                           [trained.datasets_dir / "shard1", trained.datasets_dir / "shard2"])
    whole = Pipeline(trained, "cpu").generate("whole", 12, batch_size=2, progress=False)
    assert files(merged) == files(whole)


def test_resume_with_other_settings_is_refused(trained):
    Pipeline(trained, "cpu").generate("ds", 4, batch_size=2, progress=False)
    with pytest.raises(DatasetGANError, match="other settings"):
        Pipeline(trained, "cpu").generate("ds", 6, batch_size=2, progress=False)


def test_bad_arguments(trained):
    with pytest.raises(DatasetGANError, match="at least 1"):
        Pipeline(trained, "cpu").generate("x", 0)
    with pytest.raises(DatasetGANError, match="drop-uncertain"):
        Pipeline(trained, "cpu").generate("x", 4, drop_uncertain=1.5)
    with pytest.raises(DatasetGANError, match="shard"):
        Pipeline(trained, "cpu").generate("x", 4, shard=(3, 3))


def test_one_generate_command_builds_one_generator_and_reads_the_interpreter_once(trained, loads):
    from typer.testing import CliRunner

    from datasetgan.cli import app

    loads.clear()
    result = CliRunner().invoke(app, ["generate", str(trained.root), "-n", "6", "--batch-size", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(read_manifest(trained.datasets_dir / "synthetic", kept_only=False)) == 6
    assert loads == {"generator": 1, "interpreter": 1}
