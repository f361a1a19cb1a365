"""The deployment levers beside the paths (issue 29): OpenVINO performance hint, streams, threads and pinning, and
torch.compile max-autotune, for FPLNet and LiteSeg-MobileNetV2 with their zoo weights at 360x480, batch 1, 2 threads,
interleaved rounds.

    python benchmarks/levers.py benchmarks/results-levers-xeon-amx.json
"""
import statistics, sys, json, numpy as np, torch, warnings, tempfile
from pathlib import Path
import rtseg
from rtseg.efficiency import time_calls
from rtseg.deploy.openvino_backend import export_openvino
import openvino as ov
torch.set_num_threads(2)
warnings.simplefilter("ignore")
out = {}
for name in ["fplnet", "liteseg-mobilenetv2"]:
    m = rtseg.create_model(name, weights="camvid").eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 360, 480)).astype(np.float32)
    tmp = Path(tempfile.mkdtemp()); export_openvino(m, tmp / "m.xml", (360, 480))
    core = ov.Core()
    calls = {}
    for label, cfg in [("LATENCY", {"PERFORMANCE_HINT": "LATENCY"}), ("THROUGHPUT", {"PERFORMANCE_HINT": "THROUGHPUT"}),
                       ("LATENCY, 1 stream, 2 threads", {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "2"}),
                       ("LATENCY, 1 stream, 1 thread", {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "1"}),
                       ("LATENCY, pinned", {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": "YES"})]:
        c = core.compile_model(str(tmp / "m.xml"), "CPU", {**cfg, "INFERENCE_PRECISION_HINT": "f32"})
        calls["openvino fp32 " + label] = (lambda c=c: c(x))
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        from rtseg.deploy.optimize import optimize
        d = optimize(m, (360, 480), channels_last=False, compile=True)
        a = optimize(m, (360, 480), channels_last=False, compile=True, compile_mode="max-autotune")
        calls["torch compile default"] = lambda: d(xt)
        calls["torch compile max-autotune"] = lambda: a(xt)
        times = time_calls(calls, 2, 15, rotate=True)
    out[name] = {k: round(statistics.median(v), 2) for k, v in times.items()}
    print(name, json.dumps(out[name], indent=1), flush=True)
json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else "levers.json", "w"), indent=1)
