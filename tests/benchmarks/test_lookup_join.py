"""``python -m benchmarks.lookup_join`` end to end at a tiny size: every engine's output is
validated against numpy's before anything is timed, for integer and string keys."""
import pytest

from benchmarks import lookup_join


@pytest.mark.parametrize("keys", [[], ["--string-keys"]])
def test_lookup_join_script_validates_and_times(keys, capsys):
    assert lookup_join.main(["--events", "20000", "--rows", "3000", "--runs", "1", *keys]) == 0
    out = capsys.readouterr().out
    assert "outputs valid" in out and "DuckDB (hash join, 2 threads)" in out and "1.00x" in out


def test_the_checksum_catches_a_wrong_join():
    events, users = lookup_join.make_data(1000, 100)
    good = lookup_join.duckdb_join(events, users, 1, False)
    lookup_join.validate("duckdb", lookup_join.checksum(good), lookup_join.expected(events, users))
    with pytest.raises(AssertionError, match="rows"):
        lookup_join.validate("short", lookup_join.checksum(good.slice(1)), lookup_join.expected(events, users))
