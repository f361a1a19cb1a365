"""Every CPU deployment path vs eager, side by side in one run, for every registered model (docs/benchmarks.md).

For each model and size the variants are timed in interleaved rounds (eager, optimized NCHW, optimized
channels-last, optimized channels-last + torch.compile, the same in bf16, ONNX Runtime, OpenVINO fp32,
OpenVINO bf16, eager, ...) so that load from other processes hits all of them alike; the figure per variant
is the median over rounds. Weights are random (latency does not depend on them). The run also measures
this CPU's attainable multiply-add rate (a large matrix product and a large 3x3 convolution), against which
each model's rate is compared.

"Best deployed path" counts only paths whose accuracy passes: fp32 paths are verified against eager; a
bf16 path passes when its arg-max agrees with eager's on >= 99 % of the timing input's pixels (random
weights: an understatement of a trained model's agreement), or, for models measured on real data by
benchmarks/precision_camvid.py (``--accuracy FILE``), when its mIoU change met the goal there.
OpenVINO (``pip install 'rtseg[openvino]'``) columns are left out when it is not installed.

    python benchmarks/deploy_table.py --threads 2 --rounds 5 --json deploy.json
    python benchmarks/deploy_table.py --from-json deploy.json --accuracy precision.json   # only print the tables
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
VARIANTS = ("eager", "optimized", "optimized_cl", "compiled", "onnxruntime", "torch_bf16", "openvino_fp32", "openvino_bf16")
OPTIMIZED = ("optimized", "optimized_cl", "compiled")
REDUCED = ("torch_bf16", "openvino_bf16")  # paths whose accuracy must be checked
DEPLOYED = OPTIMIZED + ("onnxruntime", "openvino_fp32") + REDUCED
LABELS = {"optimized": "optimized", "optimized_cl": "channels-last", "compiled": "compiled", "onnxruntime": "ONNX Runtime",
          "torch_bf16": "torch bf16", "openvino_fp32": "OpenVINO fp32", "openvino_bf16": "OpenVINO bf16"}
MIN_AGREEMENT = 0.99
DEPLOYED_GOAL = 2.0


def measure(names, sizes, threads: int, rounds: int, warmup: int, bf16: bool = True, openvino: bool = True) -> list[dict]:
    import rtseg
    from rtseg.deploy.onnx_export import export_onnx, ort_session
    from rtseg.deploy.openvino_backend import openvino_available
    from rtseg.deploy.optimize import compare_outputs, optimize
    from rtseg.efficiency import count_flops, count_parameters, device_name, time_calls

    openvino = openvino and openvino_available()

    torch.set_num_threads(threads)
    records = []
    for name in names:
        for size_text in sizes:
            h, w = (int(v) for v in size_text.split("x"))
            model = rtseg.create_model(name, num_classes=19).eval()
            rec = {"model": name, "size": [h, w], "params": count_parameters(model), "macs": count_flops(model, (h, w))["macs"],
                   "threads": threads, "rounds": rounds, "warmup": warmup, "device_name": device_name(torch.device("cpu")),
                   "torch": torch.__version__}
            fast = optimize(model, (h, w), channels_last=False, compile=False, verify=True)
            fast_cl = optimize(model, (h, w), channels_last=True, compile=False, verify=False)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = optimize(model, (h, w), channels_last=True, compile=True, verify=True)  # compiles on the check
            rec["compile_s"] = time.perf_counter() - t0
            rec["compiled_max_abs_diff"] = compiled.rtseg_optimization.max_abs_diff
            compiled_bf16 = None
            if bf16:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        compiled_bf16 = optimize(model, (h, w), channels_last=True, compile=True, precision="bf16", verify=True)
                except RuntimeError as exc:  # a failed bf16 check must not cost the model's other columns
                    rec["torch_bf16_error"] = str(exc)
                    print(f"{name} {h}x{w}: torch bf16 left out: {exc}", flush=True)
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
                    "compiled": lambda: compiled(x),
                    "onnxruntime": lambda: session.run(None, {"image": xn})[0],
                }
                if compiled_bf16 is not None:
                    runners["torch_bf16"] = lambda: compiled_bf16(x)
                if openvino:
                    import openvino as ov

                    from rtseg.deploy.openvino_backend import compile_ir, export_openvino

                    export_openvino(model, Path(tmp) / "m.xml", (h, w), verify=False)
                    for p in ("fp32", "bf16"):
                        request = compile_ir(Path(tmp) / "m.xml", p, threads)[0].create_infer_request()
                        runners[f"openvino_{p}"] = lambda r=request: r.infer([xn])[0]
                    rec["openvino"] = ov.__version__.split("-")[0]
                with torch.inference_mode():
                    reference = model(x)
                    for k, run in runners.items():  # the accuracy check: arg-max agreement with eager on the timing input
                        if k != "eager":
                            rec.setdefault("argmax_agreement", {})[k] = compare_outputs(reference, torch.as_tensor(run()))["argmax_agreement"]
                    times = time_calls(runners, warmup, rounds)
            for k, v in times.items():
                rec[f"{k}_ms"] = statistics.median(v)
            rec["folded_batchnorms"] = fast.rtseg_optimization.folded_batchnorms
            rec["kept_batchnorms"] = len(fast.rtseg_optimization.kept_batchnorms)
            records.append(rec)
            torch._dynamo.reset()  # one model's compiled graphs must not count against the next one's cache limit
            print(f"{name:24s} {h}x{w} " + " ".join(f"{k} {rec[k + '_ms']:.1f}" for k in VARIANTS if k + "_ms" in rec), flush=True)
    return records


def attainable_rate(threads: int, repeats: int = 10) -> dict:
    """Multiply-adds per second of a 2048^3 matrix product and of a 256->256 3x3 convolution on 64x128
    (channels-last): what this CPU attains on the kernels a convolutional network is made of."""
    from rtseg.efficiency import time_calls

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 256, 64, 128).contiguous(memory_format=torch.channels_last)
    jobs = {"matmul": (lambda: a @ b, 2048**3), "conv3x3": (lambda: conv(x), 256 * 256 * 9 * 64 * 128)}
    out = {"kind": "attainable_rate", "threads": threads}
    with torch.inference_mode():
        for name, (run, macs) in jobs.items():
            times = time_calls({name: run}, 1, repeats)[name]
            out[f"{name}_gmacs_per_s"] = macs / (min(times) / 1000.0) / 1e9
    return out


def passes_accuracy(rec: dict, path: str, accuracy: dict | None = None) -> bool:
    """Whether ``path`` of ``rec`` may count as a deployed path: fp32 paths always (verified against eager); a bf16
    path by its measured mIoU change on real data when ``accuracy`` has it, else by its arg-max agreement."""
    if path not in REDUCED:
        return True
    measured = (accuracy or {}).get(rec["model"], {}).get(path)
    if measured is not None:
        return bool(measured)
    return rec.get("argmax_agreement", {}).get(path, 0.0) >= MIN_AGREEMENT


def load_accuracy(path: Path) -> dict:
    """model -> {path: passed} from benchmarks/precision_camvid.py records (their path names use '-'); a path passes
    for a model only if it passed for every set of weights measured."""
    out: dict = {}
    for r in json.loads(Path(path).read_text()):
        for k, p in r["paths"].items():
            key = k.replace("-", "_")
            paths = out.setdefault(r["model"], {})
            paths[key] = paths.get(key, True) and bool(p["pass"])  # several weights of one model: all must pass
    return out


def best_deployed(rec: dict, accuracy: dict | None = None) -> tuple[str, float] | None:
    """(path, ms) of the fastest path measured for ``rec`` whose accuracy passes."""
    times = [(rec[f"{k}_ms"], k) for k in DEPLOYED if f"{k}_ms" in rec and passes_accuracy(rec, k, accuracy)]
    if not times:
        return None
    ms, k = min(times)
    return k, ms


def tables(records: list[dict], accuracy: dict | None = None) -> str:
    peak = next((r for r in records if r.get("kind") == "attainable_rate"), None)
    records = [r for r in records if "model" in r]
    r0 = records[0]
    new_columns = [k for k in ("torch_bf16", "openvino_fp32", "openvino_bf16") if any(f"{k}_ms" in r for r in records)]
    versions = f", openvino {r0['openvino']}" if "openvino" in r0 else ""
    lines = [f"CPU: {r0['device_name']}, {r0['threads']} threads, batch 1, fp32, torch {r0['torch']}, onnxruntime {r0['onnxruntime']}{versions}; "
             f"median of {r0['rounds']} interleaved rounds after {r0['warmup']} warm-up round(s); random weights.", ""]
    attainable = None
    if peak:
        attainable = max(peak["matmul_gmacs_per_s"], peak["conv3x3_gmacs_per_s"])
        lines += [f"Attainable rate measured in the same run: {peak['matmul_gmacs_per_s']:.1f} GMAC/s (2048^3 matrix product), "
                  f"{peak['conv3x3_gmacs_per_s']:.1f} GMAC/s (256->256 3x3 convolution at 64x128, channels-last).", ""]
    sizes = sorted({tuple(r["size"]) for r in records})
    by = {(r["model"], tuple(r["size"])): r for r in records}
    names = sorted({r["model"] for r in records})
    met = {s: [] for s in sizes}
    missed = {s: [] for s in sizes}
    deployed_met = {s: [] for s in sizes}
    deployed_missed = {s: [] for s in sizes}
    extra_header = "".join(f" {LABELS[k]} ms |" for k in new_columns) + (" best deployed vs eager (path) |" if new_columns else "")
    for s in sizes:
        lines += [f"**{s[0]}x{s[1]}**", "",
                  "| model | params | GMACs | eager ms | optimized ms | channels-last ms | channels-last + compile ms | ONNX Runtime ms "
                  "| best optimized vs eager | GMAC/s eager / best | ORT vs eager |" + extra_header,
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(new_columns) + ("---|" if new_columns else "")]
        for n in names:
            r = by.get((n, s))
            if r is None:
                continue
            best = min(r[f"{k}_ms"] for k in OPTIMIZED if f"{k}_ms" in r)
            speedup = r["eager_ms"] / best
            rate, best_rate = r["macs"] / r["eager_ms"] / 1e6, r["macs"] / best / 1e6
            (met if speedup >= 1.5 else missed)[s].append((n, speedup, rate, best_rate))
            compiled = f"{r['compiled_ms']:.1f}" if "compiled_ms" in r else "-"
            row = (f"| {n} | {r['params']:,} | {r['macs'] / 1e9:.2f} | {r['eager_ms']:.1f} | {r['optimized_ms']:.1f} | "
                   f"{r['optimized_cl_ms']:.1f} | {compiled} | {r['onnxruntime_ms']:.1f} | {speedup:.2f}x | {rate:.0f} / {best_rate:.0f} | "
                   f"{r['eager_ms'] / r['onnxruntime_ms']:.2f}x |")
            if new_columns:
                for k in new_columns:
                    cell = f"{r[f'{k}_ms']:.1f}" if f"{k}_ms" in r else "-"
                    if f"{k}_ms" in r and not passes_accuracy(r, k, accuracy):
                        cell += " (fails accuracy)"
                    row += f" {cell} |"
                path, ms = best_deployed(r, accuracy)
                row += f" {r['eager_ms'] / ms:.2f}x ({LABELS[path]}) |"
                (deployed_met if r["eager_ms"] / ms >= DEPLOYED_GOAL else deployed_missed)[s].append((n, r["eager_ms"] / ms, LABELS[path]))
            lines.append(row)
        lines.append("")
    lines.append("")
    for s in sizes:
        total = len(met[s]) + len(missed[s])
        lines.append(f"Goal optimized >= 1.5x eager at {s[0]}x{s[1]}: met by {len(met[s])} of {total} models.")
        for n, speedup, rate, best_rate in missed[s]:
            note = f"- {n}: {speedup:.3f}x; eager runs at {rate:.0f} GMAC/s, the best optimized path at {best_rate:.0f}"
            if attainable:
                note += (f" ({best_rate / attainable:.0%} of attainable); 1.5x would need {1.5 * rate:.0f} GMAC/s "
                         f"({1.5 * rate / attainable:.0%} of attainable)")
            lines.append(note)
        lines.append("")
    for s in sizes:
        total = len(deployed_met[s]) + len(deployed_missed[s])
        if not total:
            continue
        wins: dict[str, int] = {}
        for _, _, path in deployed_met[s] + deployed_missed[s]:
            wins[path] = wins.get(path, 0) + 1
        lines.append(f"Goal best deployed path (accuracy passed) >= {DEPLOYED_GOAL:g}x eager at {s[0]}x{s[1]}: met by {len(deployed_met[s])} "
                     f"of {total} models; fastest path: " + ", ".join(f"{k} for {v}" for k, v in sorted(wins.items(), key=lambda kv: -kv[1])) + ".")
        for n, speedup, path in deployed_missed[s]:
            lines.append(f"- {n}: {speedup:.2f}x ({path})")
        lines.append("")
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
    parser.add_argument("--no-bf16", action="store_true", help="leave out the torch bf16 column")
    parser.add_argument("--no-openvino", action="store_true", help="leave out the OpenVINO columns")
    parser.add_argument("--accuracy", type=Path, help="benchmarks/precision_camvid.py records: real-data accuracy of the bf16 paths")
    args = parser.parse_args()
    accuracy = load_accuracy(args.accuracy) if args.accuracy else None
    if args.from_json:
        records = json.loads(args.from_json.read_text())
    else:
        import rtseg

        records = [attainable_rate(args.threads)]
        names = rtseg.list_models(args.filter)
        if args.models:
            names = list(args.models) + ([] if args.only else [n for n in names if n not in args.models])
        for name in names:  # written after each model so that an interrupted run keeps what it measured
            records += measure([name], args.sizes, args.threads, args.rounds, args.warmup, not args.no_bf16, not args.no_openvino)
            args.json.write_text(json.dumps(records, indent=1))
    print(tables(records, accuracy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
