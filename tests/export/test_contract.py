"""The metadata contract: what aesipe-export writes, parse_metadata reads back; anything else is refused."""
from __future__ import annotations

import json

import pytest

from aesipe.contract import SCHEMA_VERSION, InputFormat, MetadataError, build_metadata, parse_metadata


def _meta(**changes):
    args = dict(model_kind="pseudo_labeller", classes=["background", "cat", "dog"],
                palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0]], input_format=InputFormat(size_divisor=32),
                output={"kind": "scores", "names": ["scores", "labels"]},
                inputs=[{"name": "image"}, {"name": "tags"}], aesipe_version="0.1.0", torch_version="2.14.1",
                pamr={"num_iter": 10, "dilations": [1, 2]}, background_scale=0.8, opset=20)
    args.update(changes)
    return build_metadata(**args)


def test_round_trip_keeps_every_field():
    meta = _meta()
    assert all(isinstance(v, str) for v in meta.values())
    info = parse_metadata(meta)
    assert info.classes == ("background", "cat", "dog") and info.num_classes == 2 and info.needs_tags
    assert info.palette[1] == (128, 0, 0)
    assert info.input_format.size_divisor == 32 and info.input_format.normalised_in_graph
    assert info.input_format.mean == pytest.approx((0.485, 0.456, 0.406))
    assert info.pamr == {"num_iter": 10, "dilations": [1, 2]}
    assert info.background_scale == 0.8 and info.opset == 20 and info.schema_version == SCHEMA_VERSION
    assert info.output["kind"] == "scores" and info.custom_ops == ()


def test_files_not_made_by_aesipe_export_are_refused():
    with pytest.raises(MetadataError, match="not made by aesipe-export"):
        parse_metadata({"classes": "[]"}, source="x.onnx")


def test_newer_schema_asks_for_an_upgrade():
    meta = {**_meta(), "schema_version": str(SCHEMA_VERSION + 1)}
    with pytest.raises(MetadataError, match="newer .* upgrade aesipe"):
        parse_metadata(meta)


@pytest.mark.parametrize("key,value,message", [
    ("classes", "not json", "not valid JSON"),
    ("classes", json.dumps(["background"]), "at least one class"),
    ("palette", json.dumps([[1, 2]]), "palette"),
    ("output", json.dumps({"kind": "banana"}), "output kind"),
    ("model_kind", "detector", "model_kind"),
])
def test_malformed_values_fail_with_the_key_named(key, value, message):
    with pytest.raises(MetadataError, match=message):
        parse_metadata({**_meta(), key: value})


def test_missing_required_key_is_named():
    meta = _meta()
    del meta["input_format"]
    with pytest.raises(MetadataError, match="lacks input_format"):
        parse_metadata(meta)
