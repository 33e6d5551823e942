"""``atmpnet up`` in a subprocess, its output read line by line: for the main-job tests."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from atmpnet.contract.events import Deviation
from atmpnet.site.simulation.engine import Simulation
from atmpnet.site.simulation.network import NetworkConfig
from atmpnet.site.simulation.truth import GroundTruth


class UpProcess:
    """A running ``python -m atmpnet up …`` with its own data directory and home."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.data_dir = tmp_path / "data"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "ATMPNET_DATA_DIR": str(self.data_dir),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "atmpnet", "up", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout_s: float) -> str:
        """The first line (from now on, or seen already) that starts with ``prefix``."""
        for seen in self.lines:
            if seen.lstrip().startswith(prefix):
                return seen
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"up exited ({self.process.wait()}) before {prefix!r}:\n{self.output}")
            self.lines.append(line)
            if line.lstrip().startswith(prefix):
                return line
        raise AssertionError(f"no line {prefix!r} within {timeout_s}s:\n{self.output}")

    @property
    def output(self) -> str:
        """Every line read so far."""
        return "\n".join(self.lines)

    def url(self) -> str:
        """The dashboard's base URL, from the printed login address."""
        return self.wait_for("dashboard:", 60).split()[1].removesuffix("/login")

    def token(self, role: str) -> str:
        """A development token of ``role`` from data_dir/api-tokens.json."""
        tokens = json.loads((self.data_dir / "api-tokens.json").read_text())
        return str(next(t["token"] for t in tokens if t["role"] == role))

    def stop(self, signum: int = signal.SIGINT, timeout_s: float = 60) -> int:
        """Send ``signum`` and wait for the exit code; the rest of the output is kept."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout_s)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        """Kill the process if it still runs (test teardown)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def get_json(url: str, token: str | None = None) -> Any:
    """GET ``url`` (with a bearer token) and decode its JSON body."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def ground_truth(
    sites: int, days: float, seed: int, sensor_window_minutes: int = 60
) -> tuple[GroundTruth, set[str]]:
    """The simulator's truth for the run ``up`` makes with these options (deterministic), and the
    ids of the deviations the simulated sites raised (the processor may raise its own, e.g. for
    data-integrity findings)."""
    simulation = Simulation(
        NetworkConfig(sites=sites, days=days, seed=seed, sensor_window_minutes=sensor_window_minutes)
    )
    raised = {e.deviation_id for e in simulation.events() if isinstance(e, Deviation)}
    return simulation.ground_truth, raised


def batch_counts(capacity: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    """(started, completed, failed) per site, summed over the capacity view's days."""
    out: Counter[tuple[str, str]] = Counter()
    for day in capacity["daily"]:
        for key in ("starts", "completions", "failures"):
            out[day["site_id"], key] += day[key]
    sites = {d["site_id"] for d in capacity["daily"]}
    return {s: (out[s, "starts"], out[s, "completions"], out[s, "failures"]) for s in sites}
