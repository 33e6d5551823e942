"""Benchmark of the network simulator: events per second for 4 sites x 30 days at two sensor windows.

Baselines measured in the same run (4 sites x 5 days, one-minute windows): the same events with
pydantic validation of every one (``model_validate``, what building validated models costs) on
top of the simulator's assembly, and ``contract.jsonl.event_to_line`` against the simulator's
JSON-lines writer.

    python tools/bench_simulator.py [--days 30] [--sites 4] [--windows 1 15]
    python tools/bench_simulator.py --chain-cost [--sites 4]   # only the hash chain's cost

``--chain-cost`` compares, interleaved and best of 3 (4 sites x 3 days, one-minute windows), the
run without the hash chain (``chain=False``, the baseline), with it (the default), and with
the integrity faults on as well.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

import pydantic
from atmpnet.contract.jsonl import event_to_line
from atmpnet.site.simulation.network import IntegrityFaults
from atmpnet.site.simulation.runner import event_line
from atmpnet.site.simulator import NetworkConfig, Simulation

SAMPLE = 50_000


def _fields(model: Any) -> dict[str, Any]:
    out = dict(model.__dict__)
    for k, v in out.items():
        if isinstance(v, pydantic.BaseModel):
            out[k] = _fields(v)
    return out


def _rate(config: NetworkConfig, validate: bool) -> tuple[int, float, Simulation]:
    sim = Simulation(config)
    started = time.perf_counter()
    n = 0
    for event in sim.events():
        n += 1
        if validate:
            type(event).model_validate(_fields(event))
    return n, time.perf_counter() - started, sim


def chain_cost(sites: int, rounds: int = 3) -> None:
    """Events/s without the chain, with it, and with the integrity faults too (best of ``rounds``)."""
    runs = {
        "no chain (chain=False, baseline)": {"chain": False},
        "hash chain (default)": {},
        "hash chain + integrity faults": {"integrity_faults": IntegrityFaults()},
    }
    best: dict[str, float] = {}
    events = 0
    for _ in range(rounds):  # interleaved: other processes load the machine unevenly
        for label, extra in runs.items():
            config = NetworkConfig(sites=sites, days=3, sensor_window_minutes=1, **extra)  # type: ignore[arg-type]
            events, elapsed, _ = _rate(config, validate=False)
            best[label] = max(best.get(label, 0.0), events / elapsed)
    base = best[next(iter(runs))]
    print(f"hash chain cost, {sites} sites x 3 days, window 1 min, {events:,} events, best of {rounds}:")
    for label, rate in best.items():
        print(f"  {label:<36} {rate:>9,.0f} events/s  {rate / base:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 15])
    parser.add_argument("--chain-cost", action="store_true", help="only measure the hash chain's cost")
    args = parser.parse_args()
    print(
        f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"pydantic {pydantic.VERSION}, load average {os.getloadavg()[0]:.1f} at start"
    )
    if args.chain_cost:
        chain_cost(args.sites)
        return
    for window in args.windows:
        config = NetworkConfig(sites=args.sites, days=args.days, sensor_window_minutes=window)
        n, elapsed, sim = _rate(config, validate=False)
        print(
            f"{args.sites} sites x {args.days:g} days, window {window} min: {n:,} events in {elapsed:.1f} s "
            f"= {n / elapsed:,.0f} events/s; {sim.ground_truth.event_counts}"
        )

    short = NetworkConfig(sites=args.sites, days=5, sensor_window_minutes=1)
    n, assembled, sim = _rate(short, validate=False)
    _, validated, _ = _rate(short, validate=True)
    print(
        f"baseline, {args.sites} sites x 5 days, window 1: assembled {n / assembled:,.0f} events/s vs "
        f"assembled + model_validate {n / validated:,.0f} events/s ({validated / assembled:.2f}x)"
    )
    sample = []
    for event in Simulation(short).events():
        sample.append(event)
        if len(sample) == SAMPLE:
            break
    t = time.perf_counter()
    for e in sample:
        event_to_line(e)
    slow = len(sample) / (time.perf_counter() - t)
    t = time.perf_counter()
    for e in sample:
        event_line(e)
    fast = len(sample) / (time.perf_counter() - t)
    print(
        f"JSON lines: event_line {fast:,.0f}/s vs contract event_to_line {slow:,.0f}/s ({fast / slow:.2f}x)"
    )


if __name__ == "__main__":
    main()
