"""The benchmark report: result records, the bar's checks, Markdown rendering.

Pure functions of the numbers bench/run.py collected, so they are unit-tested
(tests/test_bench_report.py) without running a load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

P99_BAR_MS = 50.0
RSS_BAR_MB = 250.0
BAR_CONNECTIONS = 16  # every check compares runs at this connection count


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

    @property
    def error_count(self) -> int:
        """Failed requests: socket errors plus responses with an unexpected status."""
        counted = ("connect", "read", "write", "timeout", "unexpected_status")
        return sum(self.errors.get(name, 0) for name in counted)

    @classmethod
    def from_wrk(cls, config: str, scenario: str, connections: int, raw: dict[str, Any]) -> Result:
        return cls(
            config, scenario, connections, raw["rps"], raw["p50_ms"], raw["p90_ms"],
            raw["p99_ms"], raw["max_ms"], raw["requests"], dict(raw["errors"]),
        )  # fmt: skip


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
    results: Sequence[Result], config: str, scenario: str, connections: int = BAR_CONNECTIONS
) -> Result | None:
    for result in results:
        if (result.config, result.scenario, result.connections) == (config, scenario, connections):
            return result
    return None


def _ratio_check(name: str, a: Result | None, b: Result | None, bound: float, what: str) -> Check:
    """`a.<what> / b.<what> <= bound` (or >= for rps-style bounds given as negative)."""
    if a is None or b is None:
        return Check(name, "not measured", None)
    if not (a.requests and b.requests):
        return Check(name, "a run completed no request", False)
    x, y = getattr(a, what), getattr(b, what)
    ratio = x / y if y else float("inf")
    passed = ratio >= -bound if bound < 0 else ratio <= bound
    return Check(name, f"{x:.2f} / {y:.2f} = {ratio:.2f}x", passed)


def bar_checks(
    results: Sequence[Result], memory: Sequence[ProcessMemory], labels: dict[str, str]
) -> list[Check]:
    """Each check of the bar with its figure (PostgreSQL, 1 process, unless said)."""
    checks = []
    for result in results:
        if (result.config, result.connections) == ("pg1", BAR_CONNECTIONS) and (
            result.scenario != "login"
        ):
            checks.append(
                Check(
                    f"p99 ≤ {P99_BAR_MS:.0f} ms: {labels.get(result.scenario, result.scenario)}",
                    f"{result.p99_ms:.1f} ms" if result.requests else "no request completed",
                    bool(result.requests) and result.p99_ms <= P99_BAR_MS,
                )
            )
    pg1 = "pg1"
    checks += [
        _ratio_check(
            "cursor deep page p50 ≤ 1.5x page 1 p50",
            find(results, pg1, "list_cursor_deep"), find(results, pg1, "list_page1"), 1.5, "p50_ms",
        ),
        _ratio_check(
            "offset page 500 p50 ≤ 3x page 1 p50",
            find(results, pg1, "list_page500"), find(results, pg1, "list_page1"), 3.0, "p50_ms",
        ),
        _within(
            "list page 1 p50: small org within 1.5x of big org",
            find(results, pg1, "list_page1_small"), find(results, pg1, "list_page1"),
        ),
        _within(
            "get task p50: small org within 1.5x of big org",
            find(results, pg1, "get_task_small"), find(results, pg1, "get_task"),
        ),
        _ratio_check(
            "get task rps ≥ 30% of bare asyncpg rps",
            find(results, pg1, "get_task"), find(results, "bare", "bare_asyncpg"), -0.30, "rps",
        ),
        _ratio_check(
            "--workers 2 get task rps ≥ 1.6x 1 process",
            find(results, "pg2", "get_task"), find(results, pg1, "get_task"), -1.6, "rps",
        ),
    ]  # fmt: skip
    if memory:
        worst = max(memory, key=lambda m: m.final_mb)
        checks.append(
            Check(
                f"RSS < {RSS_BAR_MB:.0f} MB per process after the run",
                f"largest {worst.final_mb:.0f} MB ({worst.config} {worst.role} pid {worst.pid})",
                worst.final_mb < RSS_BAR_MB,
            )
        )
    else:
        checks.append(Check(f"RSS < {RSS_BAR_MB:.0f} MB per process", "not measured", None))
    return checks


def _within(name: str, a: Result | None, b: Result | None) -> Check:
    if a is None or b is None:
        return Check(name, "not measured", None)
    if not (a.requests and b.requests):
        return Check(name, "a run completed no request", False)
    ratio = max(a.p50_ms, b.p50_ms) / max(min(a.p50_ms, b.p50_ms), 1e-9)
    return Check(name, f"{a.p50_ms:.2f} vs {b.p50_ms:.2f} ms = {ratio:.2f}x", ratio <= 1.5)


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
        vs_asyncpg = (
            f"{r.rps / reference:.3f}" if reference and r.scenario.startswith("get_task") else ""
        )
        # No completed request: wrk's latencies are zeros, not measurements.
        latencies = (
            [f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.max_ms:.1f}"]
            if r.requests
            else ["-"] * 4
        )
        rows.append(
            [
                labels.get(r.scenario, r.scenario), r.connections, f"{r.rps:.0f}", *latencies,
                r.error_count, vs_constant, vs_asyncpg,
            ]
        )  # fmt: skip
    headers = (
        "scenario", "conns", "rps", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors",
        "rps ÷ bare const", "rps ÷ bare asyncpg",
    )  # fmt: skip
    return table(headers, rows)


def bar_section(checks: Sequence[Check]) -> list[str]:
    rows = [[c.name, c.figure, verdict(c.passed)] for c in checks]
    passed = sum(1 for c in checks if c.passed)
    measured = sum(1 for c in checks if c.passed is not None)
    return [
        "## Bar",
        "",
        f"Measured at {BAR_CONNECTIONS} connections; PostgreSQL, 1 process unless the check "
        f"says otherwise. {passed} of {measured} measured checks pass.",
        "",
        *table(("check", "figure", "result"), rows),
    ]
