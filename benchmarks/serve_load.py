"""rtseg serve under load, on loopback only: throughput, latency percentiles, errors and server memory, against
``rtseg predict``'s per-image time measured in the same run (docs/deployment.md, "Serving over HTTP").

The server is a real ``rtseg serve`` process on 127.0.0.1 (a free port); the client is this process: ``--concurrency``
threads, each with one keep-alive connection, POST a 360x480 PNG (a synthetic street scene) as multipart with
``output=labels`` until ``--requests`` have been answered (a bounded count, and a time limit per level). Latency is
per request, from sending to the last byte of the answer. Server memory is the RSS of the server process (and its
worker processes) after a warm-up and after each level. Client and server share the machine's cores.

    python benchmarks/serve_load.py --requests 1000 --concurrency 1,4,16 --json serve.json
    python benchmarks/serve_load.py --requests 500 --concurrency 16 --server-args="--batch-window-ms 5" --json serve.json
    python benchmarks/serve_load.py --requests 500 --concurrency 4,16 --server-args="--workers 2" --predict 0 --json serve.json

Records are appended to ``--json`` (one per level), so a measurement can be split into several runs.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
HOST = "127.0.0.1"  # loopback only


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def rss_mb(pid: int) -> float:
    """RSS of a process and its children (uvicorn's worker processes), from /proc."""
    def one(p: int) -> int:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += one(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return total / 2**20


def frame(size=(360, 480)) -> bytes:
    from rtseg.data.synthetic import SyntheticScenes

    buf = io.BytesIO()
    Image.fromarray(SyntheticScenes(num_samples=1, size=size, split="test", seed=11)[0][0]).save(buf, format="PNG")
    return buf.getvalue()


def multipart(png: bytes) -> tuple[bytes, str]:
    boundary = "rtsegbenchboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"frame.png\"\r\nContent-Type: image/png\r\n\r\n"
            .encode() + png + f"\r\n--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


def start_server(args: list[str], threads: int, timeout: float = 600) -> tuple[subprocess.Popen, int, Path]:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    log = Path(tempfile.mkdtemp(prefix="rtseg-serve-bench-")) / "server.log"
    cmd = [sys.executable, "-m", "rtseg.cli", "serve", "--host", HOST, "--port", str(port), "--log-level", "warning", *args]
    if "--threads" not in args and "--workers" not in args:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rtseg serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                c.close()
                return proc, port, log
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"rtseg serve did not start within {timeout:.0f} s:\n{log.read_text()}")


def get_json(port: int, path: str) -> dict:
    c = http.client.HTTPConnection(HOST, port, timeout=30)
    c.request("GET", path)
    data = json.loads(c.getresponse().read())
    c.close()
    return data


def load(port: int, body: bytes, ctype: str, model: str, requests: int, concurrency: int, time_limit: float) -> dict:
    """``requests`` POSTs from ``concurrency`` threads; latencies (ms), errors, wall time."""
    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + time_limit

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        while True:
            with lock:
                if issued[0] >= requests or time.monotonic() > stop_at:
                    break
                issued[0] += 1
            t = time.perf_counter()
            try:
                conn.request("POST", f"/v1/segment/{model}?output=labels", body=body, headers={"Content-Type": ctype})
                r = conn.getresponse()
                data = r.read()
                ok = r.status == 200 and data[:8] == b"\x89PNG\r\n\x1a\n"
                key = None if ok else f"HTTP {r.status}"
            except (OSError, http.client.HTTPException) as exc:
                key = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=120)
            ms = (time.perf_counter() - t) * 1e3
            with lock:
                if key is None:
                    latencies.append(ms)
                else:
                    errors[key] = errors.get(key, 0) + 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(round(q / 100 * (len(lat) - 1))))] if lat else float("nan")

    return {"requests": len(lat) + sum(errors.values()), "ok": len(lat), "errors": errors, "wall_s": round(wall, 3),
            "throughput_rps": round(len(lat) / wall, 3) if wall else 0.0, "p50_ms": round(pct(50), 2), "p95_ms": round(pct(95), 2),
            "p99_ms": round(pct(99), 2), "mean_ms": round(statistics.fmean(lat), 2) if lat else None}


def predict_per_image(png: bytes, count: int, threads: int, optimize: bool) -> float:
    """``rtseg predict``'s steady-state wall time per image (read, segment, write mask + overlay) on ``count`` copies of
    the frame: the time between the first and the last image's overlay file, over ``count - 1`` (so the model's load
    and optimisation, done once per call, are left out)."""
    import torch

    from rtseg.tasks import Optimization, predict

    torch.set_num_threads(threads)
    opt = Optimization(compile="auto") if optimize else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "frames"
        folder.mkdir()
        for i in range(count):
            (folder / f"{i:04d}.png").write_bytes(png)
        predict("fplnet", [folder], Path(tmp) / "out", weights="camvid", size=(360, 480) if optimize else None, optimize=opt, progress=False)
        first, last = (Path(tmp) / "out" / f"{i:04d}_overlay.png" for i in (0, count - 1))
        return (last.stat().st_mtime_ns - first.stat().st_mtime_ns) / 1e9 / (count - 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="fplnet@camvid")
    ap.add_argument("--requests", type=int, default=1000, help="answered requests per concurrency level")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--threads", type=int, default=2, help="server threads (and predict's)")
    ap.add_argument("--server-args", default="", help="more rtseg serve options, e.g. '--batch-window-ms 5' or '--workers 2'")
    ap.add_argument("--predict", type=int, default=30, help="images for rtseg predict's per-image time (0: skip)")
    ap.add_argument("--time-limit", type=float, default=400, help="seconds per level at most")
    ap.add_argument("--json", help="append the records to this JSON file")
    args = ap.parse_args(argv)

    png = frame()
    body, ctype = multipart(png)
    conditions = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads, "image": "360x480 PNG (synthetic scene), multipart",
                  "output": "labels", "server_args": args.server_args, "model": args.model}
    records = []
    if args.predict > 1:
        # predict runs before the server starts, alone on the cores, as a user would run it
        for optimize in (False, True):
            per = predict_per_image(png, args.predict, args.threads, optimize)
            rec = {"kind": "predict", "optimize": optimize, "images": args.predict, "per_image_ms": round(per * 1e3, 2), **conditions}
            print(f"rtseg predict{' --optimize' if optimize else ''}: {per * 1e3:.1f} ms per image (read, segment, write mask + overlay)", flush=True)
            records.append(rec)
    levels = [int(v) for v in args.concurrency.split(",") if v.strip()]
    if not levels:
        return _append(args.json, records)
    t0 = time.monotonic()
    proc, port, log = start_server(["--model", args.model, *shlex.split(args.server_args)], args.threads)
    startup_s = time.monotonic() - t0
    name = get_json(port, "/models")["models"][0]
    print(f"server up in {startup_s:.1f} s: {name['name']}, {name['deployed']}", flush=True)
    try:
        load(port, body, ctype, name["name"], 20, 2, 120)  # warm-up: first requests, allocator pools
        for c in levels:
            before = rss_mb(proc.pid)
            rec = load(port, body, ctype, name["name"], args.requests, c, args.time_limit)
            after = rss_mb(proc.pid)
            rec.update(kind="serve", concurrency=c, rss_before_mb=round(before, 1), rss_after_mb=round(after, 1),
                       rss_growth=round(after / before - 1, 4) if before else None, deployed=name["deployed"], startup_s=round(startup_s, 1),
                       health_after=get_json(port, "/health")["status"], **conditions)
            records.append(rec)
            print(f"c={c:>2}: {rec['ok']}/{rec['requests']} ok, errors {rec['errors'] or 0}, {rec['throughput_rps']:.2f} req/s, "
                  f"p50 {rec['p50_ms']:.0f} ms, p95 {rec['p95_ms']:.0f}, p99 {rec['p99_ms']:.0f}; "
                  f"RSS {before:.0f} -> {after:.0f} MB ({100 * rec['rss_growth']:+.1f} %)", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
        print(f"server stopped by SIGTERM, exit status {code}", flush=True)
    return _append(args.json, records)


def _append(path: str | None, records: list[dict]) -> int:
    if path:
        out = Path(path)
        old = json.loads(out.read_text()) if out.is_file() else []
        out.write_text(json.dumps(old + records, indent=1))
        print(f"appended {len(records)} records to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
