"""The one downstream recipe of the demo and the bench: train, then pick checkpoints as the paper does.

Every training set, 16 real images or 4,000 generated ones, gets the same optimisation
(`RECIPE`: a fixed number of steps of one batch, cosine decay) and the same selection rule:
the model is tested on the real test images at evenly spaced checkpoints, and the paper's
5-fold protocol picks among them (each fifth of the test set chooses the checkpoint that is
best on it, which is scored on the other four fifths). A small set that overfits late is
scored at its best checkpoint, like every other set, and no fold scores its own choice.

`RECIPE` converges (validation mIoU gains less than 0.5 over the last 20 % of the steps) on
the 4,000 real and the demo's 1,800 generated images of the faces world: bench/RESULTS.md has
the learning curves.
"""

from dataclasses import dataclass

import torch
from torch import nn

from datasetgan.metrics import SegmentationScores, scores_from_confusion
from datasetgan.segment.evaluate import cross_validate, fold_scores, make_folds, per_image_confusion
from datasetgan.segment.self_training import SelfTrainingConfig, with_pseudo_labels
from datasetgan.segment.train import SegmenterConfig, schedule_points, train_segmenter

RECIPE = SegmenterConfig(steps=700, batch_size=32, lr=2e-3, checkpoints=7)
FOLDS, FOLD_SEED = 5, 0  # the paper's protocol; the split is the test set's, not the experiment's


@dataclass
class Scored:
    scores: SegmentationScores  # the 5-fold protocol's: means over folds
    curve: list[tuple[int, float]]  # (step, mIoU on every test image) at each checkpoint
    model: nn.Module  # the model after the last step (a self-training teacher)
    train_images: int


def train_and_score(images: torch.Tensor, masks: torch.Tensor, test: tuple[torch.Tensor, torch.Tensor],
                    num_classes: int, device: torch.device, cfg: SegmenterConfig = RECIPE) -> Scored:
    """Train with `cfg` (which counts steps) and score on `test` by the 5-fold checkpoint selection."""
    if cfg.steps is None:
        raise ValueError("the recipe counts steps, so that sets of any size train alike")
    confusions = []

    def test_checkpoint(k: int, model: nn.Module, loss: float) -> dict[str, float]:
        confusions.append(per_image_confusion(model, *test, num_classes, device))
        return {"test_mIoU": scores_from_confusion(confusions[-1].sum(0)).miou}

    model, _ = train_segmenter(images, masks, num_classes, cfg, device, progress=False, on_checkpoint=test_checkpoint)
    stack = torch.stack(confusions)
    results = cross_validate(stack, make_folds(len(test[0]), FOLDS, FOLD_SEED))
    _, steps = schedule_points(len(images), cfg)
    curve = [(s, scores_from_confusion(c.sum(0)).miou) for s, c in zip(steps, stack)]
    return Scored(fold_scores(results), curve, model, len(images))


def self_train_and_score(teacher: nn.Module, images: torch.Tensor, masks: torch.Tensor, unlabelled: torch.Tensor,
                         test: tuple[torch.Tensor, torch.Tensor], num_classes: int, device: torch.device,
                         cfg: SegmenterConfig = RECIPE, st: SelfTrainingConfig = SelfTrainingConfig()) -> Scored:
    """One round of pseudo-label self-training from a trained teacher: a student trained afresh
    with the same recipe on the labelled images and the teacher's confident labels of `unlabelled`."""
    student_images, student_masks, _ = with_pseudo_labels(teacher, images, masks, unlabelled, st, device)
    return train_and_score(student_images, student_masks, test, num_classes, device, cfg)
