"""ESSNet decoder readings against Table 3.5: parameters, our MACs and pytorch-OpCounter's (thop) MACs.

thop counts a transposed convolution per *output* pixel (weights per output position x output size),
adds BN (2 per element) and ignores biases and functional ReLUs; rtseg.efficiency.count_flops counts
convolutions only, a transposed convolution per *input* pixel. The script prints both, and the thop
count with BN left out, for ERFNet, the Table 3.2 / 3.4 rows and the ESSNet rows under each decoder
reading, next to the thesis, so that the gaps can be compared row by row.

thop is a tool dependency only (``pip install thop --no-deps``; pyproject extra ``tools``).
Run from the repository root:  PYTHONPATH=src python tools/essnet_decoder_counts.py
"""
from __future__ import annotations

import torch
import torch.nn as nn

import rtseg
from rtseg.efficiency import count_flops, count_parameters

try:
    import thop
except ImportError as exc:  # pragma: no cover - tool script
    raise SystemExit("this tool needs thop: python -m pip install --no-deps thop") from exc

SIZE = (512, 1024)  # H, W of the thesis's GFLOPs
SHARED_OFFSET = 25_743  # rtseg's ERFNet parts minus the thesis's, the same on every Table 3.2 / 3.4 row

# Thesis rows: (params, GFLOPs); Tables 3.2, 3.4 and 3.5.
THESIS = {
    "erfnet": (2_038_448, 27.705),
    "essnet-b-dg2": (395_568, 8.852),
    "essnet-b-dg4": (319_792, 7.980),
    "essnet-b-dg8": (281_904, 7.543),
    "essnet-a-dg2": (1_238_960, 18.998),
    "essnet-a-dg4": (1_202_096, 18.595),
    "essnet-a-dg8": (1_183_664, 18.394),
    "essnet-d": (431_312, 5.773),
    "essnet-dg2": (279_760, 4.029),
    "essnet-dg4": (203_984, 3.156),
}
ESSNET_ROWS = ("essnet-d", "essnet-dg2", "essnet-dg4")


def thop_macs(model: nn.Module, with_bn: bool = True) -> int:
    """pytorch-OpCounter's count at SIZE; ``with_bn=False`` zeroes its BatchNorm hook (2 per element)."""
    custom = {} if with_bn else {nn.BatchNorm2d: lambda m, x, y: None}
    x = torch.zeros(1, 3, *SIZE)
    macs, _ = thop.profile(model.eval(), inputs=(x,), custom_ops=custom, verbose=False)
    return int(macs)


def row(name: str, label: str, **options) -> dict:
    model = rtseg.create_model(name, 19, **options)
    params = count_parameters(model)
    ours = count_flops(model, SIZE)["macs"]
    with torch.inference_mode():
        t_bn = thop_macs(model, with_bn=True)
        t_conv = thop_macs(model, with_bn=False)
    thesis_params, thesis_g = THESIS.get(name, (None, None))
    return {"label": label, "params": params, "ours": ours / 1e9, "thop": t_bn / 1e9, "thop_conv": t_conv / 1e9,
            "thesis_params": thesis_params, "thesis_g": thesis_g}


def main() -> None:
    torch.set_num_threads(1)
    rows = [row(n, n) for n in THESIS if n not in ESSNET_ROWS]
    for layers in ("mixed", "conv-module"):
        rows += [row(n, f"{n} [{layers}]", decoder_layers=layers) for n in ESSNET_ROWS]
    head = (f"{'model':30s} {'params':>10s} {'-25,743':>10s} {'thesis':>10s} {'diff':>8s} "
            f"{'ours G':>7s} {'thop G':>7s} {'thop-BN':>7s} {'thesis G':>8s} {'thop-th':>7s} {'noBN-th':>7s}")
    print(f"input 1x3x{SIZE[0]}x{SIZE[1]}, 19 classes, torch {torch.__version__}, thop {thop.__version__}")
    print(head)
    for r in rows:
        adj = r["params"] - SHARED_OFFSET
        tp, tg = r["thesis_params"], r["thesis_g"]
        diff = f"{adj - tp:+d}" if tp else "-"
        g1 = f"{r['thop'] - tg:+.3f}" if tg else "-"
        g2 = f"{r['thop_conv'] - tg:+.3f}" if tg else "-"
        print(f"{r['label']:30s} {r['params']:10,d} {adj:10,d} {tp or 0:10,d} {diff:>8s} "
              f"{r['ours']:7.3f} {r['thop']:7.3f} {r['thop_conv']:7.3f} {tg or 0:8.3f} {g1:>7s} {g2:>7s}")


if __name__ == "__main__":
    main()
