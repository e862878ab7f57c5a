"""The annotation studio's web server: a JSON API over one workspace, and the static page.

    GET  /                                  the studio (static/index.html, app.js, style.css)
    GET  /api/classes                       [{id, name, color}] and the ignore label (id 255)
    GET  /api/candidates?scores=false       {interpreter, candidates: [{id, done, score}]}; score is the
                                            interpreter's uncertainty score: computed for every candidate
                                            with scores=true, else given where already known
    GET  /api/candidates/{id}/image         the candidate image (PNG)
    GET  /api/candidates/{id}/mask          the saved annotation, else the interpreter's prediction, else
                                            404; ?format=png (palette PNG, the default) or ?format=raw;
                                            header X-Mask-Source: annotation | prediction
    PUT  /api/candidates/{id}/mask          save; body application/octet-stream: H*W uint8 class ids,
                                            row-major, H x W the candidate image's size (255 = ignore)
    GET  /api/candidates/{id}/uncertainty   the interpreter's uncertainty as an RGBA PNG heat map: red to
                                            yellow to white at the image's most uncertain pixel, clear
                                            where the members agree
    POST /api/candidates/{id}/wand          the feature magic wand; body {x, y, threshold}: the connected
                                            region of pixels whose hypercolumns have cosine similarity
                                            >= threshold to pixel (x, y)'s, as H*W bytes (1 = in the region,
                                            0 = not), row-major; headers X-Mask-Width, X-Mask-Height
    GET  /api/candidates/{id}/clusters      the candidate's part clusters (the part model of `datasetgan
                                            discover`, nearest-upsampled to the image): H*W little-endian
                                            uint16 cluster ids, row-major; headers X-Clusters (k),
                                            X-Mask-Width, X-Mask-Height; 404 without a part model
    GET  /api/parts/mapping                 {k, mapping: {cluster: class name | "ignore"}} (404 without a model)
    PUT  /api/parts/mapping                 body {mapping: {cluster: name}}: replaces the mapping (the classes
                                            of parts in all images); answers as GET
    POST /api/train                         train the interpreter in the background (202; 409 if running)
    GET  /api/train                         {state: idle | running | done | error, message}

Errors are 4xx with a JSON `detail`. Every id goes through `Workspace.check_id`; a mask body is
refused (413) as soon as it exceeds the candidate's H*W bytes, then checked before it is written.
"""

import contextlib
import io
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal, Sequence
from urllib.parse import urlsplit

import numpy as np
import torch
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from datasetgan.annotation import candidate_size
from datasetgan.annotate.assist import Predictions, TrainingJob
from datasetgan.annotate.parts import AutoParts
from datasetgan.annotate.pyramids import FeatureCache
from datasetgan.annotate.store import AnnotationStore
from datasetgan.annotate.wand import check_click
from datasetgan.discovery import PartDiscovery
from datasetgan.errors import DatasetGANError
from datasetgan.formats.masks import palette_bytes
from datasetgan.labels import IGNORE, IGNORE_COLOR, check_class_ids
from datasetgan.pipeline import Pipeline
from datasetgan.viz import heatmap
from datasetgan.workspace import CANDIDATE_ID, Workspace

STATIC_DIR = Path(__file__).with_name("static")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
NO_STORE = {"Cache-Control": "no-store"}  # masks change under the same URL


def create_app(workspace: Workspace, device: str | torch.device = "auto",
               allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The studio for `workspace`; `allowed_hosts` (Host header names) blocks DNS-rebinding pages."""
    pipeline = Pipeline(workspace, device)  # one generator for the process; training swaps the interpreter
    predictions = Predictions(pipeline)
    app = FastAPI(title="datasetgan annotation studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(DatasetGANError, _user_error)
    app.middleware("http")(_request_guard(allowed_hosts))
    features = FeatureCache(pipeline)  # the candidates' pyramids, shared by the wand and the auto-parts
    app.include_router(_candidate_routes(workspace, AnnotationStore(workspace), predictions), prefix="/api")
    app.include_router(_assist_routes(workspace, features, AutoParts(workspace, features)), prefix="/api")
    app.include_router(_interpreter_routes(TrainingJob(pipeline, predictions)), prefix="/api")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", lambda: FileResponse(STATIC_DIR / "index.html"), include_in_schema=False)
    return app


def serve(workspace: Workspace, host: str = "127.0.0.1", port: int = 8765,
          device: str | torch.device = "auto") -> None:
    """Run the studio until Ctrl+C; any host but loopback gets a warning (there is no login)."""
    loopback = host in LOOPBACK_HOSTS
    if not loopback:
        print(f"warning: the studio has no authentication: anyone who can reach {host}:{port} can read and "
              f"change the annotations in {workspace.root}", file=sys.stderr)
    app = create_app(workspace, device, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    shown = f"[{host}]" if ":" in host else host
    print(f"datasetgan studio for {workspace.root}: http://{shown}:{port}/  (Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextlib.contextmanager
def serve_in_background(workspace: Workspace, device: str | torch.device = "cpu", timeout: float = 60
                        ) -> Iterator[str]:
    """The studio on a free loopback port, in a thread, for as long as the block runs: its URL.

    For programs that drive the studio in a browser (the tests, `bench/annotation_effort.py`,
    `docs/screenshots.py`).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(workspace, device=device, allowed_hosts=["127.0.0.1"])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise DatasetGANError(f"the studio did not start on 127.0.0.1:{port} within {timeout:g} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ---- routes ------------------------------------------------------------------------------


def _candidate_id(workspace: Workspace) -> object:
    """The path parameter `cid`, checked: a well-formed id that is not there is 404, anything else 400."""

    def checked_id(cid: str) -> str:
        try:
            return workspace.check_id(cid)
        except DatasetGANError as exc:
            raise HTTPException(404 if CANDIDATE_ID.match(cid) else 400, str(exc)) from exc

    return Annotated[str, Depends(checked_id)]


def _candidate_routes(workspace: Workspace, store: AnnotationStore, predictions: Predictions) -> APIRouter:
    router = APIRouter()
    CandidateId = _candidate_id(workspace)

    @router.get("/classes")
    def classes() -> dict:
        listed = [{"id": i, "name": c.name, "color": list(c.color)} for i, c in enumerate(workspace.config.classes)]
        return {"classes": listed, "ignore": {"id": IGNORE, "name": "ignore", "color": list(IGNORE_COLOR)}}

    @router.get("/candidates")
    def candidates(scores: bool = False) -> dict:
        ids, done = workspace.candidate_ids(), set(workspace.annotated_ids())
        interpreter = predictions.available()
        if scores and interpreter:
            known = {cid: p.score for cid, p in predictions.get(ids).items()}
        else:
            known = predictions.cached_scores()
        listed = [{"id": cid, "done": cid in done, "score": known.get(cid)} for cid in ids]
        return {"interpreter": interpreter, "candidates": listed}

    @router.get("/candidates/{cid}/image")
    def image(cid: CandidateId) -> FileResponse:
        return FileResponse(workspace.candidate_image(cid), media_type="image/png")

    @router.get("/candidates/{cid}/mask")
    def mask(cid: CandidateId, fmt: Literal["png", "raw"] = Query("png", alias="format")) -> Response:
        saved = store.load(cid)
        if saved is not None:
            return _mask_response(saved, "annotation", fmt, workspace)
        if predictions.available():
            return _mask_response(predictions.get([cid])[cid].mask, "prediction", fmt, workspace)
        raise HTTPException(404, f"candidate {cid} has no annotation yet and there is no interpreter to "
                                 "predict one: paint it from scratch")

    @router.put("/candidates/{cid}/mask")
    async def save_mask(cid: CandidateId, request: Request) -> dict:
        media_type = request.headers.get("content-type", "").split(";")[0].strip()
        if media_type != "application/octet-stream":
            raise HTTPException(415, f"send the mask as application/octet-stream (H*W uint8 class ids, "
                                     f"row-major), not {media_type or 'no content type'}")
        height, width = candidate_size(workspace, cid)
        body = await _read_body(request, limit=height * width)
        changed = await run_in_threadpool(store.save, cid, _parse_mask(body, height, width, workspace.num_classes))
        return {"id": cid, "changed": changed, "versions_kept": len(store.history(cid))}

    @router.get("/candidates/{cid}/uncertainty")
    def uncertainty(cid: CandidateId) -> Response:
        if not predictions.available():
            raise HTTPException(404, "no interpreter yet: train one (Train button or `datasetgan train`) first")
        heat = _uncertainty_image(predictions.get([cid])[cid].uncertainty)
        return Response(_png(heat), media_type="image/png", headers=NO_STORE)

    return router


class WandClick(BaseModel):
    x: int
    y: int
    threshold: float


class PartMapping(BaseModel):
    mapping: dict[str, str]  # cluster id (JSON keys are strings) -> class name or "ignore"


def _assist_routes(workspace: Workspace, features: FeatureCache, parts: AutoParts) -> APIRouter:
    router = APIRouter()
    CandidateId = _candidate_id(workspace)

    def part_model() -> PartDiscovery:
        try:
            return parts.model()
        except DatasetGANError as exc:  # no model (yet): nothing to show, as for the uncertainty without interpreter
            raise HTTPException(404, str(exc)) from exc

    PartModel = Annotated[PartDiscovery, Depends(part_model)]

    @router.post("/candidates/{cid}/wand")
    def wand(cid: CandidateId, click: WandClick) -> Response:
        check_click(candidate_size(workspace, cid), click.y, click.x, click.threshold)  # before any synthesis
        with features.open(cid) as candidate:
            region = candidate.similarity.region(click.y, click.x, click.threshold)
        return _raw_response(region.astype(np.uint8))

    @router.get("/candidates/{cid}/clusters")
    def clusters(cid: CandidateId, model: PartModel) -> Response:
        return _raw_response(parts.cluster_map(cid, model).astype("<u2"), {"X-Clusters": str(model.k)})

    @router.get("/parts/mapping")
    def mapping(model: PartModel) -> dict:
        return {"k": model.k, "mapping": parts.mapping(model)}

    @router.put("/parts/mapping")
    def set_mapping(body: PartMapping, model: PartModel) -> dict:
        return {"k": model.k, "mapping": parts.set_mapping(model, body.mapping)}

    return router


def _interpreter_routes(training: TrainingJob) -> APIRouter:
    router = APIRouter()

    @router.post("/train", status_code=202)
    def train() -> dict:
        if not training.start():
            raise HTTPException(409, "the interpreter is already training: wait until it is done")
        return training.status()

    @router.get("/train")
    def train_status() -> dict:
        return training.status()

    return router


# ---- helpers -----------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    too_large = HTTPException(413, f"body larger than {limit} bytes (one byte per pixel of the candidate image)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _parse_mask(body: bytes, height: int, width: int, num_classes: int) -> np.ndarray:
    if len(body) != height * width:
        raise HTTPException(400, f"mask has {len(body)} bytes but the image is {width}x{height}: send "
                                 f"{height * width} bytes, one uint8 class id per pixel, row-major")
    mask = np.frombuffer(body, np.uint8).reshape(height, width)
    try:
        check_class_ids(mask, num_classes, "mask")
    except DatasetGANError as exc:
        raise HTTPException(422, str(exc)) from exc
    return mask


def _raw_response(values: np.ndarray, headers: dict[str, str] | None = None) -> Response:
    """A per-pixel array `[H, W]` as its raw bytes, row-major, with its size in the headers."""
    height, width = values.shape
    return Response(np.ascontiguousarray(values).tobytes(), media_type="application/octet-stream",
                    headers={**NO_STORE, "X-Mask-Width": str(width), "X-Mask-Height": str(height), **(headers or {})})


def _mask_response(mask: np.ndarray, source: str, fmt: str, workspace: Workspace) -> Response:
    if fmt == "raw":
        return _raw_response(mask.astype(np.uint8), {"X-Mask-Source": source})
    height, width = mask.shape
    headers = {**NO_STORE, "X-Mask-Source": source, "X-Mask-Width": str(width), "X-Mask-Height": str(height)}
    image = Image.fromarray(np.ascontiguousarray(mask, np.uint8))
    image.putpalette(palette_bytes([c.color for c in workspace.config.classes]))
    return Response(_png(image), media_type="image/png", headers=headers)


def _uncertainty_image(uncertainty: np.ndarray) -> Image.Image:
    """The heat map of `datasetgan.viz`, scaled to the image's most uncertain pixel (where to look
    in this image; the list's score says how uncertain the image is), clear where members agree."""
    top = max(float(uncertainty.max()), 1e-6)
    alpha = (np.sqrt(np.clip(uncertainty / top, 0, 1)) * 255).round().astype(np.uint8)  # sqrt: some doubt shows
    return Image.fromarray(np.dstack([heatmap(uncertainty, vmax=top), alpha]))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def _user_error(request: Request, exc: DatasetGANError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


def _request_guard(allowed_hosts: Sequence[str] | None):
    """Refuse requests that other web pages make through the user's browser.

    A Host outside `allowed_hosts` is a DNS-rebinding page; a write whose Origin (the page
    behind it) is not the studio itself is a cross-site request: neither may read, save or train.
    """

    async def guard(request: Request, call_next) -> Response:
        host, origin = request.headers.get("host", ""), request.headers.get("origin")
        if allowed_hosts and urlsplit(f"//{host}").hostname not in allowed_hosts:
            return JSONResponse({"detail": f"host {host!r} is not served: open the studio at the address "
                                           f"`datasetgan annotate` printed"}, status_code=400)
        if request.method not in SAFE_METHODS and origin and urlsplit(origin).netloc != host:
            return JSONResponse({"detail": f"cross-origin request from {origin} refused"}, status_code=403)
        return await call_next(request)

    return guard
