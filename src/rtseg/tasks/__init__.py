"""The application layer: what the ``rtseg`` command does, as library functions with typed arguments.

Each task composes the library (registry, data, evaluation, efficiency, deploy) and returns plain records; the
command line only parses arguments, calls one task and prints its result. The modules holding the tasks are
private (``_evaluate.py``, ...) so that ``rtseg.tasks.evaluate`` is always the function, never its module.
"""
from rtseg.tasks.common import Log, Optimization
from rtseg.tasks._bench import BenchOptions, bench, bench_one
from rtseg.tasks._evaluate import evaluate
from rtseg.tasks._export import export, export_weights_file
from rtseg.tasks.models import model_details, model_rows
from rtseg.tasks._predict import predict
from rtseg.tasks._train import train
from rtseg.tasks._recipes import recipes, resolved_config
from rtseg.tasks._demo import demo
from rtseg.tasks._select import SelectResult, select

__all__ = [
    "evaluate", "bench", "bench_one", "BenchOptions", "predict", "export", "export_weights_file", "train", "demo",
    "model_rows", "model_details", "Log", "Optimization", "recipes", "resolved_config", "select", "SelectResult",
]
