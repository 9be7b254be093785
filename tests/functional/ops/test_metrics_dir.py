"""The metrics directory of several workers: a worker killed without its shutdown leaves its
per-worker gauges behind; the next worker to start removes them (never a live worker's, never
anyone's counts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from idguard.ops.metrics import _forget_dead_workers


def test_a_dead_workers_gauges_go_and_every_count_stays(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    dead = int(gone.stdout)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        names = [
            f"gauge_liveall_{dead}.db",
            f"gauge_livesum_{dead}.db",
            f"counter_{dead}.db",
            f"histogram_{dead}.db",
            f"gauge_liveall_{alive.pid}.db",
            f"gauge_livesum_{alive.pid}.db",
            f"counter_{alive.pid}.db",
        ]
        for name in names:
            (tmp_path / name).write_bytes(b"")
        _forget_dead_workers(tmp_path)
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted(n for n in names if not n.startswith("gauge_live") or str(alive.pid) in n)
    finally:
        alive.kill()
        alive.wait()
