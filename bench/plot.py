"""The PNG of a bench result: welcome-flow latency (p50/p95/p99) and achieved rate against the offered rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(result: dict[str, Any], out: Path) -> Path | None:
    """Write the plot of ``result`` (a bench/results JSON) to ``out``; None when there is nothing to plot."""
    welcome = result.get("welcome") or []
    if not welcome:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [s["offered_per_s"] for s in welcome]
    drain = welcome[0].get("drain_limit_s", 30)
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 5.4), constrained_layout=True)
    for key, label, style in (("p50_ms", "p50", "o-"), ("p95_ms", "p95", "s-"), ("p99_ms", "p99", "^-")):
        # a percentile that never completed (emails missing after the drain) is drawn at the drain limit
        ys = [s[key] if s[key] is not None else drain * 1000 for s in welcome]
        lat.plot(offered, ys, style, label=label)
    lat.axhline(1000, color="grey", linestyle=":", linewidth=1, label="1 s")
    lat.set_yscale("log")
    lat.set_xlabel("offered load, welcome flows/s (open loop)")
    lat.set_ylabel("POST -> SMTP accepted, ms (log)")
    lat.set_title("Welcome flow latency")
    lat.grid(True, which="both", alpha=0.3)
    lat.legend()

    achieved = [s["achieved_per_s"] for s in welcome]
    top = max(offered + achieved) * 1.1
    thr.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1, label="achieved = offered")
    thr.plot(offered, achieved, "o-", label="achieved")
    sat = result.get("saturation_rate")
    if sat is not None:
        thr.axvline(sat, color="green", linestyle="--", linewidth=1, label=f"saturation rate {sat:g}/s")
    thr.set_xlim(0, top)
    thr.set_ylim(0, top)
    thr.set_xlabel("offered load, welcome flows/s")
    thr.set_ylabel("achieved, emails accepted/s")
    thr.set_title("Welcome flow throughput")
    thr.grid(True, alpha=0.3)
    thr.legend()

    lines = [f"Coworking backend bench {result.get('started_at', '')}", result.get("machine_line", "")]
    ratios = result.get("ratios") or {}
    if ratios:
        lines.append(
            "  ".join(f"{k} {v['rps']:.0%} of the bare ceiling's req/s" for k, v in ratios.items() if v.get("rps"))
        )
    others = [c.get("other", 0.0) for phase, c in (result.get("cpu") or {}).items() if phase.startswith("welcome")]
    if others:
        lines.append(
            f"other processes on the machine used {min(others):.0f}-{max(others):.0f}% of one core "
            f"(of {100 * result['machine']['nproc']}%) during the welcome phases"
        )
    fig.suptitle("\n".join(lines), fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":  # redraw: python bench/plot.py bench/results/<stamp>.json [out.png]
    import sys

    import orjson

    src = Path(sys.argv[1])
    print(plot(orjson.loads(src.read_bytes()), Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_suffix(".png")))
