"""``rtseg serve``: check the options, load the networks once, serve until SIGTERM or Ctrl-C, drain, exit 0."""
from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, replace
from typing import Any, Callable

from rtseg.errors import OptionError, UserError

__all__ = ["ServerOptions", "serve", "require_serve_extra"]


class MissingExtraError(UserError):
    """FastAPI or uvicorn is not installed."""


def require_serve_extra() -> None:
    missing = []
    for module in ("fastapi", "uvicorn", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module.replace("_", "-"))
    if missing:
        raise MissingExtraError(f"rtseg serve needs {', '.join(missing)}: pip install 'rtseg[serve]'")


@dataclass(frozen=True)
class ServerOptions:
    """Where and how the HTTP server runs: address, port, worker processes, how long SIGTERM waits for requests in
    flight, the most open connections (more get 503), and the log level."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    drain_timeout_s: float = 30.0
    max_connections: int = 128
    log_level: str = "info"

    def check(self) -> None:
        if not 0 <= self.port <= 65535:
            raise OptionError(f"--port {self.port}: expected 0..65535")
        if self.workers < 1:
            raise OptionError(f"--workers {self.workers}: expected 1 or more")
        if self.max_connections < 1:
            raise OptionError(f"--max-connections {self.max_connections}: expected 1 or more")


def serve(model_specs: list[str], options: Any, settings: Any, server: ServerOptions = ServerOptions(),
          on_ready: Callable[[list], None] | None = None) -> int:
    """Run the server in the foreground; returns 0 after a SIGTERM / SIGINT once the requests in flight are answered.

    Every ``--model`` is checked before anything loads. With one worker the networks load here, before the port is
    bound (a bad weights file stops the command with its error line); with ``workers`` > 1 each worker process loads
    its own copy (uvicorn's supervisor starts them and passes SIGTERM on)."""
    require_serve_extra()
    import uvicorn

    from rtseg.serve.app import ENV_CONFIG, create_app, environment_config
    from rtseg.tasks._serve import load_served, parse_model_spec

    server.check()
    options.check()
    specs = [parse_model_spec(text) for text in model_specs]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise OptionError(f"--model: two networks would be served as {', '.join(dupes)}; name them apart with NAME=MODEL@WEIGHTS")
    common = dict(host=server.host, port=server.port, log_level=server.log_level, timeout_graceful_shutdown=server.drain_timeout_s,
                  limit_concurrency=server.max_connections, proxy_headers=False, server_header=False)
    if server.workers > 1:
        if not options.threads:  # one process per core: each network on its share of the cores, not all of them
            options = replace(options, threads=max(1, (os.cpu_count() or 1) // server.workers))
        os.environ[ENV_CONFIG] = environment_config([s.text for s in specs], options, settings)
        with _exit_zero_on_stop():
            uvicorn.run("rtseg.serve.app:app_from_environment", factory=True, workers=server.workers, **common)
        return 0
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    models = [load_served(s, options) for s in specs]  # Ctrl-C here interrupts the load as any command
    if on_ready is not None:
        on_ready(models)
    with _exit_zero_on_stop():
        uvicorn.Server(uvicorn.Config(create_app(models, settings), **common)).run()
    return 0


@contextlib.contextmanager
def _exit_zero_on_stop():
    """uvicorn stops on SIGTERM / SIGINT, drains, restores the handlers it found and raises the signal again; with
    ours in place that last signal is a no-op, so a drained server exits with status 0."""
    previous = {sig: signal.signal(sig, lambda s, f: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
