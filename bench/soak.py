"""Soak (not part of the test suite): ``make soak`` or ``.venv/bin/python bench/soak.py [--minutes M] [--short]``.

Starts the four services as processes (bench/system.py: fresh databases, AMQP prefix, keys, an SMTP server in
this process), offers a steady rate of customer creations for ``--minutes`` (half with ``send_welcome``, like
the fault suite), then waits for quiescence and runs the fault suite's checks (tests/fault/checks.py) on
everything created. Reports throughput, latency percentiles (HTTP and POST -> email accepted), the RSS of each
process at start and end (and every 10 s), and the checks; writes ``bench/results/soak-<time>.json``; then
deletes what it created. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aio_pika  # noqa: E402

from bench import system as bench_system  # noqa: E402
from bench.load import ms, percentile, session_for  # noqa: E402
from bench.system import AMQP_URL, RETRY_DELAYS_MS, System, rss_mib  # noqa: E402
from shared.topology import Topology  # noqa: E402
from tests.fault import checks  # noqa: E402

RESULTS = ROOT / "bench" / "results"


class _MailboxHandler(bench_system._RecordingHandler):
    """bench's recording handler, also keeping every message's Message-ID per recipient (for the checks)."""

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        for rcpt in envelope.rcpt_tos:
            self.server.mailbox.setdefault(rcpt.lower(), []).append(str(message["Message-ID"]))  # type: ignore[attr-defined]
        return await super().handle_DATA(smtp, session, envelope)


class MailboxSmtp(bench_system.RecordingSmtp):
    def __init__(self) -> None:
        super().__init__()
        self.mailbox: dict[str, list[str]] = {}
        self._controller = bench_system.Controller(
            _MailboxHandler(self), hostname="127.0.0.1", port=self.port, server_hostname="soak.localhost"
        )


def rss_all(system: System) -> dict[str, float | None]:
    return {name: (round(v, 1) if (v := rss_mib(pid)) is not None else None) for name, pid in system.pids.items()}


async def soak(args: argparse.Namespace) -> int:
    duration_s = 30.0 if args.short else args.minutes * 60
    n = max(2, round(args.rate * duration_s))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    bench_system.RecordingSmtp = MailboxSmtp  # type: ignore[misc]  # System.setup makes its SMTP server with it
    system = System(run_dir=RESULTS / f"soak-{stamp}")
    out: dict[str, Any] = {"started_at": stamp, "offered_per_s": args.rate, "duration_s": duration_s, "flows": n}
    status = 1
    try:
        print(f"starting the services (logs in {system.run_dir})", flush=True)
        await system.setup()
        smtp = system.smtp
        assert isinstance(smtp, MailboxSmtp)
        out["rss_mib_start"] = rss_all(system)
        timeline: list[dict[str, Any]] = []
        out["rss_mib_timeline"] = timeline
        created: list[checks.Customer] = []
        t0 = time.perf_counter()

        async def sample() -> None:
            while True:
                await asyncio.sleep(10)
                elapsed = time.perf_counter() - t0
                point: dict[str, float | None] = {
                    "t_s": round(elapsed),
                    "created": len(created),
                    "emails": len(smtp.accepted),
                }
                point.update(rss_all(system))
                timeline.append(point)
                print(f"  {point}", flush=True)

        sampler = asyncio.create_task(sample())
        print(f"offering {args.rate:g} customers/s for {duration_s:g} s ({n} customers, half with welcome)")
        async with session_for(system, 256) as session:
            result = await checks.drive_welcome(
                session,
                [system.urls["customers"]],
                n=n,
                tag=system.run_id,
                rate=args.rate,
                concurrency=256,
                rename_every=0,
                on_created=created.append,
            )
        sampler.cancel()
        drive_s = result.ended - result.started
        amqp = await aio_pika.connect_robust(AMQP_URL)
        try:
            topology = Topology(system.prefix, RETRY_DELAYS_MS)
            waited = await checks.wait_quiescent(
                system.databases, amqp, topology, result.customers, lambda: smtp.mailbox, timeout=120
            )
            report = await checks.check(system.databases, amqp, topology, result.customers, smtp.mailbox)
        finally:
            await amqp.close()
        out["rss_mib_end"] = rss_all(system)
        welcome = [c for c in result.customers if c.welcome]
        # POST sent -> the SMTP server accepted the email (both on the monotonic clock)
        e2e = [smtp.accepted[c.email.lower()] - c.sent_at for c in welcome if c.email.lower() in smtp.accepted]
        http = [c.latency_s for c in result.customers if c.latency_s is not None]
        out.update(
            {
                "drive_s": round(drive_s, 1),
                "created_per_s": round(len(http) / drive_s, 1),
                "welcome_emails": len(e2e),
                "emails_per_s": round(len(e2e) / drive_s, 1),
                "http_errors_retried": dict(result.errors),
                "http_ms": {q: ms(percentile(http, q)) for q in (50, 95, 99)} | {"max": ms(max(http, default=0))},
                "welcome_ms": {q: ms(percentile(e2e, q)) for q in (50, 95, 99)} | {"max": ms(max(e2e, default=0))},
                "quiescent_after_s": waited,
                "checks": {"ok": report.ok, "violations": report.violations[:50], **report.stats},
            }
        )
        status = 0 if report.ok else 1
    except BaseException as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        out["teardown_problems"] = await system.teardown()
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"soak-{stamp}.json"
        path.write_text(json.dumps(out, indent=2, default=str))
        print(json.dumps({k: v for k, v in out.items() if k != "rss_mib_timeline"}, indent=2, default=str))
        print(f"written to {path}")
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to offer load (default 10)")
    parser.add_argument("--rate", type=float, default=20.0, help="customers created a second (default 20)")
    parser.add_argument("--short", action="store_true", help="a 30-second try instead of --minutes")
    return asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
