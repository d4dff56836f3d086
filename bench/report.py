"""The benchmark report: result records, the bar's checks, Markdown rendering.

Pure functions of the numbers bench/run.py collected, so they are unit-tested
(tests/test_bench_report.py) without running a load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The bar of issue 13. PostgreSQL + Redis, 1 process (pg1) unless a line says otherwise.
RATIO_CONNECTIONS = 32  # throughput lines: rps ÷ the bare asyncpg rps of the same run
LATENCY_CONNECTIONS = 10  # latency lines
SEARCH_CONNECTIONS = 16
RATIO_BARS = {  # scenario: least fraction of the bare asyncpg fetch's rps
    "get_task": 0.25,
    "list_page1": 0.15,
    "create_task": 0.12,
    "list_cursor_deep": 0.15,
}
P99_BAR_MS = 50.0  # at LATENCY_CONNECTIONS, for these scenarios:
P99_SCENARIOS = ("get_task", "list_page1", "list_cursor_deep", "create_task", "patch_task")
P99_CEILING_MS = 300.0  # at RATIO_CONNECTIONS, every scenario but logins
LOGIN_SCENARIOS = frozenset({"login", "logins_alongside"})
CPU_BAR_MS = 1.2  # server CPU per get by id, at RATIO_CONNECTIONS
STATEMENT_BARS = {"get_task": 2.0, "create_task": 4.0}  # PostgreSQL statements per request
SIZE_PAIRS = (("get_task_small", "get_task"), ("list_page1_small", "list_page1"))
SIZE_TOLERANCE = 0.25  # small org (2,000 tasks) vs big (200,000): rps and p50 within ±25 %
WORKERS_BAR = 1.7  # --workers 2 ÷ 1 process, get by id rps
OFFSET_BAR = 3.0  # offset page 500 p50 ÷ page 1 p50, at LATENCY_CONNECTIONS
SEARCH_P50_MS = 50.0  # at SEARCH_CONNECTIONS
BULK_RPS = 120.0  # bulk update of 50 tasks, at RATIO_CONNECTIONS
LOGIN_STALL_P99_MS = 100.0  # get by id (10 connections) while 32 connections log in
LOGIN_STALL = "get_during_logins"
RSS_BAR_MB = 250.0


@dataclass
class Result:
    """One wrk run: a scenario on a configuration at one connection count."""

    config: str
    scenario: str
    connections: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: dict[str, int] = field(default_factory=dict)
    # Server CPU time (user + system, whole process tree) of the run ÷ its requests.
    cpu_ms: float | None = None

    @property
    def error_count(self) -> int:
        """Failed requests: socket errors plus responses with an unexpected status."""
        counted = ("connect", "read", "write", "timeout", "unexpected_status")
        return sum(self.errors.get(name, 0) for name in counted)

    @classmethod
    def from_wrk(
        cls,
        config: str,
        scenario: str,
        connections: int,
        raw: dict[str, Any],
        cpu_seconds: float | None = None,
    ) -> Result:
        return cls(
            config, scenario, connections, raw["rps"], raw["p50_ms"], raw["p90_ms"],
            raw["p99_ms"], raw["max_ms"], raw["requests"], dict(raw["errors"]),
            cpu_per_request_ms(cpu_seconds, raw["requests"]),
        )  # fmt: skip


def cpu_per_request_ms(cpu_seconds: float | None, requests: int) -> float | None:
    """Milliseconds of server CPU per completed request (None: not measured or no request)."""
    if cpu_seconds is None or requests <= 0:
        return None
    return cpu_seconds * 1000 / requests


@dataclass
class StatementProbe:
    """Statements one scenario sent to PostgreSQL, counted by bench/pgcount.py's proxy.

    A sequential run (1 connection) of `requests` requests over `seconds`, and an idle
    window of the same length just before it: what the server sends on its own then (job
    polling, usage flushes) is subtracted.
    """

    config: str
    scenario: str
    requests: int
    seconds: float
    statements: int
    round_trips: int
    idle_statements: int
    idle_round_trips: int
    errors: int = 0

    @property
    def statements_per_request(self) -> float | None:
        if self.requests <= 0:
            return None
        return max(self.statements - self.idle_statements, 0) / self.requests

    @property
    def round_trips_per_request(self) -> float | None:
        if self.requests <= 0:
            return None
        return max(self.round_trips - self.idle_round_trips, 0) / self.requests


@dataclass
class ProcessMemory:
    """A server process: peak resident set (VmHWM) and resident set when the run ended."""

    config: str
    pid: int
    role: str
    peak_mb: float
    final_mb: float


@dataclass
class Check:
    name: str
    figure: str
    passed: bool | None  # None: not measured in this run


def find(
    results: Sequence[Result], config: str, scenario: str, connections: int = RATIO_CONNECTIONS
) -> Result | None:
    for result in results:
        if (result.config, result.scenario, result.connections) == (config, scenario, connections):
            return result
    return None


def _label(labels: dict[str, str], scenario: str) -> str:
    return labels.get(scenario, scenario)


def _missing(name: str, *runs: Result | None) -> Check | None:
    """The check's verdict when one of its runs is absent or completed nothing."""
    if any(r is None for r in runs):
        return Check(name, "not measured", None)
    if not all(r is not None and r.requests for r in runs):
        return Check(name, "a run completed no request", False)
    return None


def _at_least(name: str, a: Result | None, b: Result | None, bound: float) -> Check:
    """`a.rps / b.rps >= bound`."""
    if found := _missing(name, a, b):
        return found
    assert a is not None
    assert b is not None
    ratio = a.rps / b.rps
    return Check(name, f"{a.rps:.0f} / {b.rps:.0f} rps = {ratio:.3f}", ratio >= bound)


def _p50_ratio(name: str, a: Result | None, b: Result | None, bound: float) -> Check:
    """`a.p50 / b.p50 <= bound`."""
    if found := _missing(name, a, b):
        return found
    assert a is not None
    assert b is not None
    ratio = a.p50_ms / max(b.p50_ms, 1e-9)
    return Check(name, f"{a.p50_ms:.2f} / {b.p50_ms:.2f} ms = {ratio:.2f}x", ratio <= bound)


def _at_most_ms(name: str, run: Result | None, what: str, bound: float) -> Check:
    if found := _missing(name, run):
        return found
    assert run is not None
    value: float = getattr(run, what)
    return Check(name, f"{value:.1f} ms", value <= bound)


def _within(name: str, small: Result | None, big: Result | None, tolerance: float) -> Check:
    """rps and p50 of `small` each within ±tolerance of `big`'s."""
    if found := _missing(name, small, big):
        return found
    assert small is not None
    assert big is not None
    rps = small.rps / big.rps
    p50 = small.p50_ms / max(big.p50_ms, 1e-9)
    ok = all(abs(r - 1) <= tolerance for r in (rps, p50))
    figure = (
        f"rps {small.rps:.0f} vs {big.rps:.0f} ({rps - 1:+.0%}), "
        f"p50 {small.p50_ms:.2f} vs {big.p50_ms:.2f} ms ({p50 - 1:+.0%})"
    )
    return Check(name, figure, ok)


def _p99_ceiling(results: Sequence[Result], labels: dict[str, str], config: str = "pg1") -> Check:
    name = (
        f"no p99 above {P99_CEILING_MS:.0f} ms at {RATIO_CONNECTIONS} connections "
        "(every scenario but logins)"
    )
    runs = [
        r
        for r in results
        if r.config == config
        and r.connections == RATIO_CONNECTIONS
        and r.scenario not in LOGIN_SCENARIOS
    ]
    if not runs:
        return Check(name, "not measured", None)
    over = [r for r in runs if not r.requests or r.p99_ms > P99_CEILING_MS]
    if not over:
        worst = max(runs, key=lambda r: r.p99_ms)
        figure = (
            f"{len(runs)} scenarios; worst {worst.p99_ms:.0f} ms ({_label(labels, worst.scenario)})"
        )
        return Check(name, figure, True)
    shown = ", ".join(
        f"{_label(labels, r.scenario)} {r.p99_ms:.0f} ms" if r.requests else
        f"{_label(labels, r.scenario)}: no request"
        for r in sorted(over, key=lambda r: -r.p99_ms)
    )  # fmt: skip
    return Check(name, f"{len(over)} of {len(runs)} above: {shown}", False)


def _cpu_check(run: Result | None) -> Check:
    name = f"server CPU per get by id ≤ {CPU_BAR_MS} ms ({RATIO_CONNECTIONS} connections)"
    if found := _missing(name, run):
        return found
    assert run is not None
    if run.cpu_ms is None:
        return Check(name, "not measured", None)
    return Check(name, f"{run.cpu_ms:.2f} ms", run.cpu_ms <= CPU_BAR_MS)


def _statement_check(probe: StatementProbe | None, label: str, bound: float) -> Check:
    name = f"PostgreSQL statements per request: {label} ≤ {bound:.0f}"
    if probe is None:
        return Check(name, "not measured", None)
    per_request = probe.statements_per_request
    if per_request is None:
        return Check(name, "the probe completed no request", False)
    round_trips = probe.round_trips_per_request or 0.0
    figure = f"{per_request:.1f} ({round_trips:.1f} round trips) over {probe.requests} requests"
    if probe.errors:
        figure += f", {probe.errors} failed"
    # Compared as printed (1 decimal): the idle-window subtraction is not exact to 0.01.
    return Check(name, figure, round(per_request, 1) <= bound and probe.errors == 0)


def bar_checks(
    results: Sequence[Result],
    memory: Sequence[ProcessMemory],
    probes: Sequence[StatementProbe],
    labels: dict[str, str],
    config: str = "pg1",
    workers_config: str | None = "pg2",
) -> list[Check]:
    """Every line of the bar with its figure, for one configuration (PostgreSQL + Redis, 1
    process, by default; the same lines for MariaDB + Redis with `config="mariadb"`).

    `workers_config` is the configuration's `--workers 2` twin (None: not measured); the
    statement probes and the memory are those of `config` (and its twin).
    """
    pg1, bare = config, find(results, "bare", "bare_asyncpg")
    twin = find(results, workers_config, "get_task") if workers_config else None
    at_ratio, at_latency = (
        f"({RATIO_CONNECTIONS} connections)",
        f"({LATENCY_CONNECTIONS} connections)",
    )
    checks = [
        _at_least(
            f"{_label(labels, s)} rps ≥ {bound:.0%} of bare asyncpg {at_ratio}",
            find(results, pg1, s), bare, bound,
        )
        for s, bound in RATIO_BARS.items()
    ]  # fmt: skip
    checks += [
        _at_most_ms(
            f"p99 ≤ {P99_BAR_MS:.0f} ms at {LATENCY_CONNECTIONS} connections: {_label(labels, s)}",
            find(results, pg1, s, LATENCY_CONNECTIONS), "p99_ms", P99_BAR_MS,
        )
        for s in P99_SCENARIOS
    ]  # fmt: skip
    checks.append(_p99_ceiling(results, labels, config))
    checks.append(_cpu_check(find(results, pg1, "get_task")))
    by_scenario = {p.scenario: p for p in probes if p.config == pg1}
    checks += [
        _statement_check(by_scenario.get(s), _label(labels, s), bound)
        for s, bound in STATEMENT_BARS.items()
    ]
    checks += [
        _within(
            f"{_label(labels, big)}: small org (2,000 tasks) rps and p50 within "
            f"±{SIZE_TOLERANCE:.0%} of a 200,000-task org ({RATIO_CONNECTIONS} connections)",
            find(results, pg1, small), find(results, pg1, big), SIZE_TOLERANCE,
        )
        for small, big in SIZE_PAIRS
    ]  # fmt: skip
    checks += [
        _at_least(
            f"--workers 2 get task rps ≥ {WORKERS_BAR}x 1 process {at_ratio}",
            twin, find(results, pg1, "get_task"), WORKERS_BAR,
        ),
        _p50_ratio(
            f"offset page 500 p50 ≤ {OFFSET_BAR:.0f}x page 1 p50 {at_latency}",
            find(results, pg1, "list_page500", LATENCY_CONNECTIONS),
            find(results, pg1, "list_page1", LATENCY_CONNECTIONS), OFFSET_BAR,
        ),
        _at_most_ms(
            f"search p50 ≤ {SEARCH_P50_MS:.0f} ms ({SEARCH_CONNECTIONS} connections)",
            find(results, pg1, "search", SEARCH_CONNECTIONS), "p50_ms", SEARCH_P50_MS,
        ),
        _bulk_check(find(results, pg1, "bulk_update")),
        _at_most_ms(
            f"logins don't stall others: get by id p99 ≤ {LOGIN_STALL_P99_MS:.0f} ms "
            f"({LATENCY_CONNECTIONS} connections) while {RATIO_CONNECTIONS} connections log in",
            find(results, pg1, LOGIN_STALL, LATENCY_CONNECTIONS), "p99_ms", LOGIN_STALL_P99_MS,
        ),
        _rss_check([m for m in memory if m.config in (config, workers_config)]),
    ]  # fmt: skip
    return checks


def _bulk_check(run: Result | None) -> Check:
    name = f"bulk update of 50 tasks ≥ {BULK_RPS:.0f} req/s ({RATIO_CONNECTIONS} connections)"
    if found := _missing(name, run):
        return found
    assert run is not None
    return Check(name, f"{run.rps:.0f} req/s", run.rps >= BULK_RPS)


def _rss_check(memory: Sequence[ProcessMemory]) -> Check:
    name = f"RSS < {RSS_BAR_MB:.0f} MB per process after the run"
    if not memory:
        return Check(name, "not measured", None)
    worst = max(memory, key=lambda m: m.final_mb)
    figure = f"largest {worst.final_mb:.0f} MB ({worst.config} {worst.role} pid {worst.pid})"
    return Check(name, figure, worst.final_mb < RSS_BAR_MB)


def verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else "PASS" if passed else "MISS"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def results_table(
    results: Sequence[Result],
    labels: dict[str, str],
    constant: dict[int, float],
    asyncpg_rps: dict[int, float],
) -> list[str]:
    """One configuration's table; ratios to the bare endpoints at the same connections."""
    rows = []
    for r in results:
        base = constant.get(r.connections)
        vs_constant = f"{r.rps / base:.3f}" if base else "-"
        reference = asyncpg_rps.get(r.connections)
        vs_asyncpg = f"{r.rps / reference:.3f}" if reference else "-"
        # No completed request: wrk's latencies are zeros, not measurements.
        latencies = (
            [f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.max_ms:.1f}"]
            if r.requests
            else ["-"] * 4
        )
        cpu = "-" if r.cpu_ms is None else f"{r.cpu_ms:.2f}"
        rows.append(
            [
                labels.get(r.scenario, r.scenario), r.connections, f"{r.rps:.0f}", *latencies,
                r.error_count, cpu, vs_constant, vs_asyncpg,
            ]
        )  # fmt: skip
    headers = (
        "scenario", "conns", "rps", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors",
        "CPU ms/req", "rps ÷ bare const", "rps ÷ bare asyncpg",
    )  # fmt: skip
    return table(headers, rows)


def statements_table(probes: Sequence[StatementProbe], labels: dict[str, str]) -> list[str]:
    """Statements and round trips per request of each scenario (pgcount.py's counts)."""

    def one_decimal(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    rows = [
        [
            labels.get(p.scenario, p.scenario), p.requests, p.statements, p.idle_statements,
            one_decimal(p.statements_per_request), one_decimal(p.round_trips_per_request),
            p.errors,
        ]
        for p in probes
    ]  # fmt: skip
    headers = (
        "scenario", "requests", "statements", "idle-window statements (subtracted)",
        "statements/req", "round trips/req", "errors",
    )  # fmt: skip
    return table(headers, rows)


def bar_section(columns: Sequence[tuple[str, Sequence[Check]]]) -> list[str]:
    """The bar, one figure and verdict column pair per configuration (side by side).

    `columns`: (title, the checks of `bar_checks` for that configuration), in order; the
    lines are the same for every configuration.
    """
    if not columns:
        return ["## Bar", "", "No configuration of the bar (PostgreSQL, MariaDB) was run."]
    names = [c.name for c in columns[0][1]]
    by_name = [{c.name: c for c in checks} for _, checks in columns]
    rows = []
    for name in names:
        row: list[object] = [name]
        for found in by_name:
            check = found.get(name)
            row += [check.figure, verdict(check.passed)] if check else ["not measured", "n/a"]
        rows.append(row)
    tallies = []
    for title, checks in columns:
        passed = sum(1 for c in checks if c.passed)
        measured = sum(1 for c in checks if c.passed is not None)
        tallies.append(f"{title}: {passed} of {measured} measured lines pass")
    headers = ["line"]
    for title, _ in columns:
        headers += [title, "result"]
    return [
        "## Bar",
        "",
        "Issue 13's bar, per configuration side by side: 1 process, 200,000-task "
        "organizations unless the line says otherwise; throughput ratios are to the bare "
        "asyncpg fetch by id measured in this run at the same connection count (the same "
        "reference for every column). Statements per request are counted on PostgreSQL "
        "only (bench/pgcount.py speaks its protocol); `--workers 2` runs on PostgreSQL only. "
        f"{'; '.join(tallies)} (`n/a`: not measured in this run).",
        "",
        *table(headers, rows),
    ]


# --- database per tenant (issue 17): bench/tenantdb.py -----------------------------------

TENANTDB_SHARED = "tenantdb_shared"  # the same tenants, rows and server in shared mode
TENANTDB = "tenantdb"  # TENANCY_MODE=database, the tenants spread over 2 servers
TENANTDB_SCENARIOS = ("get_task", "create_task")
TENANTDB_TOLERANCE = 0.20  # database mode within 20 % of shared mode: rps and p50


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in (0, 1]) of `values`, which is not empty."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil(n * fraction), at least 1
    return ordered[int(rank) - 1]


@dataclass
class Provisioning:
    """Seconds of each `POST /orgs` (create the organization; in database mode its database
    too, created and migrated on the emptier server) of one mode."""

    mode: str
    seconds: list[float]
    placement: dict[str, int] = field(default_factory=dict)  # server: tenants it got

    @property
    def median(self) -> float:
        ordered = sorted(self.seconds)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    @property
    def p95(self) -> float:
        return percentile(self.seconds, 0.95)


def median_runs(results: Sequence[Result]) -> list[Result]:
    """Of repeated runs (the rounds of bench/tenantdb.py), one per configuration, scenario
    and connection count: the run with the median rps (the lower middle of an even count),
    kept whole so its p50, p99 and CPU are one real run's, not a mix."""
    groups: dict[tuple[str, str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.config, r.scenario, r.connections), []).append(r)
    kept = []
    for runs in groups.values():
        ordered = sorted(runs, key=lambda r: r.rps)
        kept.append(ordered[(len(ordered) - 1) // 2])
    return kept


def rounds_table(results: Sequence[Result], labels: dict[str, str]) -> list[str]:
    """Every round's rps per mode, in the order they ran: how much the machine moved."""
    rows: dict[tuple[str, int], dict[str, list[float]]] = {}
    for r in results:
        rows.setdefault((r.scenario, r.connections), {}).setdefault(r.config, []).append(r.rps)
    body = []
    for (scenario, conns), modes in rows.items():
        shared = modes.get(TENANTDB_SHARED, [])
        database = modes.get(TENANTDB, [])
        ratios = [f"{d / s:.2f}" for s, d in zip(shared, database, strict=False) if s]
        body.append(
            [_label(labels, scenario), conns, " / ".join(f"{x:.0f}" for x in shared),
             " / ".join(f"{x:.0f}" for x in database), " / ".join(ratios) or "-"]
        )  # fmt: skip
    headers = ("scenario", "conns", "shared rps per round", "database rps per round",
               "database ÷ shared per round")  # fmt: skip
    return table(headers, body)


def tenantdb_checks(
    results: Sequence[Result], labels: dict[str, str], connections: Sequence[int]
) -> list[Check]:
    """Database mode within TENANTDB_TOLERANCE of shared mode: rps and p50 of get by id and
    create, at each connection count (issue 17's bar)."""
    checks = []
    for scenario in TENANTDB_SCENARIOS:
        for conns in connections:
            name = (
                f"{_label(labels, scenario)}, {conns} connections: database mode within "
                f"{TENANTDB_TOLERANCE:.0%} of shared mode (rps and p50)"
            )
            database = find(results, TENANTDB, scenario, conns)
            shared = find(results, TENANTDB_SHARED, scenario, conns)
            if found := _missing(name, database, shared):
                checks.append(found)
                continue
            assert database is not None
            assert shared is not None
            rps = database.rps / shared.rps
            p50 = database.p50_ms / max(shared.p50_ms, 1e-9)
            ok = rps >= 1 - TENANTDB_TOLERANCE and p50 <= 1 + TENANTDB_TOLERANCE
            figure = (
                f"rps {database.rps:.0f} vs {shared.rps:.0f} ({rps - 1:+.0%}), "
                f"p50 {database.p50_ms:.2f} vs {shared.p50_ms:.2f} ms ({p50 - 1:+.0%})"
            )
            checks.append(Check(name, figure, ok))
    return checks


def tenantdb_table(results: Sequence[Result], labels: dict[str, str]) -> list[str]:
    """Shared and database mode side by side, one row per scenario and connection count."""
    rows = []
    for shared in [r for r in results if r.config == TENANTDB_SHARED]:
        database = find(results, TENANTDB, shared.scenario, shared.connections)

        def cells(r: Result | None) -> list[object]:
            if r is None:
                return ["-"] * 4
            latencies = [f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}"] if r.requests else ["-", "-"]
            return [f"{r.rps:.0f}", *latencies, r.error_count]

        ratio = f"{database.rps / shared.rps:.2f}" if database and shared.rps else "-"
        rows.append(
            [_label(labels, shared.scenario), shared.connections, *cells(shared),
             *cells(database), ratio]
        )  # fmt: skip
    headers = (
        "scenario", "conns", "shared rps", "shared p50 ms", "shared p99 ms", "shared errors",
        "database rps", "database p50 ms", "database p99 ms", "database errors",
        "rps database ÷ shared",
    )  # fmt: skip
    return table(headers, rows)


def provisioning_table(provisioning: Sequence[Provisioning]) -> list[str]:
    rows = [
        [
            p.mode, len(p.seconds), f"{p.median * 1000:.0f}", f"{p.p95 * 1000:.0f}",
            f"{max(p.seconds) * 1000:.0f}",
            ", ".join(f"{server}: {n}" for server, n in p.placement.items()) or "-",
        ]
        for p in provisioning
        if p.seconds
    ]  # fmt: skip
    headers = ("mode", "organizations", "median ms", "p95 ms", "max ms", "placement")
    return table(headers, rows)
