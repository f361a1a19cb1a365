"""Deployment: an optimized inference path, ONNX / TorchScript export and ONNX Runtime inference."""
from rtseg.deploy.optimize import OptimizationReport, compare_outputs, fold_batchnorm, optimize, remove_dropout

__all__ = ["optimize", "fold_batchnorm", "remove_dropout", "compare_outputs", "OptimizationReport"]
