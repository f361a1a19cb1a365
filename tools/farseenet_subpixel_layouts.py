"""FarSee-Net: where the two sub-pixel convolutions sit, against Table I's step from method 3 to method 4.

The paper times method 3 (CF-ASPP, no super-resolution) at 13.5 ms and method 4 (full) at 14.6 ms
(512x1024 input, Titan X): a ratio of 1.08. This script builds method 3 and method 4 under each
reading of section III-C, prints parameters and MACs, and times them on the CPU *interleaved*: every
round runs each variant once (in a rotating order), so a change of load on a shared machine hits all
variants alike; it reports the median over rounds of each variant's time and of its ratio to method 3
within the same round. Ratios are the result; absolute times depend on the machine.

Run from the repository root:
    PYTHONPATH=src python tools/farseenet_subpixel_layouts.py --rounds 9 --threads 1
"""
from __future__ import annotations

import argparse
import platform
import statistics

import torch
import torch.nn as nn

import rtseg
from rtseg.efficiency import count_flops, count_parameters, time_calls
from rtseg.models.farseenet import SubPixelConv

PAPER_RATIO = 14.6 / 13.5


def variants(num_classes: int) -> dict[str, nn.Module]:
    """method 3 and method 4 under each sub-pixel layout (random weights; timing does not depend on them)."""
    cascade_t16 = rtseg.create_model("farseenet", num_classes, subpixel_layout="cascade")
    cascade_t16.head = SubPixelConv(128, num_classes, 16, last=True)  # stride 8 straight to twice the input size
    return {
        "method 3 (CF-ASPP, bilinear, 1x1 classifier)": rtseg.create_model("farseenet-method3", num_classes),
        "method 4, head: both sub-pixel convs after CF-ASPP (t=4, t=4)": rtseg.create_model("farseenet", num_classes, subpixel_layout="head"),
        "method 4, cascade: t=4 between the F-ASPPs, t=4 last, bilinear x4": rtseg.create_model("farseenet", num_classes, subpixel_layout="cascade"),
        "method 4, cascade with last t=16 (no bilinear; caption says t=4)": cascade_t16,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = tuple(args.size)
    models = {k: m.eval() for k, m in variants(19).items()}
    names = list(models)
    print(f"input 1x3x{size[0]}x{size[1]}, {args.threads} thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.rounds} interleaved rounds after {args.warmup} warm-up runs each")
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        times = time_calls({name: (lambda m=models[name]: m(x)) for name in names}, args.warmup, args.rounds, rotate=True)
    ratios = {name: [t / base for t, base in zip(times[name], times[names[0]])] for name in names}  # within each round
    base_macs = count_flops(models[names[0]], size)["macs"]
    print(f"| variant | params | GMACs | MACs / method 3 | median ms | median of per-round ratios to method 3 | paper |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        macs = count_flops(models[name], size)["macs"]
        paper = "1.00" if name == names[0] else f"{PAPER_RATIO:.2f}"
        print(f"| {name} | {count_parameters(models[name]):,} | {macs / 1e9:.2f} | {macs / base_macs:.3f} | "
              f"{statistics.median(times[name]):.1f} | {statistics.median(ratios[name]):.3f} | {paper} |")


if __name__ == "__main__":
    main()
