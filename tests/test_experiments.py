"""The paper's experiments: the subset rule, and a tiny end-to-end run that resumes from its cache."""

import json
import math
from pathlib import Path

import pytest
from conftest import TINY_INTERPRETER, brightness_mask, make_tiny_generator

from datasetgan.errors import DatasetGANError
from datasetgan.experiments import bench_config, run_benchmark, select_subset
from datasetgan.formats.masks import load_mask, save_mask
from datasetgan.pipeline import Pipeline
from datasetgan.segment.data import read_image
from datasetgan.workspace import Workspace
from datasetgan.worlds import parse_classes


def records(scores: list[float], first_seed: int = 100) -> list[dict]:
    return [{"name": f"{first_seed + i:010d}", "seed": first_seed + i, "score": s} for i, s in enumerate(scores)]


def test_subset_is_a_prefix_less_its_most_uncertain():
    pool = records([0.1, 0.9, 0.3, 0.8, 0.2, 0.99])
    assert [r["seed"] for r in select_subset(pool, 5, 0.4)] == [100, 102, 104]  # 0.9 and 0.8 dropped, not 0.99
    assert select_subset(pool, 4, 0.0) == pool[:4]
    assert [r["seed"] for r in select_subset(pool, 6, 0.1)] == [100, 101, 102, 103, 104]  # round(0.6) = 1


def test_subset_ties_drop_the_lower_seed_first_and_checks_its_arguments():
    pool = records([0.5, 0.5, 0.1])
    assert [r["seed"] for r in select_subset(pool, 3, 0.34)] == [101, 102]
    with pytest.raises(DatasetGANError):
        select_subset(pool, 4, 0.1)
    with pytest.raises(DatasetGANError):
        select_subset(pool, 3, 1.0)


def first_of_pool(out: Path) -> list[str]:
    """The annotation Table 6's random-1 workspace holds: the first of the seeded order."""
    return Workspace.open(out / "work" / "seed0" / "random-1").annotated_ids()


def brightness_painter(workspace: Workspace, ids: list[str]) -> None:
    """A deterministic stand-in for the oracle, which only labels 64 px images."""
    colors = [c.color for c in workspace.label_classes]
    for cid in ids:
        save_mask(workspace.annotation_path(cid), brightness_mask(workspace.candidate_image(cid)), colors)


def test_every_table_runs_end_to_end_and_a_rerun_reuses_the_cells(tmp_path: Path):
    # 64 px: the gap table labels generated images with the world oracle, which exists at 64 px
    generator = make_tiny_generator(tmp_path / "tiny.safetensors", resolution=64)
    painted = Workspace.init(tmp_path / "painted", str(generator), parse_classes("world:faces"))
    brightness_painter(painted, Pipeline(painted, "cpu").sample(range(2)))
    cfg = bench_config(generator=str(generator), annotations=str(painted.annotations_dir), seeds=[0], steps=2,
                       batch_size=4, n_test=6, sizes=[8, 16], main_size=16, drops=[0.0, 0.25], main_drop=0.25,
                       t6_counts=[2], t6_start=1, t6_size=8, select_pool=4, interpreter=TINY_INTERPRETER,
                       n_unlabelled=6, n_full=5, n_full_steps=4, self_training={"steps": 2},
                       samplings=[{}, {"truncation_cutoff": 4, "noise": "per_sample"}], parts_counts=[1, 2],
                       parts_k=3, parts_samples=2, parts_eval=4)
    out = tmp_path / "bench"
    first = run_benchmark(cfg, out, device="cpu", painter=brightness_painter, progress=False)

    assert set(first["tables"]) == {"1", "3", "4", "6", "gap", "sampling", "parts"}
    keys = {key for table in first["tables"].values() for row in table["rows"] for key in row["cells"]}
    assert keys == set(first["cells"]) == set(first["this_run"]["computed"])
    # Table 1's DatasetGAN cell is Table 4's 25 %, Table 3's 16 and the gap table's (c); random-2 is Table 3's 8;
    # the gap table adds (a) 5 real, the same trained longer and (b) the oracle's labels; Table 1's self-trained
    # rows add two and its augmented row one; the sampling table's first row is that DatasetGAN cell again (the
    # annotations' own settings), its second is new; the parts table adds DatasetGAN from 1 annotated (its 2 are
    # the main cell of Table 3's 8), the discovered parts' segmenter and the parts against the oracle
    assert len(keys) == 17
    assert first["tables"]["parts"]["rows"][1]["cells"] == ["seed0/main-n8-drop0.25"]
    assert {"seed0/random-1-n8-drop0.25", "seed0/parts-1-n8-drop0.25", "seed0/parts-1-vs-oracle-n4"} <= keys
    assert first["cells"]["seed0/parts-1-vs-oracle-n4"]["images"] == 4
    assert Workspace.open(out / "work" / "seed0" / "parts-1").annotated_ids() == first_of_pool(out)
    assert first["tables"]["sampling"]["rows"][0]["cells"] == ["seed0/main-n16-drop0.25"]
    assert {"seed0/real-5", "seed0/real-5-steps4", "seed0/main-n16-drop0.25-transfer-augment",
            "seed0/main-n16-drop0.25-oracle-labels", "seed0/main-n16-drop0.25-self-trained",
            "seed0/real-2-self-trained"} <= keys
    assert first["cells"]["seed0/main-n16-drop0.25-self-trained"]["train_images"] == 12 + 6  # + unlabelled
    assert (out / "models" / "seed0" / "main-n16-drop0.25.safetensors").is_file()  # the teacher
    assert all(len(cell["curve"]) == (4 if key == "seed0/real-5-steps4" else 2)  # checkpoints 1 step apart
               for key, cell in first["cells"].items() if key != "oracle" and not key.endswith("-vs-oracle-n4"))
    for cell in first["cells"].values():
        assert math.isfinite(cell["miou"]) and math.isfinite(cell["pixel_accuracy"])
    assert first["cells"]["seed0/main-n16-drop0.25"]["train_images"] == 12
    start, picked = Workspace.open(out / "work" / "seed0" / "active-2").annotated_ids()
    assert start in ("000000", "000001") and int(picked) >= 1_000_000  # picked from the fresh pool
    # other sampling settings change the annotated images, so the painter labels them again
    main, resampled = (Workspace.open(out / "work" / "seed0" / name)
                       for name in ("main", "sampling-psi0.7-cutoff4-noise-per_sample"))
    assert resampled.config.sampling.truncation_cutoff == 4 and resampled.config.sampling.noise == "per_sample"
    assert resampled.annotated_ids() == main.annotated_ids()
    for cid in resampled.annotated_ids():
        assert (read_image(resampled.candidate_image(cid)) != read_image(main.candidate_image(cid))).any()
        assert (load_mask(resampled.annotation_path(cid)) == brightness_mask(resampled.candidate_image(cid))).all()
    markdown = (out / "results.md").read_text()
    assert markdown.count("## Table") == 4 and markdown.count("## Gap") == 1 and markdown.count("## Sampling") == 1
    assert markdown.count("## Parts") == 1
    assert "Per-seed difference" in markdown and markdown.count("Learning curve") == 3

    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")}
    second = run_benchmark(cfg, out, tables=[1, 4], device="cpu", painter=brightness_painter, progress=False)
    assert second["this_run"]["computed"] == [] and set(second["tables"]) == {"1", "4"}
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")} == stamps
    assert json.loads((out / "results.json").read_text())["tables"]["1"] == first["tables"]["1"]

    with pytest.raises(DatasetGANError, match="other settings"):
        run_benchmark(bench_config(**(cfg.model_dump() | {"steps": 3})), out, device="cpu",
                      painter=brightness_painter, progress=False)
    # the interpreter's settings count as resolved: its default given explicitly reads the same cells back
    def interpreter(**update):
        return bench_config(**(cfg.model_dump() | {"interpreter": cfg.interpreter | update}))
    explicit_default = run_benchmark(interpreter(min_steps=0), out, tables=[1], device="cpu",
                                     painter=brightness_painter, progress=False)
    assert explicit_default["this_run"]["computed"] == []
    with pytest.raises(DatasetGANError, match="other settings"):
        run_benchmark(interpreter(min_steps=5), out, device="cpu", painter=brightness_painter, progress=False)

    other_seed = run_benchmark(bench_config(**(cfg.model_dump() | {"seeds": [1]})), out, tables=[1], device="cpu",
                               painter=brightness_painter, progress=False)
    assert sorted(other_seed["this_run"]["computed"]) == [  # seed 0's cells and the oracle reused
        "seed1/annotated-gan", "seed1/main-n16-drop0.25", "seed1/main-n16-drop0.25-self-trained",
        "seed1/main-n16-drop0.25-transfer-augment", "seed1/real-2", "seed1/real-2-self-trained"]


def test_bad_settings_and_annotation_names_are_explained(tmp_path: Path):
    with pytest.raises(DatasetGANError, match="select_pool"):
        bench_config(t6_start=2, t6_counts=[4, 16], select_pool=8)  # the second round adds 12
    folder = tmp_path / "masks"
    folder.mkdir()
    for name in ("000002.png", "face1.png"):
        (folder / name).write_bytes(b"")
    with pytest.raises(DatasetGANError, match="face1.png"):
        run_benchmark(bench_config(quick=True, annotations=str(folder), t6_start=1, t6_counts=[2]), tmp_path / "out",
                      tables=[1], progress=False)
