"""Each loss against a value computed here in numpy from its definition, on a tiny tensor."""
import numpy as np
import pytest
import torch

from rtseg.engine.losses import (
    DeepSupervisionLoss, DiceLoss, FocalLoss, LovaszSoftmaxLoss, OhemCrossEntropyLoss, build_criterion, class_frequencies,
)

IGNORE = 255
# one image, 3 classes, 1 x 5 pixels; the last pixel is ignored
LOGITS = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 0.2], [0.3, 0.3, 2.5], [1.5, -0.5, 0.0], [5.0, 0.0, 0.0]])
LABELS = np.array([0, 2, 2, 1, IGNORE])


def _tensors():
    logits = torch.tensor(LOGITS.T[None, :, None, :], dtype=torch.float32)  # 1 x 3 x 1 x 5
    labels = torch.tensor(LABELS[None, None, :], dtype=torch.int64)  # 1 x 1 x 5
    return logits, labels


def _softmax():
    e = np.exp(LOGITS[:4] - LOGITS[:4].max(1, keepdims=True))
    return e / e.sum(1, keepdims=True), LABELS[:4]


def test_ce_with_class_weights_matches_hand_value():
    p, y = _softmax()
    w = np.array([1.0, 2.0, 0.5])
    expected = (w[y] * -np.log(p[np.arange(4), y])).sum() / w[y].sum()
    loss = build_criterion({"class_weights": w.tolist()}, None, 3)(*_tensors())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ohem_keeps_pixels_below_threshold():
    p, y = _softmax()
    pt = p[np.arange(4), y]
    # pt = [0.77, 0.27, 0.81, 0.11]: with thresh 0.7, pixels 1 and 3 are hard
    assert (pt < 0.7).tolist() == [False, True, False, True]
    expected = -np.log(pt[[1, 3]]).mean()
    loss = OhemCrossEntropyLoss(thresh=0.7, min_kept=1, ignore_index=IGNORE)(*_tensors())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ohem_min_kept_takes_the_hardest_pixels_and_weights():
    p, y = _softmax()
    pt = p[np.arange(4), y]
    hardest = np.argsort(pt)[:3]  # fewer than 3 below thresh 0.5 -> the 3 lowest probabilities
    assert (pt < 0.5).sum() < 3
    w = np.array([1.0, 2.0, 0.5])
    expected = (w[y[hardest]] * -np.log(pt[hardest])).sum() / w[y[hardest]].sum()
    loss = OhemCrossEntropyLoss(thresh=0.5, min_kept=3, weight=torch.tensor(w, dtype=torch.float32), ignore_index=IGNORE)(*_tensors())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_dice_matches_hand_value_with_ignore_and_weights():
    p, y = _softmax()
    g = np.eye(3)[y]
    s = 1.0
    dice = (2 * (p * g).sum(0) + s) / (p.sum(0) + g.sum(0) + s)
    assert DiceLoss(ignore_index=IGNORE)(*_tensors()).item() == pytest.approx(1 - dice.mean(), rel=1e-5)
    w = np.array([1.0, 2.0, 0.5])
    got = DiceLoss(weight=torch.tensor(w, dtype=torch.float32), ignore_index=IGNORE)(*_tensors()).item()
    assert got == pytest.approx(1 - (w * dice).sum() / w.sum(), rel=1e-5)


def _lovasz_class(errors, fg):
    """The Lovasz extension of the Jaccard loss, from its definition: sorted errors times the increments of
    the Jaccard loss of the growing prefix sets (Berman et al., Eq. 8-9)."""
    order = np.argsort(-errors, kind="stable")
    e, f = errors[order], fg[order]
    total, previous = 0.0, 0.0
    for i in range(len(e)):
        chosen = np.zeros(len(e), bool)
        chosen[: i + 1] = True  # the mispredicted set M: the i+1 pixels with the largest errors
        # the prediction is fg xor M, so its Jaccard loss is 1 - |fg minus M| / |fg union M|
        inter = (f & ~chosen).sum()
        union = (f | chosen).sum()
        jac = 1 - inter / union
        total += e[i] * (jac - previous)
        previous = jac
    return total


def test_lovasz_softmax_matches_definition():
    p, y = _softmax()
    per_class = []
    for c in range(3):
        fg = y == c
        if fg.any():
            per_class.append(_lovasz_class(np.abs(fg.astype(float) - p[:, c]), fg))
    got = LovaszSoftmaxLoss(ignore_index=IGNORE)(*_tensors()).item()
    assert got == pytest.approx(np.mean(per_class), rel=1e-5)


def test_lovasz_softmax_all_classes_weighted_matches_definition_on_a_batch():
    """Every class of a two-image batch, one of them absent (its loss is then its largest probability, as
    the definition gives for an empty foreground), as a class-weighted mean; the gradient reaches the logits."""
    rng = np.random.default_rng(5)
    logits = torch.tensor(rng.normal(size=(2, 4, 3, 5)), dtype=torch.float32, requires_grad=True)
    labels = torch.tensor(rng.integers(0, 3, size=(2, 3, 5)))  # class 3 never occurs
    labels[0, 0, :2] = IGNORE
    w = np.array([1.0, 2.0, 0.5, 3.0])
    p = torch.softmax(logits, 1).detach().permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    y = labels.reshape(-1).numpy()
    p, y = p[y != IGNORE], y[y != IGNORE]
    per_class = np.array([_lovasz_class(np.abs((y == c).astype(float) - p[:, c]), y == c) for c in range(4)])
    loss = LovaszSoftmaxLoss(weight=torch.tensor(w, dtype=torch.float32), ignore_index=IGNORE, classes="all")(logits, labels)
    assert loss.item() == pytest.approx((w * per_class).sum() / w.sum(), rel=1e-5)
    present = LovaszSoftmaxLoss(ignore_index=IGNORE)(logits, labels)
    assert present.item() == pytest.approx(per_class[:3].mean(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[:, :, 1:] != 0).all()


def test_lovasz_perfect_prediction_is_zero():
    logits = torch.tensor([[[[30.0, -30.0]], [[-30.0, 30.0]]]])
    assert LovaszSoftmaxLoss()(logits, torch.tensor([[[0, 1]]])).item() == pytest.approx(0.0, abs=1e-6)


def test_focal_matches_hand_value():
    p, y = _softmax()
    pt = p[np.arange(4), y]
    w = np.array([1.0, 2.0, 0.5])
    expected = (w[y] * -((1 - pt) ** 2) * np.log(pt)).mean()
    got = FocalLoss(gamma=2.0, weight=torch.tensor(w, dtype=torch.float32), ignore_index=IGNORE)(*_tensors()).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # gamma 0 without weights is the plain cross-entropy
    assert FocalLoss(gamma=0.0)(*_tensors()).item() == pytest.approx(-np.log(pt).mean(), rel=1e-5)


def test_weighted_sum_of_terms():
    p, y = _softmax()
    ce = -np.log(p[np.arange(4), y]).mean()
    g = np.eye(3)[y]
    dice = 1 - ((2 * (p * g).sum(0) + 1) / (p.sum(0) + g.sum(0) + 1)).mean()
    crit = build_criterion({"terms": [{"name": "ce", "weight": 1}, {"name": "dice", "weight": 0.5}]}, None, 3)
    assert crit(*_tensors()).item() == pytest.approx(ce + 0.5 * dice, rel=1e-5)
    assert crit.parts["ce"].item() == pytest.approx(ce, rel=1e-5) and crit.parts["dice"].item() == pytest.approx(dice, rel=1e-5)


def test_deep_supervision_adds_weighted_aux_losses():
    logits, labels = _tensors()
    base = build_criterion({}, None, 3)
    crit = DeepSupervisionLoss(base, [0.4])
    aux = logits.flip(1)
    assert crit((logits, aux), labels).item() == pytest.approx(base(logits, labels).item() + 0.4 * base(aux, labels).item(), rel=1e-6)
    assert crit(logits, labels).item() == pytest.approx(base(logits, labels).item())


@pytest.mark.parametrize("cfg, match", [
    ({"name": "hinge"}, "loss.name='hinge'"),
    ({"name": "dice", "reduction": "sum"}, "reduction must be mean"),
    ({"name": "ohem", "ohem_thresh": 1.5}, "ohem_thresh"),
    ({"name": "ohem", "ohem_min_kept": 0}, "ohem_min_kept"),
    ({"terms": [{"name": "ce", "wieght": 1}]}, "loss.terms.0"),
    ({"terms": [{"name": "ce", "weight": "a"}]}, "loss.terms.0.weight"),
])
def test_bad_loss_config_is_refused_by_name(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_criterion(cfg, None, 3)


def test_every_loss_backpropagates_and_skips_ignored_pixels():
    logits, labels = _tensors()
    for name in ("ce", "ohem", "dice", "lovasz", "focal"):
        x = logits.clone().requires_grad_(True)
        build_criterion({"name": name, "ohem_min_kept": 2}, None, 3)(x, labels).backward()
        assert torch.isfinite(x.grad).all()
        assert torch.all(x.grad[..., 4] == 0), name  # the ignored pixel gets no gradient


class _LabelsOnly:
    """A dataset whose images must not be decoded to count classes."""

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        raise AssertionError("class_frequencies decoded an image")

    def label(self, i):
        return self.labels[i]


def test_class_frequencies_reads_labels_only_and_reports_progress(capsys):
    labels = [np.array([[0, 1], [1, 255]], np.uint8), np.array([[2, 2], [2, 9]], np.uint8)]
    counts = class_frequencies(_LabelsOnly(labels), 3, 255, progress=True)
    assert counts.tolist() == [1, 2, 3]
    assert "counting class pixels" in capsys.readouterr().err


TINY = [
    "model.name=espnet-c", "model.options={q: 2}", "data.image_size=[32,48]", "data.train_samples=4", "data.val_samples=2",
    "train.batch_size=2", "train.epochs=1", "train.threads=2",
]


def test_trainer_builds_the_configured_loss_and_trains(tmp_path):
    from rtseg.config import load_config
    from rtseg.engine.trainer import Trainer

    cfg = load_config("demo", TINY + ["loss.terms=[{name: ohem, weight: 1}, {name: lovasz, weight: 0.5}]", "loss.ohem_min_kept=64"])
    trainer = Trainer(cfg, tmp_path, progress=False)
    assert [type(m).__name__ for m in trainer.criterion.losses] == ["OhemCrossEntropyLoss", "LovaszSoftmaxLoss"]
    summary = trainer.run()
    assert np.isfinite(trainer.history[0]["train_loss"]) and summary["epochs"] == 1
