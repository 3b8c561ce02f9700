"""Sampling profiles of the services during the welcome flow (``bench/run.py --profile``), with py-spy.

py-spy (``pip install py-spy``, not a dependency of the project) records each service process for the send
window of each offered rate into ``<run dir>/profile-<service>-<rate>.txt`` (collapsed stacks, one
``frame;frame;... count`` per line: flamegraph.pl and speedscope read them). ``python bench/profile.py FILE``
prints the functions with the most samples, by their own time and including what they call.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from pathlib import Path


def available() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else shutil.which("py-spy")


async def record(pids: dict[str, int], seconds: float, out_dir: Path, tag: str, rate: int = 200) -> list[Path]:
    """Record every process of ``pids`` for ``seconds``; returns the files written."""
    exe = available()
    if exe is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    procs = []
    files = []
    for name, pid in pids.items():
        out = out_dir / f"profile-{name}-{tag}.txt"
        files.append(out)
        procs.append(
            await asyncio.create_subprocess_exec(
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    await asyncio.gather(*(p.wait() for p in procs))
    return [f for f in files if f.exists()]


def _frame(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1] if where else ""
    return f"{name} ({file})" if file else name


def summarize(path: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples"]
    lines.append("  own time:")
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("  including callees:")
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summarize(Path(arg)))
