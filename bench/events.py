"""Events benchmark: 200 subscribers over 10 organizations while writes run at 50/s.

Starts `tenantry serve --no-worker` on PostgreSQL + Redis (a database of its own,
`tenantry_bench_events`, created and migrated here), opens SUBSCRIBERS event streams
spread over ORGS organizations, then:

- measures get-by-id (one project, wrk at 16 connections) without streams,
  then with the streams open (issue 15: at most 10 % slower);
- runs writes (PATCH of a project, spread over the organizations) at RATE per second for
  DURATION seconds and records, for every delivery to every subscriber, the time from the
  change's audit timestamp (taken in its transaction, just before the commit) to its
  receipt: p50 / p99 / max (target p99 ≤ 100 ms).

The load generator runs in this process, on the same 2 cores as the server: the figures
include its own scheduling. Usage: `python -m bench.events [--duration 20]`; writes
bench/results/events-<date>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.run import ROOT, _venv_bin, cpu_seconds, free_port, serving

DATABASE = "tenantry_bench_events"
ORGS = 10
SUBSCRIBERS = 200
RATE = 50
GET_CLIENTS = 16


async def _recreate_database(admin_url: str) -> str:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    return admin_url.rsplit("/", 1)[0] + f"/{DATABASE}"


def _env(database_url: str, redis_url: str, port: int, var_dir: Path) -> dict[str, str]:
    import os
    import secrets

    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TZ"}}
    return env | {
        "ENV": "development",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "VAR_DIR": str(var_dir),
        "DATABASE_URL": database_url.replace("postgresql://", "postgresql+asyncpg://"),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": f"tenantry-bench-events-{secrets.token_hex(4)}:",
        "RATE_LIMIT_ENABLED": "false",
        "ACCESS_TOKEN_TTL_SECONDS": "7200",
        "EVENTS_MAX_STREAMS_PER_USER": str(SUBSCRIBERS),  # each owner holds its org's streams
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "PASSWORD_HASH_PARALLELISM": "1",
        "LOG_LEVEL": "WARNING",
        "PORT": str(port),
    }


async def _setup(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    orgs = []
    for i in range(ORGS):
        email = f"bench-events-{i}-{time.time_ns()}@example.com"
        data = (
            await http.post("/auth/register", json={"email": email, "password": "bench-password-1"})
        ).json()["data"]
        headers = {"Authorization": f"Bearer {data['accessToken']}"}
        org = (await http.post("/orgs", json={"name": f"Bench {i}"}, headers=headers)).json()
        path = f"/orgs/{org['data']['id']}"
        project = (await http.post(f"{path}/projects", json={"name": "p"}, headers=headers)).json()[
            "data"
        ]["id"]
        orgs.append({"path": path, "headers": headers, "project": project})
    return orgs


async def _gets(base: str, org: dict[str, Any], seconds: float) -> dict[str, float]:
    """get-by-id with wrk (C, its own process: the load generator must not be what is
    measured), GET_CLIENTS connections, one organization's project."""
    url = f"{base}{org['path']}/projects/{org['project']}"
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t2", f"-c{GET_CLIENTS}", f"-d{max(1, round(seconds))}s", "--latency",
        "-H", f"Authorization: {org['headers']['Authorization']}", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"wrk failed: {stderr.decode()}")
    return _wrk_figures(stdout.decode())


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_figures(output: str) -> dict[str, float]:
    """req/s and the p50/p99 latencies (ms) of wrk's `--latency` output; any non-2xx fails."""
    if "Non-2xx" in output:
        raise SystemExit(f"get-by-id answered errors:\n{output}")
    figures: dict[str, float] = {}
    for line in output.splitlines():
        parts = line.split()
        if parts[:1] == ["Requests/sec:"]:
            figures["rps"] = float(parts[1])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            value = parts[1]
            unit = next(u for u in ("us", "ms", "s") if value.endswith(u))
            ms = float(value[: -len(unit)]) * _WRK_UNITS[unit]
            figures["p50_ms" if parts[0] == "50%" else "p99_ms"] = ms
    return figures


async def _subscriber(
    base: str, org: dict[str, Any], ready: asyncio.Event, latencies: list[float], opened: list[int]
) -> None:
    async with (
        httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30, read=None)) as http,
        http.stream("GET", f"{org['path']}/events", headers=org["headers"]) as response,
    ):
        assert response.status_code == 200, response.status_code
        opened.append(1)
        ready.set()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                received = time.time()
                at = json.loads(line[6:]).get("at")
                if at:
                    moment = dt.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
                    latencies.append(received - moment)


async def _writes(http: httpx.AsyncClient, orgs: list[dict[str, Any]], seconds: float) -> int:
    """PATCHes at RATE/s; how many were written (a concurrent PATCH of the same project
    may lose its version check: 409, no event)."""
    interval = 1.0 / RATE
    started = time.monotonic()
    sent = 0
    pending: set[asyncio.Task[Any]] = set()
    done: list[httpx.Response] = []
    while time.monotonic() - started < seconds:
        org = orgs[sent % len(orgs)]
        task = asyncio.create_task(
            http.patch(
                f"{org['path']}/projects/{org['project']}",
                json={"name": f"n{sent}"},
                headers=org["headers"],
            )
        )
        pending.add(task)
        task.add_done_callback(pending.discard)
        task.add_done_callback(lambda t: done.append(t.result()))
        sent += 1
        await asyncio.sleep(max(0.0, started + sent * interval - time.monotonic()))
    await asyncio.gather(*pending)
    return sum(1 for response in done if response.status_code == 200)


async def _subscribe_all(base: str, orgs: list[dict[str, Any]]) -> dict[str, Any]:
    """Child process: open the streams, say `ready`, collect until stdin closes."""
    latencies: list[float] = []
    opened: list[int] = []
    readers = []
    for n in range(SUBSCRIBERS):
        ready = asyncio.Event()
        readers.append(
            asyncio.create_task(_subscriber(base, orgs[n % ORGS], ready, latencies, opened))
        )
        await asyncio.wait_for(ready.wait(), 10)
    print("ready", len(opened), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # the parent closes it when done
    for reader in readers:
        reader.cancel()
    for reader in readers:
        with contextlib.suppress(BaseException):
            await reader
    return {"latencies": latencies, "opened": len(opened)}


async def _clean_up(admin_url: str, redis_url: str, prefix: str) -> None:
    """Drop the benchmark's database and its Redis keys."""
    from redis.asyncio import Redis

    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()
    client = Redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


def _loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"


def _gets_line(figures: dict[str, float]) -> str:
    return (
        f"{figures['rps']:.0f} req/s, p50 {figures['p50_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms"
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def bench(admin_url: str, redis_url: str, duration: float) -> str:
    database_url = await _recreate_database(admin_url)
    var_dir = ROOT / "var" / "bench-events"
    var_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = _env(database_url, redis_url, port, var_dir)
    migrate = await asyncio.create_subprocess_exec(
        _venv_bin("tenantry"), "migrate", env=env, cwd=ROOT
    )
    if await migrate.wait() != 0:
        raise SystemExit("tenantry migrate failed")
    base = f"http://127.0.0.1:{port}/api/v1"
    argv = [_venv_bin("tenantry"), "serve", "--no-worker", "--no-migrate"]
    with serving(argv, env, var_dir / "serve.log", port) as server:
        pid = server.process.pid
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
            orgs = await _setup(http)
            await _gets(base, orgs[0], 1)  # warm-up
            without = await _gets(base, orgs[0], duration / 2)
            orgs_file, out_file = var_dir / "orgs.json", var_dir / "latencies.json"
            orgs_file.write_text(json.dumps(orgs))
            out_file.unlink(missing_ok=True)
            # The subscribers run in a process of their own: their parsing must not slow
            # this process's get-by-id loop (the figure compared with and without them).
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.events", "--subscribe", base,
                str(orgs_file), str(out_file),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            )  # fmt: skip
            assert child.stdout is not None
            assert child.stdin is not None
            line = await asyncio.wait_for(child.stdout.readline(), 120)
            opened = int(line.split()[1])
            idle_started, idle_cpu = time.monotonic(), cpu_seconds(pid)
            await asyncio.sleep(5)  # the open, idle streams: what do they cost the server?
            idle = (cpu_seconds(pid) - idle_cpu) / (time.monotonic() - idle_started) * 100
            with_streams = await _gets(base, orgs[0], duration / 2)
            busy_cpu = cpu_seconds(pid)
            sent = await _writes(http, orgs, duration)
            per_write = (cpu_seconds(pid) - busy_cpu) / max(sent, 1) * 1000
            await asyncio.sleep(1)  # the last deliveries
            child.stdin.close()
            await asyncio.wait_for(child.wait(), 60)
            latencies = json.loads(out_file.read_text())["latencies"]
    await _clean_up(admin_url, redis_url, env["REDIS_KEY_PREFIX"])
    expected = sent * SUBSCRIBERS // ORGS
    slower = (1 - with_streams["rps"] / without["rps"]) * 100
    lines = [
        f"# Events benchmark {dt.date.today().isoformat()}",
        "",
        f"{SUBSCRIBERS} subscribers over {ORGS} organizations, writes at {RATE}/s for "
        f"{duration:.0f} s (PostgreSQL + Redis, 1 API process; the subscribers in a process of "
        "their own, the writes and gets in another, all on the same cores as the server).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| writes committed | {sent} |",
        f"| deliveries (expected) | {len(latencies)} ({expected}) |",
        f"| delivery latency p50 | {_percentile(latencies, 0.5):.1f} ms |",
        f"| delivery latency p99 | {_percentile(latencies, 0.99):.1f} ms (target ≤ 100) |",
        f"| delivery latency max | {max(latencies) * 1000:.1f} ms |",
        f"| get-by-id without streams | {_gets_line(without)} |",
        f"| get-by-id with {opened} open streams | {_gets_line(with_streams)} |",
        f"| slower with streams | {slower:.1f} % (target ≤ 10) |",
        f"| server CPU with {opened} idle streams | {idle:.1f} % of a core |",
        f"| server CPU per write, fan-out to {SUBSCRIBERS // ORGS} subscribers included | "
        f"{per_write:.1f} ms |",
        "",
        f"Mean latency {statistics.fmean(latencies) * 1000:.1f} ms. Latency runs from the audit "
        "entry's `at` (set in the transaction, before the commit) to the line's arrival. "
        f"Load average at the end: {_loadavg()} (2 cores shared with other work: the latency "
        "tail and the get-by-id comparison are dominated by CPU contention when it is above 2).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--subscribe":
        base, orgs_file, out_file = sys.argv[2:]
        found = asyncio.run(_subscribe_all(base, json.loads(Path(orgs_file).read_text())))
        Path(out_file).write_text(json.dumps(found))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    report = asyncio.run(bench(args.database_url, args.redis_url, args.duration))
    output = ROOT / "bench" / "results" / f"events-{dt.date.today().isoformat()}.md"
    output.write_text(report)
    print(report)
    print(f"written to {output}")


if __name__ == "__main__":
    main()
