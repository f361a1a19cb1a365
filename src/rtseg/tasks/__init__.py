"""The application layer: what the ``rtseg`` command does, as library functions with typed arguments.

Each task composes the library (registry, data, evaluation, efficiency, deploy) and returns plain records; the
command line only parses arguments, calls one task and prints its result.
"""
from rtseg.tasks.common import Log, Optimization
from rtseg.tasks.bench import BenchOptions, bench, bench_one
from rtseg.tasks.evaluate import evaluate
from rtseg.tasks.export import export, export_weights_file
from rtseg.tasks.models import model_details, model_rows
from rtseg.tasks.predict import predict
from rtseg.tasks.train import train
from rtseg.tasks.demo import demo  # noqa: E402  (after the tasks it calls)

__all__ = [
    "evaluate", "bench", "bench_one", "BenchOptions", "predict", "export", "export_weights_file", "train", "demo",
    "model_rows", "model_details", "Log", "Optimization",
]
