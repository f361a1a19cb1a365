import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RTSEG_SHARED", ROOT.parent / "shared"))

# One intra-op thread: the suite's many small forward passes gain little from a second one, and when the
# cores are busy with other work a second thread only contends (measured 10-20x slower small backward passes).
torch.set_num_threads(1)


def load_script(path: Path):
    """A repository script (tools/, benchmarks/) imported as a module by its path: they are not a package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
# processes) crashed the whole pytest process with SIGSEGV (torch 2.13, openvino 2026.4), and so, once, did the
# trainer's worker test after test_select had compiled and timed IRs in-process (CI, exit -11; workers were spawned
# by then, so the cause is not the fork alone). The modules that load OpenVINO therefore run after every other test
# (the order is otherwise kept), and a test outside them that leaves OpenVINO loaded is an error naming its module.
_LOADS_OPENVINO = {"test_openvino.py", "test_benchmark_tables.py", "test_select.py"}


def _runs_late(item) -> bool:
    return item.path.name in _LOADS_OPENVINO and "_script_" not in item.name  # scripts run in a subprocess: early


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.openvino_loaded_before = "openvino" in sys.modules


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield  # fixtures (monkeypatch's stand-in module included) are torn down by now
    if not getattr(item, "openvino_loaded_before", True) and "openvino" in sys.modules and not _runs_late(item):
        raise RuntimeError(f"{item.nodeid} left OpenVINO loaded in the pytest process, before tests that fork or spawn "
                           f"workers: add {item.path.name} to _LOADS_OPENVINO in tests/conftest.py")


def pytest_collection_modifyitems(config, items):
    """Modules that load OpenVINO run last; tests marked ``gpu`` need CUDA: skipped, with the reason, where there is none."""
    items.sort(key=_runs_late)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marker gpu); benchmarks/gpu/run.sh runs these on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def resumed_run_matches_uninterrupted(overrides: list[str], tmp_path: Path, stop_after: int = 1) -> None:
    """Train the demo recipe with ``overrides`` in one go, and again stopped after ``stop_after`` epochs and
    resumed; assert both end with the same weights, tensor for tensor."""
    from rtseg.config import load_config
    from rtseg.engine.trainer import Trainer, train
    from rtseg.io import load_checkpoint

    train(load_config("demo", overrides), tmp_path / "a", progress=False)
    interrupted = Trainer(load_config("demo", overrides), tmp_path / "b", progress=False)
    interrupted.epochs = stop_after
    interrupted.run()
    Trainer(load_config("demo", overrides), tmp_path / "b", resume=True, progress=False).run()
    a, b = (load_checkpoint(tmp_path / r / "last.pt")["model_state"] for r in "ab")
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different[:5]}"


@pytest.fixture
def http_files(tmp_path):
    """A folder served over HTTP on the loopback interface (127.0.0.1, a free port): download code runs as it would
    against a real server, while nothing leaves the machine. Yields ``(folder, base_url)``; the server keeps a list of
    the paths it was asked for in ``folder.requests``."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
