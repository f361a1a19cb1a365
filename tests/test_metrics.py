import math

import numpy as np
import pytest
import torch

from rtseg.metrics import ConfusionMatrix


def test_hand_computed_confusion_and_iou():
    # labels / predictions over 3 classes, one ignored pixel (255)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    expected = np.array([[2, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert (cm.matrix == expected).all()
    # IoU: class0 2/(2+1+1)=0.5, class1 2/(2+1+0)=2/3, class2 1/(1+0+1)=0.5
    assert np.allclose(cm.iou(), [0.5, 2 / 3, 0.5])
    assert math.isclose(cm.mean_iou(), (0.5 + 2 / 3 + 0.5) / 3)
    assert math.isclose(cm.pixel_accuracy(), 5 / 7)


def test_absent_class_is_excluded_but_false_positive_class_scores_zero():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 2])  # class 2 absent from labels but predicted; class 3 absent everywhere
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    iou = cm.iou()
    assert iou[0] == 1.0 and iou[1] == 0.5 and iou[2] == 0.0 and math.isnan(iou[3])
    assert math.isclose(cm.mean_iou("valid"), (1 + 0.5 + 0) / 3)
    assert math.isclose(cm.mean_iou("present"), (1 + 0.5) / 2)
    assert math.isclose(cm.mean_iou("all"), (1 + 0.5) / 4)


def test_out_of_range_prediction_counts_as_wrong():
    # a model trained with an extra void class (e.g. ESPNet's class 19) predicting it
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 5, 1, 1]), torch.tensor([0, 0, 1, 1]))
    assert math.isclose(cm.pixel_accuracy(), 3 / 4)
    assert np.allclose(cm.iou(), [0.5, 1.0])


def test_logits_are_argmaxed_and_batches_accumulate():
    logits = torch.zeros(2, 3, 1, 2)
    logits[0, 1] = 1.0  # image 0 predicts class 1 everywhere
    logits[1, 2] = 1.0
    cm = ConfusionMatrix(3)
    cm.update(logits, torch.tensor([[[1, 1]], [[2, 0]]]))
    assert cm.pixel_accuracy() == 0.75
    other = ConfusionMatrix(3)
    other.update(torch.tensor([0]), torch.tensor([0]))
    cm.merge(other)
    assert cm.matrix.sum() == 5


def test_category_iou_merges_classes():
    cm = ConfusionMatrix(4)
    # classes 0,1 form category a; 2,3 category b; confusions inside a category vanish
    cm.update(torch.tensor([1, 0, 2, 3]), torch.tensor([0, 0, 2, 2]))
    cat = cm.category_iou({"a": (0, 1), "b": (2, 3)})
    assert cat == {"a": 1.0, "b": 1.0}
    assert cm.mean_iou() < 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(2).update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))


def test_summary_names_classes():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    s = cm.summary(["a", "b"])
    assert s["per_class_iou"] == {"a": 0.5, "b": 0.0} and s["pixels"] == 2
