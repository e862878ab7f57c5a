"""The one downstream recipe of the demo and the bench: train, then pick checkpoints as the paper does.

Every training set, 16 real images or 4,000 generated ones, gets the same optimisation
(`RECIPE`: a fixed number of steps of one batch, cosine decay) and the same selection rule:
the model is tested on the real test images at evenly spaced checkpoints, and the paper's
5-fold protocol picks among them (each fifth of the test set chooses the checkpoint that is
best on it, which is scored on the other four fifths). A small set that overfits late is
scored at its best checkpoint, like every other set, and no fold scores its own choice.

Self-training (`self_train_and_score`) fine-tunes a trained segmenter with a mean teacher and
ClassMix on unlabelled real images (segment/mean_teacher.py), for half the recipe's steps: it
starts from a trained model. It measured better than offline pseudo-labels (bench/RESULTS.md).

bench/RESULTS.md has the learning curves, and which training sets `RECIPE` converges on.
"""

from dataclasses import dataclass

import torch
from torch import nn

from datasetgan.metrics import SegmentationScores, scores_from_confusion
from datasetgan.segment.evaluate import cross_validate, fold_scores, make_folds, per_image_confusion
from datasetgan.segment.mean_teacher import MeanTeacherConfig, mean_teacher_training
from datasetgan.segment.train import SegmenterConfig, schedule_points, train_segmenter

RECIPE = SegmenterConfig(steps=700, batch_size=32, lr=2e-3, checkpoints=7)
SELF_TRAINING = MeanTeacherConfig(steps=RECIPE.steps // 2)
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
    tester = CheckpointTester(test, num_classes, device)
    model, _ = train_segmenter(images, masks, num_classes, cfg, device, progress=False, on_checkpoint=tester)
    return tester.scored(model, schedule_points(len(images), cfg)[1], len(images))


def self_train_and_score(teacher: nn.Module, images: torch.Tensor, masks: torch.Tensor, unlabelled: torch.Tensor,
                         test: tuple[torch.Tensor, torch.Tensor], num_classes: int, device: torch.device,
                         cfg: SegmenterConfig = RECIPE, mt: MeanTeacherConfig = SELF_TRAINING) -> Scored:
    """Self-training from a trained segmenter: mean teacher with ClassMix on `unlabelled`, scored like
    `train_and_score`."""
    tester = CheckpointTester(test, num_classes, device)
    model, _ = mean_teacher_training(teacher, images, masks, unlabelled, cfg, device, mt, on_checkpoint=tester)
    steps = mt.steps or cfg.steps
    return tester.scored(model, schedule_points(len(images), cfg.model_copy(update={"steps": steps}))[1],
                         len(images) + len(unlabelled))


class CheckpointTester:
    """The checkpoint callback: each checkpoint's per-image confusions on the test set, then the 5-fold pick."""

    def __init__(self, test: tuple[torch.Tensor, torch.Tensor], num_classes: int, device: torch.device):
        self.test, self.num_classes, self.device = test, num_classes, device
        self.confusions: list[torch.Tensor] = []

    def __call__(self, k: int, model: nn.Module, loss: float) -> dict[str, float]:
        self.confusions.append(per_image_confusion(model, *self.test, self.num_classes, self.device))
        return {"test_mIoU": scores_from_confusion(self.confusions[-1].sum(0)).miou}

    def scored(self, model: nn.Module, steps: list[int], train_images: int) -> Scored:
        stack = torch.stack(self.confusions)
        results = cross_validate(stack, make_folds(len(self.test[0]), FOLDS, FOLD_SEED))
        curve = [(s, scores_from_confusion(c.sum(0)).miou) for s, c in zip(steps, stack)]
        return Scored(fold_scores(results), curve, model, train_images)
