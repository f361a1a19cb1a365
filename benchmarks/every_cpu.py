"""Speed on the CPU at hand (issue 29), both halves side by side in one run, written per CPU kind:

1. Deployment: every CamVid zoo network at 360x480, batch 1, on eager PyTorch and every deployment path this CPU runs
   natively (rtseg.deploy.paths: PyTorch optimized / bf16, OpenVINO fp32 / bf16 / NNCF INT8, ONNX Runtime fp32 / INT8),
   all timed in interleaved rounds; each path's accuracy is the record shipped with the weights (mIoU change on all 101
   CamVid val images against fp32 eager: bf16 within 0.002, INT8 within 0.005). Reported: the fastest path whose
   accuracy passes and its speed-up over eager.
2. Training: FPLNet at 360x480, batch 8, the trainer's default mode on this CPU (train.precision=auto, train.compile
   on) against fp32 eager, with the levers measured beside them (fp32 compiled, channels-last fp32, fused Adam).

``--isa avx2`` runs the measurement again in a child process with PyTorch's and oneDNN's instruction sets capped at AVX2
(ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) and rtseg's CPU probe told the flags of an AVX2-only CPU (RTSEG_CPU_FLAGS), so
every auto choice is the one an AVX2 machine gets. This is an emulation on this machine, not an AVX2 CPU: OpenVINO and
ONNX Runtime do not honour the cap (they dispatch on the real CPU), so their rows are left out under it.

    python benchmarks/every_cpu.py --calibration ../shared/data/camvid/train --json benchmarks/results-every-cpu.json
    python benchmarks/every_cpu.py --isa avx2 --json benchmarks/results-every-cpu.json      # adds the AVX2-capped rows
    python benchmarks/every_cpu.py --table benchmarks/results-every-cpu.json                # markdown tables per CPU kind
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "RTSEG_CPU_FLAGS": "sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c"}
ZOO = ["espnet", "fplnet", "farseenet", "essnet-b-dg2", "erfnet", "wspdnet", "liteseg-mobilenetv2"]


def deployment(size, threads: int, rounds: int, calibration: Path | None, isa: str) -> list[dict]:
    import torch

    from rtseg.card import card_of
    from rtseg.deploy.paths import PATHS, available_paths, build_runner
    from rtseg.deploy.calibration import calibration_images
    from rtseg.efficiency import time_calls
    from rtseg.pretrained import get_pretrained
    from rtseg.registry import create_model

    why = available_paths(calibration=calibration is not None)
    paths = [p for p, reason in why.items() if reason is None and p != "torch" and (isa == "native" or PATHS[p].backend == "torch")]
    files = calibration_images(calibration, 32) if calibration else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ZOO:
            model = create_model(name, weights="camvid").eval()
            net = card_of(model).network_input_size(size) or size
            x = np.random.default_rng(0).standard_normal((1, 3, *net)).astype(np.float32)
            runners = {"torch": build_runner("torch", model, net, threads, Path(tmp))[0]}
            for p in paths:
                runners[p] = build_runner(p, model, net, threads, Path(tmp), files)[0]
            times = time_calls({k: (lambda r=r: r(x)) for k, r in runners.items()}, warmup=2, iters=rounds, rotate=True)
            ms = {k: statistics.median(v) for k, v in times.items()}
            records = get_pretrained(name, "camvid").deployment or {}
            passing = {k: v for k, v in ms.items() if k == "torch" or PATHS[k].precision == "fp32" or (records.get(k) or {}).get("pass")}
            best = min(passing, key=passing.get)
            rows.append({"model": name, "network_input": list(net), "ms": ms, "passing": sorted(passing), "best": best,
                         "speedup": ms["torch"] / ms[best]})
            print(f"{name}: eager {ms['torch']:.1f} ms, best passing {best} {ms[best]:.1f} ms ({ms['torch'] / ms[best]:.2f}x); "
                  + ", ".join(f"{k} {v:.1f}" for k, v in ms.items() if k != "torch"), flush=True)
            del runners
            torch._dynamo.reset()
    return rows


def training(size, threads: int, rounds: int) -> dict:
    import torch
    from train_throughput import throughput

    from rtseg.engine.precision import resolve_precision

    default = resolve_precision("auto", torch.device("cpu")).name + "+compile"  # the trainer's mode for a long CPU run
    modes = list(dict.fromkeys(["fp32", default, "fp32+compile", "fp32-cl", "fp32+compile+fused"]))
    out = throughput("fplnet", size, 8, modes, rounds, 1)
    for k, r in out.items():
        r.pop("step_s_all", None)
        print(f"training {k}: {r['images_per_s']:.2f} img/s, x{r['speedup_vs_fp32']:.2f} vs fp32", flush=True)
    return {"default_mode": default, "modes": out}


def measure(args) -> dict:
    import torch

    from rtseg.cpu import cpu_info
    from rtseg.efficiency import conditions

    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.split("x"))
    info = cpu_info()
    record = {"cpu": info.model, "cpu_kind": info.kind, "cpu_flags": info.named_flags, "isa": args.isa,
              "emulated": args.isa != "native", "conditions": conditions(torch.device("cpu"), size, 1, 2, args.rounds, torch.float32),
              "torch_capability": torch.backends.cpu.get_cpu_capability()}
    if not args.skip_deploy:
        record["deployment"] = deployment(size, args.threads, args.rounds, Path(args.calibration) if args.calibration else None, args.isa)
    if not args.skip_train:
        record["training"] = training(size, args.threads, args.train_rounds)
    return record


def table(records: list[dict]) -> str:
    out = []
    for r in records:
        label = f"{r['cpu']} ({', '.join(r['cpu_flags'])})" + (" with PyTorch and oneDNN capped at AVX2 (emulated)" if r["emulated"] else "")
        c = r["conditions"]
        out.append(f"**{label}**, {c['threads']} threads, torch {c['torch_version']}, 360x480, batch 1, median of {c['iters']} interleaved rounds:\n")
        if "deployment" in r:
            paths = list(dict.fromkeys(k for d in r["deployment"] for k in d["ms"] if k != "torch"))
            out.append("| network | eager ms | " + " | ".join(paths) + " | fastest passing | vs eager |")
            out.append("|---|---:|" + "---:|" * len(paths) + "---|---:|")
            for d in r["deployment"]:
                cells = [(f"{d['ms'][p]:.1f}" + ("" if p in d["passing"] else " (fails)")) if p in d["ms"] else "-" for p in paths]
                out.append(f"| {d['model']} | {d['ms']['torch']:.1f} | " + " | ".join(cells) + f" | {d['best']} | **{d['speedup']:.2f}x** |")
            out.append("")
        if "training" in r:
            t = r["training"]
            out.append(f"Training FPLNet 360x480, batch 8 (the trainer's default here: {t['default_mode']}):\n")
            out.append("| mode | images/s | vs fp32 eager |")
            out.append("|---|---:|---:|")
            for k, m in t["modes"].items():
                out.append(f"| {k} ({m['precision']}) | {m['images_per_s']:.2f} | {m['speedup_vs_fp32']:.2f}x |")
            out.append("")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--isa", choices=["native", "avx2"], default="native")
    p.add_argument("--size", default="360x480")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--train-rounds", type=int, default=3)
    p.add_argument("--calibration", help="images for the INT8 paths (CamVid train)")
    p.add_argument("--skip-deploy", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--json", help="append the record to this JSON list (same CPU kind and --isa replaced)")
    p.add_argument("--table", help="print the markdown tables of a results file and stop")
    a = p.parse_args()
    if a.table:
        print(table(json.loads(Path(a.table).read_text())))
        return 0
    if a.isa == "avx2" and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2":  # the caps are read at start-up: a fresh process
        return subprocess.call([sys.executable, *sys.argv], env={**os.environ, **AVX2_ENV})
    record = measure(a)
    if a.json:
        path = Path(a.json)
        records = json.loads(path.read_text()) if path.is_file() else []
        records = [r for r in records if not (r["cpu"] == record["cpu"] and r["isa"] == record["isa"] and r["cpu_flags"] == record["cpu_flags"])]
        path.write_text(json.dumps(records + [record], indent=1))
    print(table([record]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
