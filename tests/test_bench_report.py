"""The benchmark's pure helpers: bar checks, report tables, the wrk data files."""

from __future__ import annotations

from pathlib import Path

from bench.data import Organization, write_data_dir, write_patch_pool
from bench.report import Check, ProcessMemory, Result, bar_checks, results_table


def result(config: str, scenario: str, *, rps: float, p50: float, p99: float = 10) -> Result:
    return Result(config, scenario, 16, rps, p50, p50, p99, p99, requests=int(rps) * 5)


def verdicts(checks: list[Check]) -> dict[str, bool | None]:
    return {c.name: c.passed for c in checks}


def test_bar_checks_compare_the_right_runs() -> None:
    results = [
        result("bare", "bare_asyncpg", rps=1000, p50=1),
        result("pg1", "login", rps=10, p50=300, p99=400),
        result("pg1", "get_task", rps=400, p50=10),
        result("pg1", "get_task_small", rps=400, p50=16),
        result("pg1", "list_page1", rps=100, p50=20, p99=60),
        result("pg1", "list_page500", rps=50, p50=59),
        result("pg1", "list_cursor_deep", rps=100, p50=31),
        result("pg2", "get_task", rps=640, p50=10),
    ]
    memory = [ProcessMemory("pg1", 1, "main", 260, 240)]

    found = verdicts(bar_checks(results, memory, {}))

    assert not any("login" in name for name in found)  # login is exempt from the p99 bar
    assert found["p99 ≤ 50 ms: list_page1"] is False
    assert found["p99 ≤ 50 ms: get_task"] is True
    assert found["cursor deep page p50 ≤ 1.5x page 1 p50"] is False  # 31 / 20 > 1.5
    assert found["offset page 500 p50 ≤ 3x page 1 p50"] is True
    assert found["get task p50: small org within 1.5x of big org"] is False  # 16 / 10
    assert found["list page 1 p50: small org within 1.5x of big org"] is None  # not run
    assert found["get task rps ≥ 30% of bare asyncpg rps"] is True
    assert found["--workers 2 get task rps ≥ 1.6x 1 process"] is True
    assert found["RSS < 250 MB per process after the run"] is True  # final, not peak


def test_a_run_without_completed_requests_misses_and_shows_no_latency() -> None:
    empty = Result("pg1", "list_page500", 16, 0, 0, 0, 0, 0, requests=0)
    page1 = result("pg1", "list_page1", rps=100, p50=20)

    found = verdicts(bar_checks([empty, page1], [], {}))
    lines = results_table([empty], {}, {16: 1000.0}, {})

    assert found["offset page 500 p50 ≤ 3x page 1 p50"] is False
    assert found["p99 ≤ 50 ms: list_page500"] is False
    assert "| list_page500 | 16 | 0 | - | - | - | - | 0 | 0.000 |  |" in lines


def test_data_files_hold_one_record_per_line(tmp_path: Path) -> None:
    org = Organization(
        id="o1",
        slug="bench-big-01",
        members=[("u1", "a@x.com"), ("u2", "b@x.com")],
        projects=["p1"],
        tasks=[("p1", "t1"), ("p1", "t2")],
        tokens=["tok1", "tok2"],
        cursor="abc=",
    )

    write_data_dir(tmp_path, [org], seed=1)
    written = write_patch_pool(tmp_path, [(1, "p1", "t1"), (1, "p1", "t9")], {"t1": 3})

    assert (tmp_path / "tokens.txt").read_text() == "1 tok1\n1 tok2\n"
    assert (tmp_path / "tasks.txt").read_text() == "1 p1 t1\n1 p1 t2\n"
    assert (tmp_path / "cursors.txt").read_text() == "1 abc%3D\n"
    assert written == 1  # a task gone since it was sampled is left out
    assert (tmp_path / "patch.txt").read_text() == "1 p1 t1 3\n"
