"""The benchmark run: options, phases, the printed table and the JSON result file."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson

from bench import load, plot, profile
from bench.system import (
    ROOT,
    SERVICES,
    Sampler,
    System,
    cpu_by_group,
    describe_machine,
    machine_line,
    wakeup_probe,
)

RESULTS = ROOT / "bench" / "results"
FIGURES = ROOT / "bench" / "figures"  # the published run (--publish), committed
CPU_GROUPS = (*SERVICES, "ceiling", "postgres", "rabbitmq", "bench", "other", "steal", "machine")


def git_state() -> dict[str, Any]:
    """The code under test: the commit and the files changed since (the working tree is what runs)."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout

    status = git("status", "--porcelain").splitlines()  # "XY path": two status letters, a space, the path
    changed = [line[3:] for line in status if line[3:] and not line[3:].startswith("bench/")]
    return {"commit": git("rev-parse", "HEAD").strip(), "changed_files": changed}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark the four services as processes: HTTP read/write (closed loop), the welcome flow "
        "(open loop, POST to SMTP acceptance), CPU and memory. All traffic stays on 127.0.0.1.",
    )
    p.add_argument("--quick", action="store_true", help="short run: 5 s phases, rates 25,100")
    p.add_argument("--duration", type=float, help="seconds of each measured phase (default 15, quick 5)")
    p.add_argument("--rates", help="welcome-flow offered rates, flows/s, comma-separated (default 25,50,100,200)")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop clients (default 32)")
    p.add_argument("--drain", type=float, default=30.0, help="max wait for late emails after a rate (default 30)")
    p.add_argument("--phases", default="read,write,welcome", help="which phases to run (default read,write,welcome)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="record each service with py-spy during each welcome rate (files in the run's log folder)",
    )
    p.add_argument(
        "--profile-rate",
        type=int,
        default=200,
        help="py-spy samples a second with --profile (default 200; 1000 for a finer read profile, at some cost)",
    )
    p.add_argument(
        "--publish",
        action="store_true",
        help="also copy the JSON and PNG to bench/figures/latest.{json,png} (the figures the README shows)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each welcome rate this many times in a row, and the read and write phases this many rounds "
        "of ceiling, service, service, ceiling (default 1): a busy machine varies run to run, so compare ranges; a "
        "rate counts as sustained only if every run of it is; each round's ratio is printed",
    )
    p.add_argument("--seed", type=int, default=500, help="customers created for the read phase (default 500)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the services, e.g. --set NOTIFICATIONS_DISPATCH_CONCURRENCY=50 (repeatable)",
    )
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 5.0 if args.quick else 15.0
    if args.rates is None:
        args.rates = "25,100" if args.quick else "25,50,100,200"
    try:
        args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        p.error("--rates takes numbers separated by commas")
    if not args.rates or any(r <= 0 for r in args.rates) or args.duration <= 0 or args.repeat < 1:
        p.error("rates, duration and repeat must be positive")
    args.phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if not args.phases or not args.phases <= {"read", "write", "welcome"}:
        p.error("--phases takes read, write and/or welcome")
    args.warmup = 1.0 if args.quick else 2.0
    env = {}
    for item in args.overrides:
        name, sep, value = item.partition("=")
        if not sep or not name:
            p.error(f"--set takes NAME=VALUE, not {item!r}")
        env[name] = value
    if env.get("RELAY_ENABLED", "true").lower() in ("false", "0", "no", "off") and "welcome" in args.phases:
        p.error("RELAY_ENABLED=false publishes no event: the welcome flow cannot run (use it with --phases read,write)")
    args.env = env
    return args


def _fmt(v: Any, width: int, digits: int = 1) -> str:
    if v is None:
        return f"{'-':>{width}}"
    if isinstance(v, float):
        return f"{v:>{width}.{digits}f}"
    return f"{v!s:>{width}}"


def _p99_text(s: dict[str, Any]) -> str:
    if s["p99_ms"] is None:
        return f">{s['drain_limit_s']:g}s*"
    return f"{s['p99_ms']:.0f}"


def render(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"Coworking backend benchmark {result['started_at']}  (prefix {cfg['prefix']}, logs {cfg['logs']})",
        f"machine: {result['machine_line']}",
        f"code: {result['code']['commit'][:12]}"
        + (
            f" + uncommitted changes to {len(result['code']['changed_files'])} file(s)"
            if result["code"]["changed_files"]
            else ""
        ),
        "note: the load generator and the SMTP server (one Python process) share these cores with everything measured",
        "",
        f"HTTP, closed loop: {cfg['concurrency']} clients, {cfg['duration_s']:g} s each, in two halves in ABBA order "
        f"(ceiling, service, service, ceiling; {cfg['warmup_s']:g} s warm-up each)"
        + (f", {cfg['repeat']} rounds of it" if cfg.get("repeat", 1) > 1 else "")
        + f"; {cfg['seed']} customers to read",
        f"  {'phase':<30}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}",
    ]
    rows = (
        ("read_ceiling", "read  ceiling (bare handler)"),
        ("read", "read  GET /v1/customers/{id}"),
        ("write_ceiling", "write ceiling (bare handler)"),
        ("write", "write POST /v1/customers"),
    )
    for key, label in rows:
        r = result.get(key)
        if r is None:
            continue
        ratio = result.get("ratios", {}).get(key)
        lines.append(
            f"  {label:<30}{_fmt(r['rps'], 9)}{_fmt(r['p50_ms'], 9)}{_fmt(r['p99_ms'], 9)}"
            f"{_fmt(r['max_ms'], 9, 0)}{_fmt(r['errors'], 8)}"
            + (
                f"  {ratio['rps']:.0%} of ceiling req/s (target {ratio['target']:.0%}), p50 x{ratio['p50_x']}, "
                f"p99 x{ratio['p99_x']}"
                if ratio
                else ""
            )
        )
        rounds = result.get(f"{key}_rounds") or []
        if ratio and len(rounds) > 1:
            each = ", ".join(f"{r['ratio']:.0%}" for r in rounds if r["ratio"] is not None)
            lines.append(f"  {'':<30}each round (ceiling, service, service, ceiling): {each}")
    lines.append(
        "  ceiling: bench/ceiling.py, bare aiohttp + asyncpg on the same database (same row; same insert + outbox row"
    )
    lines.append("  in one transaction), no auth, validation, idempotency, history or middleware")
    lines.append(
        "  writes: accounts, visitors and notifications are held (SIGSTOP) during both, so both run on a machine where"
    )
    lines.append("  nothing else works (the customers relay still publishes); what the events cause: welcome flow")
    lines += [
        "",
        f"Welcome flow, open loop: {cfg['duration_s']:g} s per offered rate; latency = POST sent (scheduled time)"
        " -> SMTP server accepted that recipient's email",
        f"  {'offered/s':>9}{'achieved/s':>11}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'POST p99':>9}{'errors':>7}{'missing':>8}{'last +s':>8}{'after/s':>8}",
    ]
    for s in result["welcome"]:
        lines.append(
            f"  {s['offered_per_s']:>9g}{_fmt(s['achieved_per_s'], 11)}{_fmt(s['p50_ms'], 8, 0)}"
            f"{_fmt(s['p95_ms'], 8, 0)}{_p99_text(s):>8}{_fmt(s['max_ms'], 8, 0)}{_fmt(s['http_p99_ms'], 9, 0)}"
            f"{_fmt(s['errors'], 7)}{_fmt(s['missing_after_drain'], 8)}{_fmt(s['last_email_after_window_s'], 8, 1)}"
            f"{_fmt(s['after_window_per_s'], 8, 0)}"
        )
    sat = result["saturation_rate"]
    lines += [
        "  achieved: emails/s in the send window from the first acceptance; missing: no email "
        f"{cfg['drain_s']:g} s after it (infinite",
        "  latency); last +s: last email after the window; after/s: emails/s while the backlog drains, no new POSTs",
        "  saturation rate (achieved >= 95% of offered, p99 < 1 s, no errors): "
        + (f"{sat:g} flows/s" if sat is not None else "none of the rates tested"),
        "",
        "Welcome flow stages, p50/p99 ms (from the services' tables, joined on X-Request-ID)",
        "  "
        + f"{'offered/s':>9}"
        + "".join(
            f"{h:>15}" for h in ("POST->tx", "cust relay", "->accounts", "acct relay", "->notif", "->SMTP", "SMTP")
        ),
    ]
    for s, st in zip(result["welcome"], result["welcome_stages"], strict=True):
        cells = [f"{_fmt(st[k]['p50_ms'], 0, 0).strip()}/{_fmt(st[k]['p99_ms'], 0, 0).strip()}" for k, _ in load.STAGES]
        lines.append(f"  {s['offered_per_s']:>9g}" + "".join(f"{c:>15}" for c in cells))
    lines += [
        "  relay: outbox insert -> relay claim; ->accounts/->notif: claim -> consumer tx (publish, confirm, broker);",
        "  ->SMTP: delivery insert -> MAIL FROM (dispatcher wake-up, claim, render, connect); SMTP: MAIL -> accepted;",
        "  most SMTP transactions open at once: "
        + ", ".join(f"{s['offered_per_s']:g}/s: {s['smtp_max_open_transactions']}" for s in result["welcome"]),
        "",
        "CPU, % of one core during each measured window (machine = all processes; "
        + f"{100 * result['machine']['nproc']}% = every core busy; steal = taken by the hypervisor, not this VM's)",
        f"  {'phase':<14}" + "".join(f"{g[:9]:>10}" for g in CPU_GROUPS),
    ]
    for phase, cpu in result["cpu"].items():
        lines.append(f"  {phase:<14}" + "".join(_fmt(cpu.get(g), 10) for g in CPU_GROUPS))
    per_flow = [s for s in result["welcome"] if s.get("cpu_ms_per_flow")]
    if per_flow:
        groups = [g for g in CPU_GROUPS if g not in ("ceiling", "other")]
        lines += [
            "",
            "CPU ms per welcome flow, from the first POST until everything settled (send window + drain)",
            f"  {'offered/s':<14}" + "".join(f"{g[:9]:>10}" for g in groups),
        ]
        for s in per_flow:
            lines.append(
                f"  {s['offered_per_s']:<14g}" + "".join(_fmt(s["cpu_ms_per_flow"].get(g), 10, 2) for g in groups)
            )
        lines.append(
            "  machine: every process on every core, the services, PostgreSQL, RabbitMQ and the bench included"
        )
        lines.append(
            "  mean batch (messages per consumer transaction / rows per relay round / outcomes per delivery write):"
        )
        for s in per_flow:
            short = {
                k.replace(" consumer_batch_messages ", " ")
                .replace(" outbox_relay_batch_rows", " relay")
                .replace(" email_outcome_batch_rows", " outcomes"): v
                for k, v in (s.get("mean_batch") or {}).items()
            }
            lines.append(f"    {s['offered_per_s']:g}/s: " + ", ".join(f"{k} {v:g}" for k, v in short.items()))
    for group, floor, who, why in (
        ("other", 20, "other processes used CPU", "run again on a quiet machine"),
        ("steal", 10, "the hypervisor took CPU from this VM", "the host took it, not this code"),
    ):
        hit = {phase: cpu.get(group, 0.0) for phase, cpu in result["cpu"].items() if cpu.get(group, 0.0) >= floor}
        if hit:
            lines.append(
                f"  WARNING: {who} during "
                + ", ".join(f"{p} ({v:.0f}% of one core)" for p, v in hit.items())
                + f": those numbers are disturbed; {why}"
            )
    lines += ["", "Memory, RSS MiB (sampled every 0.5 s)", f"  {'service':<15}{'idle':>8}{'peak':>8}"]
    for name in SERVICES:
        m = result["memory"]
        lines.append(f"  {name:<15}{_fmt(m['idle'].get(name), 8)}{_fmt(m['peak'].get(name), 8)}")
    plotted = f", plot {result['plot_file']}" if result.get("plot_file") else ""
    lines.append(f"\nresult: {result['result_file']}{plotted}")
    lines.append(f"(total {result['total_s']:.0f} s)")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    t_begin = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = RESULTS / stamp
    system = System(run_dir=run_dir, extra_env=args.env)
    result: dict[str, Any] = {"started_at": stamp, "command": " ".join(sys.argv), "code": git_state()}
    problems: list[str] = []
    sampler: Sampler | None = None
    settle_limit = max(15.0, args.drain)
    print(f"bench: setting up (databases cwbench_{system.run_id}_*, prefix {system.prefix})", flush=True)
    try:
        result["machine"] = await describe_machine()
        result["machine"]["wakeup"] = await wakeup_probe()
        result["machine_line"] = machine_line(result["machine"])
        await system.setup()
        pids = dict(system.pids)
        if system.ceiling is not None:
            pids["ceiling"] = system.ceiling.pid
        sampler = Sampler(pids, f"cwbench_{system.run_id}_")
        sampler.start()
        await asyncio.sleep(1.0)
        sampler.snapshot_idle()
        result["config"] = {
            "prefix": system.prefix,
            "logs": str(run_dir.relative_to(ROOT)),
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rates": args.rates,
            "repeat": args.repeat,
            "drain_s": args.drain,
            "seed": args.seed,
            "service_env_overrides": args.env,
            "quick": args.quick,
            "profile": args.profile,
        }
        # ceiling and service are each measured in two halves, in ABBA order (ceiling, service, service, ceiling), so
        # that a change in whatever else runs on the machine weighs on both alike
        half = {
            "concurrency": args.concurrency,
            "duration": args.duration / 2,
            "warmup": args.warmup,
            "sampler": sampler,
        }

        async def profiled(phase: Any, name: str, tag: str) -> Any:
            """The phase, with ``name``'s process recorded by py-spy throughout when --profile is on."""
            if not args.profile:
                return await phase
            seconds = args.warmup + args.duration / 2
            res, _ = await asyncio.gather(
                phase, profile.record({name: pids[name]}, seconds, run_dir, tag, args.profile_rate)
            )
            return res

        async def abba(kind: str, run: Any) -> tuple[dict[str, Any], dict[str, Any]]:
            """(ceiling, service) results of ``run(ceiling=...)``, measured ceiling, service, service, ceiling, as
            many times as ``--repeat`` says: the results merge every round; each round's ratio is kept as well
            (``<kind>_rounds``), since a busy machine moves it from round to round."""
            parts: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
            rounds = []
            for _ in range(args.repeat):
                these: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
                for i, ceiling in enumerate((True, False, False, True)):
                    name = "ceiling" if ceiling else "customers"
                    if i == 3 and kind == "write":  # not while the service still publishes what it wrote
                        await load.settle(system, settle_limit, only_outbox_of=("customers",))
                    tag = f"{kind}-{len(parts[ceiling])}"
                    part = await profiled(run(ceiling=ceiling), name, tag)
                    parts[ceiling].append(part)
                    these[ceiling].append(part)
                top, svc = load.merge(these[True]), load.merge(these[False])
                rounds.append({"ceiling_rps": top["rps"], "rps": svc["rps"], "ratio": ratio_of(svc, top)})
            result[f"{kind}_rounds"] = rounds
            return load.merge(parts[True]), load.merge(parts[False])

        if "read" in args.phases:
            print(f"bench: seeding {args.seed} customers", flush=True)
            ids = await load.seed_customers(system, args.seed)
            await load.settle(system, settle_limit)
            print(
                f"bench: read, ceiling and service (ABBA), {args.concurrency} clients, {args.duration:g} s", flush=True
            )
            result["read_ceiling"], result["read"] = await abba(
                "read", lambda ceiling: load.read_phase(system, ids, ceiling=ceiling, **half)
            )

        if "write" in args.phases:
            print(
                f"bench: write, ceiling and service (ABBA), {args.concurrency} clients, {args.duration:g} s", flush=True
            )
            # the services downstream of customers are held meanwhile (SIGSTOP): both are measured on a machine
            # where nothing else runs; the events the writes cause wait in their queues, handled after the phase
            await load.vacuum(system)  # what seeding wrote, as autovacuum would
            await load.authenticate(system)  # customers has accounts' signing keys before accounts is held
            system.hold(DOWNSTREAM, True)
            try:
                result["write_ceiling"], result["write"] = await abba(
                    "write", lambda ceiling: load.write_phase(system, ceiling=ceiling, **half)
                )
            finally:
                system.hold(DOWNSTREAM, False)
            result["write"]["settle_s"] = await load.settle(system, settle_limit)  # the events it caused
        result["ratios"] = ratios(result)

        result["welcome"] = []
        result["welcome_stages"] = []
        runs = [(rate, k) for rate in args.rates for k in range(args.repeat)] if "welcome" in args.phases else []
        for rate, k in runs:
            tag = f"{rate:g}" if args.repeat == 1 else f"{rate:g}-{k + 1}"
            vacuumed = await load.vacuum(system)
            waited = await load.quiet()
            print(
                f"bench: welcome flow at {rate:g}/s for {args.duration:g} s (vacuumed in {vacuumed:g} s, machine quiet"
                f" after {waited:g} s)",
                flush=True,
            )
            phase = load.welcome_phase(system, rate, duration=args.duration, drain=args.drain, sampler=sampler)
            before = cpu_by_group(pids, sampler.db_marker)
            batches_before = await load.batch_counters(system)
            if args.profile:
                res, _ = await asyncio.gather(
                    phase, profile.record(system.pids, args.duration, run_dir, tag, args.profile_rate)
                )
            else:
                res = await phase
            res.summary["settle_s"] = await load.settle(system, settle_limit)
            res.summary["quiet_wait_s"], res.summary["vacuum_s"] = waited, vacuumed
            # CPU per flow over the whole work (the send window and the drain after it, until nothing is left):
            # less sensitive to how a saturated machine shares its cores than the rates and latencies are
            after = cpu_by_group(pids, sampler.db_marker)
            res.summary["mean_batch"] = load.mean_batches(batches_before, await load.batch_counters(system))
            if res.summary["completed"]:
                res.summary["cpu_ms_per_flow"] = {
                    k: round(1000 * (after[k] - before.get(k, 0.0)) / res.summary["completed"], 2)
                    for k in after
                    if k != "ceiling"
                }
            result["welcome"].append(res.summary)
            result["welcome_stages"].append(await load.stage_breakdown(system, res))
        result["saturation_rate"] = load.saturation_rate(result["welcome"])
        await asyncio.sleep(1.0)  # "after load" samples
        result["memory"] = {
            "idle": {k: round(v, 1) for k, v in sampler.idle.items()},
            "peak": {k: round(v, 1) for k, v in sampler.peak.items()},
            "peak_by_phase": {p: {k: round(v, 1) for k, v in d.items()} for p, d in sampler.phase_peak.items()},
            "samples": sampler.samples,
        }
        result["cpu"] = sampler.cpu
        assert system.smtp is not None
        result["smtp"] = {"messages": system.smtp.messages, "duplicate_recipients": system.smtp.duplicates}
    except Exception:
        problems.append(traceback.format_exc())
    finally:
        if sampler is not None:
            await sampler.stop()
        print("bench: stopping the services and deleting the databases and queues", flush=True)
        problems += await system.teardown()

    result["total_s"] = round(time.perf_counter() - t_begin, 1)
    result["problems"] = problems
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    result["result_file"] = str(out.relative_to(ROOT))
    try:
        png = plot.plot(result, RESULTS / f"{stamp}.png")
        if png is not None:
            result["plot_file"] = str(png.relative_to(ROOT))
    except Exception as exc:  # the figures matter more than the picture
        problems.append(f"could not draw the plot: {type(exc).__name__}: {exc}")
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    if args.publish and not problems:
        FIGURES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, FIGURES / "latest.json")
        if result.get("plot_file"):
            shutil.copyfile(ROOT / result["plot_file"], FIGURES / "latest.png")
    if "memory" in result:
        print()
        print(render(result))
    for problem in problems:
        print(f"bench: problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


DOWNSTREAM = ("accounts", "visitors", "notifications")
TARGETS = {"read": 0.80, "write": 0.70}  # issue 9: the service's req/s as a share of the bare ceiling's


def ratio_of(service: dict[str, Any], ceiling: dict[str, Any]) -> float | None:
    """The service's req/s over the ceiling's."""
    return round(service["rps"] / ceiling["rps"], 3) if ceiling["rps"] else None


def ratios(result: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """The service against the ceiling measured in the same run: req/s (higher is better) and p50/p99 (the
    service's latency over the ceiling's: lower is better)."""
    out = {}
    for key, target in TARGETS.items():
        svc, top = result.get(key), result.get(f"{key}_ceiling")
        if not svc or not top or not top["rps"]:
            continue
        out[key] = {
            "rps": ratio_of(svc, top),
            "target": target,
            "p50_x": round(svc["p50_ms"] / top["p50_ms"], 2) if svc["p50_ms"] and top["p50_ms"] else None,
            "p99_x": round(svc["p99_ms"] / top["p99_ms"], 2) if svc["p99_ms"] and top["p99_ms"] else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(run(args))
    return uvloop.run(run(args))
