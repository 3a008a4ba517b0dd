"""``python -m benchmarks.w3`` end to end at a tiny size: it validates, times and writes its
section (to a temporary RESULTS.md here)."""
from benchmarks import results, w3


def test_w3_script_runs_validates_and_records(tmp_path, monkeypatch, capsys):
    out = tmp_path / "RESULTS.md"
    monkeypatch.setattr(results, "RESULTS", out)
    assert w3.main(["--events", "20000", "--runs", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(": valid;") == 4
    text = out.read_text()
    assert "<!-- w3:start -->" in text and "| W3, parallelism 2 |" in text and "(target >= 0.5)" in text
