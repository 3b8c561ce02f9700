"""The system under benchmark: the four services as processes (``python -m services.<name> serve``) on fresh
databases, a unique AMQP prefix, fresh keys and an SMTP server inside the bench process; and its teardown.

Everything talks to 127.0.0.1 only. Nothing here touches databases, queues or exchanges it did not create.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from shared.db import drop_database
from shared.sealing import new_key
from shared.topology import QUEUES, Topology

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("customers", "accounts", "visitors", "notifications")
PG_URL = "postgresql://postgres@127.0.0.1:5432"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
RETRY_DELAYS_MS = (1000, 5000, 30000)
OPERATOR_EMAIL = "bench-operator@example.com"

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"aiosmtpd.*")
from aiosmtpd.controller import Controller  # noqa: E402  (after the warning filter)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dsn(database: str) -> str:
    return f"{PG_URL}/{database}"


# --------------------------------------------------------------------------------------------------- SMTP server


class _RecordingHandler:
    def __init__(self, server: RecordingSmtp) -> None:
        self.server = server

    async def handle_MAIL(self, smtp: Any, session: Any, envelope: Any, address: str, mail_options: Any) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.bench_mail_wall = time.time()  # the mail transaction starts (after connect and EHLO)
        srv = self.server
        srv.active += 1
        srv.max_active = max(srv.max_active, srv.active)
        return "250 OK"

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        now, wall = time.perf_counter(), time.time()
        srv = self.server
        srv.active = max(0, srv.active - 1)
        for rcpt in envelope.rcpt_tos:
            key = rcpt.lower()
            if key in srv.accepted:
                srv.duplicates += 1
                continue
            srv.mail_wall[key] = getattr(envelope, "bench_mail_wall", wall)
            srv.accepted_wall[key] = wall  # written before `accepted`: readers key on `accepted`
            srv.accepted[key] = now
        srv.messages += 1
        return "250 Message accepted for delivery"


class RecordingSmtp:
    """aiosmtpd (its own thread and event loop) recording, for each recipient, when its message was accepted
    (``accepted`` on the ``time.perf_counter()`` clock, ``accepted_wall`` on ``time.time()``) and when its mail
    transaction began (``mail_wall``, at MAIL FROM); and the most mail transactions open at once."""

    def __init__(self) -> None:
        self.port = free_port()
        self.accepted: dict[str, float] = {}
        self.accepted_wall: dict[str, float] = {}
        self.mail_wall: dict[str, float] = {}
        self.messages = 0
        self.duplicates = 0
        self.active = 0
        self.max_active = 0
        self._controller = Controller(
            _RecordingHandler(self), hostname="127.0.0.1", port=self.port, server_hostname="bench.localhost"
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._controller.stop()


# ------------------------------------------------------------------------------------------ process statistics

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _stat(pid: int | str) -> tuple[str, list[str]] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    return comm, raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int | str) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/<pid>/stat), every thread included."""
    st = _stat(pid)
    if st is None:
        return 0.0
    return (int(st[1][11]) + int(st[1][12])) / CLK_TCK


_CLIENT_BACKEND = re.compile(r"^postgres: [^:]+: \S+ (\S+) (\d+\.\d+\.\d+\.\d+\(\d+\)|\[local\])")


_seen: dict[tuple[str, str], tuple[str, float]] = {}
"""PostgreSQL and RabbitMQ processes seen by ``cpu_by_group``: (pid, start time) -> (group, CPU seconds then)."""
_gone: dict[str, float] = {"postgres": 0.0, "rabbitmq": 0.0}
"""CPU seconds of those processes that have exited since (last seen): a group's total keeps them."""


def cpu_by_group(service_pids: dict[str, int], db_marker: str) -> dict[str, float]:
    """CPU seconds so far of each service process; of PostgreSQL working for this run (the backends of its
    databases and the background processes); of RabbitMQ (``beam.smp``; it cannot be split); of this bench process
    (load generator and SMTP server); and of every core (``machine``). PostgreSQL backends of other databases
    (another test run) count as neither. A process of a group that exits (a pool closing an idle connection, an
    autovacuum worker done) keeps counting with the CPU it had when last seen, so that no total goes down."""
    out = {name: cpu_seconds(pid) for name, pid in service_pids.items()}
    now: dict[tuple[str, str], tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _stat(entry.name)
        if st is None:
            continue
        comm, fields = st
        if comm == "postgres":
            try:
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            client = _CLIENT_BACKEND.match(cmdline)
            if client is not None and db_marker not in client.group(1):
                continue
            group = "postgres"
        elif comm == "beam.smp":
            group = "rabbitmq"
        else:
            continue
        now[(entry.name, fields[19])] = (group, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    for key, (group, seconds) in _seen.items():
        if key not in now:
            _gone[group] += seconds
    _seen.clear()
    _seen.update(now)
    for group in ("postgres", "rabbitmq"):
        out[group] = _gone[group] + sum(seconds for g, seconds in now.values() if g == group)
    out["bench"] = cpu_seconds(os.getpid())
    out["machine"], out["steal"] = _machine_seconds()
    return out


def machine_busy_seconds() -> float:
    """CPU seconds every core has spent busy (user, nice, system, irq, softirq, steal) since boot."""
    return _machine_seconds()[0]


def _machine_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of every core since boot: steal is the time the hypervisor ran something else
    while this VM wanted its cores (counted in busy: the work waited for it)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK, steal / CLK_TCK


class Sampler:
    """RSS of each service process every ``interval`` seconds; peaks per phase and overall."""

    def __init__(self, pids: dict[str, int], db_marker: str, interval: float = 0.5) -> None:
        self.pids = pids
        self.db_marker = db_marker
        self.interval = interval
        self.idle: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.phase_peak: dict[str, dict[str, float]] = {}
        self.phase: str | None = None
        self.samples = 0
        self._task: asyncio.Task[None] | None = None
        self._cpu_mark: tuple[float, dict[str, float]] | None = None
        self.cpu: dict[str, dict[str, float]] = {}

    def read(self) -> dict[str, float]:
        return {n: v for n, p in self.pids.items() if (v := rss_mib(p)) is not None}

    def snapshot_idle(self) -> None:
        self.idle = self.read()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self.interval)

    def _sample(self) -> None:
        self.samples += 1
        values = self.read()
        for name, v in values.items():
            self.peak[name] = max(self.peak.get(name, 0.0), v)
            if self.phase is not None:
                per = self.phase_peak.setdefault(self.phase, {})
                per[name] = max(per.get(name, 0.0), v)

    def begin(self, phase: str) -> None:
        self.phase = phase
        self._sample()
        self._cpu_mark = (time.perf_counter(), cpu_by_group(self.pids, self.db_marker))

    def end(self) -> dict[str, float]:
        """Close the phase: returns the CPU use of each group as % of one core over the phase."""
        self._sample()
        assert self._cpu_mark is not None and self.phase is not None
        t0, before = self._cpu_mark
        wall = time.perf_counter() - t0
        after = cpu_by_group(self.pids, self.db_marker)
        pct = {k: round(100 * (after[k] - before.get(k, 0.0)) / wall, 1) for k in after}
        # whatever else ran on the machine meanwhile (another test run, with its PostgreSQL backends, shows here)
        pct["other"] = round(max(0.0, pct["machine"] - sum(v for k, v in pct.items() if k != "machine")), 1)
        pct["wall_s"] = round(wall, 1)
        prev = self.cpu.get(self.phase)
        if prev is not None:  # the same phase measured again (in slices): the wall-weighted mean of both
            w0, w1 = prev["wall_s"], pct["wall_s"]
            pct = {k: round((prev.get(k, 0.0) * w0 + v * w1) / (w0 + w1), 1) for k, v in pct.items() if k != "wall_s"}
            pct["wall_s"] = round(w0 + w1, 1)
        self.cpu[self.phase] = pct
        self.phase = None
        self._cpu_mark = None
        return pct

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# ------------------------------------------------------------------------------------------- machine description


def _first(path: str, key: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


async def describe_machine() -> dict[str, Any]:
    mem_kib = _first("/proc/meminfo", "MemTotal")
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(mem_kib.split()[0]) / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }
    try:
        conn = await asyncpg.connect(dsn("postgres"), timeout=5)
        try:
            info["postgresql"] = await conn.fetchval("SHOW server_version")
            info["autovacuum"] = await conn.fetchval("SHOW autovacuum")
        finally:
            await conn.close()
    except Exception as exc:
        info["postgresql"] = f"unknown ({type(exc).__name__})"
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
        try:
            transport = connection.transport
            assert transport is not None  # connected
            version = transport.connection.server_properties.get("version")
            info["rabbitmq"] = version.decode() if isinstance(version, bytes) else str(version)
        finally:
            await connection.close()
    except Exception as exc:
        info["rabbitmq"] = f"unknown ({type(exc).__name__})"
    return info


async def wakeup_probe(n: int = 300, busy_s: float = 0.5) -> dict[str, float]:
    """Machine CPU (every process, every core) per PostgreSQL round trip (a one-row insert), back to back and
    after 5 ms of idleness. On a virtual machine where waking an idle process is dear, the second is several times
    the first: a pipeline of processes that each wait for the previous one then costs more CPU per flow at a low
    rate than at a high one (where processes find work waiting instead of sleeping)."""
    conn = await asyncpg.connect(dsn("postgres"), timeout=5)
    out: dict[str, float] = {}
    try:
        await conn.execute("CREATE TEMP TABLE probe (id int)")
        # the machine's busy time comes in clock ticks (10 ms): back to back, run for ``busy_s`` (thousands of
        # round trips) rather than ``n``, which would take a few ticks and read as 0 or 33 us
        for label, gap in (("busy_us", 0.0), ("after_5ms_idle_us", 0.005)):
            m0, t0, done = machine_busy_seconds(), time.monotonic(), 0
            while done < n if gap else time.monotonic() - t0 < busy_s:
                await conn.execute("INSERT INTO probe VALUES (1)")
                done += 1
                if gap:
                    await asyncio.sleep(gap)
            out[label] = round(1e6 * (machine_busy_seconds() - m0) / done)
    finally:
        await conn.close()
    return out


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['nproc']} CPU ({m['cpu_model']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}, {m['python']}, "
        f"PostgreSQL {m['postgresql']}"
        + (" (autovacuum off: the bench vacuums between phases)" if m.get("autovacuum") == "off" else "")
        + f", RabbitMQ {m['rabbitmq']}"
        + (
            f"; a database round trip costs {m['wakeup']['busy_us']} us of machine CPU back to back, "
            f"{m['wakeup']['after_5ms_idle_us']} us after 5 ms idle"
            if m.get("wakeup")
            else ""
        )
    )


# ------------------------------------------------------------------------------------------------- the system


@dataclass
class System:
    run_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    token: str = ""
    smtp: RecordingSmtp | None = None
    ceiling: subprocess.Popen[bytes] | None = None  # bench/ceiling.py, on the customers database
    ceiling_port: int = 0
    _key_dir: Path | None = None
    _databases_made: bool = False

    @property
    def prefix(self) -> str:
        return f"cwbench{self.run_id}."

    @property
    def databases(self) -> dict[str, str]:
        return {s: dsn(f"cwbench_{self.run_id}_{s}") for s in SERVICES}

    @property
    def urls(self) -> dict[str, str]:
        return {n: f"http://127.0.0.1:{p}" for n, p in self.ports.items()}

    @property
    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items()}

    @property
    def ceiling_url(self) -> str:
        return f"http://127.0.0.1:{self.ceiling_port}"

    def log(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    # -- set-up

    async def check_infrastructure(self) -> None:
        problems = []
        try:
            conn = await asyncpg.connect(dsn("postgres"), timeout=5)
            await conn.close()
        except Exception as exc:
            problems.append(f"PostgreSQL is unreachable at {PG_URL}: {exc}")
        try:
            connection = await aio_pika.connect(AMQP_URL, timeout=5)
            await connection.close()
        except Exception as exc:
            problems.append(f"RabbitMQ is unreachable at {AMQP_URL}: {exc}")
        if problems:
            raise SystemExit("; ".join(problems) + " (start it: see the README)")

    def _build_env(self, key_path: Path, seal_key: str) -> None:
        self.ports = {name: free_port() for name in SERVICES}
        prefixes = tuple(f"{s.upper()}_" for s in SERVICES)
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        assert self.smtp is not None
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "AMQP_URL": AMQP_URL,
                "AMQP_PREFIX": self.prefix,
                "JWKS_URL": f"http://127.0.0.1:{self.ports['accounts']}/.well-known/jwks.json",
                "LOG_FORMAT": "json",
                # as compose and k8s run them (access lines: errors, slow requests, the first ACCESS_LOG_BURST a
                # second per route, a count of the rest); --set ACCESS_LOG_BURST=0 for a line every request
                "LOG_LEVEL": "INFO",
                "RETRY_DELAYS_MS": ",".join(map(str, RETRY_DELAYS_MS)),
                "ACCOUNTS_JWT_PRIVATE_KEY_FILE": str(key_path),
                "ACCOUNTS_ACCESS_TOKEN_TTL_S": "3600",
                "ACCOUNTS_SEAL_KEY": seal_key,
                "ACCOUNTS_PUBLIC_BASE_URL": f"http://127.0.0.1:{self.ports['accounts']}",
                "NOTIFICATIONS_SEAL_KEY": seal_key,
                "NOTIFICATIONS_SMTP_HOST": "127.0.0.1",
                "NOTIFICATIONS_SMTP_PORT": str(self.smtp.port),
            }
        )
        for name in SERVICES:
            env[f"{name.upper()}_HOST"] = "127.0.0.1"
            env[f"{name.upper()}_PORT"] = str(self.ports[name])
            env[f"{name.upper()}_DATABASE_URL"] = self.databases[name]
        env.update(self.extra_env)
        self.env = env

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args],
            env=self.env,
            cwd=ROOT,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    async def _cli_async(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *args,
            env=self.env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"`python -m {' '.join(args)}` failed ({proc.returncode}):\n{out.decode()[-2000:]}")

    async def setup(self) -> None:
        await self.check_infrastructure()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._key_dir = Path(tempfile.mkdtemp(prefix="cwbench-keys-"))
        key_path = self._key_dir / "jwt-signing-key.pem"
        self.smtp = RecordingSmtp()
        self.smtp.start()
        self._build_env(key_path, new_key())
        result = self.cli("services.accounts", "generate-signing-key", str(key_path))
        if result.returncode != 0:
            raise RuntimeError(f"generate-signing-key failed: {result.stderr}")
        self._databases_made = True  # from here on, teardown drops them (IF EXISTS)
        await asyncio.gather(*(self._cli_async(f"services.{name}", "migrate") for name in SERVICES))
        for name in SERVICES:
            log = self.log(name).open("ab")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}", "serve"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
            log.close()
        await self.wait_ready()
        await self.start_ceiling()
        password = secrets.token_urlsafe(24)
        result = self.cli(
            "services.accounts",
            "create-operator",
            "--email",
            OPERATOR_EMAIL,
            "--name",
            "Bench Operator",
            "--password-stdin",
            stdin=password + "\n",
        )
        if result.returncode != 0:
            raise RuntimeError(f"create-operator failed: {result.stderr}")
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{self.urls['accounts']}/v1/tokens", json={"email": OPERATOR_EMAIL, "password": password}) as r,
        ):
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"operator login failed: {r.status} {body}")
            self.token = body["access_token"]

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            while True:
                for name, proc in self.procs.items():
                    if proc.poll() is not None:
                        tail = self.log(name).read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
                try:
                    statuses = []
                    for url in self.urls.values():
                        async with s.get(f"{url}/readyz") as r:
                            statuses.append(r.status)
                    if all(st == 200 for st in statuses):
                        return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"services not ready after {timeout}s (logs in {self.run_dir})")
                await asyncio.sleep(0.2)

    async def start_ceiling(self, timeout: float = 30) -> None:
        """The bare aiohttp + asyncpg server (bench/ceiling.py) on the customers database, once it is migrated."""
        self.ceiling_port = free_port()
        log = self.log("ceiling").open("ab")
        self.ceiling = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "ceiling.py"),
                "--dsn",
                self.databases["customers"],
                "--port",
                str(self.ceiling_port),
                "--pool-max",
                self.env.get("CUSTOMERS_DB_POOL_MAX", "10"),
            ],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            while True:
                if self.ceiling.poll() is not None:
                    tail = self.log("ceiling").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"bench/ceiling.py exited with {self.ceiling.returncode}:\n{tail}")
                try:
                    async with s.get(f"{self.ceiling_url}/readyz") as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"bench/ceiling.py not ready after {timeout}s")
                await asyncio.sleep(0.1)

    # -- observation

    def hold(self, names: tuple[str, ...], held: bool) -> None:
        """Pause (SIGSTOP) or resume (SIGCONT) service processes: the write phase holds the services downstream of
        customers, so that the service and its bare ceiling are measured on the same otherwise idle machine (what
        they cause downstream is the welcome flow's measurement). Messages wait in their queues meanwhile."""
        for name in names:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGSTOP if held else signal.SIGCONT)

    async def backlogs(self, session: aiohttp.ClientSession, names: tuple[str, ...] | None = None) -> dict[str, int]:
        """Unpublished outbox rows of each service (from /readyz)."""
        out = {}
        for name, url in self.urls.items():
            if names is not None and name not in names:
                continue
            try:
                async with session.get(f"{url}/readyz") as r:
                    body = await r.json()
                out[name] = int(body.get("checks", {}).get("outbox_backlog", 0))
            except (aiohttp.ClientError, TimeoutError, ValueError):
                out[name] = -1
        return out

    async def queue_depths(self, channel: aio_pika.abc.AbstractChannel) -> dict[str, int]:
        """Ready messages in each main queue of this run's topology."""
        topology = Topology(self.prefix, RETRY_DELAYS_MS)
        out = {}
        for spec in QUEUES:
            q = await channel.declare_queue(topology.queue(spec.name), passive=True)
            out[spec.name] = int(q.declaration_result.message_count or 0)
        return out

    # -- teardown

    def stop_services(self, timeout: float = 30) -> dict[str, int]:
        codes = {}
        if self.ceiling is not None and self.ceiling.poll() is None:
            self.ceiling.send_signal(signal.SIGTERM)
            try:
                self.ceiling.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.ceiling.kill()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = -9
        return codes

    async def teardown(self) -> list[str]:
        """Stop everything this run started and delete what it created. Returns problems (never raises)."""
        problems: list[str] = []
        codes = self.stop_services()
        bad = {n: c for n, c in codes.items() if c != 0}
        if bad:
            problems.append(f"services exited with {bad}")
        if self.smtp is not None:
            self.smtp.stop()
        if self._databases_made:
            for url in self.databases.values():
                try:
                    await drop_database(url)
                except Exception as exc:
                    problems.append(f"could not drop {url}: {exc}")
        try:
            connection = await aio_pika.connect(AMQP_URL, timeout=10)
            try:
                channel = await connection.channel()
                await Topology(self.prefix, RETRY_DELAYS_MS).delete(channel)
            finally:
                await connection.close()
        except Exception as exc:
            problems.append(f"could not delete the {self.prefix}* topology: {exc}")
        if self._key_dir is not None:
            shutil.rmtree(self._key_dir, ignore_errors=True)
        return problems
