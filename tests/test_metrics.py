"""mIoU as the paper computes it: one confusion matrix over the whole test set."""

import math

import pytest
import torch

from datasetgan.metrics import ConfusionMeter, confusion_matrix, scores_from_confusion


def test_hand_computed_case():
    truth = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 1]])
    # class 0: tp 1, fp 1 (pred 0 at truth 2), fn 1 -> 1/3
    # class 1: tp 3, fp 1 (pred 1 at truth 0), fn 0 -> 3/4
    # class 2: tp 2, fp 0, fn 1 -> 2/3
    s = scores_from_confusion(confusion_matrix(pred, truth, 3))
    assert s.iou == pytest.approx([1 / 3, 3 / 4, 2 / 3])
    assert s.miou == pytest.approx((1 / 3 + 3 / 4 + 2 / 3) / 3)
    assert s.pixel_accuracy == pytest.approx(6 / 8)


def test_ignore_pixels_are_not_counted():
    truth = torch.tensor([0, 255, 1, 255])
    pred = torch.tensor([0, 1, 1, 0])
    s = scores_from_confusion(confusion_matrix(pred, truth, 2))
    assert s.iou == [1.0, 1.0] and s.pixel_accuracy == 1.0


def test_class_absent_from_truth_and_prediction_is_left_out_of_the_mean():
    truth = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 0])
    s = scores_from_confusion(confusion_matrix(pred, truth, 3))
    assert math.isnan(s.iou[2])
    assert s.miou == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert s.as_dict(["a", "b", "c"])["iou"]["c"] is None


def test_class_predicted_but_absent_from_truth_counts_as_zero():
    truth = torch.tensor([0, 0, 0, 0])
    pred = torch.tensor([0, 0, 0, 1])
    s = scores_from_confusion(confusion_matrix(pred, truth, 2))
    assert s.iou == pytest.approx([3 / 4, 0.0])
    assert s.miou == pytest.approx(3 / 8)


def test_accumulated_over_the_dataset_not_averaged_per_image():
    meter = ConfusionMeter(2)
    meter.update(torch.tensor([1, 1, 1, 1]), torch.tensor([1, 1, 1, 1]))  # image IoU for 1: 1.0
    meter.update(torch.tensor([0, 0, 0, 0]), torch.tensor([1, 1, 0, 0]))  # image IoU for 1: 0.0
    s = meter.scores()
    assert s.iou[1] == pytest.approx(4 / 6)  # not the per-image mean 0.5
    assert s.iou[0] == pytest.approx(2 / 4)


def test_bad_ids_and_shapes_are_refused():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0]), torch.tensor([5]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)
