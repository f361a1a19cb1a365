"""The server's typed responses (pydantic models): what /docs shows and what every answer is checked against."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["OutputKind", "ImageFormat", "EmbedKind", "ErrorBody", "Health", "ClassEntry", "MetricEntry", "ModelInfo", "ModelList",
           "ClassShare", "Timings", "SegmentResult", "Sample", "SampleList"]

OutputKind = Literal["labels", "mask", "overlay", "json"]
ImageFormat = Literal["png", "jpeg"]
EmbedKind = Literal["overlay", "mask", "labels"]


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer: the HTTP status, a stable code and a message naming the problem and the fix."""

    status: int
    code: str = Field(description="e.g. not_an_image, truncated_image, empty_body, image_too_large, body_too_large, unknown_model, "
                                  "unsupported_media_type, missing_field, invalid_parameter, read_timeout, busy, internal_error")
    error: str


class Health(BaseModel):
    status: Literal["ok"]
    models: list[str]
    uptime_s: float
    waiting: int = Field(description="requests waiting for a network")
    in_flight: int = Field(description="requests between upload and answer")
    served: int = Field(description="requests answered since start")
    pid: int


class ClassEntry(BaseModel):
    id: int
    name: str
    color: list[int] = Field(description="RGB, 0-255: the colour of masks and overlays")


class MetricEntry(BaseModel):
    dataset: str
    split: str
    miou: float
    pixel_accuracy: float | None = None
    images: int | None = None
    protocol: str = ""


class ModelInfo(BaseModel):
    """A served network's card: classes, input size, metrics, and the deployed path it runs on."""

    name: str
    model: str
    weights: str
    classes: list[ClassEntry]
    void_outputs: list[int]
    input_size: list[int]
    input_size_source: str
    input_note: str
    metrics: list[MetricEntry]
    training: dict | None
    license: str | None
    source: str | None
    backend: str
    deployed: str
    max_batch: int | None
    load_s: float
    warmup_ms: float
    summary: str


class ModelList(BaseModel):
    models: list[ModelInfo]
    batch_window_ms: float
    max_body_bytes: int
    max_pixels: int


class ClassShare(BaseModel):
    id: int
    name: str
    color: list[int]
    pixels: int
    share: float = Field(description="fraction of the image's pixels")


class Timings(BaseModel):
    """Milliseconds spent on this request, stage by stage (server side)."""

    receive: float = Field(description="reading the request body")
    decode: float = Field(description="PNG/JPEG bytes -> RGB pixels")
    preprocess: float = Field(description="normalisation and resize to the network input")
    queue: float = Field(description="waiting for the network (other requests, the batch window)")
    inference: float = Field(description="the network on this request's batch, plus upsampling and arg-max at the image size")
    encode: float = Field(description="the output image(s) as PNG/JPEG, or nothing for plain JSON")
    total: float


class SegmentResult(BaseModel):
    model: str
    image_size: list[int] = Field(description="[height, width] of the image, and of every returned map")
    input_size: list[int] = Field(description="[height, width] the network ran at")
    deployed: str
    batch_size: int = Field(description="images in the batch this request ran in")
    classes: list[ClassShare] = Field(description="classes present, largest first")
    timings_ms: Timings
    overlay: str | None = Field(None, description="data: URL of the overlay PNG, with embed=overlay")
    mask: str | None = Field(None, description="data: URL of the colour mask PNG, with embed=mask")
    labels: str | None = Field(None, description="data: URL of the label-map PNG (class ids), with embed=labels")


class Sample(BaseModel):
    id: int
    url: str
    size: list[int]


class SampleList(BaseModel):
    samples: list[Sample]
    note: str
