#!/usr/bin/env python3
"""Pack CamVid (SegNet layout) small enough to travel to a GPU machine: images as JPEG, label maps as PNG.

    python tools/pack_camvid.py ../shared/data/camvid .gpu-data/camvid          # quality 95, train + val

The copy keeps the layout (train/, trainannot/, val/, valannot/) and the file stems, which is how rtseg pairs
images with labels, so `data.root=.gpu-data/camvid` trains as on the original. JPEG changes the pixels a
little: weights trained on the packed copy say so on their card. The output folder must be git-ignored
(it is data from a research set, never committed).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

SPLITS = ("train", "val")


def pack(src: Path, dst: Path, quality: int = 95, splits=SPLITS) -> int:
    """Write the packed copy of ``src`` into ``dst``; returns its size in bytes."""
    for split in splits:
        for folder in (src / split, src / f"{split}annot"):
            if not folder.is_dir():
                raise SystemExit(f"{folder} does not exist: {src} is not CamVid in the SegNet layout (train/, trainannot/, val/, valannot/)")
    total = 0
    for split in splits:
        (dst / split).mkdir(parents=True, exist_ok=True)
        (dst / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for image in sorted((src / split).glob("*.png")):
            out = dst / split / f"{image.stem}.jpg"
            with Image.open(image) as im:
                im.convert("RGB").save(out, quality=quality, subsampling=0)
            total += out.stat().st_size
        for label in sorted((src / f"{split}annot").glob("*.png")):
            out = dst / f"{split}annot" / label.name
            shutil.copyfile(label, out)  # labels stay lossless
            total += out.stat().st_size
    return total


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="CamVid root in the SegNet layout")
    parser.add_argument("dst", type=Path, help="output folder (git-ignored)")
    parser.add_argument("--quality", type=int, default=95)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="which splits to pack (train alone is 33 MiB)")
    args = parser.parse_args(argv)
    size = pack(args.src, args.dst, args.quality, args.splits)
    print(f"packed {args.src} into {args.dst}: {size / 2**20:.1f} MiB (JPEG quality {args.quality}, PNG labels)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
