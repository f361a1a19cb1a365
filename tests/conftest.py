import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RTSEG_SHARED", ROOT.parent / "shared"))

# One intra-op thread: the suite's many small forward passes gain little from a second one, and when the
# cores are busy with other work a second thread only contends (measured 10-20x slower small backward passes).
torch.set_num_threads(1)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not present (these tests need the data folder ../shared beside the project: real CamVid, Cityscapes frames and the official ESPNet weights)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# OpenVINO starts its runtime threads when it loads; a fork() after that (the trainer's DataLoader worker
# processes) crashed the whole pytest process with SIGSEGV (torch 2.13, openvino 2026.4). The modules that
# load OpenVINO therefore run after every other test (the order is otherwise kept).
_LOADS_OPENVINO = {"test_openvino.py", "test_benchmark_tables.py"}


def pytest_collection_modifyitems(config, items):
    """Modules that load OpenVINO run last; tests marked ``gpu`` need CUDA: skipped, with the reason, where there is none."""
    items.sort(key=lambda item: item.path.name in _LOADS_OPENVINO and "_script_" not in item.name)  # scripts run in a subprocess: before
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marker gpu); benchmarks/gpu/run.sh runs these on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
