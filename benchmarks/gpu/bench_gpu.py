"""GPU latency of every registered model: ``rtseg bench`` per model and mode, written after each run (JSON + markdown).

Modes (batch 1): ``fp32`` and ``fp16`` eager; ``graphs`` = ``--optimize --compile on --compile-mode reduce-overhead``
in fp16 (torch.compile with CUDA graphs). Runs go in the order of :func:`plan` (the goal figures first)
and stop starting new ones after ``--deadline`` (seconds since the epoch), so a run cut short keeps what it
measured. ``--dry-run`` measures a few models on the CPU at a tiny size (no CUDA step), for CI.

    python benchmarks/gpu/bench_gpu.py --out $OUT                 # on the GPU machine (run.sh calls it)
    python benchmarks/gpu/bench_gpu.py --out /tmp/x --dry-run     # CPU check of the script itself
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

SIZES = ("512x1024", "1024x2048")
# Compiling takes tens of seconds per model and size: compiled + CUDA graphs runs for the papers' models only.
COMPILED_MODELS = ("fplnet", "erfnet", "espnet", "liteseg-mobilenetv2", "farseenet", "essnet-d")
MODES = {
    "fp32": ["--dtype", "fp32"],
    "fp16": ["--dtype", "fp16"],
    "graphs": ["--dtype", "fp16", "--optimize", "--compile", "on", "--compile-mode", "reduce-overhead", "--channels-last", "on"],
}
PAPER_FPS = {"fplnet": (95.5, "512x1024", "FPLNet paper, its GPU")}  # from the issue; add others with their source


def plan(names: list[str], sizes: list[str], modes: list[str], compiled: set[str]) -> list[tuple[str, str, str]]:
    """(mode, size, model) runs, most wanted first: fp16 eager and compiled + CUDA graphs at the first size (the
    goal figures), fp16 at the second size, then fp32 at both, then compiled at the second size."""
    order = [(0, "fp16"), (0, "graphs"), (1, "fp16"), (0, "fp32"), (1, "fp32"), (1, "graphs")]
    order += [(i, m) for i in range(len(sizes)) for m in modes if (i, m) not in order]
    runs = []
    for i, mode in order:
        if i >= len(sizes) or mode not in modes:
            continue
        for name in names:
            if mode == "graphs" and name not in compiled:
                continue
            runs.append((mode, sizes[i], name))
    return runs


def run_one(mode: str, size: str, name: str, device: str, warmup: int, iters: int) -> dict:
    from rtseg.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        args = ["bench", name, "--device", device, "--size", size, "--warmup", str(warmup), "--iters", str(iters), "--json", str(out)]
        args += MODES[mode]
        buffer = io.StringIO()
        t0 = time.perf_counter()
        with redirect_stdout(buffer):
            code = main(args)
        if code != 0:
            raise RuntimeError(f"rtseg {' '.join(args)} exited with {code}")
        rec = json.loads(out.read_text())
    rec.update(mode=mode, size_text=size, wall_s=time.perf_counter() - t0)
    return rec


def table(records: list[dict]) -> str:
    if not records:
        return "(no runs)"
    c = records[0]["conditions"]
    lines = [f"{c['device_name']} ({c['device']}), torch {c['torch_version']}, batch 1, warm-up {c['warmup']}, {c['iters']} iterations, "
             "synchronised around every forward pass; FPS = 1000 / mean latency. fp16 = weights and input in float16; "
             "graphs = rtseg.optimize + torch.compile(mode='reduce-overhead', CUDA graphs), channels-last, fp16.", ""]
    columns = []
    for r in records:
        key = (r["size_text"], r["mode"])
        if key not in columns:
            columns.append(key)
    by = {(r["model"], r["size_text"], r["mode"]): r for r in records}
    names = sorted({r["model"] for r in records})
    lines.append("| model | params | " + " | ".join(f"{m} {s} ms (FPS)" for s, m in columns) + " |")
    lines.append("|---|---:|" + "---:|" * len(columns))
    params = {r["model"]: r["params"] for r in records}
    for n in names:
        cells = []
        for s, m in columns:
            r = by.get((n, s, m))
            cells.append(f"{r['latency_ms_mean']:.2f} ({r['fps']:.0f})" if r else "-")
        lines.append(f"| {n} | {params[n]:,} | " + " | ".join(cells) + " |")
    lines.append("")
    for n, (fps, size, source) in PAPER_FPS.items():
        best = [r for r in records if r["model"] == n and r["size_text"] == size]
        if best:
            top = max(best, key=lambda r: r["fps"])
            lines.append(f"- {n} at {size}: best {top['fps']:.0f} FPS ({top['mode']}) vs {fps} FPS ({source}); "
                         f"goal > 1,000 FPS fp16: {'met' if top['fps'] > 1000 else 'not met'}.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, a few models, tiny size, no compilation (checks the script)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--models", nargs="+", help="default: every registered model")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--deadline", type=float, default=0.0, help="seconds since the epoch after which no new run starts")
    args = parser.parse_args()
    import rtseg

    device = "cuda"
    names = args.models or rtseg.list_models()
    compiled = set(COMPILED_MODELS)
    if args.dry_run:
        device, args.sizes, args.warmup, args.iters = "cpu", ["16x32"], 1, 2
        names = args.models or ["espnet-c", "fplnet"]
        args.modes = [m for m in args.modes if m != "graphs"]  # compiling on CPU is slow and not what this checks
    args.out.mkdir(parents=True, exist_ok=True)
    records, failures = [], []
    runs = plan(names, args.sizes, args.modes, compiled)
    for i, (mode, size, name) in enumerate(runs):
        if args.deadline and time.time() > args.deadline:
            print(f"deadline reached: {len(runs) - i} of {len(runs)} runs not started", flush=True)
            break
        try:
            rec = run_one(mode, size, name, device, args.warmup, args.iters)
            records.append(rec)
            print(f"{mode:6s} {size:9s} {name:24s} {rec['latency_ms_mean']:8.2f} ms {rec['fps']:8.1f} FPS ({rec['wall_s']:.0f} s)", flush=True)
        except Exception as exc:  # one model's failure must not lose the others' figures
            failures.append({"mode": mode, "size": size, "model": name, "error": f"{type(exc).__name__}: {exc}"[:2000]})
            print(f"{mode:6s} {size:9s} {name:24s} FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        if mode == "graphs" or device == "cuda":
            import torch

            torch._dynamo.reset()  # one model's compiled graphs must not count against the next one's cache limit
        (args.out / "gpu_bench.json").write_text(json.dumps({"records": records, "failures": failures}, indent=1))
        (args.out / "gpu_bench.md").write_text(table(records) + "\n")
    print(table(records))
    if failures:
        print(f"{len(failures)} run(s) failed; see gpu_bench.json", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
