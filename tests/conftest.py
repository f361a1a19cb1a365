import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RTSEG_SHARED", ROOT.parent / "shared"))

# Development and CI machines have 2 cores shared by several jobs; there a second intra-op thread only
# contends (a small backward pass measured 10-20x slower with 2 threads under load than with 1).
torch.set_num_threads(1)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not present (the shared data folder sits beside the project only in CI and development)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
