"""Pseudo-label self-training: a segmenter learns from unlabelled real images as well.

A teacher is trained on the labelled images; it labels the unlabelled ones, keeping a pixel's
class only where its softmax confidence is high enough (else ignore, 255); a student is
trained afresh on both sets. With `rounds` > 1 the student becomes the next teacher. Every
DatasetGAN user has such images: the real ones their generator was trained on.

"High enough" is class-balanced (Zou et al., ECCV 2018): each class keeps its pixels above
`threshold` and at least its most confident `class_share`. One global threshold keeps mostly
the class the teacher is surest of (often a large one), and the student then over-predicts it.
"""

import math
from typing import NamedTuple

import torch
from pydantic import BaseModel, Field
from torch import nn

from datasetgan.errors import DatasetGANError
from datasetgan.labels import IGNORE
from datasetgan.segment.models import normalize
from datasetgan.segment.train import CheckpointCallback, SegmenterConfig, train_segmenter


class SelfTrainingConfig(BaseModel):
    threshold: float = Field(0.9, gt=0, lt=1)  # softmax confidence that always keeps a pseudo-label
    class_share: float = Field(0.5, ge=0, le=1)  # each class keeps at least its most confident share
    rounds: int = Field(1, ge=1)  # teacher -> student cycles


class SelfTrainingResult(NamedTuple):
    model: nn.Module  # the last student, in eval mode
    history: list[float]  # its loss per epoch
    pseudo_labelled: list[float]  # share of unlabelled pixels that got a pseudo-label, per round


def check_unlabelled(images: torch.Tensor, unlabelled: torch.Tensor) -> None:
    if unlabelled.shape[-2:] != images.shape[-2:]:
        (h, w), (th, tw) = unlabelled.shape[-2:], images.shape[-2:]
        raise DatasetGANError(f"the unlabelled images are {w}x{h}, the training images {tw}x{th}: "
                              "resize them to the training size first")


@torch.no_grad()
def pseudo_labels(model: nn.Module, images: torch.Tensor, st: SelfTrainingConfig, device: torch.device,
                  batch_size: int = 64) -> torch.Tensor:
    """uint8 [N,3,H,W] -> uint8 [N,H,W]: the model's class where confident enough (class-balanced), else ignore."""
    model.eval()
    parts = [model(normalize(images[i : i + batch_size].to(device))).softmax(1).max(1)
             for i in range(0, len(images), batch_size)]
    confidence, classes = (torch.cat(p).cpu() for p in zip(*parts))
    keep = confidence >= st.threshold
    for c in classes.unique() if st.class_share > 0 else []:
        predicted = classes == c
        ranked = confidence[predicted]
        share_threshold = ranked.kthvalue(max(1, len(ranked) - math.ceil(st.class_share * len(ranked)) + 1)).values
        keep |= predicted & (confidence >= share_threshold)
    return torch.where(keep, classes, IGNORE).to(torch.uint8)


def with_pseudo_labels(teacher: nn.Module, images: torch.Tensor, masks: torch.Tensor, unlabelled: torch.Tensor,
                       st: SelfTrainingConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The student's training set: the labelled images, then the unlabelled ones with the teacher's
    pseudo-labels -> (images, masks, share of unlabelled pixels that got a pseudo-label)."""
    check_unlabelled(images, unlabelled)
    pseudo = pseudo_labels(teacher, unlabelled, st, device)
    return torch.cat([images, unlabelled]), torch.cat([masks, pseudo]), float((pseudo != IGNORE).float().mean())


def pseudo_label_self_training(images: torch.Tensor, masks: torch.Tensor, unlabelled: torch.Tensor,
                               num_classes: int, cfg: SegmenterConfig, device: torch.device,
                               st: SelfTrainingConfig = SelfTrainingConfig(), progress: bool = False,
                               on_checkpoint: CheckpointCallback | None = None) -> SelfTrainingResult:
    """Teacher on (images, masks), then `st.rounds` students on those plus pseudo-labelled `unlabelled`.

    Every model trains with `cfg` (its seed included), so the result depends on the seeds alone;
    `on_checkpoint` sees the last student's checkpoints only (its validation picks the run's).
    """
    check_unlabelled(images, unlabelled)
    model, history = train_segmenter(images, masks, num_classes, cfg, device, progress)
    shares = []
    for round_ in range(st.rounds):
        student_images, student_masks, share = with_pseudo_labels(model, images, masks, unlabelled, st, device)
        shares.append(share)
        last = round_ == st.rounds - 1
        model, history = train_segmenter(student_images, student_masks, num_classes, cfg, device, progress,
                                         on_checkpoint if last else None)
    return SelfTrainingResult(model, history, shares)
