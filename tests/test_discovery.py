"""Unsupervised part discovery: streamed, seeded k-means on hypercolumns, its saved model, the
cluster -> class mapping and its rules, the labeller the factory uses, and the CLI path."""

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_INTERPRETER, make_workspace
from datasetgan.cli import app
from datasetgan.discovery import (
    IGNORE_NAME,
    PartDiscovery,
    PartLabeller,
    assign_classes,
    discover,
    mapping_from_annotations,
    mapping_path,
    overlap,
    read_mapping,
    write_mapping,
)
from datasetgan.errors import DatasetGANError
from datasetgan.factory import GenerationSettings
from datasetgan.formats.dataset import read_manifest
from datasetgan.formats.masks import load_mask
from datasetgan.labels import IGNORE
from datasetgan.pipeline import Pipeline
from test_cli import run

TINY = {"samples": 6, "pixels_per_image": 128, "batch_size": 256, "progress": False}  # 768 pixels: 3 k-means steps


def candidate_pyramid(pipeline: Pipeline) -> list[torch.Tensor]:
    ids = pipeline.workspace.candidate_ids()
    return pipeline.generator.synthesize(pipeline.workspace.ws_for(ids))[1]


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def pipeline(annotated_workspace) -> Pipeline:
    return Pipeline(annotated_workspace, "cpu")


def test_the_same_seed_gives_the_same_centroids_and_maps_and_another_seed_others(pipeline):
    pyramid = candidate_pyramid(pipeline)
    first, again, other = (discover(pipeline, 4, seed=seed, **TINY) for seed in (0, 0, 1))
    assert torch.equal(first.centroids, again.centroids)
    assert torch.equal(first.mean, again.mean) and torch.equal(first.scale, again.scale)
    maps = first.cluster_maps(pyramid)
    assert maps.dtype == torch.long and maps.shape == (4, 32, 32)
    assert torch.equal(maps, again.cluster_maps(pyramid))
    assert not torch.equal(first.centroids, other.centroids)
    assert len(maps.unique()) > 1  # parts, not one blob


def test_kmeans_is_fed_bounded_batches_as_the_images_stream_in(pipeline):
    fed: list[int] = []
    discover(pipeline, 3, samples=20, pixels_per_image=100, batch_size=300, progress=False, on_batch=fed.append)
    assert sum(fed) == 20 * 100  # every sampled pixel, once
    assert max(fed) <= 300 and fed[:-1] == [300] * (len(fed) - 1)  # fixed steps, only the last one short
    assert len(fed) == 7  # streamed: never all 2,000 pixels in one call


def test_layers_resolution_and_bad_arguments(pipeline):
    generator = pipeline.generator
    names = [layer.name for layer in generator.feature_layers]
    chosen = discover(pipeline, 3, layers=[names[5], 0], resolution=16, **TINY)
    assert chosen.layers == [0, 5] and chosen.resolution == 16
    assert chosen.dim == generator.feature_channels[0] + generator.feature_channels[5]
    assert chosen.cluster_maps(candidate_pyramid(pipeline)).shape == (4, 16, 16)
    for kwargs, message in (({"k": 1}, "-k must be at least 2"),
                            ({"k": 800}, "-k 800 is more than the 768 pixels sampled"),
                            ({"k": 3, "layers": ["nope"]}, "unknown feature layer 'nope'"),
                            ({"k": 3, "layers": [7]}, "feature layer 7 is out of range")):
        with pytest.raises(DatasetGANError) as error:
            discover(pipeline, **{**TINY, **kwargs})
        assert message in one_line(error)


def test_a_saved_model_loads_to_the_same_cluster_maps(pipeline, tmp_path):
    pyramid = candidate_pyramid(pipeline)
    model = discover(pipeline, 5, layers=[1, 2, 6], **TINY)
    model.save(tmp_path / "parts")
    assert not list((tmp_path / "parts").glob("*.pkl"))
    loaded = PartDiscovery.load(tmp_path / "parts")
    assert (loaded.k, loaded.resolution, loaded.layers, loaded.settings) == (5, 32, [1, 2, 6], model.settings)
    assert torch.equal(loaded.cluster_maps(pyramid), model.cluster_maps(pyramid))
    assert loaded.fingerprint == model.fingerprint
    with pytest.raises(DatasetGANError) as error:
        PartDiscovery.load(tmp_path / "nothing")
    assert "run `datasetgan discover DIR -k K` first" in one_line(error)
    with pytest.raises(DatasetGANError) as error:
        loaded.cluster_maps(pyramid[1:])
    assert "use the generator it was discovered with" in one_line(error)


def test_cluster_maps_in_pixel_bands_equal_one_band(pipeline, monkeypatch):
    """The bands that bound memory for large images change nothing."""
    model, pyramid = discover(pipeline, 4, **TINY), candidate_pyramid(pipeline)
    whole = model.nearest(pyramid)
    monkeypatch.setattr("datasetgan.discovery._CHUNK_VALUES", 100 * model.dim)  # 100-pixel bands
    banded = model.nearest(pyramid)
    assert torch.equal(whole[0], banded[0]) and torch.allclose(whole[1], banded[1])


def test_the_mapping_rules_on_a_constructed_case():
    names = ["background", "a", "b"]
    # cluster 0: background; 1: 6 a, 4 b; 2: 5 a, 4 b; 3: nothing annotated (its pixels are ignore);
    # 4: 2 a, 1 b -- five clusters for three classes
    pixels = [(0, 0)] * 8 + [(1, 1)] * 6 + [(1, 2)] * 4 + [(2, 1)] * 5 + [(2, 2)] * 4 + [(3, IGNORE)] * 7 \
        + [(4, 1)] * 2 + [(4, 2)] + [(0, IGNORE)] * 9
    clusters = torch.tensor([c for c, _ in pixels]).view(1, 1, -1)
    masks = torch.tensor([m for _, m in pixels], dtype=torch.uint8).view(1, 1, -1)
    counts = overlap(clusters, masks, 5, 3)
    assert counts.tolist() == [[8, 0, 0], [0, 6, 4], [0, 5, 4], [0, 0, 0], [0, 2, 1]]
    assert assign_classes(counts, names, "majority") == {0: "background", 1: "a", 2: "a", 3: IGNORE_NAME, 4: "a"}
    # one to one first (b gets cluster 2, its best match once a has cluster 1), then majority
    assert assign_classes(counts, names, "hungarian") == {0: "background", 1: "a", 2: "b", 3: IGNORE_NAME, 4: "a"}
    with pytest.raises(DatasetGANError) as error:
        assign_classes(counts, names, "vote")
    assert "unknown mapping rule 'vote'" in one_line(error)


def test_mappings_are_checked_written_and_read(pipeline):
    workspace, model = pipeline.workspace, discover(pipeline, 4, **TINY)
    write_mapping(workspace, model, {0: "bright", 2: "dark"})
    assert read_mapping(workspace, model) == {0: "bright", 1: IGNORE_NAME, 2: "dark", 3: IGNORE_NAME}
    for mapping, message in (({0: "hat"}, "unknown class 'hat' for cluster 0: use one of background, bright, dark "
                                          "or ignore"),
                             ({4: "dark"}, "cluster 4 is outside 0..3 (k=4)"),
                             ({"x": "dark"}, "cluster 'x' is not a number")):
        with pytest.raises(DatasetGANError) as error:
            write_mapping(workspace, model, mapping)
        assert message in one_line(error)
    path = mapping_path(workspace)
    edited = json.loads(path.read_text())
    path.write_text(json.dumps(edited | {"clusters": {"1": "hat"}}))  # a person's typo
    with pytest.raises(DatasetGANError) as error:
        read_mapping(workspace, model)
    assert str(path) in one_line(error) and "unknown class 'hat'" in str(error.value)
    path.write_text(json.dumps(edited))
    other = discover(pipeline, 4, seed=1, **TINY)
    with pytest.raises(DatasetGANError) as error:
        read_mapping(workspace, other)
    assert "made for another discovery model" in one_line(error)


def test_the_part_labeller_labels_with_the_mapped_classes(pipeline):
    workspace, model = pipeline.workspace, discover(pipeline, 6, **TINY)
    mapping = mapping_from_annotations(pipeline, model)
    assert set(mapping) == set(range(6)) and set(mapping.values()) <= {"background", "bright", "dark", IGNORE_NAME}
    mapping[0] = IGNORE_NAME
    model.save(workspace.parts_dir)
    write_mapping(workspace, model, mapping)
    labeller = PartLabeller.open(workspace)
    pyramid = candidate_pyramid(pipeline)
    labels = labeller.label(pyramid)
    ids = {"background": 0, "bright": 1, "dark": 2, IGNORE_NAME: IGNORE}
    expected = torch.tensor([ids[mapping[c]] for c in range(6)], dtype=torch.uint8)[model.cluster_maps(pyramid)]
    assert labels.mask.dtype == torch.uint8 and torch.equal(labels.mask, expected)
    assert (labels.mask == IGNORE).any()  # cluster 0's pixels
    assert labels.uncertainty.shape == (4, 32, 32) and 0 <= labels.uncertainty.min() <= labels.uncertainty.max() <= 1
    assert labels.scores.shape == (4,) and (labels.scores > 0).all()
    with pytest.raises(DatasetGANError) as error:
        PartLabeller(model, {}, ["background", "bright", "dark"])
    assert "every cluster maps to ignore" in one_line(error)


def test_clusters_of_the_same_class_leave_a_pixel_certain(tmp_path):
    workspace = make_workspace(tmp_path, "background,thing", 2, TINY_INTERPRETER)
    pipeline = Pipeline(workspace, "cpu")
    model, pyramid = discover(pipeline, 3, **TINY), candidate_pyramid(pipeline)
    one_class = PartLabeller(model, {0: "thing", 1: "thing", 2: "thing"}, ["background", "thing"]).label(pyramid)
    assert (one_class.mask == 1).all() and (one_class.uncertainty == 0).all()
    _, ratio = model.nearest(pyramid)
    assert (ratio > 0).all() and (ratio <= 1).all()


def test_older_datasets_were_labelled_by_the_interpreter():
    settings = {"generator": "g", "n": 4, "uncertainty_scale": 1.0}
    assert GenerationSettings.model_validate(settings).labeller == "interpreter"


def test_discover_and_generate_from_clusters_on_the_command_line(pipeline):
    workspace, folder = pipeline.workspace, str(pipeline.workspace.root)
    result = run("discover", folder, "-k", "5", "--samples", "6", "--pixels-per-image", "256", "--layers", "0-2,6",
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "majority rule over 4 annotated candidates" in result.stdout
    assert (workspace.parts_dir / "clusters.png").is_file()
    model = PartDiscovery.load(workspace.parts_dir)
    assert (model.k, model.layers) == (5, [0, 1, 2, 6])
    mapping = read_mapping(workspace, model)
    assert mapping == mapping_from_annotations(pipeline, model)  # the majority rule, as the output says
    result = run("generate", folder, "-n", "4", "--from-clusters", "--name", "parts", "--drop-uncertain", "0",
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr
    dataset = workspace.datasets_dir / "parts"
    assert json.loads((dataset / "dataset.json").read_text())["labeller"] == "clusters"
    labeller = PartLabeller(model, mapping, [c.name for c in workspace.label_classes])
    for record in read_manifest(dataset):
        _, pyramid = pipeline.generator.synthesize(pipeline.ws([record["seed"]]))
        written = torch.from_numpy(load_mask(dataset / "masks" / f"{record['name']}.png"))
        expected = labeller.label(pyramid).mask[0]
        assert (written == expected).float().mean() > 0.99  # another process, other threads: ties may round apart


@pytest.mark.parametrize("args, message", [
    (["discover", "-k", "1"], "-k must be at least 2 (got 1)"),
    (["discover", "-k", "9000", "--samples", "2", "--pixels-per-image", "4096"],
     "-k 9000 is more than the 2048 pixels sampled"),
    (["discover", "-k", "3", "--layers", "b4.conv1,99"], "feature layer 99 is out of range"),
    (["generate", "-n", "4", "--from-clusters"], "no part discovery model"),
])
def test_bad_part_options_are_one_line_errors(annotated_workspace, args, message):
    """In process (the CLI's main prints these on one line, tested in test_cli): a subprocess costs seconds."""
    command, *options = args
    result = CliRunner().invoke(app, [command, str(annotated_workspace.root), *options, "--device", "cpu"])
    assert isinstance(result.exception, DatasetGANError)
    assert message in str(result.exception) and "\n" not in str(result.exception)
