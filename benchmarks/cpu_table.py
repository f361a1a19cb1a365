"""The CPU table of docs/benchmarks.md: every registered model at 360x640 and 512x1024.

Measure (writes one JSON record list per size, then prints the combined markdown table):

    python benchmarks/cpu_table.py --out bench-results

Or format records measured earlier with ``rtseg bench --all --json FILE``:

    python benchmarks/cpu_table.py --from-json bench_360.json bench_512.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SIZES = ("360x640", "512x1024")


def measure(out: Path, threads: int, warmup: int, iters: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for size in SIZES:
        path = out / f"bench_{size}.json"
        cmd = [sys.executable, "-m", "rtseg.cli", "bench", "--all", "--size", size, "--threads", str(threads),
               "--warmup", str(warmup), "--iters", str(iters), "--json", str(path)]
        subprocess.run(cmd, check=True)
        files.append(path)
    return files


def table(files: list[Path]) -> str:
    runs = [json.loads(Path(f).read_text()) for f in files]
    by_size = {tuple(r[0]["conditions"]["size"]): {rec["model"]: rec for rec in r} for r in runs}
    sizes = list(by_size)
    c = runs[0][0]["conditions"]
    lines = [
        f"CPU: {c['device_name']}, {c['threads']} threads, batch {c['batch']}, {c['dtype']}, torch {c['torch_version']}, "
        f"eval mode under torch.inference_mode; latency = median of {c['iters']} timed runs after {c['warmup']} warm-up runs.",
        "",
        "| model | params | " + " | ".join(f"GMACs {h}x{w} | median ms {h}x{w} | FPS {h}x{w}" for h, w in sizes) + " |",
        "|---|---:|" + "---:|---:|---:|" * len(sizes),
    ]
    for name in sorted(by_size[sizes[0]]):
        first = by_size[sizes[0]][name]
        cells = []
        for s in sizes:
            rec = by_size[s][name]
            cells += [f"{rec['macs'] / 1e9:.2f}", f"{rec['latency_ms_median']:.1f}", f"{1000.0 / rec['latency_ms_median']:.2f}"]
        lines.append(f"| {name} | {first['params']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-json", nargs="+", type=Path, help="records from `rtseg bench --all --json`")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=8)
    args = parser.parse_args()
    files = args.from_json or measure(args.out, args.threads, args.warmup, args.iters)
    print(table(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
