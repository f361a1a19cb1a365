"""benchmarks/bn_stats_check.py: BatchNorm statistics re-estimated for fixed weights, and its table."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bn_stats_check.py"


@pytest.fixture(scope="module")
def bn_check():
    return load_script(SCRIPT)


def test_reestimate_bn_averages_over_the_batches_and_leaves_weights_alone(bn_check):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.1), nn.Dropout2d(0.5), nn.BatchNorm2d(4))
    model[1].running_mean.fill_(7.0)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    batches = [torch.randn(2, 3, 5, 5) + shift for shift in (0.0, 3.0)]
    with torch.no_grad():
        expected = torch.stack([model[0](b).mean((0, 2, 3)) for b in batches]).mean(0)
    assert bn_check.reestimate_bn(model, iter(batches)) == 2
    # the cumulative average of the two batch means: the shipped 7.0 is gone, not blended in
    assert torch.allclose(model[1].running_mean, expected, atol=1e-5)
    assert model[1].momentum == 0.1 and model[3].momentum == 0.1
    assert not model.training and not any(m.training for m in model.modules())
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())
    # dropout stayed off while the statistics were gathered: the second BatchNorm saw the first's outputs unscaled
    with torch.no_grad():
        second = torch.stack([nn.functional.batch_norm(model[0](b), None, None, training=True).mean((0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(model[3].running_mean, second, atol=1e-5)


def test_table_reports_the_gap_between_shipped_and_reestimated(bn_check):
    record = {"weights": "m@t", "shipped_miou": 0.70, "shipped_per_class_iou": {"pole": 0.10}, "batches": 20, "batch_size": 8,
              "reestimated": [{"miou": 0.68, "per_class_iou": {"pole": 0.05}}, {"miou": 0.69, "per_class_iou": {"pole": 0.07}}],
              "reestimated_mean": 0.685, "reestimated_sd": 0.007}
    text = bn_check.table([record])
    assert "| m@t | 0.7000 | 0.6850 +- 0.0070 (2 x 20 batches of 8) | +0.0150 | 0.100 / 0.060 |" in text


def test_command_line_refuses_a_run_without_weights_or_root(bn_check, capsys):
    with pytest.raises(SystemExit):
        bn_check.main(["--root", "somewhere"])
    assert "MODEL@TAG" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bn_check.main(["fplnet@camvid", "--root", "x", "--batches", "0"])
    assert "--batches must be at least 1" in capsys.readouterr().err
