"""Atomic writes keep the old file on failure; summaries are right."""

import pandas as pd
import pytest

from kgl_utils.results import atomic_write, summarize, to_markdown


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
