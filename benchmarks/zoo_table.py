"""docs/zoo.md and its speed-accuracy figure, from the registered CamVid weights and one timing run.

Accuracy comes from each weights file's card (measured by ``rtseg eval`` when it was published, see
tools/publish_zoo.py); parameters and MACs are counted here at 360x480 (at the network's input: half of that for
weights trained on shrunk images, FarSee-Net's); latency comes from one run of
benchmarks/precision_camvid.py per model (eager fp32 and every deployed path timed side by side, interleaved,
on a quiet machine), whose accuracy check decides which deployed paths may count:

    for m in $(python benchmarks/zoo_table.py --list); do
        python benchmarks/precision_camvid.py --model $m --weights camvid --rounds 7 --threads 2 \\
            --json benchmarks/results-zoo-camvid.json
    done
    python benchmarks/zoo_table.py --timing benchmarks/results-zoo-camvid.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE = (360, 480)


def zoo_rows(timing: dict[str, dict]) -> list[dict]:
    """One row per CamVid weights entry (the zoo's and the official ESPNet release) with its counts, card and timing."""
    from rtseg import create_model
    from rtseg.efficiency import count_flops, count_parameters
    from rtseg.pretrained import list_pretrained

    rows = []
    by_sha = {e.sha256: e for e in list_pretrained()}
    for entry in list_pretrained():
        if not entry.tag.startswith("camvid"):
            continue
        card = entry.card
        model = create_model(entry.model, num_classes=card.num_outputs, **card.options).eval()
        metric = card.metrics[0] if card.metrics else None
        net_input = card.network_input_size(SIZE) or SIZE  # FarSee-Net's weights see the frame at half size
        row = {"model": entry.model, "tag": entry.tag, "params": count_parameters(model), "macs": count_flops(model, net_input)["macs"],
               "network_input": net_input,
               "miou": metric.miou if metric else None, "pixel_accuracy": metric.pixel_accuracy if metric else None,
               "per_class": dict(metric.per_class_iou) if metric else {}, "epochs": card.training.epochs if card.training else None,
               "run_epochs": _run_epochs(card),
               "wall_time_s": card.training.wall_time_s if card.training else None, "by": card.training.by if card.training else "",
               "default": entry.default}
        row["images_seen"], row["cpu_hours"] = compute_spent(card, by_sha)
        t = timing.get(f"{entry.model}/{entry.tag}")
        if t is not None:
            row["eager_ms"] = t.get("fp32_eager_ms")
            passing = [(p["ms"], k) for k, p in t["paths"].items() if "ms" in p and p["pass"]]
            if passing:
                row["best_ms"], row["best_path"] = min(passing)
        rows.append(row)
    return rows


def compute_spent(card, by_sha: dict) -> tuple[int | None, float | None]:
    """(training images seen, CPU-hours) behind the weights, the weights they started from included (a continued run
    counts its start's compute too). Images seen: the card's record, else epochs x training images (one crop per image
    per epoch); CPU-hours: wall time x the run's threads."""
    t = card.training
    if t is None or t.by != "rtseg trainer":
        return None, None
    seen = t.images_seen if t.images_seen is not None else (t.epochs or 0) * (t.images or 0)
    threads = (((t.config or {}).get("train") or {}).get("threads")) or 1
    hours = None if t.wall_time_s is None else t.wall_time_s * threads / 3600
    if t.start_weights:
        sha = t.start_weights.split("sha256 ")[-1].rstrip(")").strip()
        start = next((e for k, e in by_sha.items() if sha and k.startswith(sha[:12])), None)
        if start is not None:
            s_seen, s_hours = compute_spent(start.card, by_sha)
            seen += s_seen or 0
            hours = None if hours is None or s_hours is None else hours + s_hours
    return seen, hours


def _run_epochs(card) -> int | None:
    """The epochs its recipe ran; the weights may come from an earlier, better validated epoch."""
    config = card.training.config if card.training else None
    return ((config or {}).get("train") or {}).get("epochs")


def epochs_text(row: dict) -> str:
    """'100', or '85 of 100' when the best validated epoch came before the run's end."""
    done, planned = row["epochs"], row.get("run_epochs")
    if done is None:
        return "-"
    return f"{done}" if planned in (None, done) else f"{done} of {planned}"


def load_timing(path: Path | None) -> dict[str, dict]:
    """model/tag -> the newest precision_camvid.py record for it."""
    if path is None or not path.is_file():
        return {}
    out = {}
    for rec in json.loads(path.read_text()):
        out[f"{rec['model']}/{rec['weights']}"] = rec
    return out


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def model_label(row: dict) -> str:
    """The model's name, with its input size when the network sees the 360x480 frame shrunk (FarSee-Net)."""
    return row["model"] + ("" if tuple(row["network_input"]) == SIZE else " (input {}x{})".format(*row["network_input"]))


def markdown(rows: list[dict], figure: str | None) -> str:
    head = ["| model | weights | params | GMACs 360x480 | val mIoU | pixel acc. | epochs | images seen | training time | CPU-hours | eager ms | best deployed ms (path) | speed-up |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        hours = None if r["wall_time_s"] is None else r["wall_time_s"] / 3600
        best = "-" if "best_ms" not in r else f"{r['best_ms']:.1f} ({r['best_path']})"
        speedup = "-" if "best_ms" not in r or not r.get("eager_ms") else f"{r['eager_ms'] / r['best_ms']:.2f}x"
        model = model_label(r)
        seen = "-" if not r.get("images_seen") else f"{r['images_seen'] / 1000:.1f} k"
        tag = r["tag"] + (" (default)" if r.get("default") else "")
        head.append(f"| {model} | {tag} | {r['params'] / 1e6:.3f} M | {r['macs'] / 1e9:.2f} | {_num(r['miou'], '.4f')} | "
                    f"{_num(r['pixel_accuracy'], '.4f')} | {epochs_text(r)} | {seen} | {_num(hours, '.1f') + (' h' if hours else '')} | "
                    f"{_num(r.get('cpu_hours'), '.1f')} | {_num(r.get('eager_ms'), '.1f')} | {best} | {speedup} |")
    classes = list(next((r["per_class"] for r in rows if r["per_class"]), {}))
    per_class = ["| model | weights | " + " | ".join(classes) + " |", "|---|---|" + "---:|" * len(classes)]
    for r in rows:
        per_class.append(f"| {r['model']} | {r['tag']} | " + " | ".join(_num(r["per_class"].get(c), ".3f") for c in classes) + " |")
    parts = ["\n".join(head), "", "Per-class IoU (CamVid val, 101 images, 360x480):", "", "\n".join(per_class)]
    if figure:
        parts += ["", f"![CamVid val mIoU against CPU latency]({figure})"]
    return "\n".join(parts)


BEGIN, END = "<!-- zoo-table: written by benchmarks/zoo_table.py -->", "<!-- /zoo-table -->"


def into_document(document: str, tables: str) -> str:
    """``document`` with the text between the zoo-table markers replaced by ``tables`` (the prose around them is
    kept); the tables alone, between markers, when the document has none."""
    block = f"{BEGIN}\n{tables}\n{END}"
    if BEGIN in document and END in document:
        head, rest = document.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return (document.rstrip() + "\n\n" if document.strip() else "") + block + "\n"


def plot(rows: list[dict], out: Path) -> bool:
    """Val mIoU against latency (eager and best deployed path), one colour per network; False when nothing is timed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    timed = [r for r in rows if r.get("eager_ms") and r["miou"] is not None]
    if not timed:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in timed:
        label = model_label(r) + (" (official)" if r["tag"] != "camvid" else "")
        (line,) = ax.plot([r["eager_ms"]], [r["miou"]], "o", label=label)
        if "best_ms" in r:
            ax.plot([r["best_ms"]], [r["miou"]], "*", markersize=11, color=line.get_color())
            ax.annotate("", xy=(r["best_ms"], r["miou"]), xytext=(r["eager_ms"], r["miou"]),
                        arrowprops={"arrowstyle": "->", "color": line.get_color(), "alpha": 0.6})
    ax.set_xscale("log")
    ms = [r[k] for r in timed for k in ("eager_ms", "best_ms") if r.get(k)]
    ax.set_xticks([t for t in (2, 5, 10, 20, 50, 100, 200, 500) if min(ms) / 2 <= t <= max(ms) * 2])
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, ax, "CPU latency at 360x480, batch 1, 2 threads (ms; o eager, * best deployed path)", "best", out)


def _finish(fig, ax, xlabel: str, legend: str, out: Path) -> bool:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("CamVid val mIoU (11 classes)")
    ax.legend(fontsize=8, loc=legend)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def plot_compute(rows: list[dict], out: Path) -> bool:
    """Val mIoU against the CPU-hours behind the weights (the start weights' included), one colour per network, a line
    from each network's first-round weights to a later round's; False when no row has both figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    known = [r for r in rows if r.get("cpu_hours") and r["miou"] is not None]
    if not known:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = {}
    for r in sorted(known, key=lambda r: (r["model"], r["cpu_hours"])):
        colour = colours.get(r["model"])
        (pt,) = ax.plot([r["cpu_hours"]], [r["miou"]], "o" if r["tag"] == "camvid" else "*", markersize=7 if r["tag"] == "camvid" else 12,
                        color=colour, label=None if colour else model_label(r))
        colours.setdefault(r["model"], pt.get_color())
    for model, colour in colours.items():
        mine = sorted((r for r in known if r["model"] == model), key=lambda r: r["cpu_hours"])
        if len(mine) > 1:
            ax.plot([r["cpu_hours"] for r in mine], [r["miou"] for r in mine], "-", color=colour, alpha=0.6)
    official = next((r for r in rows if r["tag"] == "camvid-official" and r["miou"]), None)
    if official:
        ax.axhline(official["miou"], color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"official ESPNet release ({official['miou']:.3f})", xy=(ax.get_xlim()[0], official["miou"]), xytext=(4, 3),
                    textcoords="offset points", fontsize=8, color="grey")
    ax.grid(True, alpha=0.3)
    return _finish(fig, ax, "CPU-hours behind the weights (2 threads x wall time; o first round, * later rounds)", "lower right", out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="print the models with CamVid zoo weights and exit")
    parser.add_argument("--timing", type=Path, help="records of benchmarks/precision_camvid.py --rounds N runs")
    parser.add_argument("--figure", type=Path, default=REPO / "docs" / "img" / "zoo-speed-accuracy.png")
    parser.add_argument("--out", type=Path, help="write the tables into this document, between its zoo-table markers (default: print)")
    args = parser.parse_args(argv)
    if args.list:
        from rtseg.pretrained import list_pretrained

        print("\n".join(e.model for e in list_pretrained() if e.tag == "camvid"))
        return 0
    rows = zoo_rows(load_timing(args.timing))
    figure = None
    if plot(rows, args.figure):
        figure = Path("img") / args.figure.name
    text = markdown(rows, str(figure) if figure else None)
    compute_figure = args.figure.with_name("zoo-accuracy-compute.png")
    if plot_compute(rows, compute_figure):
        text += f"\n\n![CamVid val mIoU against the CPU-hours behind the weights](img/{compute_figure.name})"
    if args.out:
        args.out.write_text(into_document(args.out.read_text() if args.out.is_file() else "", text))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
