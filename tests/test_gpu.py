"""The CUDA paths: AMP training with GradScaler, fp16 / bf16 inference, CUDA graphs and torch.compile, NCCL DDP and
SyncBatchNorm. Marked ``gpu``: skipped without CUDA (tests/conftest.py); benchmarks/gpu/run.sh runs them on a GPU."""
import copy
import socket

import pytest
import torch
import torch.nn as nn

import rtseg
from rtseg.deploy import compare_outputs, optimize
from test_optimize import randomise_batchnorm

pytestmark = pytest.mark.gpu

MODELS = ["fplnet", "erfnet", "espnet", "liteseg-mobilenetv2", "farseenet", "essnet-d"]


def _model(name, classes=19):
    return randomise_batchnorm(rtseg.create_model(name, num_classes=classes)).cuda()


def test_amp_training_steps_with_gradscaler(tmp_path):
    from rtseg.io import load_checkpoint
    from rtseg.config import load_config
    from rtseg.engine.trainer import train

    cfg = load_config("demo", ["model.name=espnet-c", "data.image_size=[64,96]", "data.train_samples=8", "data.val_samples=2",
                               "train.batch_size=4", "train.epochs=2", "train.amp=true", "train.device=cuda", "train.tensorboard=false"])
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["iterations"] == 4
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    scaler = ckpt["scaler"]
    assert scaler and scaler["scale"] > 0  # the scaler was enabled (a disabled one has an empty state) and stepped
    assert all(torch.isfinite(v).all() for v in ckpt["model_state"].values() if v.is_floating_point())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inference_keeps_the_arg_max(name, dtype):
    model = _model(name)
    x = torch.randn(1, 3, 256, 512, device="cuda")
    with torch.inference_mode():
        ref = model(x)
        half = copy.deepcopy(model).to(dtype)(x.to(dtype))
        with torch.autocast("cuda", dtype=dtype):
            auto = model(x)
    for out in (half, auto):
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert compare_outputs(ref, out)["argmax_agreement"] > 0.95


@pytest.mark.parametrize("name", ["fplnet", "espnet", "liteseg-mobilenetv2"])
def test_compiled_with_cuda_graphs_matches_eager(name):
    model = _model(name)
    fast = optimize(model, (256, 512), compile=True, compile_mode="reduce-overhead", channels_last="auto", device="cuda")
    assert fast.rtseg_optimization.compiled
    x = torch.randn(1, 3, 256, 512, device="cuda")
    with torch.inference_mode():
        ref = model(x)
        for _ in range(3):  # the CUDA graph is recorded on a warm-up call and replayed after it
            out = fast(x).clone()
    cmp = compare_outputs(ref, out)
    assert cmp["argmax_agreement"] > 0.99 and cmp["max_abs_diff"] < 1e-2 * max(1.0, float(ref.abs().max()))
    torch._dynamo.reset()


def test_manual_cuda_graph_replay_matches_eager():
    model = optimize(_model("espnet-c"), (128, 256), compile=False, device="cuda")
    static_x = torch.randn(1, 3, 128, 256, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):
            model(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode():
        with torch.cuda.graph(graph):
            static_out = model(static_x)
        new_x = torch.randn_like(static_x)
        static_x.copy_(new_x)
        graph.replay()
        ref = model(new_x)
    assert torch.allclose(static_out, ref, atol=1e-3, rtol=1e-3)


def test_bench_cli_on_cuda(capsys):
    from rtseg.cli import main

    assert main(["bench", "fplnet", "--device", "cuda", "--dtype", "fp16", "--size", "256x512", "--warmup", "3", "--iters", "5"]) == 0
    assert "cuda" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_nccl_ddp_step_with_syncbatchnorm(monkeypatch):
    import torch.distributed as dist

    from rtseg.engine.distributed import DistributedContext

    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)
    ctx = DistributedContext()
    ctx.enabled = True  # one process: the multi-process code path (NCCL group, SyncBN, DDP, all-reduce) all the same
    device = ctx.setup(torch.device("cuda"))
    try:
        assert dist.get_backend() == "nccl"
        model = rtseg.create_model("espnet-c", num_classes=19).to(device)
        reference = copy.deepcopy(model)
        net = ctx.wrap(model, device, sync_bn=True)
        assert any(isinstance(m, nn.SyncBatchNorm) for m in net.modules())
        x = torch.randn(2, 3, 64, 96, device=device)
        net.train()
        reference.train()
        # one process: SyncBatchNorm's statistics are the batch's own, so the outputs equal plain BatchNorm's
        assert torch.allclose(net(x), reference(x), atol=1e-4, rtol=1e-4)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cuda")
        with torch.autocast("cuda"):
            loss = net(x).float().mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
        total = ctx.sum_(torch.tensor([3.0]))  # a CPU tensor through NCCL and back
        assert total.item() == 3.0 and total.device.type == "cpu"
    finally:
        ctx.close()
