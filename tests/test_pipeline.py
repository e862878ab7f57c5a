"""The pipeline's steps on a workspace: sample, train, label, select, and their checks."""

import numpy as np
import pytest
import torch

from datasetgan.annotation import drop_small_fragments, min_fragment_pixels
from datasetgan.errors import DatasetGANError
from datasetgan.factory import label_ws
from datasetgan.features import shrink_pyramid
from datasetgan.formats.masks import save_mask
from datasetgan.generators.registry import load_generator
from datasetgan.pipeline import Pipeline
from datasetgan.workspace import Workspace

from conftest import brightness_mask
from references import hypercolumns


def colors(workspace: Workspace) -> list:
    return [c.color for c in workspace.label_classes]


def test_sample_stores_image_seed_and_w_that_reproduce_each_other(annotated_workspace):
    workspace = annotated_workspace
    assert workspace.candidate_ids() == ["000000", "000001", "000002", "000003"]
    generator = load_generator(workspace.config.generator, "cpu")
    stored = workspace.ws_for(["000002"])
    assert torch.equal(stored, generator.ws_from_seeds([2], workspace.config.sampling.psi))
    image = generator.to_uint8(generator.synthesize(stored)[0])[0].permute(1, 2, 0).numpy()
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(workspace.candidate_image("000002"))), image)
    assert Pipeline(workspace, "cpu").sample([3, 4]) == ["000004"]  # 3 is already there


def test_sample_takes_any_seeds_and_writes_the_latents_once(annotated_workspace, monkeypatch):
    from datasetgan import workspace as workspace_module

    writes = []
    save = workspace_module.save_tensors
    monkeypatch.setattr(workspace_module, "save_tensors", lambda *args: (writes.append(args[0]), save(*args)))
    pipeline = Pipeline(annotated_workspace, "cpu")
    assert pipeline.sample([42, 7, 2, 19]) == ["000042", "000007", "000019"]  # 2 is already there
    assert writes == [annotated_workspace.latents_path]
    assert annotated_workspace.candidate_ids()[-3:] == ["000042", "000007", "000019"]
    assert torch.equal(annotated_workspace.ws_for(["000007"]), pipeline.ws([7]))


def test_trained_interpreter_learns_the_annotator_rule(annotated_workspace):
    workspace = annotated_workspace
    workspace.config.interpreter.update(max_epochs=8, min_epochs=4)
    interpreter, history, report = Pipeline(workspace, "cpu").train(progress=False)
    assert report["annotated"] == 4 and history.batches > 0
    assert (workspace.interpreter_dir / "config.json").is_file()
    labels = Pipeline(workspace, "cpu").label(workspace.candidate_ids())
    truth = np.stack([brightness_mask(workspace.candidate_image(c)) for c in workspace.candidate_ids()])
    accuracy = (labels.mask.numpy() == truth).mean()
    assert accuracy > 0.8, accuracy
    assert labels.uncertainty.shape == labels.mask.shape and (labels.uncertainty >= 0).all()


def test_select_adds_the_most_uncertain_fresh_samples(annotated_workspace):
    workspace = annotated_workspace
    Pipeline(workspace, "cpu").train(progress=False)
    chosen = Pipeline(workspace, "cpu").select(2, pool=6, seed=100)
    pipeline = Pipeline(workspace, "cpu")
    ws = pipeline.generator.ws_from_seeds(range(100, 106), workspace.config.sampling.psi)
    scores = label_ws(pipeline.generator, pipeline.interpreter, ws)[1].scores
    assert set(chosen) <= set(workspace.candidate_ids())
    expected = [f"{100 + i:06d}" for i in scores.argsort(descending=True)[:2].tolist()]
    assert chosen == expected


def test_small_fragments_become_ignore():
    mask = torch.zeros(10, 10, dtype=torch.uint8)
    mask[0, :5] = 1  # 5 pixels: a fragment
    mask[5:, :] = 2  # 50 pixels: kept
    cleaned, dropped = drop_small_fragments(mask, 20)
    assert dropped == 1 and (cleaned[0, :5] == 255).all() and (cleaned[5:] == 2).all()


def test_the_fragment_minimum_is_the_papers_share_of_the_mask():
    assert [min_fragment_pixels(s) for s in (64, 256, 512, 1024)] == [1, 5, 20, 80]
    nose = torch.zeros(64, 64, dtype=torch.uint8)
    nose[30:33, 30:34] = 5  # 12 pixels: a nose of a 64 px face stays
    assert drop_small_fragments(nose)[1] == 0
    speck = torch.zeros(512, 512, dtype=torch.uint8)
    speck[30:33, 30:34] = 5  # the same 12 pixels on a 512 px mask: a stray speck
    cleaned, dropped = drop_small_fragments(speck)
    assert dropped == 1 and (cleaned[30:33, 30:34] == 255).all()


def test_shrinking_fine_levels_keeps_the_hypercolumns_exact():
    g = torch.Generator().manual_seed(0)
    pyramid = [torch.randn(2, 3, r, r, generator=g) for r in (4, 8, 16, 32)]
    shrunk = shrink_pyramid(pyramid, 12, torch.float32)
    assert [level.shape[-1] for level in shrunk] == [4, 8, 12, 12]
    assert torch.allclose(hypercolumns(shrunk, 12), hypercolumns(pyramid, 12), atol=1e-6)


def test_annotation_errors_name_the_file_and_the_problem(annotated_workspace):
    workspace = annotated_workspace
    save_mask(workspace.annotation_path("000001"), np.zeros((16, 16), np.uint8), colors(workspace))
    with pytest.raises(DatasetGANError, match="000001.png.*16x16.*32x32"):
        Pipeline(workspace, "cpu").train(progress=False)
    save_mask(workspace.annotation_path("000001"), np.full((32, 32), 7, np.uint8), colors(workspace))
    with pytest.raises(DatasetGANError, match="000001.png.*class ids \\[7\\]"):
        Pipeline(workspace, "cpu").train(progress=False)


def test_train_without_annotations_says_what_to_do(tmp_path, tiny_generator):
    from datasetgan.labels import parse_class_names

    workspace = Workspace.init(tmp_path / "empty", str(tiny_generator), parse_class_names("a,b"))
    with pytest.raises(DatasetGANError, match="no annotations"):
        Pipeline(workspace, "cpu").train(progress=False)


def test_a_typo_in_the_interpreter_settings_is_a_clear_error(annotated_workspace):
    annotated_workspace.config.interpreter["membres"] = 4
    with pytest.raises(DatasetGANError, match="interpreter.*settings.*membres"):
        Pipeline(annotated_workspace, "cpu").train(progress=False)


def test_the_sample_command_takes_any_seeds(annotated_workspace):
    from typer.testing import CliRunner

    from datasetgan.cli import app

    result = CliRunner().invoke(app, ["sample", str(annotated_workspace.root), "--seeds", "2,9-10", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 new candidates" in result.output and "(1 already there)" in result.output
    assert annotated_workspace.candidate_ids()[-2:] == ["000009", "000010"]


def test_per_sample_noise_and_truncation_cutoff_follow_the_workspace(tmp_path):
    from conftest import make_tiny_generator
    from datasetgan.generators.checkpoint import load_network, save_generator
    from datasetgan.worlds import parse_classes

    network = load_network(make_tiny_generator(tmp_path / "g.safetensors"))
    with torch.no_grad():  # a fresh network has zero noise strength: give its noise an effect
        for layer in network.synthesis.conv_layers():
            layer.noise_strength.fill_(0.5)
    save_generator(network, tmp_path / "noisy.safetensors")
    Workspace.init(tmp_path / "ws", str(tmp_path / "noisy.safetensors"), parse_classes("a,b"),
                   sampling={"noise": "per_sample", "truncation_cutoff": 2})
    workspace = Workspace.open(tmp_path / "ws")
    assert workspace.config.sampling.noise == "per_sample" and workspace.config.sampling.truncation_cutoff == 2
    Pipeline(workspace, "cpu").sample([3, 8])
    generator = load_generator(workspace.config.generator, "cpu")
    w = workspace.ws_for(["000003"])
    assert torch.equal(w, generator.ws_from_seeds([3], 0.7, 2))
    assert not torch.equal(w, generator.ws_from_seeds([3], 0.7))
    from PIL import Image

    stored = torch.from_numpy(np.array(Image.open(workspace.candidate_image("000003")))).permute(2, 0, 1)
    assert torch.equal(stored, generator.to_uint8(generator.synthesize(w, [3])[0])[0])
    assert not torch.equal(stored, generator.to_uint8(generator.synthesize(w)[0])[0])
