"""The check log's journal alone, side by side: this tree's `Journal.write` against another
tree's (e.g. the code before a change, `git archive OLD src | tar -x -C /tmp/old`), each in a
process of its own, in alternating rounds on the same directory's disk.

Each run writes `--writes` synced records of `--payload` bytes back to back (a group of ~16
single checks is ~2.4 KB), and every `--commit-every` writes tells the journal that all of them
are in the database, as the check log's writer does about once a second. Figures per run: write
latency p50 / p99 / max, and the CPU per write (user and system, of the writing process: most of
a synced write's CPU is the kernel's). Medians over the rounds and the ratio at the end.

    .venv/bin/python -m bench.journal_writes --other /tmp/old/src [--rounds 6] [--dir .]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import note, table, uptime

HERE = str(Path(__file__).resolve().parent.parent / "src")

_CHILD = """
import json, os, sys, time
from pathlib import Path
from idguard.verification.runtime.journal import Journal
directory, writes, payload, every = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
journal = Journal(directory, "f" * 16, b"s" * 16)
data = os.urandom(payload)
for _ in range(50):  # warm: the segment exists (and, where the code does it, has zeros ahead)
    journal.write(data, rows=1)
journal.committed({0: 50})
times, pending = [], {}
cpu = os.times()
for i in range(writes):
    start = time.perf_counter()
    number = journal.write(data, rows=1)
    times.append(time.perf_counter() - start)
    pending[number] = pending.get(number, 0) + 1
    if (i + 1) % every == 0:
        journal.committed(pending)
        pending = {}
end = os.times()
journal.committed(pending)
journal.close()
times.sort()
print(json.dumps({
    "p50": times[len(times) // 2] * 1e3, "p99": times[int(len(times) * 0.99)] * 1e3, "max": times[-1] * 1e3,
    "user": (end.user - cpu.user) / writes * 1e6, "system": (end.system - cpu.system) / writes * 1e6,
}))
"""


def one_run(src: str, directory: Path, args: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run(  # noqa: S603 - our own argv, no shell
        [
            sys.executable,
            "-c",
            _CHILD,
            str(directory),
            str(args.writes),
            str(args.payload),
            str(args.commit_every),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.journal_writes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--other", required=True, help="the other tree's `src` directory")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--payload", type=int, default=2400)
    parser.add_argument("--commit-every", type=int, default=400)
    parser.add_argument("--dir", default=".", help="where the journals go (the disk measured)")
    args = parser.parse_args()
    print(f"bench/journal_writes - {args.writes} synced writes of {args.payload} bytes a run")
    print(f"  {uptime()}")
    trees = {"this tree": HERE, "other": args.other}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    rows = []
    for n in range(args.rounds):
        order = list(trees) if n % 2 == 0 else list(reversed(trees))
        for name in order:
            with tempfile.TemporaryDirectory(prefix="idguard-journal-", dir=args.dir) as tmp:
                figures = one_run(trees[name], Path(tmp), args)
            runs[name].append(figures)
            rows.append(
                (
                    f"round {n + 1}",
                    name,
                    figures["p50"],
                    figures["p99"],
                    figures["max"],
                    figures["user"],
                    figures["system"],
                )
            )
    table(
        "per run",
        ("run", "tree", "p50 ms", "p99 ms", "max ms", "user us/write", "system us/write"),
        rows,
    )
    med = {
        name: {key: statistics.median(r[key] for r in got) for key in got[0]} for name, got in runs.items()
    }
    table(
        "medians",
        ("tree", "p50 ms", "p99 ms", "max ms", "CPU us/write"),
        [(name, m["p50"], m["p99"], m["max"], m["user"] + m["system"]) for name, m in med.items()],
    )
    this, other = med["this tree"], med["other"]
    note(
        f"this tree / other: p50 {this['p50'] / other['p50']:.2f}, p99 {this['p99'] / other['p99']:.2f},"
        f" CPU per write {(this['user'] + this['system']) / (other['user'] + other['system']):.2f}"
    )
    print(f"  {uptime()}")


if __name__ == "__main__":
    main()
