"""rtseg.optimize: the optimized model computes the eager model's logits, for every registered model."""
import importlib

import pytest
import torch
import torch.nn as nn

import rtseg
from rtseg.deploy import compare_outputs, fold_batchnorm, optimize

MODELS = rtseg.list_models()


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so that a wrong fold shows in the output."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


@pytest.mark.parametrize("name", MODELS)
def test_optimized_logits_equal_eager(name):
    model = randomise_batchnorm(rtseg.create_model(name, num_classes=19))
    fast = optimize(model, (64, 96), compile=False)
    report = fast.rtseg_optimization
    # an input size other than the one used to find the conv/BN pairs, and not a multiple of the output stride
    x = torch.randn(1, 3, 72, 100)
    with torch.inference_mode():
        cmp = compare_outputs(model(x), fast(x))
    assert cmp["max_abs_diff"] < 1e-4
    assert cmp["argmax_agreement"] >= 0.999
    assert report.folded_batchnorms > 0
    remaining = sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert remaining == len(report.kept_batchnorms)
    assert not any(isinstance(m, nn.Dropout2d) for m in fast.modules())
    # the original model is untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_bn_reading_a_reused_conv_output_is_not_folded():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # y is read twice: folding would change the second read

    model = randomise_batchnorm(Residual())
    n, kept = fold_batchnorm(model, torch.randn(1, 3, 8, 8))
    assert n == 0 and kept == ["bn"]


def test_grouped_dilated_and_transposed_convs_fold_exactly():
    model = randomise_batchnorm(nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=4, bias=False), nn.BatchNorm2d(8),
        nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(6),
        nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.BatchNorm2d(6),
    ))
    x = torch.randn(2, 4, 10, 12)
    with torch.no_grad():
        ref = model(x)
    import copy
    folded = copy.deepcopy(model)
    n, kept = fold_batchnorm(folded, x)
    assert n == 3 and kept == []
    with torch.no_grad():
        assert torch.allclose(folded(x), ref, atol=1e-5)


def test_gradual_layers_are_grouped_when_alpha_is_zero():
    from rtseg.models.gradual_grouping import GradualGroupedConv2d, set_alpha

    model = randomise_batchnorm(rtseg.create_model("essnet-a-dg2", num_classes=19, gradual_grouping=True))
    set_alpha(model, 0.0)
    fast = optimize(model, (64, 64), channels_last=False, compile=False)
    assert fast.rtseg_optimization.converted_gradual_layers > 0
    assert not any(isinstance(m, GradualGroupedConv2d) for m in fast.modules())
    set_alpha(model, 0.5)  # grouping would change the function: the layers stay dense
    fast = optimize(model, (64, 64), channels_last=False, compile=False)
    assert fast.rtseg_optimization.converted_gradual_layers == 0 and fast.rtseg_optimization.notes


def test_channels_last_keeps_the_output():
    model = randomise_batchnorm(rtseg.create_model("liteseg-mobilenetv2", num_classes=19))
    fast = optimize(model, (64, 64), channels_last=True, compile=False)
    assert fast.rtseg_optimization.channels_last
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        assert compare_outputs(model(x), fast(x))["max_abs_diff"] < 1e-4


def test_bad_option_is_named():
    with pytest.raises(ValueError, match="channels_last"):
        optimize(nn.Conv2d(3, 3, 1), channels_last="yes")


def test_bench_command_with_optimize(capsys):
    from rtseg.cli import main

    assert main(["bench", "espnet-c", "--size", "64x64", "--iters", "1", "--warmup", "1", "--optimize", "--channels-last", "off", "--compile", "off"]) == 0
    out = capsys.readouterr().out
    assert "BatchNorm folded" in out and "max |logit diff|" in out


def test_compile_is_skipped_with_a_note_when_unavailable(monkeypatch):
    import importlib

    opt = importlib.import_module("rtseg.deploy.optimize")  # the package attribute of that name is the function

    monkeypatch.setattr(opt, "_compile_available", lambda device=None: "no compiler in this test")
    model = rtseg.create_model("espnet-c", num_classes=19).eval()
    fast = optimize(model, (32, 32), channels_last=False, compile="auto")
    assert not fast.rtseg_optimization.compiled
    assert any("no compiler in this test" in n for n in fast.rtseg_optimization.notes)
    with pytest.raises(RuntimeError, match="no compiler in this test"):
        optimize(model, (32, 32), compile=True)


def test_compile_availability_names_the_missing_cpp_compiler(monkeypatch):
    import importlib

    opt = importlib.import_module("rtseg.deploy.optimize")
    monkeypatch.setenv("CXX", "")
    monkeypatch.setattr(importlib.import_module("rtseg.devices").shutil, "which", lambda name: None)
    assert "C++ compiler" in opt._compile_available(torch.device("cpu"))


def test_unknown_compile_mode_is_rejected_before_any_work():
    with pytest.raises(ValueError, match="compile_mode must be one of .*max-autotune.*'fast'"):
        optimize(nn.Conv2d(3, 3, 1), compile=True, compile_mode="fast")


needs_compiler = pytest.mark.skipif(
    importlib.import_module("rtseg.deploy.optimize")._compile_available(torch.device("cpu")) is not None,
    reason="torch.compile cannot run here (no inductor or no C++ compiler)",
)


# One model per family and per kind of operation that inductor fuses differently: channel shuffles (ESSNet
# DGCS), pixel shuffles (FarSee-Net), depthwise convolutions (LiteSeg), factorized convolutions (ERFNet).
# All 41 models take 8 minutes to compile on one core, which is for benchmarks/deploy_table.py (it checks
# every compiled model against eager), not for the test suite.
COMPILE_SAMPLE = ["essnet-b-dg2s", "farseenet", "liteseg-mobilenetv2", "erfnet-encoder"]


@needs_compiler
@pytest.mark.parametrize("name", COMPILE_SAMPLE)
def test_compiled_families_compute_the_eager_logits(name):
    model = randomise_batchnorm(rtseg.create_model(name, num_classes=19))
    fast = optimize(model, (64, 96), channels_last=True, compile=True)
    assert fast.rtseg_optimization.compiled
    x = torch.randn(1, 3, 72, 100)  # another size than the one compiled for, not a multiple of the output stride
    with torch.inference_mode():
        cmp = compare_outputs(model(x), fast(x))
    assert cmp["max_abs_diff"] < 1e-4 and cmp["argmax_agreement"] >= 0.999
    torch._dynamo.reset()


@needs_compiler
def test_compiled_model_computes_the_eager_logits():
    model = randomise_batchnorm(rtseg.create_model("espnet-c", num_classes=19))
    fast = optimize(model, (64, 96), channels_last=True, compile=True)
    report = fast.rtseg_optimization
    assert report.compiled and report.channels_last
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        cmp = compare_outputs(model(x), fast(x))
    assert cmp["max_abs_diff"] < 1e-4 and cmp["argmax_agreement"] >= 0.999
    # the compiled wrapper keeps what callers read from a model
    assert fast.num_classes == 19 and fast.rtseg_card == model.rtseg_card
    # auto mode times the compiled model against the uncompiled one and says so
    auto = optimize(model, (64, 96), channels_last=False, compile="auto", timing_iters=2)
    assert {"eager_optimized", "compiled"} <= set(auto.rtseg_optimization.timings_ms)
    assert auto.rtseg_optimization.compiled == (
        auto.rtseg_optimization.timings_ms["compiled"] < auto.rtseg_optimization.timings_ms["eager_optimized"])


class _SubPixelHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4 * 16, 1)
        self.bn = nn.BatchNorm2d(4 * 16)
        self.shuffle = nn.PixelShuffle(4)

    def forward(self, x):
        return self.shuffle(torch.relu(self.bn(self.conv(x))))


@needs_compiler
def test_pixel_shuffles_are_left_to_aten_inside_compiled_graphs():
    opt = importlib.import_module("rtseg.deploy.optimize")
    model = randomise_batchnorm(_SubPixelHead())
    fast = optimize(model, (16, 24), channels_last=True, compile=True)
    assert fast.rtseg_optimization.compiled
    assert isinstance(fast.model.shuffle, opt.ExternPixelShuffle)
    x = torch.randn(2, 3, 16, 24)
    with torch.inference_mode():
        assert compare_outputs(model(x), fast(x))["max_abs_diff"] < 1e-5
    assert type(model.shuffle) is nn.PixelShuffle  # the original is untouched


def test_pixel_shuffles_go_back_to_plain_modules_when_compiling_is_not_kept(monkeypatch):
    opt = importlib.import_module("rtseg.deploy.optimize")
    monkeypatch.setattr(opt, "_compile_available", lambda device=None: None)
    monkeypatch.setattr(opt, "_Compiled", lambda model, mode, channels_last: model)  # no real compilation needed
    monkeypatch.setattr(opt, "_time", lambda candidates, iters: {k: (2.0 if k == "compiled" else 1.0) for k in candidates})
    fast = optimize(randomise_batchnorm(_SubPixelHead()), (16, 24), compile="auto")
    assert not fast.rtseg_optimization.compiled
    assert type(fast.shuffle) is nn.PixelShuffle  # plain PyTorch again: exportable and scriptable


def test_extern_pixel_shuffle_is_the_same_operation():
    opt = importlib.import_module("rtseg.deploy.optimize")
    x = torch.randn(1, 32, 5, 7).contiguous(memory_format=torch.channels_last)
    ours, ref = opt.ExternPixelShuffle(4)(x), nn.PixelShuffle(4)(x)
    assert torch.equal(ours, ref) and ours.stride() == ref.stride() and ours.shape == (1, 2, 20, 28)


def test_bench_all_resets_compiled_graphs_between_models(monkeypatch, capsys):
    from rtseg import cli

    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    assert cli.main(["bench", "--all", "--filter", "espnet-c", "--size", "32x32", "--iters", "1", "--warmup", "1",
                     "--optimize", "--compile", "off", "--channels-last", "off"]) == 0
    assert len(resets) == 1


def test_bf16_precision_converts_weights_and_keeps_the_arg_max():
    from rtseg.deploy.optimize import BFloat16Model

    model = randomise_batchnorm(rtseg.create_model("espnet-c", num_classes=19))
    fast = optimize(model, (64, 96), compile=False, channels_last=False, precision="bf16")
    report = fast.rtseg_optimization
    assert report.precision == "bf16" and isinstance(fast, BFloat16Model)
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the original is untouched
    x = torch.randn(1, 3, 72, 100)
    with torch.inference_mode():
        out = fast(x)
        cmp = compare_outputs(model(x), out)
    assert out.dtype == torch.float32
    assert 0 < cmp["max_abs_diff"] < 0.1 and cmp["argmax_agreement"] > 0.95
    assert "bf16" in report.summary() and fast.rtseg_card == model.rtseg_card


def test_auto_precision_follows_the_cpu_and_the_accuracy_check(monkeypatch):
    from rtseg.deploy import precision

    model = randomise_batchnorm(rtseg.create_model("espnet-c", num_classes=19))
    monkeypatch.setattr(precision, "native_bf16", lambda: (False, "no bf16 flags (test)"))
    fast = optimize(model, (32, 64), compile=False, precision="auto")
    assert fast.rtseg_optimization.precision == "fp32" and "no bf16 flags" in fast.rtseg_optimization.precision_reason
    assert fast.rtseg_optimization.max_abs_diff < 1e-4
    monkeypatch.setattr(precision, "native_bf16", lambda: (True, "flags (test)"))
    check = torch.randn(1, 3, 40, 48)  # the check runs on the given input, at its own size
    fast = optimize(model, (32, 64), compile=False, precision="auto", check_input=check, min_agreement=1.01)
    assert fast.rtseg_optimization.precision == "fp32" and "failed" in fast.rtseg_optimization.precision_reason
    fast = optimize(model, (32, 64), compile=False, precision="auto", check_input=check, min_agreement=0.5)
    assert fast.rtseg_optimization.precision == "bf16" and fast.rtseg_optimization.argmax_agreement > 0.5
    with pytest.raises(ValueError, match="precision must be one of"):
        optimize(model, (32, 64), precision="fp16")


@pytest.mark.skipif(importlib.util.find_spec("torch._inductor") is None, reason="no inductor")
def test_compiled_bf16_model_keeps_the_arg_max():
    from rtseg.deploy.optimize import _compile_available

    if _compile_available():
        pytest.skip(_compile_available())
    model = randomise_batchnorm(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 1))).eval()
    fast = optimize(model, (16, 16), compile=True, channels_last=True, precision="bf16")
    assert fast.rtseg_optimization.compiled and fast.rtseg_optimization.precision == "bf16"
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        cmp = compare_outputs(model(x), fast(x))
    assert cmp["argmax_agreement"] > 0.95 and cmp["max_abs_diff"] < 0.1
    torch._dynamo.reset()
