"""`make fuzz`: schemathesis against a served tenantry on SQLite, as an organization owner.

Starts `tenantry serve` on a free 127.0.0.1 port with a throwaway SQLite database, registers
an account, creates an organization (the account is its owner), then runs schemathesis with
every check and every phase against `/openapi.json`, `orgId` pinned to that organization
and the owner's access token on every request. Exits with schemathesis' status.

Exclusions (fuzz/schemathesis.toml says why, each one narrow) are the two operations that
end the fuzzing session itself: `auth_logout_all` revokes the token every later request
carries and `organizations_delete` deletes the organization every tenant path is pinned to;
and `events_stream`, an endless Server-Sent Events response (tests/events/ covers it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
CONFIG_TEMPLATE = HERE / "schemathesis.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_env(var_dir: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ENV": "development",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "VAR_DIR": str(var_dir),
            "DATABASE_URL": f"sqlite+aiosqlite:///{var_dir / 'fuzz.db'}",
            "RATE_LIMIT_ENABLED": "false",  # one client IP sends thousands of requests
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_MEMORY_KIB": "1024",
            "PASSWORD_HASH_PARALLELISM": "1",
            "LOG_LEVEL": "WARNING",
        }
    )
    env.pop("REDIS_URL", None)
    return env


@contextlib.contextmanager
def served(var_dir: Path) -> Iterator[str]:
    port = free_port()
    tenantry = Path(sys.executable).with_name("tenantry")
    log = (var_dir / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(tenantry), "serve", "--migrate"],
        env=serve_env(var_dir, port),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(
                    f"fuzz: tenantry serve exited: {(var_dir / 'serve.log').read_text()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("fuzz: tenantry serve did not become ready in 60 s")
            time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# Not one of the document's examples: the fuzzer sends those (e.g. to DELETE /users/me).
PASSWORD = f"fuzzing-{uuid.uuid4().hex}"


def owner_session(base: str) -> tuple[str, str]:
    """The email of a fresh account and the id of the organization it owns."""
    email = f"fuzz-{uuid.uuid4().hex[:12]}@example.com"
    registered = httpx.post(
        f"{base}/api/v1/auth/register",
        json={"email": email, "password": PASSWORD},
        timeout=30,
    )
    registered.raise_for_status()
    token = registered.json()["data"]["accessToken"]
    org = httpx.post(
        f"{base}/api/v1/orgs",
        json={"name": "Fuzzing Inc"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    org.raise_for_status()
    return email, org.json()["data"]["id"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=10)
    parser.add_argument("--workers", default="2")
    parser.add_argument("extra", nargs="*", help="more schemathesis arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tenantry-fuzz-") as tmp:
        var_dir = Path(tmp)
        with served(var_dir) as base:
            email, org_id = owner_session(base)
            env = dict(
                os.environ,
                FUZZ_BASE_URL=base,
                FUZZ_EMAIL=email,
                FUZZ_PASSWORD=PASSWORD,
                FUZZ_ORG_ID=org_id,
                SCHEMATHESIS_HOOKS="hooks",  # fuzz/hooks.py: signs the owner in
                PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
            )
            command = [
                str(Path(sys.executable).with_name("schemathesis")),
                "--config-file",
                str(CONFIG_TEMPLATE),
                "run",
                f"{base}/openapi.json",
                "--max-examples",
                str(args.max_examples),
                "--workers",
                args.workers,
                *args.extra,
            ]
            print("fuzz:", " ".join(command[1:]), flush=True)
            # In the throwaway directory: schemathesis keeps its cache in `.schemathesis/`.
            result = subprocess.run(command, env=env, cwd=var_dir, check=False)
            if result.returncode != 0:
                tail = (var_dir / "serve.log").read_text(errors="replace")[-4000:]
                print(f"fuzz: server log (tail):\n{tail}", file=sys.stderr)
            return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
