"""Publish a finished CamVid zoo run as shipped weights: ``python tools/publish_zoo.py RUN_DIR --root CAMVID``.

Steps, each printed: export ``RUN_DIR/best.pt`` to safetensors in float32 and float16; evaluate both on all
CamVid val images with ``rtseg eval`` (the command a user runs); keep float16 when its val mIoU equals the
float32 one to 4 decimals (the card's precision); else try float16 convolution and linear weights with float32
vectors (normalisation layers, biases; nearly the same size) by the same rule; else float32. Write the measured
metrics, the evaluation
command and the from-scratch note into the card; copy the file to ``src/rtseg/pretrained/camvid/MODEL.safetensors``
and record its SHA-256 in ``src/rtseg/pretrained/camvid/index.json``, which registers it as ``weights="camvid"``.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ZOO_DIR = REPO / "src" / "rtseg" / "pretrained" / "camvid"
FROM_SCRATCH = ("trained from scratch by rtseg on CamVid train (367 images, SegNet split) at 360x480 on a CPU; "
                "no ImageNet initialisation (no backbone weights could be fetched on the training machine)")


def run_notes(card) -> str:
    """The card's note on how the weights came about: from scratch, or continued from earlier zoo weights, with the
    teacher(s) of a distilled run and the images seen over the whole chain."""
    t = card.training
    if t is None or not (t.start_weights or t.teacher):
        return FROM_SCRATCH
    parts = ["trained by rtseg on CamVid train (367 images, SegNet split) at 360x480 on a CPU, no ImageNet initialisation"]
    if t.start_weights:
        parts.append(f"continued from {t.start_weights} (itself trained from scratch by rtseg)")
    if t.teacher:
        parts.append(f"distilled from {t.teacher}")
    train = (t.config or {}).get("train") or {}
    if train.get("ema") is not None:
        from rtseg.config_defaults import DEFAULTS
        average = f"the shipped weights are an exponential moving average of the trained ones (train.ema {train['ema']})"
        # runs from before train.ema_bn copied the live network's statistics; say which kind of statistics ship
        if train.get("ema_bn") == "reestimate":
            average += (f", its BatchNorm statistics re-estimated from {train.get('ema_bn_batches', DEFAULTS['train']['ema_bn_batches'])} training "
                        "batches before the validation that chose it")
        parts.append(average)
    return "; ".join(parts)


def evaluate(model: str, weights: Path, root: str, out: Path) -> dict:
    command = [sys.executable, "-m", "rtseg.cli", "eval", model, "--weights", str(weights), "--data", "camvid",
               "--root", root, "--split", "val", "--quiet", "--json", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def curve_summary(run: Path) -> dict:
    """Epochs trained and the last validation points, to say whether the curve had flattened."""
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    vals = [(int(r["epoch"]), float(r["val_miou"])) for r in rows if r.get("val_miou")]
    return {"epochs": int(rows[-1]["epoch"]) if rows else 0, "val_curve": vals}

# tried in this order (fp32 first: the reference); the first whose val mIoU equals fp32's to 4 decimals is shipped
STORAGES = (("fp32", False), ("fp16", True), ("fp16-weights", "weights"))
STORAGE_NAMES = {"fp16": "float16 storage",
                 "fp16-weights": "float16 convolution and linear weights, float32 normalisation layers and biases (float16 "
                                 "storage of every tensor changed the val mIoU)",
                 "fp32": "float32 storage (float16 storage changed the val mIoU)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished training run folder (best.pt, metrics.csv)")
    parser.add_argument("--root", required=True, help="CamVid root (train/, val/, ...)")
    parser.add_argument("--tag", default="camvid", help="the weights tag (camvid, or a later round: camvid-v2); earlier tags stay as they are")
    parser.add_argument("--default", action="store_true", help="make this tag the model's default (weights='default')")
    args = parser.parse_args(argv)

    from rtseg.card import Metrics
    from rtseg.io import read_weights, save_weights
    from rtseg.registry import export_weights
    from rtseg.hub import sha256_of

    best = args.run / "best.pt"
    if not best.is_file():
        parser.error(f"{best} does not exist: is {args.run} a finished run?")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, card = read_weights(best, tensors=False)
        model = card.model
        scores, files = {}, {}
        chosen = "fp32"
        for name, half in STORAGES:
            files[name] = export_weights(best, tmp / f"{name}.safetensors", half=half)
            scores[name] = s = evaluate(model, files[name], args.root, tmp / f"{name}.json")
            print(f"{model} {name}: val mIoU {s['miou']:.4f}, pixel accuracy {s['pixel_accuracy']:.4f}")
            if name != "fp32" and round(s["miou"], 4) == round(scores["fp32"]["miou"], 4):
                chosen = name
                break
        s = scores[chosen]
        protocol = {**s["protocol"], "command": f"rtseg eval {model} --weights {args.tag} --data camvid --root CAMVID --split val"}
        metrics = Metrics(dataset="camvid", split="val", miou=round(s["miou"], 4), pixel_accuracy=round(s["pixel_accuracy"], 4),
                          images=s["dataset"]["images"], per_class_iou={k: (None if v is None else round(v, 4)) for k, v in s["per_class_iou"].items()},
                          protocol=protocol, epoch=card.training.epochs if card.training else None,
                          measured_with=f"rtseg, torch {s['torch_version']} (CPU), {STORAGE_NAMES[chosen]}")
        state, _ = read_weights(files[chosen])
        final = card.replace(metrics=(metrics,), notes=run_notes(card), license="MIT", source="rtseg CamVid zoo")
        ZOO_DIR.mkdir(parents=True, exist_ok=True)
        target = ZOO_DIR / (f"{model}.safetensors" if args.tag == "camvid" else f"{model}-{args.tag}.safetensors")
        save_weights(tmp / "final.safetensors", state, final, half=dict(STORAGES)[chosen])
        check = evaluate(model, tmp / "final.safetensors", args.root, tmp / "final.json")
        if abs(check["miou"] - s["miou"]) > 1e-9:
            raise SystemExit(f"re-evaluation of the final file gave {check['miou']:.6f}, expected {s['miou']:.6f}")
        shutil.copyfile(tmp / "final.safetensors", target)
    index_path = ZOO_DIR / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    key = index_key(model, args.tag)
    index[key] = {"file": target.name, "tag": args.tag, "sha256": sha256_of(target), "storage": chosen, "run": curve_summary(args.run)}
    if args.default:
        mark_default(index, key)
    write_index(index_path, index)
    print(f"published {target.relative_to(REPO)} ({target.stat().st_size / 2**20:.1f} MiB, {chosen}); val mIoU {metrics.miou:.4f}")
    return 0


def index_key(model: str, tag: str) -> str:
    """The entry of ``model``'s ``tag`` in index.json: the model's name for the first round (``camvid``), else ``MODEL@TAG``."""
    return model if tag == "camvid" else f"{model}@{tag}"


def write_index(index_path: Path, index: dict) -> None:
    """index.json with its entries sorted, so a republished round changes only its own lines."""
    index_path.write_text(json.dumps(dict(sorted(index.items())), indent=1) + "\n")


def mark_default(index: dict, key: str) -> None:
    """Make ``key`` (``MODEL`` for the ``camvid`` tag, else ``MODEL@TAG``) its model's only default entry."""
    model = key.split("@")[0]
    for k, item in index.items():
        if k.split("@")[0] == model:
            item.pop("default", None)
    index[key]["default"] = True


def set_default(weights: str, index_path: Path = ZOO_DIR / "index.json") -> dict:
    """Move a model's default to weights already published (``MODEL@TAG``), e.g. back to an earlier round; the files
    and their cards stay as they are.

        python tools/publish_zoo.py --set-default essnet-b-dg2@camvid-v4
    """
    model, _, tag = weights.partition("@")
    key = index_key(model, tag or "camvid")
    index = json.loads(index_path.read_text())
    if key not in index:
        published = ", ".join(k if "@" in k else f"{k}@camvid" for k in sorted(index) if k.split("@")[0] == model) or "none"
        raise SystemExit(f"--set-default {weights}: not in {index_path.name}; published for {model}: {published}")
    mark_default(index, key)
    write_index(index_path, index)
    return index


def record_deployment(results: Path, index_path: Path = ZOO_DIR / "index.json", tag: str = "camvid") -> dict:
    """Copy the accuracy of each deployment path, as ``benchmarks/precision_camvid.py`` measured it for the shipped files
    (``results``: its JSON list), into the index entries of those files (``deployment``), where ``rtseg select`` reads it.

        python tools/publish_zoo.py --record-deployment benchmarks/results-zoo-camvid.json
        python tools/publish_zoo.py --record-deployment benchmarks/results-zoo-camvid-v2.json --tag camvid-v2
    """
    from rtseg.deploy.paths import RECORDED_NAMES

    index = json.loads(index_path.read_text())
    records = json.loads(results.read_text())
    for r in records:
        key = index_key(r["model"], tag)
        if key not in index or r.get("weights") != tag:
            continue
        measured = (f"{r['data']} {r['split']}, {r['images']} images at {r['size'][0]}x{r['size'][1]}, mIoU against fp32 eager "
                    f"{r['miou_fp32']:.4f}, torch {r['torch']}, {r.get('cpu', 'a 2-core AMD EPYC with AVX-512 BF16 (the zoo publishing sessions)')}, "
                    "benchmarks/precision_camvid.py")
        index[key]["deployment"] = {RECORDED_NAMES[k]: {"miou_change": round(p["miou_change"], 5), "goal": p["goal"], "pass": bool(p["pass"]),
                                                        "measured": measured} for k, p in r["paths"].items() if k in RECORDED_NAMES}
    write_index(index_path, index)
    return index


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--record-deployment":
        recorder = argparse.ArgumentParser(prog="publish_zoo.py --record-deployment",
                                           description="copy precision_camvid.py's accuracy records into the zoo index")
        recorder.add_argument("results", type=Path, help="precision_camvid.py's JSON list")
        recorder.add_argument("--tag", default="camvid", help="the weights tag the records are for (camvid, camvid-v2, ...)")
        recorded = recorder.parse_args(sys.argv[2:])
        if not recorded.results.is_file():
            recorder.error(f"{recorded.results}: no such file (write it with benchmarks/precision_camvid.py --json)")
        record_deployment(recorded.results, tag=recorded.tag)
        raise SystemExit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--set-default":
        chooser = argparse.ArgumentParser(prog="publish_zoo.py --set-default", description="make published weights their model's default")
        chooser.add_argument("weights", help="MODEL@TAG, e.g. essnet-b-dg2@camvid-v4")
        set_default(chooser.parse_args(sys.argv[2:]).weights)
        raise SystemExit(0)
    raise SystemExit(main())
