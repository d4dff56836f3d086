"""The benchmark's pure helpers: bar checks, report tables, the wrk data files."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from bench.data import Organization, write_data_dir, write_patch_pool
from bench.pgcount import CountingProxy, Counts, FrontendParser, count_sql_statements, counts_of
from bench.report import (
    TENANTDB,
    TENANTDB_SHARED,
    Check,
    ProcessMemory,
    Provisioning,
    Result,
    StatementProbe,
    bar_checks,
    bar_section,
    cpu_per_request_ms,
    median_runs,
    percentile,
    provisioning_table,
    results_table,
    rounds_table,
    statements_table,
    tenantdb_checks,
    tenantdb_table,
)


def result(
    config: str,
    scenario: str,
    *,
    rps: float,
    p50: float,
    p99: float = 10,
    connections: int = 32,
    cpu_ms: float | None = None,
) -> Result:
    return Result(
        config, scenario, connections, rps, p50, p50, p99, p99, int(rps) * 5, cpu_ms=cpu_ms
    )


def probe(scenario: str, *, requests: int, statements: int, idle: int) -> StatementProbe:
    return StatementProbe("pg1", scenario, requests, 2.0, statements, statements, idle, idle)


def verdicts(checks: list[Check]) -> dict[str, bool | None]:
    return {c.name: c.passed for c in checks}


def one(found: dict[str, bool | None], *words: str) -> bool | None:
    """The verdict of the one check whose name holds every word."""
    names = [name for name in found if all(w in name for w in words)]
    assert len(names) == 1, names
    return found[names[0]]


def test_bar_checks_compare_the_right_runs() -> None:
    results = [
        result("bare", "bare_asyncpg", rps=1000, p50=1),
        result("bare", "bare_asyncpg", rps=500, p50=1, connections=10),
        result("pg1", "login", rps=10, p50=300, p99=900),
        result("pg1", "logins_alongside", rps=10, p50=300, p99=900),
        result("pg1", "get_task", rps=260, p50=10, p99=120, cpu_ms=1.3),
        result("pg1", "get_task", rps=100, p50=5, p99=40, connections=10),
        result("pg1", "get_task_small", rps=300, p50=9),  # +15 % rps, -10 % p50: within
        result("pg1", "list_page1", rps=140, p50=20, p99=350),  # 14 % of 1000: below 15 %
        result("pg1", "list_page1", rps=90, p50=20, p99=60, connections=10),
        result("pg1", "list_page1_small", rps=200, p50=14),  # +43 % rps: outside ±25 %
        result("pg1", "list_page500", rps=30, p50=59, connections=10),  # 2.95x page 1
        result("pg1", "create_task", rps=120, p50=30),  # exactly 12 %
        result("pg1", "search", rps=300, p50=49, connections=16),
        result("pg1", "search", rps=300, p50=80),  # not the 16-connection run
        result("pg1", "bulk_update", rps=119, p50=200),
        result("pg1", "get_during_logins", rps=80, p50=20, p99=101, connections=10),
        result("pg2", "get_task", rps=442, p50=10),  # 1.7x of 260
    ]
    memory = [ProcessMemory("pg1", 1, "main", 260, 240)]
    probes = [
        probe("get_task", requests=100, statements=230, idle=25),  # 2.05 → "2.0"
        probe("create_task", requests=100, statements=460, idle=10),  # 4.5
    ]

    checks = bar_checks(results, memory, probes, {})
    found = verdicts(checks)

    assert one(found, "get_task rps ≥ 25%") is True  # 26 %
    assert one(found, "list_page1 rps ≥ 15%") is False
    assert one(found, "create_task rps ≥ 12%") is True
    assert one(found, "list_cursor_deep rps ≥ 15%") is None  # not run
    assert one(found, "p99 ≤ 50 ms", "get_task") is True  # the 10-connection run
    assert one(found, "p99 ≤ 50 ms", "list_page1") is False
    assert one(found, "p99 ≤ 50 ms", "patch_task") is None
    ceiling = next(c for c in checks if "no p99 above 300 ms" in c.name)
    assert ceiling.passed is False  # logins are exempt, list page 1 is not
    assert "list_page1 350 ms" in ceiling.figure
    assert "login" not in ceiling.figure
    assert one(found, "server CPU per get by id ≤ 1.2 ms") is False
    assert one(found, "statements", "get_task ≤ 2") is True
    assert one(found, "statements", "create_task ≤ 4") is False
    assert one(found, "get_task: small org") is True
    assert one(found, "list_page1: small org") is False
    assert one(found, "--workers 2") is True
    assert one(found, "offset page 500") is True
    assert one(found, "search p50 ≤ 50 ms (16 connections)") is True
    assert one(found, "bulk update") is False
    assert one(found, "logins don't stall others") is False
    assert one(found, "RSS < 250 MB") is True  # final, not peak
    assert len(checks) == 21  # every line of the bar, measured or not


def test_the_mariadb_column_checks_the_same_lines_on_its_own_runs() -> None:
    results = [
        result("bare", "bare_asyncpg", rps=1000, p50=1),
        result("pg1", "get_task", rps=260, p50=10, cpu_ms=1.3),  # 26 %: passes on PostgreSQL
        result("pg2", "get_task", rps=442, p50=10),
        result("mariadb", "get_task", rps=200, p50=12, p99=320, cpu_ms=1.1),  # 20 %
        result("mariadb", "get_task", rps=90, p50=6, p99=45, connections=10),
        result("mariadb", "list_page1", rps=160, p50=20, p99=100),  # 16 %
    ]
    memory = [ProcessMemory("pg1", 1, "main", 260, 260), ProcessMemory("mariadb", 2, "main", 1, 1)]
    probes = [probe("get_task", requests=100, statements=200, idle=0)]  # pg1's

    pg = bar_checks(results, memory, probes, {})
    maria = bar_checks(results, memory, probes, {}, "mariadb", None)
    found = verdicts(maria)

    assert [c.name for c in maria] == [c.name for c in pg]  # the same 21 lines
    assert one(found, "get_task rps ≥ 25%") is False
    assert one(found, "list_page1 rps ≥ 15%") is True
    assert one(found, "p99 ≤ 50 ms", "get_task") is True
    assert one(found, "no p99 above 300 ms") is False  # its own 32-connection get
    assert one(found, "server CPU per get by id") is True
    assert one(found, "statements", "get_task") is None  # counted on PostgreSQL only
    assert one(found, "--workers 2") is None
    assert one(found, "RSS") is True  # its own process, not pg1's 260 MB
    assert one(verdicts(pg), "RSS") is False

    section = bar_section([("PostgreSQL + Redis", pg), ("MariaDB + Redis", maria)])
    header = next(line for line in section if line.startswith("| line"))
    assert header == "| line | PostgreSQL + Redis | result | MariaDB + Redis | result |"
    cpu_line = next(line for line in section if "server CPU per get by id" in line)
    assert cpu_line.endswith("| 1.30 ms | MISS | 1.10 ms | PASS |")
    assert any("MariaDB + Redis: 4 of 6 measured lines pass" in line for line in section)


def test_a_run_without_completed_requests_misses_and_shows_no_latency() -> None:
    empty = Result("pg1", "list_page500", 10, 0, 0, 0, 0, 0, requests=0)
    page1 = result("pg1", "list_page1", rps=100, p50=20, connections=10)

    found = verdicts(bar_checks([empty, page1], [], [], {}))
    lines = results_table([empty], {}, {10: 1000.0}, {})

    assert one(found, "offset page 500") is False
    assert one(found, "RSS") is None
    assert "| list_page500 | 10 | 0 | - | - | - | - | 0 | - | 0.000 | - |" in lines


def test_cpu_and_statements_are_per_completed_request() -> None:
    probes = [
        probe("get_task", requests=200, statements=412, idle=12),
        probe("login", requests=0, statements=3, idle=1),
    ]

    lines = statements_table(probes, {"get_task": "get task"})

    assert cpu_per_request_ms(0.5, 400) == pytest.approx(1.25)
    assert cpu_per_request_ms(0.5, 0) is None
    assert cpu_per_request_ms(None, 400) is None
    assert "| get task | 200 | 412 | 12 | 2.0 | 2.0 | 0 |" in lines
    assert "| login | 0 | 3 | 1 | - | - | 0 |" in lines
    cpu_row = results_table([result("pg1", "me", rps=10, p50=1, cpu_ms=3.456)], {}, {}, {})[-1]
    assert "| 3.46 |" in cpu_row


# Captured from asyncpg 0.30 through the proxy: the client → server bytes of a connection
# (SSLRequest, StartupMessage), `execute("BEGIN; SELECT 1; COMMIT")`, a first `fetchrow`
# with one argument (Parse/Describe/Flush, then Bind/Execute/Sync), a second one (cached
# statement), `executemany` of 3 rows (pipelined, one Sync) and the Terminate.
SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16/"
STARTUP = (
    b"\x00\x00\x00A\x00\x03\x00\x00client_encoding\x00'utf-8'\x00user\x00postgres\x00"
    b"database\x00postgres\x00\x00"
)
SCRIPT = b"Q\x00\x00\x00\x1cBEGIN; SELECT 1; COMMIT\x00"
PREPARE = (
    b"P\x00\x00\x00(__asyncpg_stmt_1__\x00SELECT $1::int\x00\x00\x00"
    b"D\x00\x00\x00\x18S__asyncpg_stmt_1__\x00H\x00\x00\x00\x04"
)


def _bind_execute(value: int) -> bytes:
    return (
        b"B\x00\x00\x00*\x00__asyncpg_stmt_1__\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x04"
        + value.to_bytes(4, "big")
        + b"\x00\x01\x00\x01E\x00\x00\x00\t\x00\x00\x00\x00\x00"
    )


FETCH = _bind_execute(5)[:-1] + b"\x01S\x00\x00\x00\x04"  # Execute max rows 1, Sync
EXECUTEMANY = b"".join(_bind_execute(v) for v in (1, 2, 3)) + b"S\x00\x00\x00\x04"
TERMINATE = b"X\x00\x00\x00\x04"
CAPTURED = [SSL_REQUEST, STARTUP, SCRIPT, PREPARE, FETCH, FETCH, EXECUTEMANY, TERMINATE]


def test_the_frontend_parser_counts_statements_and_round_trips_of_captured_bytes() -> None:
    parser = FrontendParser()

    per_chunk = [parser.feed(chunk) for chunk in CAPTURED]

    kinds = [[m.kind for m in messages] for messages in per_chunk]
    assert kinds == [
        ["ssl"], ["startup"], ["Q"], ["P", "D", "H"], ["B", "E", "S"], ["B", "E", "S"],
        ["B", "E", "B", "E", "B", "E", "S"], ["X"],
    ]  # fmt: skip
    assert [counts_of(m) for m in per_chunk[2:]] == [
        Counts(3, 1), Counts(0, 1), Counts(1, 1), Counts(1, 1), Counts(3, 1), Counts(0, 0),
    ]  # fmt: skip
    assert b"".join(m.raw for chunk in per_chunk for m in chunk) == b"".join(CAPTURED)


def test_the_frontend_parser_does_not_depend_on_how_tcp_cut_the_bytes() -> None:
    stream = b"".join(CAPTURED)
    whole = FrontendParser().feed(stream)
    for size in (1, 3, 7, 64):
        parser = FrontendParser()
        pieces = [parser.feed(stream[i : i + size]) for i in range(0, len(stream), size)]
        assert [m for piece in pieces for m in piece] == whole
    assert sum((counts_of([m]) for m in whole), Counts()) == Counts(8, 5)


@pytest.mark.parametrize(
    ("sql", "statements"),
    [
        ("SELECT 1", 1),
        ("BEGIN; SELECT 1; COMMIT;", 3),
        ("SELECT ';' , \"a;b\" FROM t; ", 1),
        ("SELECT 'it''s; fine'; SELECT 2", 2),
        ("SELECT $$a;b$$, $fn$;$fn$ -- c;d\n; /* e;f */ SELECT 3", 2),
        ("select set_config('app.org', $1, true); select * from tasks where id = $2", 2),
        (" ;; ", 0),
    ],
)
def test_statements_of_a_simple_query(sql: str, statements: int) -> None:
    assert count_sql_statements(sql) == statements


@pytest.mark.services
@pytest.mark.postgresql_only("bench/pgcount.py's proxy reads PostgreSQL's wire protocol")
async def test_the_proxy_counts_what_asyncpg_sends(database_url: str) -> None:
    upstream = urlsplit(database_url)
    proxy = CountingProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432)
    port = proxy.start()
    try:
        # asyncpg's default sslmode asks for TLS first: the proxy answers "N" itself.
        dsn = f"postgresql://{upstream.username}@127.0.0.1:{port}{upstream.path}"
        connection = await asyncpg.connect(dsn)
        try:
            before = proxy.counts()
            assert await connection.fetchval("SELECT $1::int + 1", 41) == 42
            first = proxy.counts() - before
            before = proxy.counts()
            await connection.execute("BEGIN; SELECT 1; COMMIT")
            script = proxy.counts() - before
        finally:
            await connection.close()
    finally:
        proxy.stop()

    assert first == Counts(statements=1, round_trips=2)  # prepare (Flush), then Sync
    assert script == Counts(statements=3, round_trips=1)


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


# --- database per tenant (bench/tenantdb.py) ---------------------------------------------


def test_the_tenantdb_bar_compares_database_mode_with_shared_mode_at_each_connection_count() -> (
    None
):
    results = [
        result(TENANTDB_SHARED, "get_task", rps=1000, p50=5, connections=10),
        result(TENANTDB, "get_task", rps=850, p50=5.5, connections=10),  # -15 %, +10 %: pass
        result(TENANTDB_SHARED, "get_task", rps=1000, p50=5),
        result(TENANTDB, "get_task", rps=790, p50=5),  # rps -21 %: miss
        result(TENANTDB_SHARED, "create_task", rps=500, p50=10, connections=10),
        result(TENANTDB, "create_task", rps=500, p50=12.5, connections=10),  # p50 +25 %: miss
        # The shared configurations of the seeded dataset are not the comparison.
        result("pg1", "create_task", rps=5000, p50=1),
    ]
    labels = {"get_task": "get task by id", "create_task": "create task"}
    found = verdicts(tenantdb_checks(results, labels, [10, 32]))
    assert one(found, "get task", "10 connections") is True
    assert one(found, "get task", "32 connections") is False
    assert one(found, "create task", "10 connections") is False
    assert one(found, "create task", "32 connections") is None  # not measured
    assert len(found) == 4


def test_the_tenantdb_bar_misses_when_database_mode_completed_nothing() -> None:
    results = [
        result(TENANTDB_SHARED, "get_task", rps=1000, p50=5),
        Result(TENANTDB, "get_task", 32, 0, 0, 0, 0, 0, 0),
    ]
    (check,) = [c for c in tenantdb_checks(results, {}, [32]) if "get_task" in c.name]
    assert check.passed is False


def test_provisioning_median_and_p95_per_tenant() -> None:
    seconds = [0.1 * n for n in range(1, 21)]  # 0.1 ... 2.0 s, 20 tenants
    provisioning = Provisioning("tenantdb", seconds, {"server 1": 10, "server 2": 10})
    assert provisioning.median == pytest.approx(1.05)
    assert provisioning.p95 == pytest.approx(1.9)  # the 19th of 20
    assert Provisioning("x", [3.0, 1.0, 2.0]).median == 2.0
    assert percentile([5.0], 0.95) == 5.0
    rows = provisioning_table([provisioning, Provisioning("empty", [])])
    assert rows[2] == "| tenantdb | 20 | 1050 | 1900 | 2000 | server 1: 10, server 2: 10 |"
    assert len(rows) == 3  # a mode without organizations has no row


def test_the_tenantdb_table_puts_the_modes_side_by_side() -> None:
    results = [
        result(TENANTDB_SHARED, "get_task", rps=1000, p50=5, p99=20),
        result(TENANTDB, "get_task", rps=900, p50=6, p99=25),
        result(TENANTDB_SHARED, "create_task", rps=400, p50=20, p99=50),
    ]
    rows = tenantdb_table(results, {"get_task": "get task by id"})
    assert (
        rows[2]
        == "| get task by id | 32 | 1000 | 5.00 | 20.00 | 0 | 900 | 6.00 | 25.00 | 0 | 0.90 |"
    )
    assert rows[3] == "| create_task | 32 | 400 | 20.00 | 50.00 | 0 | - | - | - | - | - |"


def test_the_median_round_is_kept_whole_per_mode_scenario_and_connection_count() -> None:
    rounds = [
        result(TENANTDB_SHARED, "get_task", rps=800, p50=9, cpu_ms=1.3),
        result(TENANTDB, "get_task", rps=700, p50=12, cpu_ms=1.5),
        result(TENANTDB_SHARED, "get_task", rps=900, p50=8, cpu_ms=1.1),
        result(TENANTDB, "get_task", rps=950, p50=7, cpu_ms=1.0),
        result(TENANTDB_SHARED, "get_task", rps=600, p50=15, cpu_ms=1.9),
        result(TENANTDB, "get_task", rps=880, p50=8.5, cpu_ms=1.2),
        result(TENANTDB, "get_task", rps=300, p50=30, connections=10),
        result(TENANTDB, "get_task", rps=500, p50=20, connections=10),  # even: the lower
    ]
    kept = {(r.config, r.connections): r for r in median_runs(rounds)}
    assert len(kept) == 3
    shared, database = kept[(TENANTDB_SHARED, 32)], kept[(TENANTDB, 32)]
    assert (shared.rps, shared.p50_ms, shared.cpu_ms) == (800, 9, 1.3)  # one run, not a mix
    assert (database.rps, database.p50_ms, database.cpu_ms) == (880, 8.5, 1.2)
    assert kept[(TENANTDB, 10)].rps == 300

    rows = rounds_table(rounds[:6], {"get_task": "get task by id"})
    assert (
        rows[2]
        == "| get task by id | 32 | 800 / 900 / 600 | 700 / 950 / 880 | 0.88 / 1.06 / 1.47 |"
    )
