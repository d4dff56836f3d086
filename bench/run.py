"""`make bench`: seed, serve, load with wrk, write the report.

    uv run python -m bench.run [--duration 5] [--warmup 1] [--connections 10,32]
        [--only get_task,list_page1] [--configs pg1,pg2,sqlite,mariadb] [--skip-seed]
        [--big-organizations 10] [--output PATH]

Checks PostgreSQL and Redis are reachable, builds the datasets (bench/seed.py, skipped
when already there), measures the bare reference endpoints (bench/limit.py), then for
each configuration starts `tenantry serve --no-migrate`, logs every bench member in,
runs every scenario with wrk (a discarded warm-up, then the measured run) at each
connection count while reading the server's CPU time, samples the server processes'
memory, stops the server (its whole process group, also on Ctrl-C or failure). For
pg1 it then serves once more through bench/pgcount.py's proxy to count the PostgreSQL
statements of each scenario, and removes what the run added. The report goes to
bench/results/<date>.md with the raw numbers in a JSON file next to it.

`mariadb` is the same server and scenarios on MariaDB + Redis (`--mariadb-url`, the same
dataset as PostgreSQL's, seeded by bench/seed.py); the bar's lines are computed for it
too and shown next to PostgreSQL's (`make bench-mariadb` runs only it). A short run:
`--big-organizations 1 --duration 2 --connections 10,32` (and a database of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncmy
import asyncpg
import redis

from bench import data
from bench.pgcount import CountingProxy
from bench.report import (
    LATENCY_CONNECTIONS,
    LOGIN_STALL,
    RATIO_CONNECTIONS,
    SEARCH_CONNECTIONS,
    Check,
    ProcessMemory,
    Provisioning,
    Result,
    StatementProbe,
    bar_checks,
    bar_section,
    provisioning_table,
    results_table,
    rounds_table,
    statements_table,
    table,
    tenantdb_checks,
    tenantdb_table,
    verdict,
)
from bench.seed import (
    BENCH_DATABASE_URL,
    BENCH_MARIADB_URL,
    DatasetSpec,
    Marker,
    build_mariadb,
    build_postgres,
    build_sqlite,
    mariadb_connect,
    mariadb_sqlalchemy_url,
)

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = ROOT / "bench" / "wrk" / "bench.lua"
RESULTS = ROOT / "bench" / "results"
WRK_THREADS = 2
REDIS_PREFIX = "tenantry-bench:"
SQLITE_BIG = 2  # big organizations on SQLite: 2M rows do not fit the time budget

# (id, label, organization group): the order they run in.
SCENARIOS: list[tuple[str, str, str]] = [
    ("login", "login", "big"),
    # get_task at 10 connections and login at 32, two wrk at once (the get side is measured).
    (LOGIN_STALL, "get task by id while 32 connections log in", "big"),
    ("me", "me", "big"),
    ("get_task", "get task by id", "big"),
    ("list_page1", "list tasks page 1", "big"),
    ("list_page500", "list tasks page 500 (offset)", "big"),
    ("list_cursor_deep", "list tasks deep cursor page", "big"),
    ("list_filter", "list with status+assignee filter", "big"),
    ("search", "search by title word", "big"),
    ("create_task", "create task", "big"),
    ("patch_task", "patch task with If-Match", "big"),
    ("bulk_update", "bulk update 50 tasks", "big"),
    ("mixed", "mixed 70/25/5", "big"),
    ("get_task_small", "get task (small org)", "small"),
    ("list_page1_small", "list page 1 (small org)", "small"),
]
REFERENCES = [
    ("bare_constant", "bare ASGI constant JSON"),
    ("bare_asyncpg", "bare ASGI asyncpg fetch by id"),
]
LABELS = dict(
    [(s, label) for s, label, _ in SCENARIOS]
    + REFERENCES
    + [("logins_alongside", "login, alongside the get above")]
)
# Connection counts beyond --connections: the bar's search line is at 16.
EXTRA_CONNECTIONS = {"search": [SEARCH_CONNECTIONS]}
LOGIN_STALL_RUNS = (("get_task", LATENCY_CONNECTIONS), ("login", RATIO_CONNECTIONS))
POOL_SCENARIOS = {"patch_task", "mixed"}
CONFIGS = {
    "pg1": "PostgreSQL + Redis, 1 process",
    "pg2": "PostgreSQL + Redis, --workers 2",
    "sqlite": "SQLite (embedded), 1 process",
    "mariadb": "MariaDB + Redis, 1 process",
    "tenantdb": "Database per tenant vs shared mode (PostgreSQL + Redis, 1 process)",
}
# Configurations on the seeded datasets (tenantdb provisions its own tenants through the API).
DATASET_CONFIGS = ("pg1", "pg2", "sqlite", "mariadb")
# The bar's columns: (configuration, its --workers 2 twin or None, title).
BAR_COLUMNS = (("pg1", "pg2", "PostgreSQL + Redis"), ("mariadb", None, "MariaDB + Redis"))
SETTLE_TIMEOUT = 35.0  # the app's statement timeout is 30 s
IDLE_WINDOW = 0.3  # seconds of server CPU time looked at by settle()
IDLE_WINDOWS = 2  # quiet windows in a row that make the server idle
IDLE_CPU = 0.2  # fraction of a core below which the server counts as idle
PATCHES_PER_SECOND = 2000  # upper bound of a patch run's rate, sizes the pool
PROBE_CONFIG = "pg1"  # statements per request are counted on this configuration
PROBE_WARMUP_SECONDS = 1  # fills the server's statement caches; not counted
PROBE_SECONDS = 2  # the counted sequential run, and the idle window before it
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A precondition failed; the message says what to fix."""


@dataclass
class Options:
    duration: int
    warmup: int
    connections: list[int]
    only: set[str] | None
    configs: list[str]
    skip_seed: bool
    output: Path
    database_url: str
    redis_url: str
    sqlite_path: Path
    mariadb_url: str = BENCH_MARIADB_URL
    big_organizations: int = DatasetSpec.big_organizations
    tenants: int = 50  # tenantdb: organizations on the 2 servers
    tenant_tasks: int = 20  # tenantdb: tasks seeded in each
    tenant_rounds: int = 3  # tenantdb: alternating rounds of both modes, the median kept

    @property
    def spec(self) -> DatasetSpec:
        """The dataset of PostgreSQL and MariaDB."""
        return DatasetSpec(big_organizations=self.big_organizations)

    @property
    def sqlite_spec(self) -> DatasetSpec:
        return DatasetSpec(big_organizations=min(self.big_organizations, SQLITE_BIG))

    @property
    def scenarios(self) -> list[tuple[str, str, str]]:
        return [s for s in SCENARIOS if self.only is None or s[0] in self.only]

    def connections_of(self, scenario: str) -> list[int]:
        """The connection counts `scenario` runs at (the login-stall one has its own)."""
        if scenario == LOGIN_STALL:
            return [LATENCY_CONNECTIONS]
        return sorted(set(self.connections) | set(EXTRA_CONNECTIONS.get(scenario, [])))


@dataclass
class Run:
    """Everything the report shows."""

    options: Options
    machine: dict[str, str]
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    memory: list[ProcessMemory] = field(default_factory=list)
    probes: list[StatementProbe] = field(default_factory=list)
    provisioning: list[Provisioning] = field(default_factory=list)
    tenantdb_rounds: list[Result] = field(default_factory=list)  # every round, in order
    started: float = field(default_factory=time.perf_counter)


# --- environment ------------------------------------------------------------------------


def _command(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip()


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts(
    options: Options, pg_version: str, redis_version: str, mariadb_version: str | None = None
) -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    commit = _command("git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD")
    dirty = _command("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")
    return {
        "nproc": str(os.cpu_count()),
        "MemTotal": next(line.split(":", 1)[1].strip() for line in meminfo if "MemTotal" in line),
        "CPU": next(
            (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
            platform.processor() or "unknown",
        ),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "PostgreSQL": pg_version,
        "Redis": redis_version,
        "SQLite": sqlite3.sqlite_version,
        **({"MariaDB": mariadb_version} if mariadb_version else {}),
        "wrk": _command("wrk", "-v").splitlines()[0],
        "tenantry commit": commit + (" (with uncommitted changes)" if dirty else ""),
        # Anything else running on these cores competes with the server and wrk.
        "load average at start (1/5/15 min)": _load_average(),
    }


async def check_services(options: Options) -> tuple[str, str]:
    """PostgreSQL and Redis versions; a clear error when either is not reachable."""
    server = options.database_url.rsplit("/", 1)[0] + "/postgres"
    try:
        connection = await asyncpg.connect(server, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"PostgreSQL is not reachable at {server}: {exc}") from None
    try:
        pg_version = str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()
    try:
        info = redis.Redis.from_url(options.redis_url, socket_timeout=5).info("server")
    except redis.RedisError as exc:
        raise BenchError(f"Redis is not reachable at {options.redis_url}: {exc}") from None
    return pg_version, str(info["redis_version"])


async def check_mariadb(options: Options) -> str | None:
    """MariaDB's version when the run has its configuration; a clear error if unreachable."""
    if "mariadb" not in options.configs:
        return None
    try:
        connection = await mariadb_connect(options.mariadb_url, database=False)
    except (OSError, asyncmy.errors.Error) as exc:
        raise BenchError(f"MariaDB is not reachable at {options.mariadb_url}: {exc}") from None
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT VERSION()")
            ((version,),) = await cursor.fetchall()
    finally:
        connection.close()
    return str(version)


def clear_redis(url: str) -> int:
    """Delete the bench's keys (its own prefix) from Redis; how many there were."""
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=REDIS_PREFIX + "*", count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)


# --- processes --------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """`pid` and every process below it (uvicorn's supervisor spawns the workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = [pid]
    for current in found:
        found += [child for child, parent in parents.items() if parent == current]
    return found


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) spent so far by `root`'s process tree, children reaped
    included (utime, stime, cutime, cstime of /proc/<pid>/stat)."""
    ticks = 0
    for pid in _descendants(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / CLOCK_TICKS


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def _role(pid: int, root: int) -> str:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if pid == root:
        return "main"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    return "worker" if "multiprocessing" in cmdline else cmdline[:40]


class Server:
    """A process group we started: wait for readiness, measure memory, stop it all."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log: Path, ready: str) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.ready = ready
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                start_new_session=True,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = "\n".join(self.log.read_text().splitlines()[-15:])
                raise BenchError(f"the server exited ({self.process.returncode}):\n{tail}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.ready, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise BenchError(f"{self.ready} not ready after {timeout:.0f}s (log: {self.log})")

    def memory(self, config: str) -> list[ProcessMemory]:
        found = []
        for pid in _descendants(self.process.pid):
            with contextlib.suppress(OSError):
                found.append(
                    ProcessMemory(
                        config, pid, _role(pid, self.process.pid),
                        _status_kib(pid, "VmHWM") / 1024, _status_kib(pid, "VmRSS") / 1024,
                    )
                )  # fmt: skip
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextlib.contextmanager
def serving(
    argv: Sequence[str], env: dict[str, str], log: Path, port: int, ready: str = "/health/ready"
) -> Iterator[Server]:
    """A started server, ready (`ready` answered 200); stopped on the way out, whatever happens."""
    server = Server(argv, env, log, f"http://127.0.0.1:{port}{ready}")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def free_port() -> int:
    """A port nobody listens on now (another server on this machine must not answer us)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def server_env(config: str, options: Options, var_dir: Path) -> dict[str, str]:
    """The settings (config.py) of one configuration; nothing inherited from a `.env`."""
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TZ"}}
    env |= {
        "ENV": "development",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "VAR_DIR": str(var_dir),
        "RATE_LIMIT_ENABLED": "false",
        "ACCESS_TOKEN_TTL_SECONDS": "7200",  # one login per member lasts the whole run
        "LOG_FORMAT": "json",
    }
    if config == "sqlite":
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{options.sqlite_path}"
    elif config == "mariadb":  # no row-level security there: no application role
        env |= {
            "DATABASE_URL": mariadb_sqlalchemy_url(options.mariadb_url),
            "REDIS_URL": options.redis_url,
            "REDIS_KEY_PREFIX": REDIS_PREFIX,
        }
    else:
        env |= {
            "DATABASE_URL": options.database_url.replace("postgresql://", "postgresql+asyncpg://"),
            "DATABASE_APP_ROLE": "tenantry_app",  # production setting: row-level security on
            "REDIS_URL": options.redis_url,
            "REDIS_KEY_PREFIX": REDIS_PREFIX,
        }
    return env


# --- wrk --------------------------------------------------------------------------------


def _wrk_argv(url: str, data_dir: Path, scenario: str, connections: int, seconds: int) -> list[str]:
    threads = min(WRK_THREADS, connections)  # wrk needs a connection per thread
    return [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(WRK_SCRIPT), url, "--", str(data_dir), scenario, str(threads),
    ]  # fmt: skip


def _wrk_result(scenario: str, stdout: str, stderr: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            if stderr.strip():
                print("    " + stderr.strip().replace("\n", "\n    "), file=sys.stderr)
            parsed: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return parsed
    raise BenchError(f"wrk {scenario} printed no result:\n{stdout}\n{stderr}")


def wrk(url: str, data_dir: Path, scenario: str, connections: int, seconds: int) -> dict[str, Any]:
    argv = _wrk_argv(url, data_dir, scenario, connections, seconds)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return _wrk_result(scenario, done.stdout, done.stderr)


def wrk_together(
    url: str, data_dir: Path, runs: Sequence[tuple[str, int]], seconds: int
) -> list[dict[str, Any]]:
    """Several wrk (scenario, connections) on the server at once; their results in order."""
    started = [
        subprocess.Popen(
            _wrk_argv(url, data_dir, scenario, connections, seconds),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for scenario, connections in runs
    ]  # fmt: skip
    return [
        _wrk_result(scenario, *process.communicate())
        for (scenario, _), process in zip(runs, started, strict=True)
    ]


def pool_size(options: Options) -> int:
    """Tasks every patching run of a configuration may take (each its own, never reused)."""
    pooled = [s for s, _, _ in options.scenarios if s in POOL_SCENARIOS]
    runs = sum(len(options.connections_of(s)) for s in pooled)
    per_run = [PatchPool.size(options.warmup), PatchPool.size(options.duration)]
    per_probe = [PatchPool.size(PROBE_WARMUP_SECONDS), PatchPool.size(PROBE_SECONDS)]
    return runs * sum(per_run) + len(pooled) * sum(per_probe)


class PatchPool:
    """Distinct tasks to patch: each wrk run gets fresh ones, with the versions of now."""

    def __init__(self, candidates: list[tuple[int, str, str]]) -> None:
        self.candidates = candidates

    @staticmethod
    def size(seconds: int) -> int:
        return PATCHES_PER_SECOND * seconds + 1000 if seconds > 0 else 0

    async def prepare(self, store: data.Store, data_dir: Path, seconds: int) -> int:
        size = self.size(seconds)
        taken, self.candidates = self.candidates[:size], self.candidates[size:]
        versions = await data.current_versions(store, [t for _, _, t in taken])
        return data.write_patch_pool(data_dir, taken, versions)


async def measure(
    run: Run,
    config: str,
    url: str,
    scenarios: Sequence[tuple[str, str]],
    dirs: dict[str, Path],
    store: data.Store,
    server: Server,
    pool: PatchPool | None = None,
) -> None:
    """Warm-up then measured run of each (scenario, group), at every connection count.

    The server's CPU time is read just before and just after each measured run.
    """
    options = run.options
    for scenario, group in scenarios:
        for connections in options.connections_of(scenario):
            for seconds, kept in ((options.warmup, False), (options.duration, True)):
                if seconds <= 0:
                    continue
                if pool and scenario in POOL_SCENARIOS:
                    await pool.prepare(store, dirs[group], seconds)
                cpu_before = cpu_seconds(server.process.pid)
                if scenario == LOGIN_STALL:
                    raws = wrk_together(url, dirs[group], LOGIN_STALL_RUNS, seconds)
                    runs = [
                        (LOGIN_STALL, LATENCY_CONNECTIONS),
                        ("logins_alongside", RATIO_CONNECTIONS),
                    ]
                else:
                    lua_name = scenario.removesuffix("_small")
                    raws = [wrk(url, dirs[group], lua_name, connections, seconds)]
                    runs = [(scenario, connections)]
                cpu = cpu_seconds(server.process.pid) - cpu_before
                if kept:
                    # The measured run follows its warm-up at once (one continuous load);
                    # the next scenario starts on a server done with this one.
                    await settle(url, store, server)
                    # Two wrk at once: the CPU of the run over the requests of both.
                    requests = sum(raw["requests"] for raw in raws)
                    for (name, conns), raw in zip(runs, raws, strict=True):
                        share = cpu * raw["requests"] / requests if requests else None
                        result = Result.from_wrk(config, name, conns, raw, share)
                        run.results.append(result)
                        _print_result(config, result)
            if config != "bare":
                _keep_peaks(run, server.memory(config))


def _print_result(config: str, result: Result) -> None:
    cpu = "-" if result.cpu_ms is None else f"{result.cpu_ms:.2f}"
    print(
        f"  {config:6} {LABELS[result.scenario]:42} c={result.connections:<3} "
        f"{result.rps:8.0f} rps  p50 {result.p50_ms:7.2f}  p99 {result.p99_ms:8.2f} ms  "
        f"CPU {cpu} ms/req  errors {result.error_count}"
    )


def _answer_seconds(url: str) -> float:
    """How long `url` takes to answer (any status)."""
    started = time.perf_counter()
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5):
        pass
    return time.perf_counter() - started


async def settle(url: str, store: data.Store, server: Server) -> None:
    """Wait until the server is done with the requests wrk left in flight when time was up.

    A run ends with up to one request per connection still being served (its query
    running, its transaction open, or a password being hashed): slow ones would otherwise
    eat into the next run. Settled = no connection of the bench database running a query
    or inside a transaction, the server's processes using under IDLE_CPU of a core over
    IDLE_WINDOWS windows in a row, and the readiness probe answering within 100 ms.
    """
    started, quiet = time.monotonic(), 0
    while time.monotonic() - started < SETTLE_TIMEOUT and quiet < IDLE_WINDOWS:
        cpu_before = cpu_seconds(server.process.pid)
        await asyncio.sleep(IDLE_WINDOW)
        busy = cpu_seconds(server.process.pid) - cpu_before > IDLE_CPU * IDLE_WINDOW
        # A queue of password hashes can leave a short gap in the CPU time: the server
        # is idle after IDLE_WINDOWS quiet windows in a row.
        quiet = 0 if busy or await data.busy_connections(store) else quiet + 1
        if quiet == IDLE_WINDOWS:
            slow = await asyncio.to_thread(_answer_seconds, url + "/health/ready") >= 0.1
            quiet = 0 if slow else quiet
    waited = time.monotonic() - started
    if quiet < IDLE_WINDOWS:
        print(f"    (still busy after {SETTLE_TIMEOUT:.0f}s: the next run starts anyway)")
    elif waited > 1:
        print(f"    (waited {waited:.1f}s for the server to finish abandoned requests)")


def _keep_peaks(run: Run, sampled: list[ProcessMemory]) -> None:
    """Replace the earlier sample of each process: VmHWM only grows, VmRSS is the latest."""
    pids = {m.pid for m in sampled}
    run.memory = [m for m in run.memory if m.pid not in pids or m.config != sampled[0].config]
    run.memory += sampled


# --- the run ----------------------------------------------------------------------------


async def prepare_datasets(run: Run) -> dict[str, Marker]:
    options = run.options
    markers: dict[str, Marker] = {}
    wants_sqlite = "sqlite" in options.configs
    wants_mariadb = "mariadb" in options.configs
    started = time.perf_counter()
    if options.skip_seed:
        from bench.seed import mariadb_marker, postgres_marker, sqlite_marker

        pg = await postgres_marker(options.database_url)
        lite = sqlite_marker(options.sqlite_path) if wants_sqlite else None
        maria = await mariadb_marker(options.mariadb_url) if wants_mariadb else None
        if pg is None or (wants_sqlite and lite is None) or (wants_mariadb and maria is None):
            raise BenchError("--skip-seed: the dataset is missing or incomplete; seed it first")
        markers["pg"] = pg
        if lite:
            markers["sqlite"] = lite
        if maria:
            markers["mariadb"] = maria
    else:
        markers["pg"] = await build_postgres(options.database_url, options.spec)
        if wants_sqlite:
            markers["sqlite"] = await asyncio.to_thread(
                build_sqlite, options.sqlite_path, options.sqlite_spec
            )
        if wants_mariadb:
            markers["mariadb"] = await build_mariadb(options.mariadb_url, options.spec)
    step = time.perf_counter() - started
    for name, marker in markers.items():
        run.datasets[name] = {
            "spec": json.loads(marker.spec),
            "seeded_at": marker.seeded_at,
            "seed_seconds": round(marker.seconds, 1),
            "tasks": marker.tasks,
        }
    run.datasets["seed_step_seconds"] = {"this run": round(step, 1)}
    print(f"datasets ready in {step:.1f}s")
    return markers


async def _store(config: str, options: Options) -> data.Store:
    if config == "sqlite":
        return data.SqliteStore(options.sqlite_path)
    if config == "mariadb":
        return await data.MariadbStore.connect(options.mariadb_url)
    return await data.PostgresStore.connect(options.database_url)


async def run_references(run: Run, logs: Path) -> None:
    """The bare endpoints of bench/limit.py on the PostgreSQL dataset."""
    options = run.options
    store = await _store("pg1", options)
    try:
        await _run_references(run, logs, store)
    finally:
        await store.close()


async def _run_references(run: Run, logs: Path, store: data.Store) -> None:
    options = run.options
    organizations = await data.load_organizations(store)
    data_dir = logs / "data-bare"
    data.write_data_dir(data_dir, organizations[:-1], seed=7)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    limit = [sys.executable, "-m", "bench.limit"]
    a_task = organizations[0].tasks[0][1]
    for scenario, app, ready in (
        ("bare_constant", "constant", "/"),
        ("bare_asyncpg", "asyncpg", f"/task?id={a_task}"),
    ):
        argv = [*limit, app, "--port", str(port), "--database-url", options.database_url]
        print(f"reference: {LABELS[scenario]}")
        with serving(argv, env, logs / f"limit-{app}.log", port, ready) as server:
            await measure(run, "bare", url, [(scenario, "big")], {"big": data_dir}, store, server)


async def run_config(run: Run, config: str, markers: dict[str, Marker], logs: Path) -> None:
    options = run.options
    marker = markers[config if config in ("sqlite", "mariadb") else "pg"]
    var_dir = logs / f"var-{config}"
    port = free_port()
    argv = [_venv_bin("tenantry"), "serve", "--no-migrate", "--port", str(port)]
    if config == "pg2":
        argv += ["--workers", "2"]
    if config != "sqlite":
        clear_redis(options.redis_url)
    store = await _store(config, options)
    try:
        organizations = await data.load_organizations(store)
        big, small = organizations[:-1], organizations[-1:]
        candidates = await data.patch_candidates(store, big, pool_size(options))
        url = f"http://127.0.0.1:{port}"
        print(f"{config}: {CONFIGS[config]} ({' '.join(argv[1:])})")
        log = logs / f"server-{config}.log"
        env = server_env(config, options, var_dir)
        pool = PatchPool(candidates)
        dirs = {"big": logs / f"data-{config}-big", "small": logs / f"data-{config}-small"}
        scenarios = [(s, group) for s, _, group in options.scenarios]
        with serving(argv, env, log, port) as server:
            started = time.perf_counter()
            await data.log_in_everyone(url, organizations)
            print(
                f"  logged in {sum(len(o.tokens) for o in organizations)} members "
                f"in {time.perf_counter() - started:.1f}s"
            )
            data.write_data_dir(dirs["big"], big, seed=1)
            data.write_data_dir(dirs["small"], small, seed=2)
            await measure(run, config, url, scenarios, dirs, store, server, pool)
            _keep_peaks(run, server.memory(config))
        if config == PROBE_CONFIG:
            # The same settings (secret key, Redis): the tokens in `dirs` stay valid.
            probes = [(s, g) for s, g in scenarios if s != LOGIN_STALL]
            await count_statements(run, config, env, logs, probes, dirs, store, pool)
        await data.reset_after_run(store, marker.seeded_at)
    finally:
        await store.close()
        if config != "sqlite":
            clear_redis(options.redis_url)


def _through(database_url: str, port: int) -> str:
    """`database_url` with its host and port replaced by 127.0.0.1:`port`."""
    parts = urlsplit(database_url)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return parts._replace(netloc=f"{user}127.0.0.1:{port}").geturl()


async def count_statements(
    run: Run,
    config: str,
    env: dict[str, str],
    logs: Path,
    scenarios: Sequence[tuple[str, str]],
    dirs: dict[str, Path],
    store: data.Store,
    pool: PatchPool,
) -> None:
    """PostgreSQL statements per request of each scenario, through bench/pgcount.py.

    A dedicated server (the proxy costs CPU and latency: none of the figures above are
    taken through it) whose DATABASE_URL points at the proxy. Per scenario: a 1 s
    sequential warm-up (statement caches), an idle window of PROBE_SECONDS (what the
    server sends on its own: job polling, usage flushes), then PROBE_SECONDS of wrk at
    1 connection; statements/request = (run - idle window) ÷ requests.
    """
    upstream = urlsplit(run.options.database_url)
    proxy = CountingProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432)
    proxy_port = proxy.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [_venv_bin("tenantry"), "serve", "--no-migrate", "--port", str(port)]
    env = env | {"DATABASE_URL": _through(env["DATABASE_URL"], proxy_port)}
    print(f"{config}: PostgreSQL statements per request (through a counting proxy)")
    try:
        with serving(argv, env, logs / f"server-{config}-statements.log", port) as server:
            for scenario, group in scenarios:
                lua_name = scenario.removesuffix("_small")
                if scenario in POOL_SCENARIOS:
                    await pool.prepare(store, dirs[group], PROBE_WARMUP_SECONDS)
                wrk(url, dirs[group], lua_name, 1, PROBE_WARMUP_SECONDS)
                await settle(url, store, server)
                if scenario in POOL_SCENARIOS:
                    await pool.prepare(store, dirs[group], PROBE_SECONDS)
                before = proxy.counts()
                await asyncio.sleep(PROBE_SECONDS)
                idle = proxy.counts() - before
                before = proxy.counts()
                raw = wrk(url, dirs[group], lua_name, 1, PROBE_SECONDS)
                spent = proxy.counts() - before
                probe = StatementProbe(
                    config, scenario, raw["requests"], raw["duration_s"], spent.statements,
                    spent.round_trips, idle.statements, idle.round_trips,
                    Result.from_wrk(config, scenario, 1, raw).error_count,
                )  # fmt: skip
                run.probes.append(probe)
                per_request = probe.statements_per_request
                print(
                    f"  {LABELS[scenario]:42} {probe.requests:5} requests  "
                    f"{'-' if per_request is None else f'{per_request:.1f}'} statements/req  "
                    f"(idle window: {idle.statements})  errors {probe.errors}"
                )
                await settle(url, store, server)
    finally:
        proxy.stop()


def dataset_rows(datasets: dict[str, dict[str, Any]]) -> list[list[object]]:
    names = {"pg": "PostgreSQL", "sqlite": "SQLite", "mariadb": "MariaDB"}
    return [
        [names[key], f"{found['tasks']:,}", found["seeded_at"][:19], f"{found['seed_seconds']} s"]
        for key, found in datasets.items()
        if key in names
    ]


def dataset_section(run: Run) -> list[str]:
    options = run.options
    return [
        "## Dataset",
        "",
        f"PostgreSQL and MariaDB: {options.big_organizations} organizations x (5 members, 20 "
        "projects, 200,000 tasks) + 1 organization with 2,000 tasks. SQLite: "
        f"{options.sqlite_spec.big_organizations} organizations x 200,000 tasks + the "
        "2,000-task one (2 M rows do not seed within the time budget of `make bench`). "
        "Roles of the 5 members: "
        "owner, admin, manager, member, member; one shared password hashed by the app's hasher "
        "at its default (production) cost.",
        "",
        *table(("database", "tasks", "seeded at", "seed time"), dataset_rows(run.datasets)),
        "",
        f"Dataset step of this run (seeding or finding it in place): "
        f"{run.datasets['seed_step_seconds']['this run']} s.",
        "",
    ]


def render(run: Run, checks_md: list[str]) -> str:
    options = run.options
    constant = {r.connections: r.rps for r in run.results if r.scenario == "bare_constant"}
    asyncpg_rps = {r.connections: r.rps for r in run.results if r.scenario == "bare_asyncpg"}
    invoked = shlex.join(["python", "-m", "bench.run", *sys.argv[1:]])
    if os.environ.get("MAKELEVEL"):
        target = {"mariadb": "bench-mariadb", "tenantdb": "bench-tenantdb"}.get(
            ",".join(options.configs), "bench"
        )
        invoked = f"make {target}  ({invoked})"
    lines = [
        f"# Benchmark {dt.date.today().isoformat()}",
        "",
        f"Command: `{invoked}`",
        "",
        f"wrk -t{WRK_THREADS}, warm-up {options.warmup} s (discarded), then {options.duration} s "
        f"per scenario at {', '.join(map(str, options.connections))} connections. "
        f"Total wall time of the run: {time.perf_counter() - run.started:.0f} s. "
        "Before each scenario and connection count the server has finished the requests the "
        "previous run left in flight (no query running and no transaction open on the bench "
        f"database, the server's processes under {IDLE_CPU:.0%} of a core in "
        f"{IDLE_WINDOWS} windows of {IDLE_WINDOW} s in a row, readiness answering within "
        "100 ms). Errors: socket errors and timeouts (10 s) plus responses "
        "whose status is not the scenario's expected one; `-`: no request completed in the "
        f"run. Search also runs at {SEARCH_CONNECTIONS} connections; the login-stall scenario "
        f"runs get task at {LATENCY_CONNECTIONS} connections and login at "
        f"{RATIO_CONNECTIONS} at once (two wrk). CPU ms/req: CPU time (user + system) of the "
        "server's whole process tree over the measured run (/proc/<pid>/stat), divided by the "
        "requests completed (both wrk for the login-stall run). The bar is computed from the "
        "PostgreSQL 1-process runs: throughput ratios (to the bare asyncpg fetch at the same "
        "connection count), the p99 ceiling, CPU per get, small vs big organization, bulk "
        f"update and --workers 2 at {RATIO_CONNECTIONS} connections; p99 and offset-page "
        f"latency at {LATENCY_CONNECTIONS}; search at {SEARCH_CONNECTIONS}; statements per "
        "request from the counting proxy (below).",
        "",
        "## Machine",
        "",
        *table(("", ""), list(run.machine.items())),
        "",
    ]
    if run.datasets:
        lines += dataset_section(run)
    for config in ["bare", *options.configs]:
        rows = [r for r in run.results if r.config == config]
        if not rows or config == "tenantdb":
            continue
        title = "Reference endpoints (bench/limit.py)" if config == "bare" else CONFIGS[config]
        lines += [f"## {title}", "", *results_table(rows, LABELS, constant, asyncpg_rps), ""]
    if run.probes:
        lines += [
            "## PostgreSQL statements per request",
            "",
            f"{CONFIGS[PROBE_CONFIG]}, a dedicated server whose database connections go "
            "through bench/pgcount.py (a proxy reading the client side of the protocol): a "
            "statement is an Execute or one SQL statement of a simple query; a round trip a "
            "simple query, a Sync or a Flush. Per scenario: a "
            f"{PROBE_WARMUP_SECONDS} s warm-up, an idle window of {PROBE_SECONDS} s whose "
            "statements (the server's own: job polling, usage flushes) are subtracted, then "
            f"wrk at 1 connection for {PROBE_SECONDS} s.",
            "",
            *statements_table(run.probes, LABELS),
            "",
        ]
    memory_rows = [
        [m.config, m.role, m.pid, f"{m.peak_mb:.0f}", f"{m.final_mb:.0f}"] for m in run.memory
    ]
    lines += [
        "## Server memory",
        "",
        "VmHWM (peak resident set) and VmRSS when the configuration's last run ended, per process.",
        "",
        *table(("config", "process", "pid", "peak MB", "final MB"), memory_rows),
        "",
        *checks_md,
        "",
    ]
    return "\n".join(lines)


def tenantdb_section(run: Run, checks: Sequence[Check]) -> list[str]:
    """Database per tenant vs shared mode (bench/tenantdb.py): the table, provisioning, bar."""
    options = run.options
    return [
        "## Database per tenant (TENANCY_MODE=database) vs shared mode",
        "",
        f"{options.tenants} organizations, each with 1 owner, 1 project and "
        f"{options.tenant_tasks} tasks, created through the API; requests spread evenly over "
        "all organizations (a random member token and task per request). Shared mode: one "
        "PostgreSQL database. Database mode: a control database and one database per "
        "organization, placed by the product on the emptier of 2 PostgreSQL servers (the "
        "machine's and a throwaway cluster on the same machine, bench/pgcluster.py). Both: "
        "1 process, no application role (the throwaway server has none: no row-level "
        "security in either), enterprise plan, the same wrk runs.",
        "",
        *tenantdb_table(run.results, LABELS),
        "",
        f"Both modes' servers run side by side and are measured in {options.tenant_rounds} "
        "alternating rounds (the first mode alternates too); each figure above is the "
        "mode's median round by rps, whole. Every round:",
        "",
        *rounds_table(run.tenantdb_rounds, LABELS),
        "",
        "Provisioning: `POST /orgs` one at a time, as the API answers it (database mode: "
        "the tenant's database made, a copy of its server's migrated template, before the "
        "201).",
        "",
        *provisioning_table(run.provisioning),
        "",
        "Bar (issue 17): get by id and create in database mode within 20 % of shared mode "
        "(rps at least 80 %, p50 at most 120 %).",
        "",
        *table(
            ("line", "figure", "result"), [[c.name, c.figure, verdict(c.passed)] for c in checks]
        ),
    ]


async def bench(options: Options) -> Path:
    pg_version, redis_version = await check_services(options)
    if not _command("wrk", "-v").startswith("wrk"):
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    mariadb_version = await check_mariadb(options)
    run = Run(options, machine_facts(options, pg_version, redis_version, mariadb_version))
    logs = RESULTS / ".logs"
    logs.mkdir(parents=True, exist_ok=True)
    seeded = [c for c in options.configs if c in DATASET_CONFIGS]
    markers = await prepare_datasets(run) if seeded else {}
    if seeded:
        await run_references(run, logs)
    for config in seeded:
        await run_config(run, config, markers, logs)
    if "tenantdb" in options.configs:
        from bench.tenantdb import run_tenantdb  # it builds on this module

        await run_tenantdb(run, logs)
    run.machine["load average at end (1/5/15 min)"] = _load_average()
    columns = [
        (title, bar_checks(run.results, run.memory, run.probes, LABELS, config, twin))
        for config, twin, title in BAR_COLUMNS
        if config in options.configs
    ]
    checks_md = bar_section(columns) if seeded else []
    if "tenantdb" in options.configs:
        tenantdb_bar = tenantdb_checks(run.results, LABELS, options.connections)
        columns.append(("database per tenant", tenantdb_bar))
        checks_md += ["", *tenantdb_section(run, tenantdb_bar)]
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(render(run, checks_md))
    raw = {
        "machine": run.machine,
        "datasets": run.datasets,
        "options": {k: str(v) for k, v in asdict(options).items()},
        "results": [asdict(r) for r in run.results],
        "memory": [asdict(m) for m in run.memory],
        "statements": [asdict(p) for p in run.probes],
        "provisioning": [asdict(p) for p in run.provisioning],
        "tenantdb_rounds": [asdict(r) for r in run.tenantdb_rounds],
        "bar": {title: [asdict(c) for c in checks] for title, checks in columns},
    }
    options.output.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    print("\n".join(checks_md))
    print(f"\nreport: {options.output}  (total {time.perf_counter() - run.started:.0f}s)")
    return options.output


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=1, help="discarded seconds before each")
    parser.add_argument(
        "--connections",
        default=f"{LATENCY_CONNECTIONS},{RATIO_CONNECTIONS}",
        help="comma-separated counts (search also runs at 16)",
    )
    parser.add_argument("--only", help=f"scenarios: {','.join(s for s, _, _ in SCENARIOS)}")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=",".join(CONFIGS))
    parser.add_argument("--tenants", type=int, default=50, help="tenantdb: organizations")
    parser.add_argument("--tenant-tasks", type=int, default=20, help="tenantdb: tasks in each")
    parser.add_argument(
        "--tenant-rounds", type=int, default=3, help="tenantdb: rounds per mode (median kept)"
    )
    parser.add_argument("--skip-seed", action="store_true", help="use the datasets as they are")
    parser.add_argument("--output", type=Path, help="report path [bench/results/<date>.md]")
    parser.add_argument("--database-url", default=BENCH_DATABASE_URL)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sqlite-path", type=Path, default=ROOT / "var" / "bench" / "bench.db")
    parser.add_argument("--mariadb-url", default=BENCH_MARIADB_URL, help="mariadb+asyncmy://...")
    parser.add_argument(
        "--big-organizations",
        type=int,
        default=DatasetSpec.big_organizations,
        help="200,000-task organizations of the dataset (a short run: 1; SQLite at most 2)",
    )
    args = parser.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    if unknown := set(configs) - set(CONFIGS):
        parser.error(f"unknown configs: {', '.join(sorted(unknown))}")
    only = set(args.only.split(",")) if args.only else None
    if only and (unknown := only - {s for s, _, _ in SCENARIOS}):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return Options(
        duration=args.duration,
        warmup=args.warmup,
        connections=[int(c) for c in args.connections.split(",")],
        only=only,
        configs=configs,
        skip_seed=args.skip_seed,
        output=args.output or RESULTS / f"{dt.date.today().isoformat()}.md",
        database_url=args.database_url,
        redis_url=args.redis_url,
        sqlite_path=args.sqlite_path.resolve(),
        mariadb_url=args.mariadb_url,
        big_organizations=args.big_organizations,
        tenants=args.tenants,
        tenant_tasks=args.tenant_tasks,
        tenant_rounds=max(1, args.tenant_rounds),
    )


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    try:
        asyncio.run(bench(options))
    except (BenchError, data.LoginFailed) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench: interrupted (servers stopped)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
