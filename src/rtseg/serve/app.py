"""The FastAPI app: :func:`create_app` builds it around networks already loaded (tests call it directly);
:func:`app_from_environment` loads them first (each ``--workers`` process calls it).

The routes only parse, call the task layer (:mod:`rtseg.tasks._serve`, the predict task's :class:`Segmenter`) and
render. CPU work never runs on the event loop: decoding and encoding run in a small thread pool, all tensor work
(pre-processing, the networks, arg-max) on one inference thread (:class:`~rtseg.serve.batching.InferenceQueue`).
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from rtseg.data.image_io import DatasetError, ImageTooLargeError
from rtseg.serve.batching import InferenceQueue, QueueFull
from rtseg.serve.schemas import (EmbedKind, ErrorBody, Health, ImageFormat, ModelInfo, ModelList, OutputKind, SampleList,
                                 SegmentResult)
from rtseg.serve.upload import Problem, image_bytes, media_type, read_body
from rtseg.tasks._serve import ServedModel, class_shares, decode_image, render, synthetic_sample

__all__ = ["ServeSettings", "create_app", "app_from_environment", "ENV_CONFIG"]

log = logging.getLogger("rtseg.serve")
ENV_CONFIG = "RTSEG_SERVE_CONFIG"
SAMPLE_SIZE = (360, 480)


@dataclass(frozen=True)
class ServeSettings:
    """Limits and behaviour of one server: body and pixel limits (applied before decoding), how long a body may take
    to arrive, the batch window (0: off), queue bound, CPU threads for decoding and encoding, sample images."""

    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 25_000_000
    read_timeout_s: float = 30.0
    batch_window_ms: float = 0.0
    max_batch: int = 8
    max_queue: int = 64
    io_threads: int = 4
    samples: int = 4


_EXAMPLE_ERRORS = {code: {"model": ErrorBody, "description": text} for code, text in {
    400: "not an image, truncated, empty, malformed multipart, no field 'image'", 404: "no network of that name is served",
    408: "the body did not arrive in time", 413: "body over the size limit, or an image over the pixel limit",
    415: "a Content-Type other than multipart/form-data, image/png, image/jpeg, application/octet-stream",
    422: "an invalid query parameter", 503: "too many requests wait for the network (Retry-After)"}.items()}

_UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {"image": {"type": "string", "format": "binary"}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(status=status, code=code, error=message).model_dump(), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(v) for v in e.get("loc", ()) if v not in ("query", "path", "body"))
        kind = e.get("loc", ("",))[0]
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], (dict, list)) else ""
        parts.append(f"{kind} parameter {where!r}: {e.get('msg', 'invalid')}{got}")
    return "; ".join(parts) or "invalid request"


def create_app(models: list[ServedModel], settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The app serving ``models`` (already loaded, in this process) with ``settings``."""
    if not models:
        raise ValueError("create_app needs at least one loaded network")
    served = {m.name: m for m in models}
    page = resources.files("rtseg.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    state: dict[str, Any] = {"served": 0, "in_flight": 0, "start": time.time(), "samples": {}}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        infer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtseg-infer")
        state["io"] = ThreadPoolExecutor(max_workers=settings.io_threads, thread_name_prefix="rtseg-io")
        state["queues"] = {m.name: InferenceQueue(m.segmenter, infer, batch_window_ms=settings.batch_window_ms, max_batch=settings.max_batch,
                                                  max_queue=settings.max_queue) for m in models}
        for q in state["queues"].values():
            q.start()
        log.info("serving %s", ", ".join(f"{m.name} ({m.segmenter.deployed}, input {m.size[0]}x{m.size[1]})" for m in models))
        try:
            yield
        finally:
            for q in state["queues"].values():
                await q.stop()
            infer.shutdown(wait=True)
            state["io"].shutdown(wait=True)
            for m in models:
                m.segmenter.close()

    app = FastAPI(title="rtseg serve", version=_version(), lifespan=lifespan,
                  description="Semantic segmentation with rtseg's trained networks. POST an image to /v1/segment/{model}; "
                              "GET /models for what is served. The page at / shows it in a browser.")

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error(422, "invalid_parameter", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"{request.method} {request.url.path}: {exc.detail}"
        if exc.status_code == 404:
            message += "; the API is GET /health, GET /models, POST /v1/segment/{model}, GET /docs"
        return _error(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", f"internal error in rtseg {_version()} (a bug, not a problem with the request): "
                                             f"{type(exc).__name__}; please report it with the server's log")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page)

    @app.get("/health", response_model=Health, summary="liveness and readiness: 200 once every network is loaded")
    async def health():
        queues = state.get("queues", {})
        return Health(status="ok", models=list(served), uptime_s=round(time.time() - state["start"], 3),
                      waiting=sum(q.waiting for q in queues.values()), in_flight=state["in_flight"], served=state["served"], pid=os.getpid())

    @app.get("/models", response_model=ModelList, summary="the served networks' cards")
    async def list_models():
        return ModelList(models=[ModelInfo(**m.record()) for m in models], batch_window_ms=settings.batch_window_ms,
                         max_body_bytes=settings.max_body_bytes, max_pixels=settings.max_pixels)

    @app.get("/samples", response_model=SampleList, summary="sample street scenes for the page")
    async def samples():
        return SampleList(samples=[{"id": i, "url": f"/samples/{i}.png", "size": list(SAMPLE_SIZE)} for i in range(settings.samples)],
                          note="drawn by rtseg's synthetic scene generator (rtseg.data.synthetic): no dataset image ships with rtseg")

    @app.get("/samples/{index}.png", response_class=Response, summary="one sample scene (PNG)",
             responses={200: {"content": {"image/png": {}}}, 422: {"model": ErrorBody}})
    async def sample(index: int = Path(ge=0, lt=max(1, settings.samples))):
        if index not in state["samples"]:  # drawn on first use: a few milliseconds, in memory only
            state["samples"][index] = await asyncio.get_running_loop().run_in_executor(state["io"], synthetic_sample, index, SAMPLE_SIZE)
        return Response(state["samples"][index], media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.post("/v1/segment/{model}", summary="segment one image", openapi_extra=_UPLOAD_BODY,
              response_model=SegmentResult, responses={200: {"content": {"image/png": {}, "image/jpeg": {}},
                                                             "description": "JSON with output=json, else the image asked for"},
                                                       **_EXAMPLE_ERRORS})
    async def segment(request: Request, model: str = Path(description="a name from GET /models"),
                      output: OutputKind = Query("labels", description="labels: PNG of class ids; mask / overlay: colour images; json: class shares and timings"),
                      format: ImageFormat = Query("png", description="mask and overlay: png or jpeg (labels are always PNG)"),
                      alpha: float = Query(0.5, ge=0.0, le=1.0, description="overlay opacity of the mask"),
                      embed: list[EmbedKind] = Query([], description="with output=json: images to include as data: URLs")):
        m = served.get(model)
        if m is None:
            raise Problem(404, "unknown_model", f"no network named {model!r} is served here (served: {', '.join(served)}); GET /models lists them")
        if output == "labels" and format != "png":
            raise Problem(422, "invalid_parameter", "output=labels is always PNG (JPEG would change the class ids); leave out format, "
                                                    "or ask for output=mask or overlay as jpeg")
        kind = media_type(request)
        state["in_flight"] += 1
        try:
            t0 = time.perf_counter()
            body = await read_body(request, settings.max_body_bytes, settings.read_timeout_s)
            data = image_bytes(body, kind, request.headers.get("content-type", ""))
            del body
            t_received = time.perf_counter()
            loop = asyncio.get_running_loop()
            rgb, t_decode = await loop.run_in_executor(state["io"], _decode, data, settings.max_pixels)
            del data
            size = m.network_size_for(rgb.shape[:2])
            try:
                result = await state["queues"][m.name].submit(rgb, size, size or m.card.network_input_size(rgb.shape[:2]) or rgb.shape[:2])
            except QueueFull as exc:
                raise Problem(503, "busy", f"the server is busy: {exc}; retry shortly", {"Retry-After": "1"}) from None
            label_map = result.label_map
            payload, encode_ms, extra = await loop.run_in_executor(state["io"], _encode, m, rgb, label_map, output, format, alpha, embed)
            timings = {"receive": round((t_received - t0) * 1e3, 3), "decode": round(t_decode * 1e3, 3),
                       "preprocess": round(result.preprocess_ms, 3), "queue": round(result.queue_ms, 3), "inference": round(result.run_ms, 3),
                       "encode": round(encode_ms, 3)}
            timings["total"] = round((time.perf_counter() - t0) * 1e3, 3)
            state["served"] += 1
            if output == "json":
                return SegmentResult(model=m.name, image_size=list(rgb.shape[:2]), input_size=list(result.input_size), deployed=m.segmenter.deployed,
                                     batch_size=result.batch_size, classes=class_shares(label_map, m.card), timings_ms=timings, **extra)
            headers = {"Server-Timing": ", ".join(f"{k};dur={v}" for k, v in timings.items()), "X-Rtseg-Model": m.name,
                       "X-Rtseg-Classes": ",".join(str(c["id"]) for c in class_shares(label_map, m.card)),
                       "X-Rtseg-Batch-Size": str(result.batch_size)}
            media = "image/png" if output == "labels" or format == "png" else "image/jpeg"
            return Response(payload, media_type=media, headers=headers)
        finally:
            state["in_flight"] -= 1

    return app


def _decode(data: bytes, max_pixels: int):
    t0 = time.perf_counter()
    try:
        rgb = decode_image(data, "the uploaded image", max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        raise Problem(413, "image_too_large", str(exc)) from None
    except DatasetError as exc:
        text = str(exc)
        code = "empty_body" if "0 bytes" in text else "truncated_image" if "truncated" in text or "corrupt" in text else "not_an_image"
        raise Problem(400, code, text) from None
    return rgb, time.perf_counter() - t0


def _encode(m: ServedModel, rgb, label_map, output: str, fmt: str, alpha: float, embed: list[str]):
    t0 = time.perf_counter()
    payload, extra = b"", {}
    if output != "json":
        payload = render(output, rgb, label_map, m.card, fmt, alpha)
    for kind in dict.fromkeys(embed):
        extra[kind] = "data:image/png;base64," + base64.b64encode(render(kind, rgb, label_map, m.card, "png", alpha)).decode("ascii")
    return payload, (time.perf_counter() - t0) * 1e3, extra


def _version() -> str:
    from rtseg import __version__

    return __version__


def app_from_environment() -> FastAPI:
    """The app of one ``--workers`` process: the ``rtseg serve`` command line passes its choices in ``RTSEG_SERVE_CONFIG``
    (JSON); each process loads its own networks."""
    from rtseg.tasks._serve import ServeOptions, load_served, parse_model_spec

    config = json.loads(os.environ[ENV_CONFIG])
    options = ServeOptions(**{k: tuple(v) if k == "size" and v else v for k, v in config["options"].items()})
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    models = [load_served(parse_model_spec(text), options) for text in config["models"]]
    return create_app(models, ServeSettings(**config["settings"]))


def environment_config(model_specs: list[str], options: Any, settings: ServeSettings) -> str:
    return json.dumps({"models": list(model_specs), "options": asdict(options), "settings": asdict(settings)})
