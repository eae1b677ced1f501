"""A real Label Studio server (its own environment, SQLite, started here and stopped after): create a project
with our labelling config, import our tasks, accept one prediction and edit another through the API, export,
and bring the export back with ``aesipe-train corrections``.

Marked ``integration``: ``make test-integration`` runs it (it needs ``.venv-labelstudio``, ``make
labelstudio-venv``, and a minute or two for the server to start); the ordinary suite leaves it out.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytestmark = pytest.mark.integration
TOKEN = "aesipe0test0token0aesipe0test0token00000"


class Server:
    def __init__(self, url: str):
        self.url = url

    def call(self, method: str, path: str, body=None):
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            data = response.read()
        try:
            return json.loads(data) if data else None
        except ValueError:  # an image, not JSON
            return data


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def labelstudio(tmp_path_factory, review_data, labelstudio_venv):
    program = labelstudio_venv / "bin" / "label-studio"
    if not program.is_file():
        pytest.skip(f"no Label Studio server in {labelstudio_venv} (make labelstudio-venv)")
    home = tmp_path_factory.mktemp("labelstudio")
    port = _free_port()
    env = {**os.environ, "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false",
           "DJANGO_DB": "sqlite", "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(review_data), "HOME": str(home)}
    log = open(home / "server.log", "w")
    process = subprocess.Popen(
        [str(program), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(home / "data"), "--username", "reviewer@example.com", "--password", "aesipe-test-1",
         "--user-token", TOKEN], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                pytest.fail(f"Label Studio exited ({process.returncode}): {(home / 'server.log').read_text()[-2000:]}")
            try:
                server.call("GET", "/api/projects")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail("Label Studio did not answer within 10 minutes")
                time.sleep(2)
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and the workers it started, nothing else
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_tasks_go_through_label_studio_and_come_back_as_corrections(labelstudio, review_data, review_run, tmp_path):
    from aesipe.corrections import CorrectionStore
    from aesipe.data import open_dataset
    from aesipe.infer.labelstudio import TASKS_FILE, TaskEntry, brush_results, labelling_config, write_tasks
    from aesipe.train.corrections import import_corrections

    ds = open_dataset(review_run.data, "train")
    ids = ds.ids[:3]
    guesses = {i: np.where(ds.load_mask(i) == 255, 0, ds.load_mask(i)) for i in ids}
    guesses[ids[1]][:, :8] = 0  # the model missed a strip; the reviewer will paint it back
    entries = [TaskEntry(f"JPEGImages/{ds.image_path(i).name}", guesses[i], 0.5 + 0.1 * k) for k, i in enumerate(ids)]
    write_tasks(tmp_path, entries, ds.class_names, ds.palette, "tiny-segmenter@0123abcd", None)

    project = labelstudio.call("POST", "/api/projects", {"title": "aesipe review",
                                                         "label_config": labelling_config(ds.class_names, ds.palette)})
    labelstudio.call("POST", "/api/storages/localfiles", {"project": project["id"], "title": "images",
                                                          "path": str(review_data / "JPEGImages"), "use_blob_urls": False})
    imported = labelstudio.call("POST", f"/api/projects/{project['id']}/import",
                                json.loads((tmp_path / TASKS_FILE).read_text()))
    assert imported["task_count"] == 3 and imported["prediction_count"] == 3
    tasks = labelstudio.call("GET", f"/api/tasks?project={project['id']}")["tasks"]
    by_image = {t["data"]["aesipe_image"]: labelstudio.call("GET", f"/api/tasks/{t['id']}") for t in tasks}
    first, second = (by_image[e.name] for e in entries[:2])
    prediction = first["predictions"][0]
    assert prediction["model_version"] == "tiny-segmenter@0123abcd" and prediction["score"] == pytest.approx(0.5)
    # The image reference Label Studio resolves (local-file serving) is the labelled image.
    served = labelstudio.call("GET", first["data"]["image"])
    assert served == ds.image_path(ids[0]).read_bytes()

    # Reviewer: accepts the first prediction as it is, repaints the second, does not open the third.
    labelstudio.call("POST", f"/api/tasks/{first['id']}/annotations", {"result": prediction["result"]})
    edited = np.where(ds.load_mask(ids[1]) == 255, 0, ds.load_mask(ids[1]))
    labelstudio.call("POST", f"/api/tasks/{second['id']}/annotations",
                     {"result": brush_results(edited, ds.class_names)})
    export = labelstudio.call("GET", f"/api/projects/{project['id']}/export?exportType=JSON")
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))

    report = import_corrections(review_run, path, echo=lambda line: None)
    assert sorted(report.result.added) == sorted(ids[:2])
    store = CorrectionStore.of_run(review_run.run_dir)
    assert np.array_equal(store.load_mask(ids[0]), guesses[ids[0]])  # accepted: the model's mask, pixel-exact
    assert np.array_equal(store.load_mask(ids[1]), edited)  # edited: the reviewer's
    assert ids[2] not in store
