"""The export metadata is validated by construction: every key declared in ``aesipe.contract.METADATA_FIELDS``
with its spec, every spec's violations derived from the spec itself and refused in one ``MetadataError`` line.

The valid files are made by the real exporter's metadata builder (``aesipe.export.api._metadata``), so a key
the exporter starts writing without declaring it fails here, and a declared key no valid file exercises does
too (nothing can be declared without being mutated).
"""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from aesipe import contract
from aesipe.config import RunConfig
from aesipe.contract import METADATA_CHECKS, METADATA_FIELDS, SCHEMA_VERSION, InputFormat, MetadataError, build_metadata, parse_metadata
from aesipe.contract_strings import Json, key_paths, value_paths

CLASSES = ["background", "cat", "dog"]


def _exported(what: str, fmt: str, **kwargs) -> dict[str, str]:
    """What aesipe-export writes for a run with CLASSES (the exporter's own metadata builder)."""
    from aesipe.export import api
    from aesipe.models.pseudo_maps import CamSettings

    loaded = SimpleNamespace(class_names=list(CLASSES), palette=None, what=what, cfg=kwargs.pop("cfg", RunConfig()))
    test_time = CamSettings((1.0, 0.5), True, "fused") if what == "pseudo_labeller" else None
    return api._metadata(loaded, test_time, kwargs.pop("half", False), 20 if fmt == "onnx" else None, **kwargs)


def _edit(meta: dict[str, str], key: str, change) -> dict[str, str]:
    value = json.loads(meta[key])
    change(value)
    return {**meta, key: json.dumps(value)}


def valid_files() -> dict[str, dict[str, str]]:
    from aesipe.export.quantize import QuantisationCheck

    segmenter = _exported("segmenter", "onnx")
    int8 = {**segmenter, "precision": "int8", "quantization": QuantisationCheck(8, 0.991, 0.52, 0.51).as_metadata()}
    pseudo = _exported("pseudo_labeller", "torchscript", half=True, custom_ops=("aesipe::pamr",),
                       op_library="/home/me/.cache/aesipe/ops/libaesipe_ops.so")
    # An aesipe 0.1 pseudo-labeller (no test_time, "fuse" described) and a fixed-size graph of a third party.
    legacy = _edit(pseudo, "output", lambda o: (o.pop("test_time"), o.update(fuse="sum, max-normalise, argmax")))
    legacy = _edit(legacy, "pamr", lambda p: p.update(then="maps resized to the input size, bilinear"))
    fixed = _edit(segmenter, "input_format", lambda f: f.update(fixed_size=[512, 512], size_divisor=None,
                                                                normalised_in_graph=False))
    # An ONNX pseudo-labeller of a run whose calibration chose the label CRF, with the zero-map output.
    crf_run = dataclasses.replace(RunConfig(), cam=dataclasses.replace(RunConfig().cam, crf=True))
    calibrated = _exported("pseudo_labeller", "onnx", cfg=crf_run, fallback_output=True,
                           source={"checkpoint_sha256": "0" * 64, "verified": True})
    return {"segmenter": segmenter, "int8": int8, "pseudo_labeller": pseudo, "legacy": legacy, "fixed": fixed,
            "calibrated": calibrated}


VALID = valid_files()


def _refused(meta: dict[str, str]) -> str | None:
    """The one-line message when ``meta`` is refused, None when it is accepted."""
    try:
        parse_metadata(meta, source="m.onnx")
    except MetadataError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("m.onnx"), message
        return message
    return None


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_valid_file_is_read_back(name):
    info = parse_metadata(VALID[name], strict=name in ("segmenter", "pseudo_labeller", "int8", "calibrated"))
    assert info.classes == tuple(CLASSES) and info.num_classes == 2


def test_every_key_written_is_declared_and_every_declared_key_is_exercised():
    declared = {path for key, member in METADATA_FIELDS.items() for path in key_paths(member.spec, key)}
    present = set()
    for meta in VALID.values():
        for key, value in meta.items():
            decoded = json.loads(value) if isinstance(METADATA_FIELDS[key].spec, Json) and value else value
            present |= set(value_paths(decoded, key))
    assert present - declared == set(), "written but not declared in METADATA_FIELDS"
    assert declared - present == set(), "declared but no valid file here holds it: add it to valid_files()"


def _violations():
    for name, meta in VALID.items():
        for key, member in METADATA_FIELDS.items():
            if key in meta:
                for bad, why in member.spec.violations(meta[key]):
                    yield name, key, bad, why


def test_every_spec_derives_violations():
    counts = {key: 0 for key in METADATA_FIELDS}
    for _, key, _, _ in _violations():
        counts[key] += 1
    assert all(counts.values()), counts


@pytest.mark.parametrize("key", sorted(METADATA_FIELDS))
def test_every_violation_of_every_key_is_refused_in_one_line_naming_the_key(key):
    accepted, checked = [], 0
    for name, field, bad, why in _violations():
        if field != key:
            continue
        checked += 1
        message = _refused({**VALID[name], key: bad})
        if message is None:
            accepted.append(f"{name}: {why}: {bad[:80]!r}")
        elif key != "producer" and f"metadata {key}" not in message and key not in message:
            accepted.append(f"{name}: {why}: message does not name {key}: {message}")
    assert checked and not accepted, "\n".join(accepted)


@pytest.mark.parametrize("check", METADATA_CHECKS, ids=lambda c: c.name)
def test_every_rule_between_keys_is_enforced(check):
    assert _refused(VALID["pseudo_labeller"]) is None
    message = _refused(check.breaking(dict(VALID["pseudo_labeller"])))
    assert message is not None and "metadata" in message


# ---- the cases the issue names, one by one ---------------------------------------------------------------
SEG = VALID["segmenter"]


@pytest.mark.parametrize("key, change, words", [
    ("input_format", lambda f: f.update(scale="nan"), "input_format.scale must be a number"),
    ("input_format", lambda f: f.update(scale=0), "input_format.scale"),
    ("input_format", lambda f: f.update(std=[0.2, 0.0, 0.2]), "input_format.std[1]"),
    ("input_format", lambda f: f.update(mean=[0.4, 0.4]), "input_format.mean must hold 3 items"),
    ("input_format", lambda f: f.update(size_divisor=-7), "input_format.size_divisor must lie in 1..1024"),
    ("input_format", lambda f: f.update(size_divisor=0), "input_format.size_divisor"),
    ("input_format", lambda f: f.update(size_divisor=16.5), "input_format.size_divisor must be an integer"),
    ("input_format", lambda f: f.update(fixed_size=[0, 0]), "input_format.fixed_size[0] must lie in 1..8192"),
    ("input_format", lambda f: f.update(fixed_size=[512]), "input_format.fixed_size must hold 2 items"),
    ("input_format", lambda f: f.update(layout="NHWC"), "input_format.layout must be one of NCHW"),
    ("input_format", lambda f: f.update(color="BGR"), "input_format.color"),
    ("input_format", lambda f: f.update(dtype="uint8"), "input_format.dtype"),
    ("palette", lambda p: p[1].__setitem__(0, 300), "palette[1][0] must lie in 0..255"),
    ("palette", lambda p: p[1].__setitem__(0, -1), "palette[1][0]"),
    ("palette", lambda p: p.pop(), "palette has 2 colours for 3 classes"),
    ("classes", lambda c: c.append("cat"), "classes[3] repeats 'cat'"),
    ("classes", lambda c: c.append("bird\nforged:255,255,255::"), "classes[3] contains the control"),
    ("classes", lambda c: c.append(""), "classes[3] must not be empty"),
    ("classes", lambda c: c.extend(f"c{i}" for i in range(298)), "classes must hold 2 to 255 items, got 301"),
    ("output", lambda o: o.update(names=["scores"]), "output.names must hold 2 to 3 items"),
    ("output", lambda o: o.update(names="scores,labels"), "output.names must be a JSON list"),
    ("output", lambda o: o.update(kind="banana"), "output.kind must be one of"),
    ("inputs", lambda i: i[0].update(shape="NCHW"), "inputs[0].shape must be a JSON list"),
    ("inputs", lambda i: i.clear(), "inputs must hold 1 to 2 items"),
])
def test_the_named_malformed_values(key, change, words):
    message = _refused(_edit(SEG, key, change))
    assert message is not None and words in message, message


@pytest.mark.parametrize("key, value, words", [
    ("background_scale", "abc", "background_scale must be a number"),
    ("background_scale", "nan", "background_scale must be a finite number"),
    ("background_scale", "0", "background_scale"),
    ("opset", "twenty", "opset must be a whole number"),
    ("precision", "bfloat8", "precision must be one of float32, float16, int8"),
    ("custom_ops", json.dumps(["evil::system"]), "custom_ops[0] must be one of aesipe::pamr"),
    ("custom_ops", "aesipe::pamr", "custom_ops is not valid JSON"),
    ("model_kind", "detector", "model_kind must be one of"),
    ("classes", "not json", "classes is not valid JSON"),
    ("schema_version", "one", "schema_version must be a whole number"),
])
def test_the_named_malformed_strings(key, value, words):
    message = _refused({**SEG, key: value})
    assert message is not None and words in message, message


def test_a_pseudo_labellers_test_time_is_checked():
    pseudo = VALID["pseudo_labeller"]
    for change, words in [(lambda o: o["test_time"].update(scales=[1.0, 0.0]), "test_time.scales[1]"),
                          (lambda o: o["test_time"].update(scales=["1"]), "test_time.scales[0] must be a number"),
                          (lambda o: o["test_time"].update(flip="yes"), "test_time.flip must be true or false"),
                          (lambda o: o["test_time"].update(pamr="always"), "test_time.pamr must be one of")]:
        message = _refused(_edit(pseudo, "output", change))
        assert message is not None and words in message, message
    assert "inputs: tags must be [batch, 2]" in _refused(_edit(pseudo, "inputs", lambda i: i[1]["shape"].__setitem__(1, 5)))


# ---- what the reader does besides --------------------------------------------------------------------------
def test_files_not_made_by_aesipe_export_are_refused():
    with pytest.raises(MetadataError, match="not made by aesipe-export"):
        parse_metadata({"classes": "[]"}, source="x.onnx")


def test_newer_schema_asks_for_an_upgrade():
    with pytest.raises(MetadataError, match="newer .* upgrade aesipe"):
        parse_metadata({**SEG, "schema_version": str(SCHEMA_VERSION + 1)})


def test_missing_required_key_is_named():
    meta = dict(SEG)
    del meta["input_format"]
    with pytest.raises(MetadataError, match="lacks input_format"):
        parse_metadata(meta)


def test_keys_of_other_tools_are_ignored_but_aesipe_never_writes_undeclared_ones():
    assert parse_metadata({**SEG, "author": "someone"}).classes == tuple(CLASSES)
    with pytest.raises(MetadataError, match="'author' is not declared"):
        parse_metadata({**SEG, "author": "someone"}, strict=True)


def test_build_metadata_refuses_what_a_reader_would_refuse():
    args = dict(model_kind="segmenter", classes=CLASSES, palette=[[0, 0, 0], [1, 1, 1], [2, 2, 2]],
                input_format=InputFormat(), output={"kind": "logits", "names": ["scores", "labels"]},
                inputs=[{"name": "image", "dtype": "float32", "shape": ["batch", 3, "h", "w"]}],
                aesipe_version="0.2.0", torch_version="2.14.1")
    assert parse_metadata(build_metadata(**args)).input_format == InputFormat()
    with pytest.raises(MetadataError, match=r"input_format.scale"):
        build_metadata(**{**args, "input_format": InputFormat(scale=float("nan"))})
    with pytest.raises(MetadataError, match=r"classes\[1\] contains a space"):
        build_metadata(**{**args, "classes": ["background", "cat dog", "x"]})


def test_the_parsed_values_are_the_written_ones():
    info = parse_metadata(VALID["pseudo_labeller"])
    assert info.needs_tags and info.precision == "float16" and info.custom_ops == ("aesipe::pamr",)
    assert info.output["test_time"]["scales"] == [1.0, 0.5] and info.pamr["mode"] == "fused"
    assert info.input_format.size_divisor is None and info.input_format.mean == pytest.approx((0.485, 0.456, 0.406))
    assert parse_metadata(VALID["int8"]).quantization["label_agreement"] == 0.991
    assert parse_metadata(VALID["fixed"]).input_format.fixed_size == (512, 512)
    assert parse_metadata(SEG).opset == 20 and parse_metadata(SEG).background_scale == 1.0


@pytest.mark.parametrize("name, problem", [("cat", None), ("cat dog", "space"), ("a:b", "':'"), ("a,b", "','"),
                                           ("", "empty"), ("tab\t", "control"), ("x" * 101, "characters long")])
def test_one_class_name_rule(name, problem):
    found = contract.class_name_problem(name)
    assert (found is None) if problem is None else (problem in found), found
