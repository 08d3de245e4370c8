"""The benchmark still runs end to end (a short smoke run; its figures are not judged here)."""

import shutil

import pytest

from bench import run as bench

from .postgres import SELECTED as ON_POSTGRESQL


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is installed by .ci/run")
def test_quick_benchmark_completes_and_counts_every_row(tmp_path):
    database = "postgresql" if ON_POSTGRESQL else "sqlite"  # the suite's own database
    runs = bench.main(["--quick", "--out", str(tmp_path / "bench.md"), "--databases", database])
    table = (tmp_path / "bench.md").read_text()
    assert "| proxy CPU per request" in table and "| 50 streams, 2 workers: errors" in table
    [results] = runs.values()
    # Correctness, not speed: every call was answered and accounted for.
    assert results["exact_failures"] == 0
    for sent_and_rows in (results["rows"]["exact"], results["rows"]["streams"]):
        assert sent_and_rows[0] == sent_and_rows[1]
    assert results["proxy_streams"]["errors"] == 0
    assert results["stream_usage_counted"] == results["rows"]["streams"][1]
