"""Streams: on a CPU, aesipe-label runs several batches at once, each on its own ONNX Runtime session, and the
masks are those of one stream."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from aesipe.infer import LabelSettings, label_folder, local_engine, session
from aesipe.infer.labeler import Labeler
from aesipe.utils.labelpng import load_label_png


@pytest.mark.parametrize("cores,threads,streams,expected", [
    (1, None, None, (1, None)),   # one core: one stream, ONNX Runtime's own thread choice
    (2, None, None, (2, 1)),      # the default on two cores: two one-thread sessions
    (8, None, None, (2, 4)),      # the cores shared out
    (8, 3, None, (2, 3)),         # --threads is per stream
    (8, None, 1, (1, None)),      # one stream keeps ONNX Runtime's default (every core)
    (3, None, 4, (4, 1)),         # more streams than cores: at least one thread each
])
def test_streams_and_threads_rule(monkeypatch, cores, threads, streams, expected):
    monkeypatch.setattr(session, "usable_cores", lambda: cores)
    assert session.cpu_streams(threads, streams) == expected
    # a pseudo-labeller's call fills the cores alone: one stream unless asked for more
    assert session.cpu_streams(threads, streams, pseudo_labeller=True) == (expected if streams else (1, threads))


def test_aesipe_label_picks_two_streams_for_a_segmenter_one_for_a_pseudo_labeller(seg_onnx, pl_onnx, monkeypatch):
    labeler_for = local_engine.open_labeler  # the Labeler aesipe-label's local engine opens
    monkeypatch.setattr(session, "usable_cores", lambda: 2)
    segmenter, pseudo = labeler_for(seg_onnx, LabelSettings(device="cpu")), labeler_for(pl_onnx, LabelSettings(device="cpu"))
    assert (segmenter.streams, segmenter.model.threads, len(segmenter.model.sessions)) == (2, 1, 2)
    assert (pseudo.streams, pseudo.model.threads, len(pseudo.model.sessions)) == (1, None, 1)
    assert labeler_for(pl_onnx, LabelSettings(device="cpu", streams=2)).streams == 2


def _gate_calls(run, both_in: threading.Barrier, seen: list):
    """``run`` whose first two calls wait at ``both_in``: a BrokenBarrierError unless they are inside together."""
    lock = threading.Lock()

    def gated(*args, **kwargs):
        with lock:
            seen.append(threading.get_ident())
            first_two = len(seen) <= 2
        if first_two:
            both_in.wait()
        return run(*args, **kwargs)
    return gated


def test_a_labeler_with_two_streams_runs_two_calls_at_once(seg_onnx):
    labeler = Labeler(seg_onnx, device="cpu", streams=2)
    assert labeler.streams == 2 and len(labeler.model.sessions) == 2
    assert Labeler(seg_onnx, device="cpu").streams == 1  # the embeddable API's default: one caller, every core
    both_in, seen = threading.Barrier(2, timeout=20), []
    for onnx_session in labeler.model.sessions:  # each session's own run, so the two calls need two sessions
        onnx_session.run = _gate_calls(onnx_session.run, both_in, seen)
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    results = [None, None]
    callers = [threading.Thread(target=lambda i=i: results.__setitem__(i, labeler.label(rgb))) for i in range(2)]
    [t.start() for t in callers]
    [t.join() for t in callers]
    assert len(set(seen)) == 2 and not both_in.broken
    assert results[0] is not None and np.array_equal(results[0], results[1])


def test_folder_masks_are_the_same_with_one_or_two_streams(seg_onnx, photo_folder, tmp_path, monkeypatch):
    masks = {}
    for streams in (1, 2):
        out = tmp_path / f"streams{streams}"
        if streams == 2:  # the first two model calls must be in the model together, or they fail
            monkeypatch.setattr(session.OrtBackend, "run",
                                _gate_calls(session.OrtBackend.run, threading.Barrier(2, timeout=20), []))
        # batch 1: five images are five model calls, so two streams have work for both
        label_folder(seg_onnx, photo_folder, out, batch_size=1, streams=streams, device="cpu", progress=False)
        report = json.loads((out / "report.json").read_text())
        assert report["summary"]["options"]["streams"] == streams
        assert all(r["status"] == "ok" for r in report["images"].values()), report["images"]
        masks[streams] = {p.name: load_label_png(p) for p in (out / "masks").rglob("*.png")}
    assert len(masks[1]) == 5 and masks[1].keys() == masks[2].keys()
    assert all(np.array_equal(masks[1][name], masks[2][name]) for name in masks[1])


def test_streams_a_model_cannot_use_are_said_once(seg_torchscript, seg_onnx, photo_folder, tmp_path):
    lines = []
    label_folder(seg_torchscript, photo_folder, tmp_path / "out", streams=2, device="cpu", progress=False,
                 log=lines.append)
    assert "warning: --streams 2: a TorchScript file runs one model call at a time" in lines
    with pytest.raises(Exception, match="streams must be at least 1"):
        Labeler(seg_onnx, streams=0)
