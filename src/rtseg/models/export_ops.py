"""Operations written so that they export to ONNX with dynamic height and width.

ONNX has no adaptive average pooling to an arbitrary output size: the TorchScript-based exporter
refuses it unless the input size is fixed. :func:`adaptive_avg_pool2d` is the eager op in PyTorch and,
only while exporting, the same pooling expressed as two averaging matrices built from the input's
runtime shape (``P_h @ x @ P_w^T``), which ONNX can express for any size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["adaptive_avg_pool2d"]


def _pooling_matrix(n: torch.Tensor, out: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``out x n`` matrix averaging the adaptive-pooling bins: bin i covers [floor(i n / out), ceil((i + 1) n / out))."""
    i = torch.arange(out, device=device).unsqueeze(1)
    j = torch.arange(n, device=device).unsqueeze(0)
    start = torch.div(i * n, out, rounding_mode="floor")
    end = torch.div((i + 1) * n + out - 1, out, rounding_mode="floor")
    inside = (j >= start) & (j < end)
    return inside.to(dtype) / (end - start).to(dtype)


def adaptive_avg_pool2d(x: torch.Tensor, output_size: tuple) -> torch.Tensor:
    """``F.adaptive_avg_pool2d``; exportable to ONNX with dynamic spatial sizes."""
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, output_size)
    h, w = x.shape[-2], x.shape[-1]
    oh, ow = output_size
    ph = _pooling_matrix(torch.as_tensor(h), torch.as_tensor(oh), x.dtype, x.device)
    pw = _pooling_matrix(torch.as_tensor(w), torch.as_tensor(ow), x.dtype, x.device)
    return torch.matmul(torch.matmul(ph, x), pw.transpose(0, 1))
