"""Smoke tests of the rtseg command through its entry point."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import rtseg
from rtseg.cli import main
from test_trainer import TINY


def run(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert run("train", "demo", *TINY, "train.epochs=1", "--out", out, "--quiet") == 0
    return out


def test_models_table(capsys):
    assert run("models") == 0
    out = capsys.readouterr().out
    assert "erfnet" in out and "2,064,191" in out and "ERFNet" in out
    assert run("models", "--json", "espnet*") == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(rtseg.list_models("espnet*")) and {"espnet", "espnet-c"} <= {r["name"] for r in rows}
    assert all(r["params"] > 0 for r in rows)


def test_unknown_model_is_an_error_with_suggestions(capsys):
    assert run("bench", "espnett") == 2
    assert "did you mean: espnet" in capsys.readouterr().err.lower()


def test_train_writes_checkpoints_and_resume_continues(trained, capsys):
    assert (trained / "last.pt").is_file() and (trained / "metrics.csv").is_file()
    assert run("train", "demo", *TINY, "train.epochs=2", "--out", trained, "--resume", "--quiet") == 0
    assert len((trained / "metrics.csv").read_text().splitlines()) == 3


def test_train_bad_override_is_a_clear_error(capsys, tmp_path):
    assert run("train", "demo", "train.epochz=1", "--out", tmp_path) == 2
    assert "train.epochz" in capsys.readouterr().err


def test_eval_prints_table_and_writes_json(trained, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert run("eval", trained / "last.pt", "--json", out, "--quiet") == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "pixel accuracy" in text and "road" in text
    metrics = json.loads(out.read_text())
    assert 0 <= metrics["miou"] <= 1 and len(metrics["per_class_iou"]) == 19 and metrics["dataset"]["images"] == 2


def test_eval_of_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    assert run("eval", bad) == 2
    assert "bad.pt" in capsys.readouterr().err


def test_bench_json_has_positive_fields(tmp_path):
    out = tmp_path / "b.json"
    assert run("bench", "espnet-c", "--size", "64x96", "--warmup", "1", "--iters", "2", "--threads", "1", "--json", out) == 0
    rec = json.loads(out.read_text())
    for key in ("params", "macs", "flops", "latency_ms_mean", "latency_ms_median", "latency_ms_p90", "fps"):
        assert rec[key] > 0, key
    assert rec["flops"] == 2 * rec["macs"]
    c = rec["conditions"]
    assert c["size"] == [64, 96] and c["threads"] == 1 and c["batch"] == 1 and c["iters"] == 2 and c["torch_version"]


def test_bench_all_prints_markdown_table(capsys):
    assert run("bench", "--all", "--filter", "espnet*c", "--size", "32x32", "--warmup", "0", "--iters", "1") == 0
    out = capsys.readouterr().out
    assert "| model | params |" in out and "| espnet-c |" in out and "| erfnet |" not in out


def test_predict_writes_masks_and_reports_bad_files(trained, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(src / "a.png")
    (src / "b.png").write_text("not an image")
    out = tmp_path / "out"
    assert run("predict", trained / "last.pt", src, "--out", out, "--save-labels") == 1
    err = capsys.readouterr().err
    assert "b.png" in err
    assert Image.open(out / "a_mask.png").size == (50, 40)
    assert Image.open(out / "a_overlay.png").size == (50, 40)
    assert np.asarray(Image.open(out / "a_labels.png")).max() < 19


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "rtseg.cli", "models", "erfnet*"], capture_output=True, text=True)
    assert proc.returncode == 0 and "erfnet-encoder" in proc.stdout


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert run("demo", *TINY, "train.epochs=1", "--out", tmp_path, "--quiet") == 0
    assert "demo done: validation mIoU" in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.json").read_text())["pixels"] > 0
    assert json.loads((tmp_path / "bench.json").read_text())["fps"] > 0
    assert len(list((tmp_path / "predictions").glob("*_overlay.png"))) == 4


def test_a_user_error_is_one_line_without_traceback(capsys, tmp_path):
    assert run("train", "no-such-recipe", "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no-such-recipe" in err and err.count("\n") <= 3
    assert run("eval", "espnet-c", "--size", "12y4", "--quiet") == 2  # a malformed option value names itself
    assert "'12y4' is not HEIGHTxWIDTH" in capsys.readouterr().err


def test_an_internal_failure_prints_the_traceback_and_asks_for_a_report(monkeypatch, capsys):
    import rtseg.tasks._bench as bench_task

    def broken(*args, **kwargs):
        raise ValueError("a defect deep inside")  # a plain ValueError is a bug, not bad input

    monkeypatch.setattr(bench_task, "bench_one", broken)
    assert run("bench", "espnet-c", "--size", "32x32") == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "a defect deep inside" in err
    assert f"internal error in rtseg {rtseg.__version__}" in err and "please report it" in err


def test_user_errors_share_one_base():
    from rtseg.io import CheckpointError, WeightsMismatchError
    from rtseg.config import ConfigError
    from rtseg.data.datasets import DatasetError
    from rtseg.devices import DeviceError
    from rtseg.errors import USER_ERRORS, UserError
    from rtseg.evaluation import ClassMismatchError
    from rtseg.registry import InvalidOptionError, UnknownModelError, UnknownOptionError

    for cls in (ConfigError, UnknownModelError, UnknownOptionError, InvalidOptionError, ClassMismatchError, CheckpointError,
                WeightsMismatchError, DeviceError, DatasetError):
        assert issubclass(cls, UserError), cls
    assert UserError in USER_ERRORS and not issubclass(RuntimeError, USER_ERRORS)
    with pytest.raises(InvalidOptionError, match="num_classes must be a positive integer"):
        rtseg.create_model("espnet-c", num_classes=0)


def test_models_name_lists_paper_defaults_and_each_option(capsys):
    from rtseg.registry import option_specs

    assert run("models", "essnet-d") == 0
    out = capsys.readouterr().out
    specs = option_specs("essnet-d")
    assert out.startswith("essnet-d: ") and rtseg.get_entry("essnet-d").paper in out and "options:" in out
    for spec in specs:
        line = next(line for line in out.splitlines() if line.strip().startswith(spec.name + " "))
        assert f"default {spec.default!r}" in line
        if spec.choices:
            assert "one of " + ", ".join(map(repr, spec.choices)) in line
    assert any(s.choices for s in specs)  # essnet-d has at least one option with a fixed set of values
    assert run("models", "--json", "essnet-d") == 0
    record = json.loads(capsys.readouterr().out)
    assert [o["name"] for o in record["options"]] == [s.name for s in specs] and record["params"] > 0
