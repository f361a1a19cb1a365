"""The trainer with train.ema (an averaged copy validated and saved as best) and model.aux_heads (training-only heads)."""
import json

import pytest
import torch

from rtseg.config import load_config
from rtseg.engine.trainer import Trainer, TrainingError, train
from rtseg.io import load_checkpoint
from rtseg.registry import create_model

TINY = [
    "model.name=espnet-c", "model.options={q: 2}", "data.image_size=[48,64]", "data.train_samples=8", "data.val_samples=2",
    "train.batch_size=4", "train.epochs=2", "train.threads=2", "data.hflip=true", "data.crop_size=[40,56]", "logging.loggers=[]",
]
EMA = TINY + ["train.ema=0.9"]


def test_ema_is_updated_each_step_and_validated_and_saved_as_best(tmp_path):
    t = Trainer(load_config("demo", EMA + ["train.epochs=1"]), tmp_path, progress=False)
    assert t.evaluated_model is t.ema.module
    t.run()
    assert t.ema.updates == t.iteration == 2
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    averaged = t.ema.module.state_dict()
    for k, v in averaged.items():
        assert torch.equal(best["model_state"][k], v), k  # best.pt holds the average ...
        assert torch.equal(last["ema"]["module"][k], v), k  # ... and last.pt carries it for --resume
        assert torch.equal(best["trained_model_state"][k], t.model.state_dict()[k]), k
    assert any(not torch.equal(last["model_state"][k], v) for k, v in averaged.items() if v.is_floating_point())
    # the validation score is the average's: evaluating it again gives the recorded mIoU
    assert t.validate()["miou"] == pytest.approx(best["metrics"]["miou"])
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "best.safetensors"))
    assert all(torch.equal(saved[k], averaged[k]) for k in saved)


def test_ema_resume_is_bit_exact(tmp_path):
    train(load_config("demo", EMA), tmp_path / "a", progress=False)
    t = Trainer(load_config("demo", EMA), tmp_path / "b", progress=False)
    t.epochs = 1
    t.run()
    Trainer(load_config("demo", EMA), tmp_path / "b", resume=True, progress=False).run()
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["ema"]["updates"] == b["ema"]["updates"] == 4
    for k in a["ema"]["module"]:
        assert torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]), k
    for k in a["model_state"]:
        assert torch.equal(a["model_state"][k], b["model_state"][k]), k
    assert [r["val_miou"] for r in a["history"]] == [r["val_miou"] for r in b["history"]]
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["best_miou"] == json.loads((tmp_path / "b" / "summary.json").read_text())["best_miou"]


def test_resume_with_ema_from_a_run_without_it_is_refused(tmp_path):
    train(load_config("demo", TINY + ["train.epochs=1"]), tmp_path, progress=False)
    with pytest.raises(TrainingError, match="train.ema"):
        Trainer(load_config("demo", EMA), tmp_path, resume=True, progress=False)


AUX = [
    "model.name=erfnet", "data.image_size=[32,48]", "data.train_samples=4", "data.val_samples=2", "train.batch_size=2",
    "train.epochs=1", "train.threads=2", "logging.loggers=[]", "model.aux_heads=[{stage: stage2, weight: 0.4}, {stage: stage3}]",
]


def test_aux_heads_train_and_leave_no_trace_in_the_saved_model(tmp_path):
    t = Trainer(load_config("demo", AUX), tmp_path, progress=False)
    assert t.aux is not None and t.net is t.aux
    assert t.criterion.aux_weights == [0.4, 0.4]
    optimized = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in optimized for p in t.aux.heads.parameters())
    heads_before = {k: v.clone() for k, v in t.aux.heads.state_dict().items()}
    t.run()
    assert any(not torch.equal(heads_before[k], v) for k, v in t.aux.heads.state_dict().items() if v.is_floating_point())
    plain_keys = set(create_model("erfnet", t.num_classes).state_dict())
    for name in ("best.pt", "last.pt"):
        assert set(load_checkpoint(tmp_path / name)["model_state"]) == plain_keys, name
    last = load_checkpoint(tmp_path / "last.pt")
    assert set(last["aux_heads"]) == set(t.aux.heads.state_dict())  # the heads, apart, for --resume
    # the validation ran the plain network: no hook left on it
    assert not any(m._forward_hooks for m in t.model.modules())


def test_aux_heads_resume_restores_the_heads(tmp_path):
    Trainer(load_config("demo", AUX), tmp_path, progress=False).run()
    saved = load_checkpoint(tmp_path / "last.pt")["aux_heads"]
    t = Trainer(load_config("demo", AUX + ["train.epochs=2"]), tmp_path, resume=True, progress=False)
    for k, v in t.aux.heads.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_export_of_an_aux_head_run_has_one_output(tmp_path):
    from rtseg.tasks import export

    Trainer(load_config("demo", AUX), tmp_path, progress=False).run()
    rec = export(tmp_path / "best.pt", tmp_path / "model.pt", format="torchscript", size=(32, 48))
    scripted = torch.jit.load(str(rec["out"]))
    out = scripted(torch.randn(1, 3, 32, 48))
    assert isinstance(out, torch.Tensor) and out.shape[1] == load_checkpoint(tmp_path / "best.pt")["card"]["num_outputs"]
    assert not any("heads" in n for n, _ in scripted.named_modules())


def test_bad_aux_stage_is_a_config_error_naming_the_key(tmp_path):
    from rtseg.config import ConfigError

    with pytest.raises(ConfigError, match="model.aux_heads.0.stage"):
        Trainer(load_config("demo", AUX[:-1] + ["model.aux_heads=[{stage: nowhere}]"]), tmp_path, progress=False)


def test_ema_bn_reestimate_scores_the_average_with_its_own_statistics_and_leaves_training_alone(tmp_path):
    runs = {}
    for mode in ("reestimate", "copy"):
        t = Trainer(load_config("demo", EMA + ["train.epochs=1", f"train.ema_bn={mode}", "train.ema_bn_batches=2"]), tmp_path / mode, progress=False)
        t.run()
        runs[mode] = t
    re, cp = runs["reestimate"], runs["copy"]
    assert "re-estimated from 2 training batches before each validation (train.ema_bn=reestimate)" in "\n".join(re.start_lines())
    assert "copied from the trained network (train.ema_bn=copy)" in "\n".join(cp.start_lines())
    # the trained network and its average's weights are the same: the re-estimation drew on no stream of the run
    for k, v in cp.model.state_dict().items():
        assert torch.equal(v, re.model.state_dict()[k]), k
    avg_re, avg_cp, live = re.ema.module.state_dict(), cp.ema.module.state_dict(), re.model.state_dict()
    means = [k for k in avg_re if k.endswith("running_mean")]
    assert means and all(torch.equal(avg_cp[k], live[k]) for k in means)  # copy: the live network's statistics
    assert any(not torch.allclose(avg_re[k], live[k]) for k in means)  # reestimate: the average's own
    best = load_checkpoint(tmp_path / "reestimate" / "best.pt")
    assert all(torch.equal(best["model_state"][k], avg_re[k]) for k in means)  # what was scored is what was saved
    # the same epoch re-estimates to the same statistics (torchrun processes agree), and scores the recorded mIoU
    assert re.reestimate_ema_statistics(0) == 2 * 4
    assert all(torch.equal(re.ema.module.state_dict()[k], avg_re[k]) for k in means)
    assert re.validate()["miou"] == pytest.approx(best["metrics"]["miou"])
    assert cp.reestimate_ema_statistics(0) == 0


def test_bad_ema_bn_is_a_config_error_naming_the_key():
    from rtseg.config import ConfigError

    with pytest.raises(ConfigError, match="train.ema_bn"):
        load_config("demo", EMA + ["train.ema_bn=sometimes"])
