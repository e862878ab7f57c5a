"""Mean-teacher self-training with ClassMix (DACS: Tranheden et al., WACV 2021) on unlabelled real images.

A student starts from the trained segmenter and learns from two batches a step: labelled
(generated) images, and mixed ones: each is a real image onto which the pixels of half the
classes of a labelled image are pasted (ClassMix). The mixed labels are the pasted pixels'
true classes and, elsewhere, the teacher's class for the real pixel. The teacher is an
exponential moving average of the student, so its labels of real images improve as the
student adapts to them; a mixed batch's loss is weighted by the share of its real pixels the
teacher is confident about. Pasting keeps the small parts' true labels in every mixed image,
where labels of real images alone, drawn from a segmenter that misses small parts, teach the
student to miss them too (offline pseudo-labels: segment/self_training.py).
"""

import copy

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from datasetgan.labels import IGNORE
from datasetgan.progress import progress_bar
from datasetgan.segment.models import normalize
from datasetgan.segment.self_training import check_unlabelled
from datasetgan.segment.train import (CheckpointCallback, SegmenterConfig, augment, batch_order, schedule_points,
                                      transfer_augment)


class MeanTeacherConfig(BaseModel):
    steps: int | None = Field(None, ge=1)  # fine-tuning steps (default: the segmenter config's)
    ema: float = Field(0.99, gt=0, lt=1)  # the teacher's moving-average decay per step
    confidence: float = Field(0.968, gt=0, lt=1)  # DACS's: a real pixel counts when the teacher is this sure


def class_mix(images: torch.Tensor, masks: torch.Tensor, real: torch.Tensor, real_labels: torch.Tensor,
              rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste the pixels of a random half of each labelled image's classes onto a real image
    -> (mixed images, mixed labels, pasted mask [N,H,W] bool)."""
    pasted = torch.zeros_like(masks, dtype=torch.bool)
    for i, mask in enumerate(masks):
        present = mask[mask != IGNORE].unique()
        chosen = present[torch.randperm(len(present), generator=rng)[: (len(present) + 1) // 2]]
        pasted[i] = torch.isin(mask, chosen)
    mixed = torch.where(pasted[:, None], images, real)
    return mixed, torch.where(pasted, masks, real_labels), pasted


@torch.no_grad()
def update_teacher(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    for t, s in zip(teacher.state_dict().values(), student.state_dict().values()):
        if t.is_floating_point():
            t.mul_(decay).add_(s.detach(), alpha=1 - decay)
        else:  # BatchNorm's step counters
            t.copy_(s)


def mean_teacher_training(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, unlabelled: torch.Tensor,
                          cfg: SegmenterConfig, device: torch.device, mt: MeanTeacherConfig = MeanTeacherConfig(),
                          progress: bool = False, on_checkpoint: CheckpointCallback | None = None
                          ) -> tuple[nn.Module, list[float]]:
    """Fine-tune a trained segmenter (left unchanged) for `mt.steps` (else `cfg.steps`) steps
    -> (student, mean loss per checkpoint).

    Each step sees half a batch of labelled images and half a batch of mixed ones, so that a step
    costs about what a plain one does.
    """
    check_unlabelled(images, unlabelled)
    cfg = cfg.model_copy(update={"steps": mt.steps or cfg.steps})
    if cfg.steps is None:
        raise ValueError("mean-teacher training counts steps")
    half = max(2, min(cfg.batch_size, len(images), len(unlabelled)) // 2)
    steps, points = schedule_points(len(images), cfg)
    rng = torch.Generator().manual_seed(cfg.seed)
    student = copy.deepcopy(model).to(device).train()
    teacher = copy.deepcopy(model).to(device).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    pairs = zip(batch_order(len(images), half, steps, rng), batch_order(len(unlabelled), half, steps, rng))
    history, losses = [], []
    for step, (index, real_index) in enumerate(progress_bar(pairs, show=progress, total=steps,
                                                            desc="mean teacher", unit="step"), 1):
        losses.append(mean_teacher_step(student, teacher, images[index], masks[index], unlabelled[real_index],
                                        cfg, mt, optimizer, rng, device))
        schedule.step()
        update_teacher(teacher, student, mt.ema)
        if step in points:
            history.append(sum(losses) / len(losses))
            losses = []
            if on_checkpoint is not None:
                on_checkpoint(len(history), student, history[-1])
                student.train()
    return student.eval(), history


def mean_teacher_step(student: nn.Module, teacher: nn.Module, images: torch.Tensor, masks: torch.Tensor,
                      real: torch.Tensor, cfg: SegmenterConfig, mt: MeanTeacherConfig, optimizer: torch.optim.Optimizer,
                      rng: torch.Generator, device: torch.device) -> float:
    x, y = augment(images, masks.long(), cfg, rng)
    with torch.no_grad():
        confidence, real_labels = teacher(normalize(real.to(device))).softmax(1).max(1)
    mixed, mixed_labels, pasted = class_mix(x, y, real, real_labels.cpu(), rng)
    mixed, mixed_labels = transfer_augment(mixed, mixed_labels, rng)  # colour, blur, noise, small geometry
    trusted = (confidence.cpu() >= mt.confidence) | pasted
    weight = trusted.float().mean()  # DACS: the share of pixels the labels can be trusted on
    labelled_loss = F.cross_entropy(student(as_input(x, device)), y.to(device), ignore_index=IGNORE)
    mixed_loss = F.cross_entropy(student(as_input(mixed, device)), mixed_labels.to(device), ignore_index=IGNORE)
    loss = labelled_loss + weight.to(device) * mixed_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def as_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return normalize(images.to(device)).contiguous(memory_format=torch.channels_last)
