"""Run the benchmarks and print their figures.

Usage:
  bench [--quick] [--only NAME]... [--json PATH]
  bench (-h | --help)

Options:
  --quick        Fewer samples and smaller sizes, for a quick look.
  --only NAME    Run only this section (repeatable): limit, throughput, latency,
                 enqueue, scale, footprint, cpu,
                 large, limits, sandbox, heavy.
  --json PATH    Where to write the figures [default: bench/results/latest.json].
  -h --help      Show this help.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docopt import docopt

from bench import (
    cpu,
    enqueue,
    footprint,
    heavy,
    large_result,
    latency,
    limit,
    limits,
    sandbox,
    scale,
    throughput,
)

SECTIONS = {
    "limit": limit.run,
    "throughput": throughput.run,
    "latency": latency.run,
    "enqueue": enqueue.run,
    "scale": scale.run,
    "footprint": footprint.run,
    "cpu": cpu.run,
    "large": large_result.run,
    "limits": limits.run,
    "sandbox": sandbox.run,
    "heavy": heavy.run,
}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Anything else running on the machine skews the figures; this says how busy it was.
        "load_average_1_5_15": os.getloadavg(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def table(name: str, rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(str(row.get(c, ""))) for row in rows)) for c in columns}
    lines = [f"== {name}", "  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns) for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__, argv=argv)
    wanted = args["--only"] or list(SECTIONS)
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 64
    results: dict[str, Any] = {"machine": machine(), "sections": {}}
    for name in wanted:
        started = time.monotonic()
        rows = SECTIONS[name](quick=args["--quick"])
        results["sections"][name] = rows
        print(table(name, rows), f"\n  ({time.monotonic() - started:.0f} s)\n", flush=True)
    path = Path(args["--json"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"figures written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
