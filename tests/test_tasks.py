"""The task layer called as a library: typed arguments in, records out, nothing printed."""
import pytest

import rtseg
from rtseg.errors import OptionError, UserError
from rtseg.tasks import BenchOptions, Optimization, bench, evaluate, export


def test_evaluate_takes_a_built_model_and_returns_the_summary(capsys):
    model = rtseg.create_model("espnet-c", num_classes=19)
    with pytest.warns(UserWarning, match="names no classes"):
        summary = evaluate(model, samples=2, size=(32, 64))
    assert summary["model"] == "espnet-c" and summary["dataset"]["images"] == 2 and summary["dataset"]["input_size"] == [32, 64]
    assert 0 <= summary["miou"] <= 1 and summary["protocol"]["scales"] == [1.0]
    assert capsys.readouterr().out == ""


def test_options_that_do_not_go_together_stop_before_any_work(tmp_path):
    with pytest.raises(OptionError, match="exclude each other"):
        export("espnet-c", tmp_path / "m.onnx", size=(32, 32), dynamic=True)
    with pytest.raises(OptionError, match="applies with --optimize"):  # ONNX Runtime has no bf16 path
        bench("espnet-c", BenchOptions(size=(32, 32), precision="bf16", backend="onnxruntime"))
    with pytest.raises(OptionError, match="--weights names the weights of one model"):
        bench(None, BenchOptions(size=(32, 32), weights="camvid"))
    with pytest.raises(OptionError, match="fp16 applies to bench --train"):
        bench("espnet-c", BenchOptions(size=(32, 32), optimize=Optimization(compile="off"), precision="fp16"))
    with pytest.raises(UserError, match="Did you mean: espnet"):
        bench("espnett", BenchOptions(size=(32, 32), iters=1, warmup=0))
    assert not list(tmp_path.iterdir())


def test_the_tasks_are_the_public_api():
    import rtseg
    import rtseg.tasks

    for name in ("evaluate", "train", "export", "bench"):
        assert getattr(rtseg, name) is getattr(rtseg.tasks, name)
        assert name in rtseg.__all__
