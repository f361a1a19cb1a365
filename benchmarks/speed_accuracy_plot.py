"""The speed / accuracy / size figure of docs/benchmarks.md (matplotlib PNG).

Accuracy: the Cityscapes mIoU each paper reports (none reproduced by rtseg yet: every point is drawn
hollow; a reproduced one would be filled). Cost: MACs at 512x1024 as rtseg counts them (from
benchmarks/deploy_table.py's JSON or `rtseg bench --all --json`), chosen over latency because our latencies were measured on a
machine shared with other work and are too noisy to place models against each other; pass
``--latency`` to plot the measured optimized-PyTorch latency instead. Marker area: parameter count.

    python benchmarks/speed_accuracy_plot.py deploy-bench.json docs/figures/speed_accuracy.png
    python benchmarks/speed_accuracy_plot.py bench-results/bench_512x1024.json docs/figures/speed_accuracy.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# model -> (mIoU %, what the figure is, source). Only figures the papers state for the variant we register.
PAPER_MIOU = {
    "fplnet": (66.28, "Cityscapes test", "FPLNet paper, abstract / Table IV"),
    "erfnet": (68.0, "Cityscapes test", "as quoted in FPLNet Table IV"),
    "espnet": (60.3, "Cityscapes test", "as quoted in FPLNet Table IV"),
    "liteseg-darknet19": (70.75, "Cityscapes test", "LiteSeg paper, contributions list"),
    "liteseg-mobilenetv2": (67.81, "Cityscapes test", "LiteSeg paper, abstract"),
    "liteseg-shufflenet": (65.17, "Cityscapes test", "LiteSeg paper, conclusion"),
    "farseenet": (68.4, "Cityscapes test (512x768 input in the paper)", "FarSee-Net paper, abstract"),
    "essnet-b-d": (68.55, "Cityscapes (thesis Table 3.2)", "ESSNet thesis, section 3.3"),
}
REPRODUCED: set[str] = set()  # models whose accuracy rtseg has reproduced itself: none yet


def main(argv: list[str]) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_latency = "--latency" in argv
    argv = [a for a in argv if a != "--latency"]
    records = [r for r in json.loads(Path(argv[0]).read_text()) if "model" in r]  # deploy_table.py also stores the CPU's rate
    out = Path(argv[1])
    # records from deploy_table.py carry "size"; those of `rtseg bench --all --json` keep it in "conditions"
    by = {r["model"]: r for r in records if (r.get("size") or r["conditions"]["size"]) == [512, 1024]}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, (miou, _, _) in PAPER_MIOU.items():
        r = by.get(name)
        if r is None:
            continue
        ms = min(r[k] for k in ("optimized_ms", "optimized_cl_ms", "compiled_ms") if k in r) if use_latency else r["macs"] / 1e9
        filled = name in REPRODUCED
        area = 40 + r["params"] / 1e6 * 60
        ax.scatter([ms], [miou], s=area, facecolors="tab:blue" if filled else "none", edgecolors="tab:blue", linewidths=1.5)
        ax.annotate(f"{name} ({r['params'] / 1e6:.2f}M)", (ms, miou), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    # plain numbers on a few round ticks: the default log labels (3x10^0, ...) overlap
    ax.xaxis.set_major_locator(FixedLocator([1, 2, 5, 10, 20, 50, 100]))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    if use_latency:
        ax.set_xlabel(f"CPU latency at 512x1024, ms (optimized PyTorch, {records[0]['threads']} threads; log scale)")
    else:
        ax.set_xlabel("GMACs at 512x1024 (rtseg's count: convolutions and matrix products; log scale)")
    ax.set_ylabel("Cityscapes mIoU (%) as reported by the papers")
    ax.set_title("Speed / accuracy / size (marker area ~ parameters; hollow = paper's accuracy, not reproduced)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
