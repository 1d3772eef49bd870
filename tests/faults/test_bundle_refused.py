"""Issue 12, cases 1 and 6 (bundle side): a bundle.json whose fields have the wrong shape, a
threshold that is not a finite score, an ONNX file that does not load, or a graph that takes
another input size: `afrd config check` and `afrd run` exit 2 with one line naming the field."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import refused

from afrd.runtime.bundle import sha256_file
from afrd.sim.launch import write_config


def _files_as_list(m: dict) -> None:
    m["files"] = list(m["files"])


def _lights_as_string(m: dict) -> None:
    m["lights"] = "ring_all"


def _threshold(value: object):
    def edit(m: dict) -> None:
        m["threshold"]["value"] = value

    return edit


def _size(value: object):
    def edit(m: dict) -> None:
        m["input"]["size"] = value

    return edit


# name -> (edit of bundle.json, strings one stderr line must hold)
CASES = {
    "files-as-list": (_files_as_list, ["field 'files'", '{"<file name>": {"sha256"']),
    "lights-as-string": (_lights_as_string, ["field 'lights'", "non-empty list"]),
    "threshold-high": (_threshold("high"), ["threshold.value", "finite number"]),
    "threshold-nan": (_threshold(float("nan")), ["threshold.value", "finite number"]),
    "threshold-huge-negative": (_threshold(-3e6), ["threshold.value", "[-1e+06, 1e+06]"]),
    "size-not-pixels": (_size("big"), ["input.size", "[height, width]"]),
    "size-not-the-graphs": (_size([32, 32]), ["input.size [32, 32]", "fails on"]),
}


@pytest.fixture()
def copy(bundle, tmp_path):
    d = tmp_path / "bundle"
    shutil.copytree(bundle, d)
    return d


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_bundle_json_is_refused(name, copy, tmp_path):
    edit, expect = CASES[name]
    js = copy / "bundle.json"
    meta = json.loads(js.read_text())
    edit(meta)
    js.write_text(json.dumps(meta))
    refused(write_config(tmp_path, copy), "bundle", *expect)


def test_onnx_that_does_not_load_is_refused(copy, tmp_path):
    (copy / "model.onnx").write_bytes(b"not a protobuf at all" * 10)
    js = copy / "bundle.json"
    meta = json.loads(js.read_text())
    meta["files"]["model.onnx"]["sha256"] = sha256_file(copy / "model.onnx")  # hashes match
    js.write_text(json.dumps(meta))
    refused(write_config(tmp_path, copy), "bundle", "engine onnxruntime cannot open it")
