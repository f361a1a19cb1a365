"""How the ``rtseg`` command shows the records its tasks return: tables and key-value lines on stdout."""
from __future__ import annotations

from typing import Any

__all__ = ["print_metrics_table", "print_bench_record", "print_bench_table", "print_model_details", "print_model_rows", "print_recipes"]


def print_model_details(details: dict[str, Any]) -> None:
    from rtseg.tasks import models

    print(f"{details['name']}: {details['paper']}")
    if details["description"]:
        print(details["description"])
    print(f"parameters     {details['params']:,} (at {models.TABLE_CLASSES} classes)")
    print(f"normalization  {details['normalization']}")
    print(f"defaults       {', '.join(f'{k}={v!r}' for k, v in details['defaults'].items()) or '(the builder defaults)'}")
    print("options:")
    for o in details["options"]:
        allowed = f"one of {', '.join(map(repr, o['choices']))}" if o["choices"] else o["type"] or "any"
        print(f"  {o['name']:<22} {allowed:<44}  default {o['default']!r}")


def print_model_rows(rows: list[dict[str, Any]]) -> None:
    from rtseg.tasks import models

    table = [(r["name"], r["paper"], f"{r['params']:,}") for r in rows]
    header = ("model", "paper", f"params ({models.TABLE_CLASSES} classes)")
    widths = [max(len(r[i]) for r in table + [header]) for i in range(3)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2].rjust(widths[2])}")


def print_recipes(rows: list[dict[str, Any]]) -> None:
    short = [r["description"] if len(r["description"]) <= 100 else r["description"][:97].rstrip() + "..." for r in rows]
    table = [(r["name"], r["model"], r["dataset"], str(r["stages"]), "/".join(map(str, r["epochs"])), d) for r, d in zip(rows, short)]
    header = ("recipe", "model", "dataset", "stages", "epochs", "description")
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(5)]
    for row in [header, tuple("-" * w for w in widths) + ("-----------",), *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5])


def print_metrics_table(summary: dict[str, Any]) -> None:
    print(f"{'class':<16} {'IoU':>8}")
    for name, v in summary["per_class_iou"].items():
        print(f"{name:<16} {('   n/a' if v is None else f'{v:8.4f}'):>8}")
    print("-" * 25)
    print(f"{'mIoU':<16} {summary['miou']:8.4f}")
    if "category_miou" in summary:
        print(f"{'category mIoU':<16} {summary['category_miou']:8.4f}")
    print(f"{'pixel accuracy':<16} {summary['pixel_accuracy']:8.4f}")
    if "frequency_weighted_iou" in summary:
        print(f"{'fwIoU':<16} {summary['frequency_weighted_iou']:8.4f}")
    print(f"{'pixels':<16} {summary['pixels']:>8}")


def print_bench_record(rec: dict[str, Any], size) -> None:
    c = rec["conditions"]
    if "images_per_s" in rec:
        print(f"model          {rec['model']} (training step)")
        print(f"throughput     {rec['images_per_s']:.2f} images/s  (median step {rec['step_ms_median']:.0f} ms, batch {c['batch']})")
        print(f"precision      {c['precision']}")
        if "compile" in c:
            print(f"compile        {c['compile']}")
        print(f"conditions     {c['device_name']} ({c['device']}), {c['threads']} threads, {size[0]}x{size[1]}, "
              f"warm-up {c['warmup']}, {c['iters']} steps, torch {c['torch_version']}")
        return
    print(f"model          {rec['model']}")
    if "weights" in rec:
        print(f"weights        {rec['weights']}: {rec['card']}")
    print(f"parameters     {rec['params']:,}")
    print(f"MACs           {rec['macs'] / 1e9:.3f} G  (FLOPs {rec['flops'] / 1e9:.3f} G = 2 x MACs; counted: convolutions and matrix products)")
    print(f"latency        mean {rec['latency_ms_mean']:.2f} ms, median {rec['latency_ms_median']:.2f} ms, p90 {rec['latency_ms_p90']:.2f} ms")
    print(f"throughput     {rec['fps']:.2f} FPS")
    for key, label in (("precision", "precision"), ("optimization", "optimized"), ("backend", "backend")):
        if key in rec:
            print(f"{label:<15}{rec[key]}")
    print(f"conditions     {c['device_name']} ({c['device']}), {c['threads']} threads, batch {c['batch']}, {size[0]}x{size[1]}, {c['dtype']}, "
          f"warm-up {c['warmup']}, {c['iters']} iterations, torch {c['torch_version']}")
    if c.get("cpu_flags"):
        print(f"cpu            {c.get('cpu_kind')}: {', '.join(c['cpu_flags'])}")


def print_bench_table(records: list[dict[str, Any]], size) -> None:
    c = records[0]["conditions"]
    print(f"Input {size[0]}x{size[1]}, batch {c['batch']}, {c['dtype']}, {c['device_name']} ({c['device']}), {c['threads']} threads, "
          f"torch {c['torch_version']}, warm-up {c['warmup']}, {c['iters']} iterations; MACs counted on convolutions and matrix products.\n")
    print("| model | params | GMACs | latency mean (ms) | median (ms) | p90 (ms) | FPS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in records:
        print(f"| {r['model']} | {r['params']:,} | {r['macs'] / 1e9:.2f} | {r['latency_ms_mean']:.1f} | {r['latency_ms_median']:.1f} | {r['latency_ms_p90']:.1f} | {r['fps']:.2f} |")


def print_select(result) -> None:
    """The accuracy / latency table of ``rtseg select``, fastest first, the pick marked with ``*``."""
    size = "x".join(map(str, result.size))
    print(f"| | network | weights | path | ms ({size}) | val mIoU | accuracy | note |")
    print("|---|---|---|---|---:|---:|---|---|")
    for r in result.rows:
        mark = "*" if r is result.pick else ""
        miou = f"{r.miou:.4f}" if r.miou is not None else "-"
        change = f" ({r.miou_change:+.4f})" if r.miou_change else ""
        status = ("" if r.passes else "fails: ") + r.accuracy_from + change
        over = " over budget" if r.ms is not None and r.ms > result.budget_ms else ""
        print(f"| {mark} | {r.model} | {r.tag} | {r.path} | {r.ms:.1f}{over} | {miou} | {status} | {r.note} |")
    for what, why in result.skipped.items():
        print(f"skipped {what}: {why}")
    c = result.conditions
    print(f"measured on {c['cpu']}, {c['threads'] or 'default'} threads, torch {c['torch']}; {c['timing']}"
          + (" (cached timings: --no-cache measures again)" if result.rows and all(r.cached for r in result.rows) else ""))
    if result.pick is None:
        print("no network passed its accuracy check on any path: nothing to pick")
        return
    p = result.pick
    verdict = f"within the {result.budget_ms:g} ms budget" if result.fits else f"nothing fits {result.budget_ms:g} ms; the fastest is"
    print(f"pick ({verdict}): {p.model} --weights {p.tag} on {p.path}: {p.ms:.1f} ms, val mIoU {p.miou:.4f}")
    if result.exported:
        e = result.exported
        print(f"wrote {e['out']} ({e['format']}{', INT8' if e['int8'] else ''}, input {e['input_size'][0]}x{e['input_size'][1]})"
              + (f"; {e['note']}" if e["note"] else ""))
