"""Optimized vs eager vs ONNX Runtime, side by side in one run, for every registered model (docs/benchmarks.md).

For each model and size the variants are timed in interleaved rounds (eager, optimized NCHW, optimized
channels-last, ONNX Runtime, eager, ...) so that load from other processes hits all of them alike; the
figure per variant is the median over rounds. Weights are random (latency does not depend on them).

    python benchmarks/deploy_table.py --threads 2 --rounds 3 --json deploy.json
    python benchmarks/deploy_table.py --from-json deploy.json      # only print the tables
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

SIZES = ("360x640", "512x1024")
VARIANTS = ("eager", "optimized", "optimized_cl", "onnxruntime")


def measure(names, sizes, threads: int, rounds: int, warmup: int) -> list[dict]:
    import rtseg
    from rtseg.deploy.onnx_export import export_onnx, ort_session
    from rtseg.deploy.optimize import optimize
    from rtseg.efficiency import count_flops, count_parameters, device_name

    torch.set_num_threads(threads)
    records = []
    for name in names:
        for size_text in sizes:
            h, w = (int(v) for v in size_text.split("x"))
            model = rtseg.create_model(name, num_classes=19).eval()
            rec = {"model": name, "size": [h, w], "params": count_parameters(model), "macs": count_flops(model, (h, w))["macs"],
                   "threads": threads, "rounds": rounds, "warmup": warmup, "device_name": device_name(torch.device("cpu")),
                   "torch": torch.__version__}
            fast = optimize(model, (h, w), verify=True)
            fast_cl = optimize(model, (h, w), channels_last=True, verify=False)
            with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = Path(tmp) / "m.onnx"
                export_onnx(model, path, (h, w), verify=False)
                # no busy-waiting ORT threads: the next variant timed would pay for them
                session = ort_session(path, threads=threads, spinning=False)
                import onnxruntime

                rec["onnxruntime"] = onnxruntime.__version__
                x = torch.randn(1, 3, h, w)
                xn = x.numpy()
                runners = {
                    "eager": lambda: model(x),
                    "optimized": lambda: fast(x),
                    "optimized_cl": lambda: fast_cl(x),
                    "onnxruntime": lambda: session.run(None, {"image": xn}),
                }
                times = {k: [] for k in runners}
                with torch.inference_mode():
                    for _ in range(warmup):
                        for run in runners.values():
                            run()
                    for _ in range(rounds):
                        for k, run in runners.items():
                            t0 = time.perf_counter()
                            run()
                            times[k].append((time.perf_counter() - t0) * 1000.0)
            for k, v in times.items():
                rec[f"{k}_ms"] = statistics.median(v)
            rec["folded_batchnorms"] = fast.rtseg_optimization.folded_batchnorms
            rec["kept_batchnorms"] = len(fast.rtseg_optimization.kept_batchnorms)
            records.append(rec)
            print(f"{name:24s} {h}x{w} " + " ".join(f"{k} {rec[k + '_ms']:.1f}" for k in VARIANTS), flush=True)
    return records


def tables(records: list[dict]) -> str:
    r0 = records[0]
    lines = [f"CPU: {r0['device_name']}, {r0['threads']} threads, batch 1, fp32, torch {r0['torch']}, onnxruntime {r0['onnxruntime']}; "
             f"median of {r0['rounds']} interleaved rounds after {r0['warmup']} warm-up round(s); random weights.", ""]
    sizes = sorted({tuple(r["size"]) for r in records})
    by = {(r["model"], tuple(r["size"])): r for r in records}
    names = sorted({r["model"] for r in records})
    met = {s: 0 for s in sizes}
    for s in sizes:
        lines += [f"**{s[0]}x{s[1]}**", "",
                  "| model | params | GMACs | eager ms | optimized ms | optimized channels-last ms | ONNX Runtime ms | best optimized vs eager | ORT vs eager |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in names:
            r = by.get((n, s))
            if r is None:
                continue
            best = min(r["optimized_ms"], r["optimized_cl_ms"])
            speedup = r["eager_ms"] / best
            met[s] += speedup >= 1.5
            lines.append(f"| {n} | {r['params']:,} | {r['macs'] / 1e9:.2f} | {r['eager_ms']:.1f} | {r['optimized_ms']:.1f} | {r['optimized_cl_ms']:.1f} | "
                         f"{r['onnxruntime_ms']:.1f} | {speedup:.2f}x | {r['eager_ms'] / r['onnxruntime_ms']:.2f}x |")
        lines.append("")
    lines.append("")
    for s in sizes:
        total = sum(1 for n in names if (n, s) in by)
        lines.append(f"Goal optimized >= 1.5x eager at {s[0]}x{s[1]}: met by {met[s]} of {total} models.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-json", type=Path)
    parser.add_argument("--json", type=Path, default=Path("deploy-bench.json"))
    parser.add_argument("--filter", help="shell-style model name pattern")
    parser.add_argument("--models", nargs="+", help="these models first (then the rest unless --only)")
    parser.add_argument("--only", action="store_true", help="with --models: only those")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    if args.from_json:
        records = json.loads(args.from_json.read_text())
    else:
        import rtseg

        records = []
        names = rtseg.list_models(args.filter)
        if args.models:
            names = list(args.models) + ([] if args.only else [n for n in names if n not in args.models])
        for name in names:  # written after each model so that an interrupted run keeps what it measured
            records += measure([name], args.sizes, args.threads, args.rounds, args.warmup)
            args.json.write_text(json.dumps(records, indent=1))
    print(tables(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
