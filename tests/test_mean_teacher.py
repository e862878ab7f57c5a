"""Mean-teacher self-training with ClassMix: the mixing and the teacher's average exactly, and
that it improves a deliberately weak segmenter on held-out images."""

import torch

from datasetgan.labels import IGNORE
from datasetgan.segment.mean_teacher import class_mix, mean_teacher_training, update_teacher
from datasetgan.segment.train import SegmenterConfig, evaluate, train_segmenter

from test_segment import discs

CPU = torch.device("cpu")


def test_class_mix_pastes_half_the_classes_with_their_true_labels():
    images = torch.full((2, 3, 4, 4), 200, dtype=torch.uint8)
    masks = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, IGNORE, 3]], dtype=torch.uint8)
    masks = masks.expand(2, 4, 4).clone()
    real = torch.full((2, 3, 4, 4), 10, dtype=torch.uint8)
    real_labels = torch.full((2, 4, 4), 7, dtype=torch.uint8)
    mixed, labels, pasted = class_mix(images, masks, real, real_labels, torch.Generator().manual_seed(0))
    for i in range(2):
        classes = masks[i][pasted[i]].unique().tolist()
        assert len(classes) == 2 and IGNORE not in classes  # half of the 4 present classes, never ignore
        assert torch.equal(pasted[i], torch.isin(masks[i], torch.tensor(classes, dtype=torch.uint8)))
    assert torch.equal(mixed, torch.where(pasted[:, None], images, real))
    assert torch.equal(labels, torch.where(pasted, masks, real_labels))
    again = class_mix(images, masks, real, real_labels, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(again, (mixed, labels, pasted)))  # seeded


def test_the_teacher_is_a_moving_average_of_the_student():
    teacher, student = torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
        student.num_batches_tracked.fill_(5)
    update_teacher(teacher, student, 0.75)
    assert torch.allclose(teacher.weight, torch.full((2,), 1.5)) and int(teacher.num_batches_tracked) == 5


def test_mean_teacher_improves_a_weak_model_and_leaves_it_unchanged():
    """(Part of the gain is the extra steps: whether the real images help is the bench's measurement.)"""
    labelled, masks = discs(8, 0)
    unlabelled, _ = discs(56, 1)
    held_out = discs(64, 2)
    cfg = SegmenterConfig(epochs=3, batch_size=8, lr=3e-3, max_shift=2)
    teacher, _ = train_segmenter(labelled, masks, 2, cfg, CPU, progress=False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, history = mean_teacher_training(teacher, labelled, masks, unlabelled,
                                             cfg.model_copy(update={"steps": 24, "checkpoints": 2}), CPU)
    weak, improved = evaluate(teacher, *held_out, 2, CPU).miou, evaluate(student, *held_out, 2, CPU).miou
    assert improved > weak + 0.05, (weak, improved)
    assert len(history) == 2
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
