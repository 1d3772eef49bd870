"""The kept models of promote/rollback (afrd.daemon.models_kept) on a real folder: the last
``[models] keep`` per product, the rest's folders pruned, nothing else in the folder touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afrd.config.lifecycle import ModelsConfig
from afrd.daemon.models_kept import KeptModels, kept_entry


def _bundle(root: Path, name: str) -> Path:
    d = root / name
    (d / "sub").mkdir(parents=True)
    (d / "bundle.json").write_text(json.dumps({"name": name}))
    (d / "sub" / "model.onnx").write_bytes(name.encode())
    return d


@pytest.mark.timeout(30)
def test_keep_trims_each_products_stack_and_prune_deletes_only_unnamed_kept_folders(tmp_path):
    kept = KeptModels(ModelsConfig(dir=tmp_path / "models", keep=2))
    src = tmp_path / "src"
    copies = []
    for i in range(4):
        sha = f"{i:x}" * 64
        copies.append(kept.copy(_bundle(src, f"m{i}"), f"m{i}", sha))
        model = {"name": f"m{i}", "sha256": sha}
        kept.push("a", kept_entry(copies[-1], str(src / f"m{i}"), model, 0.5 + i))
    kept.push("b", kept_entry(copies[0], str(src / "m0"), {"name": "m0", "sha256": "0" * 64}, 9))
    # a copy is the same files (hard links or copies), under <name>-<sha256[:12]>
    assert copies[1].name == "m1-" + "1" * 12
    assert (copies[1] / "sub" / "model.onnx").read_bytes() == b"m1"
    # product a keeps its last two, the next to roll back to last; b its own one
    assert [(k.name, k.threshold) for k in kept.stack("a")] == [("m2", 2.5), ("m3", 3.5)]
    assert [k.name for k in kept.stack("b")] == ["m0"]
    # the engineer's own things in the folder, and a leftover of an interrupted copy
    (kept.dir / "notes").mkdir()
    (kept.dir / "history.json.bak").write_text("x")
    (kept.dir / ".tmp-abc").mkdir()
    gone = kept.prune(in_use={copies[1]})  # m1 still runs somewhere: kept
    assert sorted(p.name for p in gone) == [".tmp-abc"]  # m0: b's stack names it
    kept.pop("b")
    gone = kept.prune(in_use=set())
    assert sorted(p.name for p in gone) == [copies[0].name, copies[1].name]
    left = sorted(p.name for p in kept.dir.iterdir())
    assert left == sorted([copies[2].name, copies[3].name, "history.json", "history.json.bak",
                           "notes"])  # fmt: skip
