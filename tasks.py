#!/usr/bin/env python3
"""Set up rtseg in a local virtual environment and run a task; needs nothing but Python 3.10+.

    python3 tasks.py demo    # environment + the demo (train, evaluate, benchmark, predict)
    python3 tasks.py test    # environment + the whole test suite

The environment lives in .venv and is reused while pyproject.toml is unchanged.
PyTorch is pinned to the CPU build 2.13.0; set RTSEG_TORCH to install another spec,
e.g. RTSEG_TORCH="torch --index-url https://download.pytorch.org/whl/cu124" for CUDA.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
DEFAULT_TORCH = "torch==2.13.0"


def python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(*cmd: str | Path, **kw) -> None:
    print("+ " + " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def ensure_env() -> None:
    if sys.version_info < (3, 10):
        sys.exit(f"rtseg needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    torch_spec = os.environ.get("RTSEG_TORCH", DEFAULT_TORCH)
    stamp_text = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + torch_spec.encode()).hexdigest()
    stamp = VENV / ".rtseg-installed"
    if stamp.is_file() and stamp.read_text() == stamp_text and python().is_file():
        return
    if not python().is_file():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [python(), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    # torch first and pinned, so nothing later pulls a multi-GB CUDA build by accident
    run(*pip, *torch_spec.split())
    run(*pip, "-e", ".[test]")
    stamp.write_text(stamp_text)


BROWSER = ("/usr/bin/chromium", "/usr/bin/chromedriver")


def ensure_browser() -> None:
    """Headless Chromium for the page test (tests/test_serve_browser.py), from Debian's packages, where this can be
    done without asking: as root with apt-get. Never fatal: without a browser that test is skipped with the reason.
    RTSEG_NO_BROWSER=1 leaves the system alone."""
    import shutil
    import time

    if all(Path(p).exists() for p in BROWSER) or os.environ.get("RTSEG_NO_BROWSER") == "1":
        return
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("no headless Chromium here (the browser test will be skipped): as root, apt-get install chromium chromium-driver", flush=True)
        return
    print("installing chromium and chromium-driver (apt-get) for the browser test ...", flush=True)
    t0 = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "env": env, "timeout": 900}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, **quiet)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"], check=True, **quiet)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = (getattr(exc, "stderr", None) or b"").decode(errors="replace").strip().splitlines()[-1:] or [str(exc)]
        print(f"could not install the browser ({detail[0]}); the browser test will be skipped", flush=True)
        return
    print(f"browser installed in {time.monotonic() - t0:.0f} s", flush=True)


def main(argv: list[str]) -> int:
    tasks = {"demo": "train, evaluate, benchmark and predict on synthetic scenes", "test": "run the test suite", "setup": "only create the environment"}
    if len(argv) < 1 or argv[0] not in tasks:
        print(__doc__)
        print("tasks: " + ", ".join(f"{k} ({v})" for k, v in tasks.items()))
        return 2
    ensure_env()
    task, extra = argv[0], argv[1:]
    try:
        if task == "demo":
            run(python(), "-m", "rtseg.cli", "demo", *extra)
        elif task == "test":
            ensure_browser()
            run(python(), "-m", "pytest", "-q", *extra)
    except subprocess.CalledProcessError as exc:
        return exc.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
