"""rtseg serve: the app in-process (API, cards, outputs, batching, limits) and a real server process (the acceptance
check against rtseg predict, bad uploads with /health after each and no temporary file left, slow and vanishing
clients, SIGTERM draining). Loopback only."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="rtseg serve needs the serve extra: pip install 'rtseg[serve]'")
httpx = pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette asks for httpx2 over httpx; the tests use httpx, which it still takes
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from rtseg.cli import main  # noqa: E402
from rtseg.data.image_io import DatasetError, ImageTooLargeError, decode_image  # noqa: E402
from rtseg.errors import OptionError  # noqa: E402
from rtseg.inference import overlay  # noqa: E402
from rtseg.serve.app import ServeSettings, create_app  # noqa: E402
from rtseg.tasks._serve import ServeOptions, load_served, parse_model_spec  # noqa: E402
from serve_process import ServerProcess, png_bytes, raw_request, scene  # noqa: E402

SIZE = (96, 128)  # a small network input keeps the in-process tests fast


def bomb_png(side: int = 30000) -> bytes:
    """A valid PNG header declaring side x side pixels with a few bytes of data: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * (side + 1), 9)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def fplnet():
    return load_served(parse_model_spec("fplnet@camvid"), ServeOptions(backend="torch", size=SIZE))


@pytest.fixture(scope="module")
def client(fplnet):
    with TestClient(create_app([fplnet], ServeSettings(max_body_bytes=2_000_000, max_pixels=1_000_000))) as c:
        yield c


def _png(response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response.content)))


# -- the app in-process -----------------------------------------------------------------------------------
def test_health_models_and_docs(client, fplnet):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == ["fplnet"]
    card = client.get("/models").json()["models"][0]
    assert [c["name"] for c in card["classes"]] == list(fplnet.card.classes.names)
    assert [tuple(c["color"]) for c in card["classes"]] == [tuple(c) for c in fplnet.card.classes.palette]
    assert card["input_size"] == list(SIZE) and card["input_size_source"] == "--size"
    assert card["metrics"][0]["dataset"] == "camvid" and card["metrics"][0]["miou"] == pytest.approx(0.6625)
    assert card["backend"] == "torch" and "eager" in card["deployed"]
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/segment/{model}"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/png" in body
    assert client.get("/docs").status_code == 200


def test_labels_mask_overlay_and_json_agree(client, fplnet):
    rgb, _ = scene(0, (120, 160))
    data = png_bytes(rgb)
    labels = _png(client.post("/v1/segment/fplnet?output=labels", files={"image": ("a.png", data, "image/png")}))
    assert labels.shape == rgb.shape[:2] and labels.dtype == np.uint8
    # an image of another size than the network's is resized to it, as rtseg predict --size does
    from rtseg.inference import predict

    net = fplnet.segmenter
    assert np.array_equal(labels, net.labels(net.run(net.prepare(rgb, SIZE)), rgb.shape[:2]))
    assert np.array_equal(labels, predict(_eager(), rgb, size=SIZE))
    palette = fplnet.card.class_info.palette
    overlay_png = _png(client.post("/v1/segment/fplnet?output=overlay&alpha=0.3", content=data, headers={"Content-Type": "image/png"}))
    assert np.array_equal(overlay_png, overlay(rgb, labels, palette, 0.3))
    mask = client.post("/v1/segment/fplnet?output=mask&format=jpeg", files={"image": ("a.png", data)})
    assert mask.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(mask.content)).size == (160, 120)
    assert "inference;dur=" in mask.headers["server-timing"]
    result = client.post("/v1/segment/fplnet?output=json&embed=labels&embed=overlay", files={"image": ("a.png", data)}).json()
    assert {c["id"] for c in result["classes"]} == set(np.unique(labels).tolist())
    assert sum(c["share"] for c in result["classes"]) == pytest.approx(1.0, abs=1e-4)
    assert set(result["timings_ms"]) == {"receive", "decode", "preprocess", "queue", "inference", "encode", "total"}
    assert all(v >= 0 for v in result["timings_ms"].values()) and result["timings_ms"]["inference"] > 0
    embedded = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["labels"].split(",", 1)[1]))))
    assert np.array_equal(embedded, labels) and result["overlay"].startswith("data:image/png;base64,")
    assert result["image_size"] == [120, 160] and result["input_size"] == list(SIZE)


_EAGER = {}


def _eager():
    if "net" not in _EAGER:
        import rtseg

        _EAGER["net"] = rtseg.create_model("fplnet", weights="camvid").eval()
    return _EAGER["net"]


@pytest.mark.parametrize("case", ["not_an_image", "truncated", "empty", "bomb", "too_large", "unknown_model", "wrong_type",
                                  "no_image_field", "bad_output", "labels_as_jpeg", "path_as_model"])
def test_bad_requests_get_a_4xx_json_error_naming_the_problem(client, case):
    good = png_bytes(scene(0, (60, 80))[0])
    url, kw = "/v1/segment/fplnet", {}
    expect = {"not_an_image": (400, "not_an_image", "not a PNG or JPEG"), "truncated": (400, "truncated_image", "truncated"),
              "empty": (400, "empty_body", "0 bytes"), "bomb": (413, "image_too_large", "900,000,000 pixels"),
              "too_large": (413, "body_too_large", "2,000,000"), "unknown_model": (404, "unknown_model", "'nope'"),
              "wrong_type": (415, "unsupported_media_type", "text/plain"), "no_image_field": (400, "missing_field", "'picture'"),
              "bad_output": (422, "invalid_parameter", "'output'"), "labels_as_jpeg": (422, "invalid_parameter", "always PNG"),
              "path_as_model": (404, "unknown_model", "fplnet.safetensors")}[case]
    if case == "not_an_image":
        kw = {"files": {"image": ("a.png", b"GIF89a not really an image")}}
    elif case == "truncated":
        kw = {"content": good[: len(good) // 2], "headers": {"Content-Type": "image/png"}}
    elif case == "empty":
        kw = {"files": {"image": ("a.png", b"")}}
    elif case == "bomb":
        kw = {"files": {"image": ("bomb.png", bomb_png())}}
    elif case == "too_large":
        kw = {"content": b"\x89PNG" + bytes(2_000_000), "headers": {"Content-Type": "image/png"}}
    elif case == "unknown_model":
        url, kw = "/v1/segment/nope", {"files": {"image": ("a.png", good)}}
    elif case == "wrong_type":
        kw = {"content": good, "headers": {"Content-Type": "text/plain"}}
    elif case == "no_image_field":
        kw = {"files": {"picture": ("a.png", good)}}
    elif case == "bad_output":
        url, kw = url + "?output=everything", {"files": {"image": ("a.png", good)}}
    elif case == "labels_as_jpeg":
        url, kw = url + "?output=labels&format=jpeg", {"files": {"image": ("a.png", good)}}
    else:  # a weights file's path as the model name: only what --model named at start is served
        from urllib.parse import quote

        from rtseg.pretrained import get_pretrained

        url = "/v1/segment/" + quote(str(get_pretrained("fplnet", "camvid").path()), safe="")
        kw = {"files": {"image": ("a.png", good)}}
    r = client.post(url, **kw)
    status, code, text = expect
    body = r.json()
    if case == "path_as_model":  # the client may send the slashes decoded: then no route matches at all
        code = body["code"] if body["code"] == "not_found" else code
    assert (r.status_code, body["status"], body["code"]) == (status, status, code), body
    assert text in body["error"], body
    assert client.get("/health").status_code == 200


def test_decode_checks_the_header_before_decoding():
    t = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        decode_image(bomb_png(), max_pixels=10**9)  # above Pillow's own limit too
    with pytest.raises(ImageTooLargeError, match="5,000 pixels"):
        decode_image(png_bytes(np.zeros((100, 100, 3), np.uint8)), max_pixels=5000)
    assert time.perf_counter() - t < 2.0  # nothing of the 900 MP was decoded
    with pytest.raises(DatasetError, match="not a PNG or JPEG"):
        decode_image(b"BM\x00\x00 a bitmap is not accepted")
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 6, 3), 7, np.uint8)).save(buf, format="JPEG")
    assert decode_image(buf.getvalue()).shape == (8, 6, 3)


def test_page_and_samples(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and "/v1/segment/" in page.text
    samples = client.get("/samples").json()["samples"]
    assert len(samples) >= 2
    im = Image.open(io.BytesIO(client.get(samples[1]["url"]).content))
    assert im.format == "PNG" and im.size == (480, 360)
    assert client.get("/samples/99.png").json()["code"] == "invalid_parameter"
    assert client.get("/no/such/page").json()["code"] == "not_found"


def test_model_specs_are_checked_before_anything_loads(tmp_path):
    assert parse_model_spec("fplnet@camvid").name == "fplnet"
    assert parse_model_spec("street=erfnet@camvid").name == "street"
    with pytest.raises(OptionError, match="names no weights.*fplnet@camvid"):
        parse_model_spec("fplnet")
    with pytest.raises(OptionError, match="not a registered model"):
        parse_model_spec("nosuchnet@camvid")
    with pytest.raises(OptionError, match="neither a weights tag of fplnet \\(camvid[,)]"):
        parse_model_spec("fplnet@citycsapes")
    with pytest.raises(OptionError, match="no such file"):
        parse_model_spec(str(tmp_path / "missing.pt"))
    with pytest.raises(OptionError, match="served name"):
        parse_model_spec("a b=fplnet@camvid")


def test_serve_command_errors_are_one_line(capsys):
    assert main(["serve", "--model", "fplnet", "--port", "0"]) == 2
    assert "rtseg serve: error: --model 'fplnet' names no weights" in capsys.readouterr().err
    assert main(["serve", "--model", "fplnet@camvid", "--model", "fplnet@camvid"]) == 2
    assert "two networks would be served as fplnet" in capsys.readouterr().err
    assert main(["serve", "--max-body-mb", "0"]) == 2
    assert main(["serve", "--backend", "torch", "--precision", "bf16"]) == 2
    from rtseg.cli.parser import build_parser

    args = build_parser({k: None for k in ("models", "train", "recipes", "eval", "bench", "demo", "export", "export-weights", "predict",
                                            "serve", "select")}).parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.batch_window_ms == 0  # this machine only, no batching, unless asked


def test_dynamic_batching_groups_concurrent_requests(fplnet):
    rgb = scene(1, SIZE)[0]
    data = png_bytes(rgb)
    alone = fplnet.segmenter(rgb)

    async def burst(app, n):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await asyncio.gather(*[c.post("/v1/segment/fplnet?output=json&embed=labels", files={"image": ("a.png", data)})
                                              for _ in range(n)])

    batched = asyncio.run(burst(create_app([fplnet], ServeSettings(batch_window_ms=200, max_batch=4)), 4))
    sizes = [r.json()["batch_size"] for r in batched]
    assert max(sizes) > 1, sizes
    for r in batched:
        labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["labels"].split(",", 1)[1]))))
        assert (labels == alone).mean() > 0.999
    busy = asyncio.run(burst(create_app([fplnet], ServeSettings(max_queue=0)), 1))[0]
    assert busy.status_code == 503 and busy.json()["code"] == "busy" and busy.headers["retry-after"] == "1"


def test_auto_backend_reports_the_optimized_path():
    served = load_served(parse_model_spec("fplnet@camvid"), ServeOptions(backend="auto", compile="off", size=(64, 96)))
    record = served.record()
    assert record["backend"] == "torch" and "rtseg.optimize" in record["deployed"] and "BatchNorm folded" in record["deployed"]
    rgb = scene(2, (64, 96))[0]
    assert (served.segmenter(rgb) == _eager_labels(rgb, (64, 96))).mean() > 0.999


def _eager_labels(rgb, size):
    from rtseg.inference import predict

    return predict(_eager(), rgb, size=size)


# -- a real server process --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(["--model", "fplnet@camvid", "--backend", "torch", "--threads", "1", "--read-timeout", "2",
                          "--max-body-mb", "1"], tmp_path_factory.mktemp("serve"))
    yield proc
    proc.stop()


def test_acceptance_labels_equal_rtseg_predict(server, tmp_path):
    rgb, _ = scene(3)
    frame = tmp_path / "frame.png"
    Image.fromarray(rgb).save(frame)
    with open(frame, "rb") as f:  # curl -F image=@frame.png 'localhost:8000/v1/segment/fplnet?output=labels'
        r = httpx.post(f"{server.url}/v1/segment/fplnet?output=labels", files={"image": ("frame.png", f, "image/png")}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    served = np.asarray(Image.open(io.BytesIO(r.content)))
    assert main(["predict", "fplnet", "--weights", "camvid", str(frame), "--out", str(tmp_path / "pred"), "--save-labels", "--quiet"]) == 0
    predicted = np.asarray(Image.open(tmp_path / "pred" / "frame_labels.png"))
    assert served.shape == (360, 480) and np.array_equal(served, predicted)
    assert len(np.unique(served)) >= 3  # a real scene, not a constant map


def test_bad_uploads_to_the_process_leave_it_serving_and_no_temp_file(server):
    before = server.temp_files()
    good = png_bytes(scene(0, (60, 80))[0])
    cases = [
        (dict(files={"image": ("a.png", b"not an image at all")}), 400),
        (dict(content=good[:200], headers={"Content-Type": "image/png"}), 400),
        (dict(content=b"", headers={"Content-Type": "image/png"}), 400),
        (dict(files={"image": ("bomb.png", bomb_png())}), 413),
        (dict(content=bytes(1_500_000), headers={"Content-Type": "image/png"}), 413),
        (dict(content=good, headers={"Content-Type": "application/json"}), 415),
    ]
    for kw, status in cases:
        r = httpx.post(f"{server.url}/v1/segment/fplnet", timeout=30, **kw)
        assert r.status_code == status and r.json()["status"] == status and r.json()["error"]
        assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
        assert server.temp_files() == before
    r = httpx.post(f"{server.url}/v1/segment/nope", files={"image": ("a.png", good)}, timeout=30)
    assert r.status_code == 404 and "fplnet" in r.json()["error"]
    # a chunked body without Content-Length is cut off at the limit as it arrives
    r = httpx.post(f"{server.url}/v1/segment/fplnet", content=iter([bytes(400_000)] * 4), headers={"Content-Type": "image/png"}, timeout=30)
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"
    assert "Traceback" not in server.log()


def _ok_request(server) -> float:
    t = time.perf_counter()
    r = httpx.post(f"{server.url}/v1/segment/fplnet?output=json", files={"image": ("a.png", png_bytes(scene(4, (90, 120))[0]))}, timeout=30)
    assert r.status_code == 200, r.text
    return time.perf_counter() - t


def test_slow_and_vanishing_clients_do_not_stall_others(server):
    head = (f"POST /v1/segment/fplnet HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n").encode()
    answers = {}
    slow = threading.Thread(target=lambda: answers.update(slow=raw_request(server.port, head, [b"\x89PNG"] + [b"x"] * 30, pause=0.1)))
    stalled = threading.Thread(target=lambda: answers.update(stalled=raw_request(server.port, head, [b"\x89PNG\r\n"])))
    slow.start()
    stalled.start()
    time.sleep(0.3)
    for _ in range(3):  # while one client trickles and one has stopped sending, the others are answered at once
        assert _ok_request(server) < 10
    # a client that goes away mid-upload
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(head + bytes(5000))
    slow.join(20)
    stalled.join(20)
    for key in ("slow", "stalled"):
        status_line, _, rest = answers[key].partition(b"\r\n")
        assert b" 408 " in status_line, answers[key][:300]
        assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["code"] == "read_timeout"
    assert _ok_request(server) < 10
    assert "Traceback" not in server.log()


def test_sigterm_drains_requests_in_flight_and_exits_0(tmp_path):
    proc = ServerProcess(["--model", "fplnet@camvid", "--backend", "torch", "--threads", "1"], tmp_path)
    try:
        body = png_bytes(scene(5, (120, 160))[0])
        boundary = "rtsegtestboundary"
        multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                     f"Content-Type: image/png\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
        head = (f"POST /v1/segment/fplnet?output=labels HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(multipart)}\r\n\r\n").encode()
        answer = {}
        with socket.create_connection(("127.0.0.1", proc.port), timeout=60) as s:
            s.sendall(head + multipart[:1000])  # the request is in flight: half its body sent
            time.sleep(0.5)
            proc.proc.send_signal(__import__("signal").SIGTERM)
            time.sleep(0.5)
            s.sendall(multipart[1000:])
            chunks = []
            while (data := s.recv(65536)):
                chunks.append(data)
            answer["raw"] = b"".join(chunks)
        assert answer["raw"].startswith(b"HTTP/1.1 200"), answer["raw"][:300]
        png = answer["raw"].split(b"\r\n\r\n", 1)[1]
        assert np.asarray(Image.open(io.BytesIO(png))).shape == (120, 160)
        assert proc.proc.wait(60) == 0
        with pytest.raises(httpx.ConnectError):  # it no longer listens
            httpx.get(f"{proc.url}/health", timeout=5)
        assert "Traceback" not in proc.log()
    finally:
        proc.stop()
