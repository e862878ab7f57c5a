"""The annotation studio's HTTP API: good saves round-trip, bad requests change nothing on disk."""

import io
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient  # needs httpx, a dev extra
from PIL import Image

from conftest import make_workspace
from datasetgan.annotate.server import create_app
from datasetgan.formats.masks import load_mask, save_mask
from datasetgan.pipeline import Pipeline
from datasetgan.workspace import Workspace

SIZE = 32
CLASSES = "background,skin,hair"  # three classes: ids 0..2, 255 = ignore
TINY_INTERPRETER = {"members": 2, "max_epochs": 1, "min_epochs": 0, "hidden": [16, 8]}


def tiny_workspace(root: Path, n: int = 3) -> Workspace:
    return make_workspace(root, CLASSES, n, TINY_INTERPRETER, SIZE)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def halves(top: int, bottom: int) -> np.ndarray:
    mask = np.full((SIZE, SIZE), top, np.uint8)
    mask[SIZE // 2 :] = bottom
    return mask


GOOD_MASK = halves(0, 1).tobytes()
OUT_OF_RANGE = halves(0, 3).tobytes()  # class 3 does not exist (three classes)


def put_mask(client: TestClient, cid: str, body: bytes, content_type: str = "application/octet-stream"):
    return client.put(f"/api/candidates/{cid}/mask", content=body, headers={"Content-Type": content_type})


def wait_for_training(client: TestClient, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (status := client.get("/api/train").json())["state"] == "running":
        assert time.monotonic() < deadline, "training did not finish"
        time.sleep(0.1)
    return status


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return tiny_workspace(tmp_path)


@pytest.fixture
def client(workspace: Workspace):
    with TestClient(create_app(workspace, device="cpu")) as client:
        yield client


# ---- reading ---------------------------------------------------------------------------------


def test_lists_classes_and_candidates(client):
    classes = client.get("/api/classes").json()
    assert [c["name"] for c in classes["classes"]] == ["background", "skin", "hair"]
    assert classes["ignore"]["id"] == 255
    listed = client.get("/api/candidates").json()
    assert listed == {"interpreter": False, "candidates": [
        {"id": cid, "done": False, "score": None} for cid in ("000000", "000001", "000002")]}


def test_serves_the_candidate_image(client, workspace):
    response = client.get("/api/candidates/000001/image")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == workspace.candidate_image("000001").read_bytes()


def test_a_new_candidate_without_interpreter_has_no_mask(client):
    response = client.get("/api/candidates/000000/mask")
    assert response.status_code == 404
    assert "no annotation yet" in response.json()["detail"]
    assert client.get("/api/candidates/000000/uncertainty").status_code == 404


def test_the_page_is_served_and_fetches_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for name in ("index.html", "app.js", "style.css"):
        text = client.get(f"/static/{name}").text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


# ---- saving ----------------------------------------------------------------------------------


def test_save_round_trip_keeps_the_previous_version(client, workspace):
    first, second = halves(1, 2), halves(2, 255)
    saved = put_mask(client, "000000", first.tobytes())
    assert saved.status_code == 200 and saved.json()["changed"] is True
    assert np.array_equal(load_mask(workspace.annotation_path("000000")), first)

    raw = client.get("/api/candidates/000000/mask", params={"format": "raw"})
    assert raw.headers["x-mask-source"] == "annotation"
    assert np.array_equal(np.frombuffer(raw.content, np.uint8).reshape(SIZE, SIZE), first)
    png = Image.open(io.BytesIO(client.get("/api/candidates/000000/mask").content))
    assert png.mode == "P" and np.array_equal(np.asarray(png), first)

    assert put_mask(client, "000000", second.tobytes()).json() == {"id": "000000", "changed": True, "versions_kept": 1}
    assert np.array_equal(load_mask(workspace.annotation_path("000000")), second)
    (previous,) = (workspace.annotations_dir / ".history").glob("000000-*.png")
    assert np.array_equal(load_mask(previous), first)
    assert workspace.annotated_ids() == ["000000"]  # the history is not mistaken for annotations
    assert client.get("/api/candidates").json()["candidates"][0]["done"] is True


def test_saving_the_same_mask_again_writes_nothing(client, workspace):
    put_mask(client, "000001", halves(0, 1).tobytes())
    before = snapshot(workspace.root)
    assert put_mask(client, "000001", halves(0, 1).tobytes()).json()["changed"] is False
    assert snapshot(workspace.root) == before


def test_an_unreadable_annotation_is_kept_and_replaced(client, workspace):
    workspace.annotation_path("000001").write_bytes(b"not a png")
    assert put_mask(client, "000001", GOOD_MASK).json()["changed"] is True
    assert np.array_equal(load_mask(workspace.annotation_path("000001")), halves(0, 1))
    (kept,) = (workspace.annotations_dir / ".history").glob("000001-*.png")
    assert kept.read_bytes() == b"not a png"


def test_concurrent_saves_leave_one_whole_mask(workspace):
    """Two tabs saving at once: every write is whole, the last one wins, the other is in the history."""
    from concurrent.futures import ThreadPoolExecutor

    masks = [halves(a, b) for a, b in ((0, 1), (1, 2), (2, 0), (255, 1))]
    with TestClient(create_app(workspace, device="cpu")) as client, ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda m: put_mask(client, "000002", m.tobytes()).status_code, masks * 3))
    assert codes == [200] * 12
    versions = [load_mask(p) for p in (workspace.annotations_dir / ".history").glob("000002-*.png")]
    final = load_mask(workspace.annotation_path("000002"))
    assert any(np.array_equal(final, m) for m in masks)
    assert all(any(np.array_equal(v, m) for m in masks) for v in versions)
    assert not list(workspace.annotations_dir.glob(".*.tmp"))


# ---- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "body", "content_type", "status", "says"), [
    ("/api/candidates/999999/mask", GOOD_MASK, None, 404, "unknown candidate"),
    ("/api/candidates/12/mask", GOOD_MASK, None, 400, "invalid candidate id"),
    ("/api/candidates/..%2fdatasetgan.yaml/mask", GOOD_MASK, None, 404, ""),
    ("/api/candidates/%2e%2e%2fdatasetgan.yaml/mask", GOOD_MASK, None, 404, ""),
    ("/api/candidates/%2e%2e/mask", GOOD_MASK, None, 400, "invalid candidate id"),
    ("/api/candidates/000000%2f..%2f..%2fx/mask", GOOD_MASK, None, 404, ""),
    ("/api/candidates/000000.png/mask", GOOD_MASK, None, 400, "invalid candidate id"),
    ("/api/candidates/000000/mask", GOOD_MASK[:-SIZE], None, 400, "send 1024 bytes"),
    ("/api/candidates/000000/mask", OUT_OF_RANGE, None, 422, "class ids [3]"),
    ("/api/candidates/000000/mask", bytes([254]) * SIZE * SIZE, None, 422, "outside 0..2"),
    ("/api/candidates/000000/mask", GOOD_MASK + b"\0", None, 413, "larger than 1024 bytes"),
    ("/api/candidates/000000/mask", b"\0" * 10_000_000, None, 413, "larger than 1024 bytes"),
    ("/api/candidates/000000/mask", GOOD_MASK, "image/png", 415, "application/octet-stream"),
])
def test_bad_saves_are_refused_and_change_nothing(client, workspace, path, body, content_type, status, says):
    put_mask(client, "000001", GOOD_MASK)  # an existing annotation that must survive untouched
    before = snapshot(workspace.root)
    response = client.put(path, content=body, headers={"Content-Type": content_type or "application/octet-stream"})
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]
    assert snapshot(workspace.root) == before


def test_a_streamed_body_is_cut_off_at_the_limit(client, workspace):
    """Without Content-Length (chunked), the body is still refused once it passes H*W bytes."""
    before = snapshot(workspace.root)
    chunks = (b"\1" * 4096 for _ in range(1000))
    response = client.put("/api/candidates/000000/mask", content=chunks,
                          headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 413
    assert snapshot(workspace.root) == before


@pytest.mark.parametrize("path", ["/api/candidates/..%2f..%2fetc/image", "/api/candidates/%2e%2e/image",
                                  "/api/candidates/%2e%2e%2fdatasetgan.yaml/mask", "/api/candidates/x/uncertainty",
                                  "/static/..%2f..%2fserver.py", "/static/%2e%2e/server.py"])
def test_reads_outside_the_workspace_are_refused(client, path):
    response = client.get(path)
    assert 400 <= response.status_code < 500
    assert "from datasetgan" not in response.text and "generator:" not in response.text


def test_another_sites_page_cannot_save_or_train(client, workspace):
    before = snapshot(workspace.root)
    evil = {"Origin": "http://evil.example", "Content-Type": "application/octet-stream"}
    assert client.put("/api/candidates/000000/mask", content=GOOD_MASK, headers=evil).status_code == 403
    assert client.post("/api/train", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.get("/api/train").json()["state"] == "idle"
    assert snapshot(workspace.root) == before


def test_unknown_host_names_are_refused(workspace):
    """Bound to loopback, the studio answers only to loopback names (no DNS rebinding)."""
    with TestClient(create_app(workspace, allowed_hosts=["127.0.0.1", "localhost"]),
                    base_url="http://attacker.example:8765") as client:
        refused = client.get("/api/classes")
        assert refused.status_code == 400 and "is not served" in refused.json()["detail"]
    with TestClient(create_app(workspace, allowed_hosts=["127.0.0.1", "localhost"]),
                    base_url="http://127.0.0.1:8765") as client:
        assert client.get("/api/classes").status_code == 200


# ---- the interpreter -------------------------------------------------------------------------


def test_training_without_annotations_reports_the_error(client):
    assert client.post("/api/train").status_code == 202
    status = wait_for_training(client)
    assert status["state"] == "error" and "no annotations" in status["message"]


def test_train_now_then_pre_annotation(client, workspace):
    put_mask(client, "000000", halves(1, 2).tobytes())
    assert client.post("/api/train").json()["state"] == "running"
    second = client.post("/api/train")
    assert second.status_code == 409 and "already training" in second.json()["detail"]
    status = wait_for_training(client)
    assert status["state"] == "done", status
    assert (workspace.interpreter_dir / "config.json").is_file()
    assert not (workspace.root / ".interpreter-training").exists()

    expected = Pipeline(workspace, "cpu").label(["000001"])
    raw = client.get("/api/candidates/000001/mask", params={"format": "raw"})
    assert raw.headers["x-mask-source"] == "prediction"
    assert np.array_equal(np.frombuffer(raw.content, np.uint8).reshape(SIZE, SIZE), expected.mask[0].numpy())
    heat = Image.open(io.BytesIO(client.get("/api/candidates/000001/uncertainty").content))
    assert heat.size == (SIZE, SIZE) and heat.mode == "RGBA"

    listed = client.get("/api/candidates", params={"scores": True}).json()
    assert listed["interpreter"] is True
    scores = {c["id"]: c["score"] for c in listed["candidates"]}
    assert scores["000001"] == pytest.approx(float(expected.scores[0]))
    assert all(s is not None for s in scores.values())
    assert client.get("/api/candidates/000000/mask").headers["x-mask-source"] == "annotation"


def test_serve_binds_loopback_and_warns_on_other_hosts(workspace, monkeypatch, capsys):
    from datasetgan.annotate import server

    calls = []
    monkeypatch.setattr(server.uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    server.serve(workspace)
    assert calls[-1]["host"] == "127.0.0.1" and "no authentication" not in capsys.readouterr().err
    server.serve(workspace, host="0.0.0.0", port=9000)
    assert calls[-1] == {"host": "0.0.0.0", "port": 9000, "log_level": "warning"}
    assert "no authentication" in capsys.readouterr().err


def test_one_studio_process_builds_one_generator_and_swaps_only_the_interpreter(workspace, loads):
    save_mask(workspace.annotation_path("000002"), halves(0, 1), [c.color for c in workspace.label_classes])
    Pipeline(workspace, "cpu").train(progress=False)  # an interpreter on disk, as `datasetgan train` leaves it
    loads.clear()
    with TestClient(create_app(workspace, device="cpu")) as client:
        for cid in ("000000", "000001"):
            assert client.get(f"/api/candidates/{cid}/mask").headers["x-mask-source"] == "prediction"
            assert client.get(f"/api/candidates/{cid}/uncertainty").status_code == 200
        assert loads == {"generator": 1, "interpreter": 1}  # read once, then kept
        put_mask(client, "000000", halves(1, 2).tobytes())
        client.post("/api/train")
        assert wait_for_training(client)["state"] == "done"
        raw = client.get("/api/candidates/000001/mask", params={"format": "raw"})
        assert client.get("/api/candidates", params={"scores": True}).json()["interpreter"] is True
    # the trained interpreter is used as trained: the same labels as reading it back, never re-read
    assert loads == {"generator": 1, "interpreter": 1}
    expected = Pipeline(workspace, "cpu").label(["000001"]).mask[0].numpy()
    assert np.array_equal(np.frombuffer(raw.content, np.uint8).reshape(SIZE, SIZE), expected)


# ---- auto-parts --------------------------------------------------------------------------------


def test_part_routes_serve_the_cluster_map_and_keep_the_mapping(client, workspace):
    from datasetgan.discovery import PartDiscovery, discover, mapping_path

    for path in ("/api/candidates/000000/clusters", "/api/parts/mapping"):
        missing = client.get(path)
        assert missing.status_code == 404 and "datasetgan discover" in missing.json()["detail"]
    pipeline = Pipeline(workspace, "cpu")
    discover(pipeline, 3, samples=2, pixels_per_image=128, resolution=16, progress=False).save(workspace.parts_dir)
    model = PartDiscovery.load(workspace.parts_dir)

    response = client.get("/api/candidates/000001/clusters")
    assert response.headers["x-clusters"] == "3" and response.headers["x-mask-width"] == str(SIZE)
    served = np.frombuffer(response.content, "<u2").reshape(SIZE, SIZE)
    noise_ids = workspace.config.sampling.noise_ids(["000001"])
    pyramid = pipeline.generator.synthesize(workspace.ws_for(["000001"]), noise_ids)[1]
    cells = model.cluster_maps(pyramid)[0].numpy()  # 16 x 16: each cell a 2 x 2 block of the image
    assert np.array_equal(served, cells.repeat(2, axis=0).repeat(2, axis=1))

    assert client.get("/api/parts/mapping").json() == {"k": 3, "mapping": {"0": "ignore", "1": "ignore", "2": "ignore"}}
    saved = client.put("/api/parts/mapping", json={"mapping": {"2": "hair", "0": "ignore"}})
    assert saved.json() == {"k": 3, "mapping": {"0": "ignore", "1": "ignore", "2": "hair"}}
    before = mapping_path(workspace).read_bytes()
    for mapping, says in (({"3": "hair"}, "outside 0..2"), ({"1": "nose"}, "unknown class 'nose'")):
        refused = client.put("/api/parts/mapping", json={"mapping": mapping})
        assert refused.status_code == 400 and says in refused.json()["detail"]
    assert mapping_path(workspace).read_bytes() == before
    assert client.get("/api/parts/mapping").json()["mapping"]["2"] == "hair"
