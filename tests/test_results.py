"""Result tables grow atomically, one row per run, never duplicated; summaries are right."""

import pandas as pd
import pytest

from kgl_utils.results import ResultTable, atomic_write, summarize, to_markdown


def test_result_table_adds_and_refuses_duplicates(tmp_path):
    table = ResultTable(tmp_path / "t.csv", key=["method", "n_a", "fold"], params_hash="h1")
    table.add({"method": "kgl", "n_a": 0, "fold": None, "ap": 0.5, "params_hash": "h1"})
    table.add({"method": "kgl", "n_a": 5, "fold": None, "ap": 0.7, "params_hash": "h1"})
    # Read back from the CSV, a missing fold and an integer N_a still match the row's key.
    assert table.has({"method": "kgl", "n_a": 5, "fold": None})
    assert not table.has({"method": "kgl", "n_a": 5, "fold": 1})
    with pytest.raises(ValueError, match="already exists"):
        table.add({"method": "kgl", "n_a": 5, "fold": None, "ap": 0.9, "params_hash": "h1"})
    frame = table.read()
    assert len(frame) == 2 and frame["ap"].tolist() == [0.5, 0.7]


def test_result_table_belongs_to_one_params_hash(tmp_path):
    old = ResultTable(tmp_path / "t.csv", key=["method"], params_hash="old")
    old.add({"method": "kgl", "ap": 0.5, "params_hash": "old"})
    new = ResultTable(tmp_path / "t.csv", key=["method"], params_hash="new")
    assert not new.has({"method": "kgl"}) and new.read().empty
    with pytest.raises(ValueError, match="params 'old' added"):
        new.add({"method": "x", "params_hash": "old"})
    new.add({"method": "kgl", "ap": 0.9, "params_hash": "new"})
    assert pd.read_csv(tmp_path / "t.csv")["params_hash"].tolist() == ["new"]


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_summary_mean_and_std_on_known_frame():
    frame = pd.DataFrame({"method": ["a", "a", "a", "b"], "ap": [0.5, 0.7, 0.9, 0.4]})
    out = summarize(frame, ["method"], ["ap"], decimals=2)
    assert out["runs"].tolist() == [3, 1]
    assert out["ap"].tolist() == ["0.70 ± 0.20", "0.40"]
    text = to_markdown(out, "AP")
    assert text.startswith("## AP") and "0.70 ± 0.20" in text and "_ap_mean" not in text
