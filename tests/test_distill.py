"""Knowledge distillation: the KL and channel-wise losses against numpy, the teacher's input and classes, and the trainer."""
import numpy as np
import pytest
import torch
from conftest import resumed_run_matches_uninterrupted

from rtseg.config import load_config
from rtseg.data.labels import CITYSCAPES
from rtseg.data.normalization import PRESETS
from rtseg.engine.distill import ChannelWiseDivergence, PixelKLDivergence, Teacher, TeacherNet, renormalize, teacher_class_groups
from rtseg.engine.trainer import Trainer, train
from rtseg.io import load_checkpoint, save_weights
from rtseg.registry import create_model

TINY = ["model.name=espnet-c", "model.options={q: 2}", "data.image_size=[48,64]", "data.train_samples=4", "data.val_samples=2",
        "train.batch_size=2", "train.epochs=1", "train.max_iters_per_epoch=2", "train.threads=1", "train.precision=fp32",
        "train.compile=off", "logging.loggers=[csv]", "train.tensorboard=false"]


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _tiny():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(2, 3, 2, 4)), rng.normal(size=(2, 3, 2, 4)) * 2
    valid = np.ones((2, 2, 4), bool)
    valid[0, 1, 2] = valid[1, 0, 0] = False
    return s, t, valid


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_pixel_kl_matches_numpy(temperature):
    s, t, valid = _tiny()
    ps, pt = _softmax(s / temperature, 1), _softmax(t / temperature, 1)
    per_pixel = (pt * (np.log(pt) - np.log(ps))).sum(1)
    want = per_pixel[valid].mean() * temperature ** 2
    got = PixelKLDivergence(temperature)(torch.tensor(s), torch.tensor(t), torch.tensor(valid))
    assert got.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_channel_wise_distillation_matches_numpy(temperature):
    s, t, valid = _tiny()
    total, count = 0.0, 0
    for n in range(2):
        keep = valid[n].reshape(-1)
        for c in range(3):
            ps = _softmax(s[n, c].reshape(-1)[keep] / temperature, 0)
            pt = _softmax(t[n, c].reshape(-1)[keep] / temperature, 0)
            total += (pt * (np.log(pt) - np.log(ps))).sum()
            count += 1
    want = total / count * temperature ** 2
    got = ChannelWiseDivergence(temperature)(torch.tensor(s), torch.tensor(t), torch.tensor(valid))
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_losses_vanish_when_student_equals_teacher_and_have_gradients_otherwise():
    s, t, valid = (torch.tensor(a) for a in _tiny())
    for loss in (PixelKLDivergence(2.0), ChannelWiseDivergence(4.0)):
        assert loss(t.clone(), t, valid).item() == pytest.approx(0.0, abs=1e-6)
        x = s.clone().requires_grad_()
        loss(x, t, valid).backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_teacher_gets_its_own_normalisation_of_the_same_pixels():
    pixels = torch.rand(1, 3, 8, 8) * 255
    student, teacher = PRESETS["imagenet"], PRESETS["espnet-camvid"]  # RGB 0-1 scale vs BGR 0-255 then /255
    assert torch.allclose(renormalize(student(pixels), student, teacher), teacher(pixels), atol=1e-5)


def test_teacher_classes_map_by_name_drop_void_and_merge_by_class_map():
    assert teacher_class_groups(["Road", "car"], ["sky", "road", "car", "void"]) == [[1], [2]]
    assert teacher_class_groups(["road", "vehicle"], ["road", "car", "bus"], {"vehicle": ["car", "bus"]}) == [[0], [1, 2]]
    with pytest.raises(ValueError, match="no class for vehicle.*student classes: road, vehicle; teacher classes: road, car"):
        teacher_class_groups(["road", "vehicle"], ["road", "car"])
    # a merged class's probability is the sum of its members'
    model = torch.nn.Identity()
    net = TeacherNet(model, PRESETS["imagenet"], [[0], [1, 2]])
    teacher = Teacher([net], PRESETS["imagenet"], temperature=2.0)
    logits = torch.randn(1, 3, 2, 2)
    mapped = teacher._mapped(logits, net.groups)
    want = torch.softmax(logits / 2, 1)
    got = torch.softmax(mapped / 2, 1)
    assert torch.allclose(got[:, 1], want[:, 1] + want[:, 2], atol=1e-6)


@pytest.fixture()
def teacher_file(tmp_path):
    model = create_model("espnet-c", num_classes=19, q=2)
    path = tmp_path / "teacher.safetensors"
    save_weights(path, model, model.rtseg_card.replace(classes=CITYSCAPES))
    return path


def test_distillation_with_weight_zero_trains_exactly_as_without(tmp_path, teacher_file):
    train(load_config("demo", TINY), tmp_path / "plain", progress=False)
    train(load_config("demo", TINY + [f"distill.teacher={teacher_file}", "distill.weight=0"]), tmp_path / "kd0", progress=False)
    train(load_config("demo", TINY + [f"distill.teacher={teacher_file}", "distill.weight=1", "distill.loss=cwd"]), tmp_path / "kd", progress=False)
    a, b, c = (load_checkpoint(tmp_path / r / "last.pt")["model_state"] for r in ("plain", "kd0", "kd"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_teacher_runs_in_eval_mode_without_gradients_on_the_augmented_batch(tmp_path, teacher_file):
    cfg = load_config("demo", TINY + [f"distill.teacher={teacher_file}", "data.hflip=true", "train.epochs=1"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    seen = []
    teacher = trainer.distill.teacher.nets[0].model
    teacher.register_forward_pre_hook(lambda m, args: seen.append((m.training, torch.is_grad_enabled(), args[0].shape)))
    trainer.run()
    assert seen and all(not training and not grad for training, grad, _ in seen)
    assert all(shape[0] == 2 for _, _, shape in seen)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert "distilling from kl T=1.0 weight=1.0" in "\n".join(trainer.start_lines())


def test_void_and_pixels_reach_the_run_and_its_records(tmp_path, teacher_file):
    cfg = load_config("demo", TINY + [f"distill.teacher={teacher_file}", "distill.void=ignore", "distill.pixels=correct"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert (trainer.distill.void, trainer.distill.pixels) == ("ignore", "correct")
    assert "weight=1.0, void pixels ignored, only where the teacher is right from" in "\n".join(trainer.start_lines())


def test_distillation_with_aux_heads_ema_and_resume(tmp_path, teacher_file):
    over = TINY + [f"distill.teacher={teacher_file}", "model.aux_heads=[{stage: stage3}]", "train.ema=0.9", "train.epochs=2"]
    resumed_run_matches_uninterrupted(over, tmp_path)


def test_teacher_of_other_classes_without_a_class_map_stops_naming_both_lists(tmp_path, capsys):
    from rtseg.cli import main
    from rtseg.data.labels import CAMVID

    model = create_model("espnet-c", num_classes=11, q=2)
    path = tmp_path / "camvid-teacher.safetensors"
    save_weights(path, model, model.rtseg_card.replace(classes=CAMVID))
    code = main(["train", "demo", *TINY, f"distill.teacher={path}", "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "student classes: road, sidewalk" in err and "teacher classes: sky, building" in err
    assert not (tmp_path / "run").exists()


def test_an_ensemble_averages_its_teachers_mapped_logits():
    class Const(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, x):
            return self.value.expand(x.shape[0], -1, *x.shape[-2:])

    a = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    b = torch.tensor([5.0, 0.0]).view(1, 2, 1, 1)  # another class order: [car, road]
    nets = [TeacherNet(Const(a), PRESETS["imagenet"], [[0], [2]]), TeacherNet(Const(b), PRESETS["espnet"], [[1], [0]])]
    out = Teacher(nets, PRESETS["imagenet"], temperature=1.0)(torch.zeros(2, 3, 4, 4), (4, 4), torch.autocast("cpu", enabled=False))
    assert out.shape == (2, 2, 4, 4)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([(1.0 + 0.0) / 2, (3.0 + 5.0) / 2]))


def test_void_ignore_leaves_out_the_pixels_a_teacher_calls_void():
    from rtseg.engine.distill import Distillation

    class Half(torch.nn.Module):  # left half: class 0 wins; right half: the void output (index 2) wins
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3, *x.shape[-2:])
            out[:, 0, :, : x.shape[-1] // 2] = 5.0
            out[:, 2, :, x.shape[-1] // 2:] = 5.0
            return out

    teacher = Teacher([TeacherNet(Half(), PRESETS["imagenet"], [[0], [1]], void=(2,))], PRESETS["imagenet"], temperature=1.0)
    student = torch.zeros(1, 2, 4, 4, requires_grad=True)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    off = torch.autocast("cpu", enabled=False)
    drop = Distillation(teacher, PixelKLDivergence(1.0), 1.0, 255, void="drop")(student, torch.zeros(1, 3, 4, 4), labels, off)
    assert teacher.void_pixels is not None and teacher.void_pixels[0, :, 2:].all() and not teacher.void_pixels[0, :, :2].any()
    ignore = Distillation(teacher, PixelKLDivergence(1.0), 1.0, 255, void="ignore")(student, torch.zeros(1, 3, 4, 4), labels, off)
    # on the void half the dropped void leaves two equal logits (KL 0 to a uniform student): ignoring it doubles the mean
    assert float(drop) > 0 and float(ignore) == pytest.approx(2 * float(drop), rel=1e-5)
    ignore.backward()
    assert student.grad[0, :, :, 2:].abs().max() == 0 and student.grad[0, :, :, :2].abs().max() > 0
    with pytest.raises(ValueError, match="distill.void"):
        Distillation(teacher, PixelKLDivergence(1.0), 1.0, 255, void="mask")


def test_pixels_correct_leaves_out_the_pixels_where_the_teacher_is_wrong():
    from rtseg.engine.distill import Distillation

    class Left(torch.nn.Module):  # class 0 wins everywhere, confidently
        def forward(self, x):
            out = torch.zeros(x.shape[0], 2, *x.shape[-2:])
            out[:, 0] = 5.0
            return out

    teacher = Teacher([TeacherNet(Left(), PRESETS["imagenet"], [[0], [1]])], PRESETS["imagenet"], temperature=1.0)
    student = torch.zeros(1, 2, 4, 4, requires_grad=True)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :, 2:] = 1  # right half: the teacher is wrong
    labels[0, 0, 0] = 255  # and one unlabelled pixel stays out either way
    off = torch.autocast("cpu", enabled=False)
    every = Distillation(teacher, PixelKLDivergence(1.0), 1.0, 255)(student, torch.zeros(1, 3, 4, 4), labels, off)
    correct = Distillation(teacher, PixelKLDivergence(1.0), 1.0, 255, pixels="correct")(student, torch.zeros(1, 3, 4, 4), labels, off)
    # the same KL on every pixel (the teacher and the student are the same everywhere), so the means agree ...
    assert float(correct) == pytest.approx(float(every), rel=1e-5) and float(correct) > 0
    correct.backward()
    # ... but only the 7 labelled pixels where the teacher is right get a gradient
    reached = student.grad.abs().sum(1)[0] > 0
    assert int(reached.sum()) == 7 and not reached[:, 2:].any() and not reached[0, 0]
    with pytest.raises(ValueError, match="distill.pixels"):
        Distillation(teacher, PixelKLDivergence(1.0), 1.0, 255, pixels="right")


def test_teacher_ensemble_scores_are_the_networks_own_predictions_summed(tmp_path, monkeypatch):
    """benchmarks/teacher_ensembles.py scores each teacher and ensemble as the trainer's teacher sees them; here
    against the networks run directly on the same images in their own normalisation."""
    import json
    import sys

    import torch.nn.functional as F
    from conftest import ROOT, load_script, shared_path

    from rtseg.data.datasets import build_dataset
    from rtseg.data.transformed import TransformedDataset
    from rtseg.data.transforms import EvalTransform
    from rtseg.metrics import ConfusionMatrix

    root = shared_path("data", "camvid")
    script = load_script(ROOT / "benchmarks" / "teacher_ensembles.py")
    out = tmp_path / "ensembles.json"
    monkeypatch.setattr(sys, "argv", ["teacher_ensembles.py", "--root", str(root), "--teacher", "e=espnet@camvid",
                                      "--teacher", "s=essnet-b-dg2@camvid", "--max-members", "2", "--limit", "2",
                                      "--threads", "1", "--json", str(out)])
    assert script.main() == 0
    rows = {tuple(r["members"]): r["miou"] for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {("e",), ("s",), ("e", "s")}

    dcfg = load_config("camvid-fplnet", [f"data.root={root}"])["data"]
    logits, labels = {}, []
    for key, name in (("e", "espnet"), ("s", "essnet-b-dg2")):
        model = create_model(name, weights="camvid").eval()
        data = TransformedDataset(build_dataset(dcfg, "val"), EvalTransform(dcfg, model.rtseg_card.normalization), seed=0)
        logits[key] = []
        for i in range(2):
            x, y = data[i]
            with torch.no_grad():
                z = model(x[None])
            logits[key].append(F.interpolate(z, size=tuple(y.shape), mode="bilinear", align_corners=False))
            if key == "e":
                labels.append(y)

    def miou(keys):
        conf = ConfusionMatrix(11, 255)
        for i, y in enumerate(labels):
            conf.update(sum(logits[k][i] for k in keys), y[None])
        return conf.mean_iou()

    for keys, value in rows.items():
        assert value == pytest.approx(miou(keys), abs=2e-3), keys
    assert rows[("e", "s")] != pytest.approx(rows[("e",)], abs=1e-6)  # the pair is scored from both networks


def test_teacher_ensembles_script_names_a_bad_teacher_argument(capsys, monkeypatch):
    import sys

    from conftest import ROOT, load_script, shared_path

    script = load_script(ROOT / "benchmarks" / "teacher_ensembles.py")
    root = shared_path("data", "camvid")
    for argv, expected in [(["--root", "x", "--teacher", "espnet@camvid"], "expected LABEL=MODEL@WEIGHTS"),
                           (["--root", "x", "--teacher", "a=espnet@camvid", "--teacher", "a=fplnet@camvid"], "its own LABEL"),
                           (["--root", str(root), "--teacher", "a=espnet"], "a teacher needs trained weights"),
                           (["--root", str(root), "--teacher", "a=nonet@camvid"], "nonet")]:
        monkeypatch.setattr(sys, "argv", ["teacher_ensembles.py", *argv])
        with pytest.raises(SystemExit) as exc:
            script.main()
        err = capsys.readouterr().err
        assert exc.value.code == 2 and expected in err and "Traceback" not in err, (argv, err)


def test_resume_takes_the_same_teacher_by_another_name_and_refuses_another_teacher(tmp_path, teacher_file, capsys):
    """A run started with the teacher's file resumes with MODEL@FILE (or a tag) naming the same weights, as when a
    run started with a tag on a machine with network goes on where only the file is; other weights are refused."""
    from rtseg.cli import main

    out = tmp_path / "run"
    assert main(["train", "demo", *TINY, f"distill.teacher={teacher_file}", "--quiet", "--out", str(out)]) == 0
    before, epoch = (out / "last.pt").read_bytes(), load_checkpoint(out / "last.pt")["epoch"]
    other = tmp_path / "other.safetensors"
    model = create_model("espnet-c", num_classes=19, q=2)
    save_weights(other, model, model.rtseg_card.replace(classes=CITYSCAPES))
    code = main(["train", "demo", *TINY, f"distill.teacher=espnet-c@{other}", "--quiet", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "distill.teacher: the run has" in err and (out / "last.pt").read_bytes() == before, err
    # the same teacher with another objective is another run too
    for extra, expected in (("distill.weight=0.5", "distill.weight: the run has 1.0, now 0.5"),
                            ("distill.pixels=correct", "distill.pixels: the run has 'labelled', now 'correct'"),
                            ("distill.void=ignore", "distill.void: the run has 'drop', now 'ignore'")):
        code = main(["train", "demo", *TINY, f"distill.teacher={teacher_file}", extra, "--quiet", "--out", str(out), "--resume"])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and (out / "last.pt").read_bytes() == before, (extra, err)
    # an integer temperature is the default 1.0 written another way
    assert main(["train", "demo", *TINY, "train.epochs=2", f"distill.teacher=espnet-c@{teacher_file}", "distill.temperature=1",
                 "--quiet", "--out", str(out), "--resume"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == epoch + 1  # it went on for the one more epoch asked


def test_unset_and_null_distill_settings_read_the_defaults(teacher_file):
    """A stored run config whose distill section leaves keys out (older runs) or writes them as null compares equal,
    on resume, to one spelling the defaults; records describe it with the defaults; another value still differs."""
    from rtseg.config_defaults import DEFAULTS
    from rtseg.engine.finetune import describe_teacher, resume_conflicts

    spelled = {"distill": {**DEFAULTS["distill"], "teacher": str(teacher_file)}}
    for stored in ({"distill": {"teacher": str(teacher_file)}},
                   {"distill": {"teacher": str(teacher_file), "temperature": None, "void": None, "pixels": None}}):
        assert resume_conflicts(stored, spelled) == [] and resume_conflicts(spelled, stored) == []
        assert describe_teacher(stored["distill"]).startswith("kl T=1.0 weight=1.0 from ")
    other = {"distill": {**spelled["distill"], "temperature": 2.0}}
    assert resume_conflicts({"distill": {"teacher": str(teacher_file), "temperature": None}}, other) == [
        "distill.temperature: the run has 1.0, now 2.0"]
