"""Numbers behind docs/fidelity.md (LiteSeg, FarSee-Net): parameters, multiply-adds, Table II operations, Table I latency.

    PYTHONPATH=src python benchmarks/liteseg_farseenet.py complexity   # counts only (meta tensors, seconds)
    PYTHONPATH=src python benchmarks/liteseg_farseenet.py alternatives # FarSee-Net readings we did not choose (counts)
    PYTHONPATH=src python benchmarks/liteseg_farseenet.py latency      # FarSee-Net Table I pattern on this CPU (minutes)
"""
from __future__ import annotations

import argparse
import json

import torch

import rtseg
from rtseg.efficiency import count_flops, count_parameters, measure_latency
from rtseg.models.liteseg import table2_operations

SIZES = [(512, 1024), (360, 640)]
LITESEG_OPTIONS = [
    ("Table I row 1: baseline, standard convs", {"head": "aspp", "conv": "standard"}),
    ("Table II standard: DASPP, standard convs", {"conv": "standard"}),
    ("Table I row 5 / Table II separable (registered default)", {}),
]


def meta(name: str, **options):
    with torch.device("meta"):
        return rtseg.create_model(name, **options).eval()


def complexity() -> None:
    names = rtseg.list_models("liteseg*") + rtseg.list_models("farseenet*")
    print("| model | params | GMACs 512x1024 | GMACs 360x640 | output at 512x1024 |")
    print("|---|---:|---:|---:|---|")
    for name in names:
        model = meta(name)
        macs = [count_flops(model, s)["macs"] / 1e9 for s in SIZES]
        with torch.inference_mode():
            out = tuple(model(torch.zeros(1, 3, 512, 1024, device="meta")).shape[-2:])
        print(f"| {name} | {count_parameters(model):,} | {macs[0]:.2f} | {macs[1]:.2f} | {out[0]}x{out[1]} |")
    print()
    print("| model | variant | params | GMACs | GFLOPs (2 x MACs) | official-counter rule | same rule, official Darknet paddings |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in ["liteseg-darknet19", "liteseg-mobilenetv2", "liteseg-shufflenet"]:
        for label, options in LITESEG_OPTIONS:
            model = meta(name, **options)
            c = count_flops(model, (512, 1024))
            ops = table2_operations(model) / 1e9
            padded = ""
            if name == "liteseg-darknet19":
                bb = model.backbone
                bb.stage5[2].conv.padding = bb.stage5[4].conv.padding = bb.stage6[2].conv.padding = (1, 1)
                for i in (1, 3, 5):
                    bb.stage6[i].conv.padding = (1, 1)
                padded = f"{table2_operations(model) / 1e9:.2f}"
            print(f"| {name} | {label} | {count_parameters(model):,} | {c['macs'] / 1e9:.2f} | {c['flops'] / 1e9:.2f} | {ops:.2f} | {padded} |")


def alternatives() -> None:
    """FarSee-Net back-ends under readings of the paper we did not choose, built from the same blocks."""
    import torch.nn as nn

    from rtseg.models.deeplab import ConvBNReLU
    from rtseg.models.farseenet import FASPP

    class FASPPWithoutPooling(FASPP):
        def __init__(self, in_ch, channels, rates=(6, 12, 18)):
            super().__init__(in_ch, channels, rates)
            self.pool = None
            self.project = ConvBNReLU(channels * (len(rates) + 1), channels, 1)

        def forward(self, x):
            return self.project(torch.cat([b(x) for b in self.branches], 1))

    class ReducedLowLevel(nn.Module):  # DeepLabv3+'s 1x1 to 48 channels before the low-level features join
        def __init__(self, cf, low_ch):
            super().__init__()
            self.cf, self.reduce = cf, ConvBNReLU(low_ch, 48, 1)
            cf.low = FASPP(256 + 48, 128)

        def forward(self, high, low):
            return self.cf(high, self.reduce(low))

    def report(label, model):
        c = count_flops(model, (512, 1024))
        with torch.inference_mode():
            out = tuple(model(torch.zeros(1, 3, 512, 1024, device="meta")).shape[-2:])
        print(f"| {label} | {count_parameters(model):,} | {c['macs'] / 1e9:.2f} | {out[0]}x{out[1]} |")

    print("| reading | params | GMACs 512x1024 | output |")
    print("|---|---:|---:|---|")
    report("chosen: farseenet (method 4)", meta("farseenet"))
    m = meta("farseenet")
    with torch.device("meta"):
        m.context.high, m.context.low = FASPPWithoutPooling(512, 256), FASPPWithoutPooling(384, 128)
    report("F-ASPPs without the image-pooling branch", m.eval())
    m = meta("farseenet")
    with torch.device("meta"):
        m.context.low = FASPP(384, 128, (6, 12))
    report("second F-ASPP with rates (6, 12)", m.eval())
    m = meta("farseenet")
    with torch.device("meta"):
        m.context = ReducedLowLevel(m.context, 128)
    report("low-level features reduced to 48 channels first", m.eval())
    report("both sub-pixel convs after the cascade (subpixel_layout='head'; default before issue 16)", meta("farseenet", subpixel_layout="head"))
    report("head layout, low-level features from layer3 (conv4_x), t = 4 then 8",
           meta("farseenet", subpixel_layout="head", low_level_stage="layer3"))
    report("cascade layout, low-level features from layer3 (conv4_x)", meta("farseenet", low_level_stage="layer3"))


def latency(iters: int, warmup: int) -> None:
    rows = []
    for method in (1, 4):
        model = rtseg.create_model(f"farseenet-method{method}").eval()
        for size in [(1024, 2048), (512, 1024)]:
            r = measure_latency(model, size, threads=2, warmup=warmup, iters=iters)
            rows.append({"method": method, "size": size, **{k: round(v, 1) for k, v in r.items() if k.startswith("latency")}, "conditions": r["conditions"]})
            print(json.dumps(rows[-1]), flush=True)
    by = {(r["method"], tuple(r["size"])): r["latency_ms_median"] for r in rows}
    for size in [(1024, 2048), (512, 1024)]:
        print(f"{size}: method 4 / method 1 median latency = {by[(4, size)] / by[(1, size)]:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["complexity", "alternatives", "latency"])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    {"complexity": complexity, "alternatives": alternatives, "latency": lambda: latency(args.iters, args.warmup)}[args.what]()
