"""Reading an upload within limits, in memory: the body's size is bounded before and while it is read, its reading
is bounded in time, and a multipart body is parsed from memory (nothing is spooled to a temporary file)."""
from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

__all__ = ["Problem", "read_body", "image_bytes", "ACCEPTED_TYPES"]

RAW_TYPES = ("image/png", "image/jpeg", "application/octet-stream")
ACCEPTED_TYPES = ("multipart/form-data",) + RAW_TYPES


class Problem(Exception):
    """A request the server refuses: answered as ``ErrorBody`` JSON with ``status`` (4xx, or 503 when busy)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def media_type(request: Request) -> str:
    """The request's media type, checked against :data:`ACCEPTED_TYPES` before its body is read; none given is raw bytes."""
    value = request.headers.get("content-type", "")
    kind = value.split(";")[0].strip().lower()
    if kind and kind not in ACCEPTED_TYPES:
        raise Problem(415, "unsupported_media_type",
                      f"Content-Type {kind!r} is not accepted: send multipart/form-data with the image in field 'image' "
                      f"(curl -F image=@frame.png), or the image bytes alone as {', '.join(RAW_TYPES)} "
                      f"(curl --data-binary @frame.png -H 'Content-Type: image/png')")
    return kind


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, or a :class:`Problem`: 413 past ``max_bytes`` (from Content-Length before reading, else as it
    arrives), 408 when it takes longer than ``timeout_s`` to arrive (a slow or stalled client), 400 when the client
    goes away mid-upload."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise Problem(400, "bad_content_length", f"Content-Length {declared!r} is not a number of bytes") from None
        if n > max_bytes:
            raise Problem(413, "body_too_large", f"the request body is {n:,} bytes; this server takes at most {max_bytes:,} "
                                                 f"(--max-body-mb): send a smaller image")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(0.001, deadline - loop.time()))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise Problem(408, "read_timeout", f"the request body did not arrive within {timeout_s:g} s ({size:,} bytes came); "
                                               f"send it at once (--read-timeout)", {"Connection": "close"}) from None
        except ClientDisconnect:
            raise Problem(400, "client_disconnected", f"the client went away after {size:,} bytes of the body") from None
        size += len(chunk)
        if size > max_bytes:
            raise Problem(413, "body_too_large", f"the request body is over {max_bytes:,} bytes, this server's limit (--max-body-mb): "
                                                 f"send a smaller image", {"Connection": "close"})
        chunks.append(chunk)
    return b"".join(chunks)


def image_bytes(body: bytes, kind: str, content_type: str) -> bytes:
    """The image: the body itself for raw uploads, the field ``image`` of a multipart body (parsed in memory)."""
    if kind != "multipart/form-data":
        return body
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise Problem(400, "bad_multipart", "multipart/form-data without a boundary parameter in its Content-Type")
    parts: list[dict] = []
    state: dict = {}

    def on_part_begin():
        state.update(headers={}, field=b"", value=b"", data=[])

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"].decode("latin-1")
        state["field"], state["value"] = b"", b""

    def on_part_data(data, start, end):
        state["data"].append(data[start:end])

    def on_part_end():
        _, disposition = parse_options_header(state["headers"].get("content-disposition", ""))
        parts.append({"name": disposition.get(b"name", b"").decode("utf-8", "replace"), "data": b"".join(state["data"])})

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
                                        "on_header_end": on_header_end, "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own errors on malformed bodies
        raise Problem(400, "bad_multipart", f"the multipart body cannot be parsed: {exc}") from None
    images = [p for p in parts if p["name"] == "image"]
    if not images:
        names = ", ".join(repr(p["name"]) for p in parts) or "none"
        raise Problem(400, "missing_field", f"the multipart body has no field 'image' (its fields: {names}); "
                                            f"send the file as image (curl -F image=@frame.png)")
    return images[0]["data"]
