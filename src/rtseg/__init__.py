"""rtseg: lightweight real-time semantic segmentation."""
from rtseg.registry import create_model, get_entry, list_models

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "get_entry", "predict", "optimize", "__version__"]


def __getattr__(name):
    # Heavier entry points are imported on first use to keep `import rtseg` fast.
    if name == "predict":
        from rtseg.inference import predict

        return predict
    if name == "optimize":
        from rtseg.deploy.optimize import optimize

        return optimize
    raise AttributeError(f"module 'rtseg' has no attribute {name!r}")
