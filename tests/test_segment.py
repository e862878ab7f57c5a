"""Downstream data and training: both dataset layouts load, bad folders say what is wrong,
and a segmenter learns a world it is shown."""

import shutil

import pytest
import torch

from datasetgan import factory, workflow
from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import prepare_output, write_classes, write_pairs
from datasetgan.segment.data import check_same_classes, load_labelled
from datasetgan.segment.train import SegmenterConfig, evaluate, load_segmenter, save_segmenter, train_segmenter
from datasetgan.worlds import get_world
from datasetgan.worlds.oracle import render_split

CPU = torch.device("cpu")


def world_folder(tmp_path, n=6, resolution=32):
    world = get_world("faces")
    images, labels = world.render(list(range(n)), resolution)
    folder = prepare_output(tmp_path / "world")
    write_classes(folder, world.classes)
    write_pairs(folder, [f"{i:03d}" for i in range(n)], images.permute(0, 2, 3, 1).numpy(), labels.numpy(),
                world.classes)
    return folder, images, labels


def test_plain_folder_loads_exactly(tmp_path):
    folder, images, labels = world_folder(tmp_path)
    loaded_images, loaded_masks, classes = load_labelled(folder)
    assert torch.equal(loaded_images, images) and torch.equal(loaded_masks, labels)
    assert [c.name for c in classes] == [c.name for c in get_world("faces").classes]


def test_generated_dataset_loads_only_kept_samples(annotated_workspace):
    workflow.train(annotated_workspace, device="cpu", progress=False)
    folder = factory.generate(annotated_workspace, "ds", 10, drop_uncertain=0.3, batch_size=5, device="cpu",
                              progress=False)
    images, masks, classes = load_labelled(folder)
    assert len(images) == 7 and masks.shape == (7, 32, 32) and len(classes) == 3


def test_bad_folders_are_explained(tmp_path):
    folder, _, _ = world_folder(tmp_path)
    with pytest.raises(DatasetGANError, match="not a folder"):
        load_labelled(tmp_path / "missing")
    (folder / "masks" / "002.png").unlink()
    with pytest.raises(DatasetGANError, match="no mask"):
        load_labelled(folder)
    empty = prepare_output(tmp_path / "empty")
    write_classes(empty, get_world("faces").classes)
    with pytest.raises(DatasetGANError, match="no images"):
        load_labelled(empty)
    shutil.rmtree(folder / "masks")
    (folder / "classes.json").unlink()
    with pytest.raises(DatasetGANError, match="classes.json"):
        load_labelled(folder)


def test_class_lists_must_match():
    faces = list(get_world("faces").classes)
    check_same_classes(faces, faces, "a", "b")
    with pytest.raises(DatasetGANError, match="class lists differ"):
        check_same_classes(faces, faces[:3], "synthetic", "real test")


def test_segmenter_learns_the_world_and_round_trips(tmp_path):
    images, labels = render_split("faces", "real_train", 64, 32)
    cfg = SegmenterConfig(epochs=6, batch_size=16, lr=3e-3)
    model, history = train_segmenter(images, labels, 10, cfg, CPU, progress=False)
    assert history[-1] < history[0]
    scores = evaluate(model, images, labels, 10, CPU)
    majority = float((labels == labels.flatten().mode().values).float().mean())
    assert scores.pixel_accuracy > majority + 0.08
    assert scores.miou > 0.15  # predicting the majority class everywhere scores about majority / 10
    path = tmp_path / "seg.safetensors"
    save_segmenter(model, path, cfg.architecture, [str(i) for i in range(10)])
    loaded, info = load_segmenter(path, CPU)
    assert info["architecture"] == "unet-resnet18"
    assert evaluate(loaded, images, labels, 10, CPU).miou == pytest.approx(scores.miou)
