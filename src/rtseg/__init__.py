"""rtseg: lightweight real-time semantic segmentation."""
from rtseg.registry import create_model, get_entry, list_models

__version__ = "0.1.0"

__all__ = [
    "create_model", "list_models", "get_entry", "predict", "optimize",
    "ModelCard", "list_pretrained", "get_pretrained", "read_card", "export_weights", "evaluate", "train", "export", "bench", "select",
    "__version__",
]

# Heavier entry points, imported on first use to keep `import rtseg` fast: name -> module.
_LAZY = {
    "predict": "rtseg.inference",
    "optimize": "rtseg.deploy.optimize",
    "ModelCard": "rtseg.card",
    "list_pretrained": "rtseg.pretrained",
    "get_pretrained": "rtseg.pretrained",
    "read_card": "rtseg.registry",
    "export_weights": "rtseg.registry",
    # the tasks behind the command line, as library calls
    "evaluate": "rtseg.tasks",
    "train": "rtseg.tasks",
    "export": "rtseg.tasks",
    "bench": "rtseg.tasks",
    "select": "rtseg.tasks",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rtseg' has no attribute {name!r}")
