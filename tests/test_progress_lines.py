"""Long commands say what they are doing on stderr as they go (bench --all, export), and --quiet keeps them silent."""
import re

from rtseg.cli import main

BENCH = ["bench", "--all", "--filter", "espnet*c", "--size", "32x32", "--warmup", "0", "--iters", "1"]


def test_bench_all_prints_a_line_per_model_as_it_goes(capsys):
    assert main(BENCH) == 0
    captured = capsys.readouterr()
    lines = [l for l in captured.err.splitlines() if l.startswith("[")]
    assert lines and re.fullmatch(r"\[1/\d+\] espnet-c: \d+\.\d ms", lines[0]), captured.err
    assert len(lines) == int(lines[0].split("/")[1].split("]")[0])
    assert "| espnet-c |" in captured.out  # the table stays on stdout
    assert main(BENCH + ["--quiet"]) == 0
    assert "[1/" not in capsys.readouterr().err


def test_export_says_what_runs_before_the_work(tmp_path, capsys):
    args = ["export", "espnet-c", "--format", "torchscript", "--size", "32x32", "--num-classes", "5", "--out", str(tmp_path / "m.pt")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "exporting espnet-c to torchscript, then verifying against PyTorch ..." in err
    assert main(args + ["--quiet", "--no-verify"]) == 0
    assert "exporting" not in capsys.readouterr().err


def test_predict_over_many_images_shows_progress_and_quiet_silences_it(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / f"f{i}.png")
    args = ["predict", "espnet-c", str(tmp_path), "--num-classes", "3", "--out", str(tmp_path / "out")]
    # by default the bar appears above 50 images; progress=True asks for it with three
    from rtseg.tasks import predict

    result = predict("espnet-c", [str(tmp_path / f"f{i}.png") for i in range(3)], tmp_path / "o1", num_classes=3, progress=True)
    assert result["written"] == 3
    err = capsys.readouterr().err
    assert "predicting" in err
    assert main(args + ["--quiet"]) == 0
    assert "predicting" not in capsys.readouterr().err


def test_progress_enabled_false_silences_loops_that_decide_for_themselves(capsys):
    from rtseg.progress import progress_enabled, progress_range

    with progress_enabled(False):
        assert list(progress_range(60, "counting")) == list(range(60))
    assert "counting" not in capsys.readouterr().err
    assert list(progress_range(60, "counting")) == list(range(60))
    assert "counting" in capsys.readouterr().err
