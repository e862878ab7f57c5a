"""Downstream data and training: both dataset layouts load, bad folders say what is wrong,
and a segmenter learns a world it is shown."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from torchvision import models as tv_models

from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import prepare_output, write_classes, write_pairs
from datasetgan.metrics import scores_from_confusion
from datasetgan.pipeline import Pipeline
from datasetgan.segment.data import check_same_classes, labelled_names, load_labelled
from datasetgan.segment.evaluate import cross_validate, fold_scores, make_folds, per_image_confusion
from datasetgan.segment.models import build_segmenter, cached_weights_path
from datasetgan.segment.recipe import train_and_score
from datasetgan.segment.runs import split_indices
from datasetgan.labels import IGNORE
from datasetgan.segment.models import normalize
from datasetgan.segment.self_training import SelfTrainingConfig, pseudo_label_self_training, pseudo_labels
from datasetgan.segment.train import (SegmenterConfig, augment, evaluate, load_segmenter, read_segmenter_info,
                                      batch_order, save_segmenter, schedule_points, train_segmenter)
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
    Pipeline(annotated_workspace, "cpu").train(progress=False)
    folder = Pipeline(annotated_workspace, "cpu").generate("ds", 10, drop_uncertain=0.3, batch_size=5,
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
    assert info["architecture"] == "unet-resnet18-slim"
    assert evaluate(loaded, images, labels, 10, CPU).miou == pytest.approx(scores.miou)


# --- k-fold checkpoint selection, on hand-made per-image confusion stacks -------------------------

PERFECT = torch.tensor([[10, 0, 0], [0, 10, 0], [0, 0, 0]])  # class 2 never appears: left out of mIoU
HALF = torch.tensor([[5, 5, 0], [5, 5, 0], [0, 0, 0]])
BEST_FOR = [0, 0, 1, 1, 2, 2, 0, 1, 1, 1]  # the checkpoint that segments image i perfectly


def hand_made_stack() -> torch.Tensor:
    """[3 checkpoints, 10 images, 3, 3]: checkpoint k is perfect on the images BEST_FOR gives it, half right
    on the others."""
    return torch.stack([torch.stack([PERFECT if BEST_FOR[i] == k else HALF for i in range(10)]) for k in range(3)])


def miou_of(perfect: int, half: int) -> float:
    """mIoU of `perfect` PERFECT images plus `half` HALF ones: both classes have IoU (10p+5h)/(10p+15h)."""
    return (2 * perfect + half) / (2 * perfect + 3 * half)


def test_each_fold_picks_its_best_checkpoint_and_scores_it_on_the_rest():
    folds = [torch.tensor([2 * f, 2 * f + 1]) for f in range(5)]
    results = cross_validate(hand_made_stack(), folds)
    assert [r.checkpoint for r in results] == [0, 1, 2, 0, 1]  # fold 4 is a tie: the earliest checkpoint wins
    assert [r.selection_miou for r in results] == pytest.approx([1, 1, 1, miou_of(1, 1), 1])
    # Scored on the other 8 images: the chosen checkpoint is perfect on those of them BEST_FOR gives it.
    expected = [miou_of(1, 7), miou_of(3, 5), miou_of(0, 8), miou_of(2, 6), miou_of(3, 5)]
    assert [r.scores.miou for r in results] == pytest.approx(expected)
    assert all(r.scores.iou[2] != r.scores.iou[2] for r in results)  # absent class: NaN, not 0
    for fold, result in zip(folds, results):
        assert torch.equal(result.selected_on, fold)
        assert sorted(result.scored_on.tolist()) == sorted(set(range(10)) - set(fold.tolist()))
        assert torch.equal(result.confusion, hand_made_stack()[result.checkpoint, result.scored_on].sum(0))


def test_folds_partition_the_images_reproducibly():
    folds = make_folds(11, 5, seed=3)
    assert sorted(torch.cat(folds).tolist()) == list(range(11))
    assert sorted(len(f) for f in folds) == [2, 2, 2, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(folds, make_folds(11, 5, seed=3)))
    assert not all(torch.equal(a, b) for a, b in zip(folds, make_folds(11, 5, seed=4)))
    for k in (1, 12):
        with pytest.raises(DatasetGANError, match="--folds must be between 2 and the number of test images"):
            make_folds(11, k, seed=0)


def test_per_image_confusions_sum_to_the_dataset_confusion(tmp_path):
    images, labels = render_split("faces", "real_test", 5, 32)
    model = build_segmenter("unet-resnet18", 10).eval()
    stack = per_image_confusion(model, images, labels, 10, CPU, batch_size=2)
    assert stack.shape == (5, 10, 10)
    assert stack.sum((1, 2)).tolist() == [32 * 32] * 5
    assert evaluate(model, images, labels, 10, CPU).miou == pytest.approx(scores_from_confusion(stack.sum(0)).miou)


# --- training hooks, splits and checkpoints -----------------------------------------------------

def test_the_epoch_callback_sees_every_epoch_without_changing_training():
    images, labels = render_split("faces", "real_train", 6, 32)
    cfg = SegmenterConfig(epochs=2, batch_size=3)
    plain, plain_history = train_segmenter(images, labels, 10, cfg, CPU, progress=False)
    seen = []

    def validate(epoch, model, loss):
        seen.append((epoch, loss))
        return {"val_mIoU": evaluate(model, images, labels, 10, CPU).miou}

    watched, history = train_segmenter(images, labels, 10, cfg, CPU, progress=False, on_checkpoint=validate)
    assert seen == list(zip([1, 2], history)) and history == plain_history
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), watched.state_dict().values()))


def test_step_counted_training_checks_in_at_evenly_spaced_steps_and_shows_each_image_equally():
    cfg = SegmenterConfig(steps=10, checkpoints=4, batch_size=4)
    assert schedule_points(6, cfg) == (10, [2, 5, 8, 10])  # whatever the set's size
    assert schedule_points(6, cfg.model_copy(update={"steps": None, "epochs": 3})) == (6, [2, 4, 6])
    batches = batch_order(6, 4, 10, torch.Generator().manual_seed(0))
    assert len(batches) == 10 and all(len(b) == 4 for b in batches)
    counts = torch.bincount(torch.cat(batches), minlength=6)
    assert int(counts.max() - counts.min()) <= 1  # 40 draws over 6 images: 6 or 7 each


def test_the_recipe_scores_by_the_five_fold_protocol_and_keeps_its_curve():
    images, labels = render_split("faces", "real_train", 8, 32)
    test = render_split("faces", "real_test", 10, 32)
    cfg = SegmenterConfig(steps=6, checkpoints=3, batch_size=4, lr=3e-3)
    scored = train_and_score(images, labels, test, 10, CPU, cfg)
    confusions = []  # the same training again (seeded), every checkpoint tested by hand
    train_segmenter(images, labels, 10, cfg, CPU, progress=False,
                    on_checkpoint=lambda k, model, loss: confusions.append(per_image_confusion(model, *test, 10, CPU)))
    expected = fold_scores(cross_validate(torch.stack(confusions), make_folds(10, 5, 0)))
    assert scored.scores.miou == pytest.approx(expected.miou) and scored.train_images == 8
    assert scored.curve == [(step, pytest.approx(scores_from_confusion(c.sum(0)).miou))
                            for step, c in zip([2, 4, 6], confusions)]
    with pytest.raises(ValueError, match="counts steps"):
        train_and_score(images, labels, test, 10, CPU, cfg.model_copy(update={"steps": None}))


def test_validation_split_is_seeded_and_disjoint():
    train, val = split_indices(20, 0.1, seed=0)
    assert len(val) == 2 and sorted(torch.cat([train, val]).tolist()) == list(range(20))
    assert torch.equal(val, split_indices(20, 0.1, seed=0)[1])
    assert len(split_indices(5, 0.01, seed=0)[1]) == 1  # a fraction above 0 always holds one out
    assert len(split_indices(5, 0.0, seed=0)[1]) == 0


def test_only_segmenter_checkpoints_are_read(tmp_path, tiny_generator):
    with pytest.raises(DatasetGANError, match="not a datasetgan segmenter checkpoint"):
        read_segmenter_info(tiny_generator)
    text = tmp_path / "notes.safetensors"
    text.write_text("not weights")
    with pytest.raises(DatasetGANError, match="not a datasetgan segmenter checkpoint"):
        load_segmenter(text, CPU)


def test_pretrained_backbones_come_only_from_the_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(DatasetGANError, match="never downloaded"):
        build_segmenter("unet-resnet18", 3, pretrained=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        imagenet = tv_models.resnet18().state_dict()
    cached = cached_weights_path(tv_models.ResNet18_Weights.DEFAULT)
    cached.parent.mkdir(parents=True)
    torch.save(imagenet, cached)  # torchvision's own cache format, where it would have downloaded to
    model = build_segmenter("unet-resnet18", 3, pretrained=True)
    assert torch.equal(model.layer3[0].conv1.weight, imagenet["layer3.0.conv1.weight"])


def test_a_torchvision_segmenter_takes_its_cached_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    imagenet = tv_models.mobilenet_v3_large().state_dict()
    cached = cached_weights_path(tv_models.MobileNet_V3_Large_Weights.DEFAULT)
    cached.parent.mkdir(parents=True)
    torch.save(imagenet, cached)
    model = build_segmenter("lraspp-mobilenet", 3, pretrained=True)
    assert torch.equal(model.net.backbone["16"][0].weight, imagenet["features.16.0.weight"])


class _RunsCode:
    """Unpickling it would create a file: the sign that a load ran code."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def test_a_cached_backbone_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = cached_weights_path(tv_models.ResNet18_Weights.DEFAULT)
    cached.parent.mkdir(parents=True)
    torch.save({"conv1.weight": _RunsCode(tmp_path / "ran")}, cached)
    with pytest.raises(DatasetGANError, match="plain tensors"):
        build_segmenter("unet-resnet18", 3, pretrained=True)
    assert not (tmp_path / "ran").exists()


def test_names_follow_the_loading_order_and_a_manifest_must_match_its_files(tmp_path):
    folder, _, _ = world_folder(tmp_path)
    assert labelled_names(folder) == [f"{i:03d}" for i in range(6)]
    (folder / "manifest.jsonl").write_text("".join(
        json.dumps({"name": f"{i:03d}", "kept": i != 1}) + "\n" for i in range(6)))
    assert labelled_names(folder) == ["000", "002", "003", "004", "005"]
    (folder / "masks" / "003.png").unlink()
    with pytest.raises(DatasetGANError, match="listed in .* are missing"):
        load_labelled(folder)


# --- synthetic-to-real options: augmentation and pseudo-label self-training ----------------------


def discs(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-class task: a reddish disc (class 1) on a plain background of a random colour, with pixel noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = torch.randint(8, size - 8, (2, n, 1, 1), generator=g)
    radius = torch.randint(4, 9, (n, 1, 1), generator=g)
    masks = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).to(torch.uint8)
    background = torch.rand(n, 3, 1, 1, generator=g) * 0.6
    disc = background + torch.tensor([0.35, -0.1, 0.1]).view(1, 3, 1, 1)
    images = torch.where(masks[:, None].bool(), disc, background) + torch.rand(n, 3, size, size, generator=g) * 0.3
    return (images.clamp(0, 1) * 255).to(torch.uint8), masks


def test_self_training_on_unlabelled_images_improves_a_weak_model():
    """8 labelled images and 3 epochs give a weak teacher; its class-balanced pseudo-labels on 56 unlabelled
    images train a clearly better student. (Part of the gain is the student's longer schedule: whether
    pseudo-labels beat the same steps on the labelled set is the bench's measurement.)"""
    labelled, masks = discs(8, 0)
    unlabelled, _ = discs(56, 1)
    held_out = discs(64, 2)
    cfg = SegmenterConfig(epochs=3, batch_size=8, lr=3e-3, max_shift=2)
    teacher, _ = train_segmenter(labelled, masks, 2, cfg, CPU, progress=False)
    result = pseudo_label_self_training(labelled, masks, unlabelled, 2, cfg, CPU, SelfTrainingConfig())
    weak, improved = evaluate(teacher, *held_out, 2, CPU).miou, evaluate(result.model, *held_out, 2, CPU).miou
    assert improved > weak + 0.05, (weak, improved)
    assert result.pseudo_labelled[0] >= 0.5  # each predicted class kept at least its most confident half
    pseudo = pseudo_labels(teacher, unlabelled, SelfTrainingConfig(class_share=0), CPU)
    with torch.no_grad():
        confidence = teacher(normalize(unlabelled)).softmax(1).amax(1)
    assert torch.equal(pseudo == IGNORE, confidence < 0.9)  # without the class share: the threshold alone


def test_pseudo_labels_need_images_of_the_training_size():
    with pytest.raises(DatasetGANError, match="unlabelled images are 48x48, the training images 32x32"):
        pseudo_label_self_training(*discs(2, 0), discs(2, 1, size=48)[0], 2, SegmenterConfig(epochs=1), CPU)


def test_transfer_augmentation_is_seeded_and_keeps_masks_with_their_images():
    images, masks = discs(6, 0)
    cfg = SegmenterConfig(transfer_augment=True, hflip=False, max_shift=0)
    first = augment(images, masks.long(), cfg, torch.Generator().manual_seed(1))
    again = augment(images, masks.long(), cfg, torch.Generator().manual_seed(1))
    other = augment(images, masks.long(), cfg, torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and not torch.equal(first[0], other[0])
    out_images, out_masks = first
    assert out_images.dtype == torch.uint8 and out_images.shape == images.shape
    assert set(out_masks.unique().tolist()) <= {0, 1, IGNORE} and (out_masks == IGNORE).any()  # rotated-in corners
    assert (out_images.float() - images.float()).abs().mean() > 5  # colours, blur and noise changed the pixels
    discs_before, discs_after = masks.sum().item(), (out_masks == 1).sum().item()
    assert 0.7 < discs_after / discs_before < 1.4  # small geometry: the discs stay about their size
