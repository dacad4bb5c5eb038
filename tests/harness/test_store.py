"""The results store: fresh folders, no earlier run overwritten, JSON written whole."""

from __future__ import annotations

import json

import pytest

from healthz.harness.store import StoreError, machine, new_folder, refuse_taken, write_json


def test_new_folders_never_reuse_one(tmp_path):
    first = new_folder(tmp_path)
    first.mkdir()
    second = new_folder(tmp_path)
    assert second != first and second.name.startswith(first.name) and not second.exists()


def test_a_folder_with_an_earlier_run_s_results_is_refused(tmp_path):
    folder = tmp_path / "run"
    refuse_taken(folder, "results.json")
    assert not folder.exists(), "checking creates nothing"
    folder.mkdir()
    write_json(folder / "results.json", {"results": []})
    with pytest.raises(StoreError, match="already holds results.json from an earlier run"):
        refuse_taken(folder, "results.json")
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="not a folder"):
        refuse_taken(tmp_path / "file", "results.json")


def test_json_is_replaced_whole_and_odd_values_are_strings(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"a": 1})
    write_json(path, {"path": tmp_path, "b": [1, 2]})
    assert json.loads(path.read_text()) == {"path": str(tmp_path), "b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_the_machine_is_described_once_for_every_result():
    described = machine()
    assert described["cores"] == described["cpus"] >= 1
    assert {"host", "cpu", "memory_gib", "platform", "kernel", "python", "loadavg"} <= set(described)
