"""Print the markdown sections of docs/benchmarks.md that come from measurements (deploy_table.py / int8_camvid.py JSON)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_table import tables  # noqa: E402


def int8_table(records: list[dict]) -> str:
    r0 = records[0]
    lines = [f"ONNX Runtime CPU, {r0['threads']} threads, input {r0['size'][0]}x{r0['size'][1]}, median of interleaved runs; "
             f"calibration on {r0['calibration_images']} CamVid train images; agreement and mIoU on {r0['val_images']} CamVid val images.", "",
             "| model | weights | FP32 ms | INT8 ms | speed-up | FP32 MB | INT8 MB | INT8 = FP32 pixels | mIoU FP32 | mIoU INT8 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['model']} | {r['weights']} | {r['fp32_ms']:.0f} | {r['int8_ms']:.0f} | {r['speedup']:.2f}x | {r['fp32_bytes'] / 1e6:.1f} | "
                     f"{r['int8_bytes'] / 1e6:.1f} | {100 * r['pixel_agreement']:.1f} % | {r['miou_fp32']:.3f} | {r['miou_int8']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(tables(json.loads(Path(sys.argv[1]).read_text())))
    if len(sys.argv) > 2 and Path(sys.argv[2]).is_file():
        print()
        print(int8_table(json.loads(Path(sys.argv[2]).read_text())))
