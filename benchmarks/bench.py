"""Benchmarks of the market server; writes RESULTS.md and results.json.

Run it with scripts/bench.sh (about 5 minutes on 2 cores) or, from the
repository root, `python -m benchmarks.bench [--smoke] [--out-dir DIR]`.

Everything runs on this machine: each server is a separate process
listening on 127.0.0.1 on a port that the OS picks, and load comes from
separate client processes (benchmarks/load.py). Every measurement is
repeated over several windows, and the results give min, median and max.
Targets are reported, never enforced: the exit status is 0 whenever every
measurement ran.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import platform
import re
import select
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import grpc

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_server import core

from . import generate, report
from .load import bench_product
from .server import COUNTS_METHOD, NOOP_METHOD

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Shelf capacity of the servers that take the throughput load: the largest
# the market accepts, so that stocking 1,000,000 items fits on one shelf.
LOAD_CAPACITY = core.MAX_QUANTITY
# Calls kept in flight by the driver while it stocks a market.
STOCKING_IN_FLIGHT = 64
MARKET_METHOD_PREFIX = "/marketplace.v1.MarketService/"


@dataclass
class Settings:
    """Sizes and durations of every measurement; `full()` and `smoke()` build the two sets."""

    name: str
    window: float  # seconds per measurement window
    windows: int  # windows per run: the repeated measurements
    warmup: float  # seconds of uncounted calls before the first window
    # Client concurrency as (processes, threads per process).
    concurrencies: list[tuple[int, int]]
    batch_concurrency: tuple[int, int]
    batch: int  # items per Publish, AddToCart and RemoveFromCart when batching
    # The market of the mix against the ceiling: producers and product kinds.
    mix_producers: int
    mix_kinds: int
    cost_concurrency: tuple[int, int]
    # Values of each cost-growth dimension, smallest first. The first value of
    # every dimension together make up the baseline market.
    cost_producers: list[int]
    cost_items: list[int]
    cost_carts: list[int]
    cost_kinds: list[int]
    memory_items: int
    memory_carts: int
    memory_producers: int
    scenario_producers: int
    scenario_consumers: int
    scenario_time_scales: list[float]
    scenario_clients_per_process: int
    scenario_repeats: int
    scenario_timeout: float

    @staticmethod
    def full() -> Settings:
        return Settings(
            name="full",
            window=1.0,
            windows=6,
            warmup=0.5,
            concurrencies=[(1, 1), (2, 4), (4, 8)],
            batch_concurrency=(2, 4),
            batch=16,
            mix_producers=50,
            mix_kinds=10,
            cost_concurrency=(2, 4),
            cost_producers=[1, 100, 10_000],
            # 999,000 rather than 1,000,000 leaves room on the single shelf
            # (capacity 1,000,000) for the publishes of the mix.
            cost_items=[10, 999_000],
            cost_carts=[1, 10_000],
            cost_kinds=[1, 10, 1_000],
            memory_items=1_000_000,
            memory_carts=10_000,
            memory_producers=10_000,
            scenario_producers=50,
            scenario_consumers=200,
            scenario_time_scales=[1.0, 0.1],
            scenario_clients_per_process=25,
            scenario_repeats=3,
            scenario_timeout=120.0,
        )

    @staticmethod
    def smoke() -> Settings:
        return Settings(
            name="smoke",
            window=0.2,
            windows=2,
            warmup=0.1,
            concurrencies=[(1, 1)],
            batch_concurrency=(1, 1),
            batch=4,
            mix_producers=2,
            mix_kinds=2,
            cost_concurrency=(1, 2),
            cost_producers=[1, 10],
            cost_items=[10, 1_000],
            cost_carts=[1, 10],
            cost_kinds=[1, 10],
            memory_items=10_000,
            memory_carts=100,
            memory_producers=100,
            scenario_producers=3,
            scenario_consumers=4,
            scenario_time_scales=[1.0, 0.1],
            scenario_clients_per_process=2,
            scenario_repeats=1,
            scenario_timeout=60.0,
        )


@dataclass
class MarketShape:
    """The state a market is stocked with before the mix runs on it.

    `carts` are idle open carts that no load thread touches. The items are
    spread evenly over the product kinds and placed on producer shelves in
    turn.
    """

    producers: int
    items: int
    carts: int
    kinds: int


class BenchError(Exception):
    """A measurement could not run; the message names the step."""


# --- processes -------------------------------------------------------------


def _python_env() -> dict[str, str]:
    # The repository root first, so that `-m benchmarks.*` imports this copy.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    # Servers and clients get SIGTERM when this driver dies, even by SIGKILL
    # (see stop_with_parent in marketplace_server.server).
    return dict(
        os.environ,
        PYTHONPATH=path,
        PYTHONUNBUFFERED="1",
        MARKETPLACE_PARENT_PID=str(os.getpid()),
    )


def _stop_process(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a process this driver started: SIGTERM, then SIGKILL after `timeout` s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def read_rss_kib(pid: int) -> int:
    """Return VmRSS of process `pid` in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS line in /proc/{pid}/status")


class ServerProcess:
    """A market server in its own process on 127.0.0.1, on a port the OS picks.

    `module` is benchmarks.server (the real server plus bench.Noop) or
    marketplace_server.server (the real server alone).
    """

    def __init__(
        self,
        workdir: str,
        queue_size: int,
        module: str = "benchmarks.server",
        count_calls: bool = False,
        check_noop: bool = False,
        flags: list[str] | None = None,
    ) -> None:
        self.port_file = os.path.join(workdir, f"port-{time.monotonic_ns()}")
        self.log_path = self.port_file + ".log"
        command = [sys.executable, "-m", module]
        if count_calls:
            command.append("--count-calls")
        command += [
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            self.port_file,
            "--queue-size",
            str(queue_size),
            # As marketplace-simulate starts its server: INFO would log a line
            # per order placed.
            "--log-level",
            "WARNING",
            *(flags or []),
        ]
        self.command = command
        self.log = open(self.log_path, "wb")
        self.channel: grpc.Channel | None = None
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=_python_env()
        )
        try:
            self.address = self._wait_for_port(timeout=30.0)
            self.channel = grpc.insecure_channel(self.address)
            grpc.channel_ready_future(self.channel).result(timeout=30.0)
            self.stub = pb_grpc.MarketServiceStub(self.channel)
            if check_noop:
                self.check_noop()
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.port_file):
            if self.process.poll() is not None:
                raise BenchError(
                    f"server {shlex.join(self.command)} exited with status "
                    f"{self.process.returncode}; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"server did not write {self.port_file} in {timeout} s")
            time.sleep(0.02)
        with open(self.port_file, encoding="ascii") as file:
            return f"127.0.0.1:{int(file.read())}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_noop(self) -> None:
        """Fail unless bench.Noop is served, which shows benchmarks.server could wrap grpc.server."""
        try:
            self.channel.unary_unary(NOOP_METHOD, _registered_method=True)(
                b"", timeout=10
            )
        except grpc.RpcError as error:
            raise BenchError(
                f"{NOOP_METHOD} failed with {error.code().name}: the server was "
                "not built through grpc.server, so benchmarks/server.py could not "
                "add the no-op service; update it to match marketplace_server/server.py"
            ) from error

    def call_counts(self) -> dict[str, int]:
        reply = self.channel.unary_unary(COUNTS_METHOD, _registered_method=True)(
            b"", timeout=10
        )
        return json.loads(reply)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        _stop_process(self.process)
        self.log.close()


def call_many(method, requests: list, in_flight: int = STOCKING_IN_FLIGHT) -> list:
    """Send unary calls with up to `in_flight` outstanding; return the responses in order."""
    responses = []
    pending: collections.deque = collections.deque()
    for request in requests:
        pending.append(method.future(request, timeout=60))
        if len(pending) >= in_flight:
            responses.append(pending.popleft().result())
    while pending:
        responses.append(pending.popleft().result())
    return responses


def stock_market(server: ServerProcess, shape: MarketShape) -> list[str]:
    """Fill a fresh market to `shape`; return the producer ids in registration order."""
    stub = server.stub
    registered = call_many(
        stub.RegisterProducer,
        [
            pb.RegisterProducerRequest(name=f"bench-producer-{number}")
            for number in range(shape.producers)
        ],
    )
    producer_ids = [response.producer_id for response in registered]

    publishes = []
    for kind in range(shape.kinds):
        stock = shape.items // shape.kinds + (kind < shape.items % shape.kinds)
        if stock:
            publishes.append(
                pb.PublishRequest(
                    producer_id=producer_ids[kind % len(producer_ids)],
                    product=bench_product(kind),
                    quantity=stock,
                )
            )
    for response, request in zip(call_many(stub.Publish, publishes), publishes):
        if response.published != request.quantity:
            raise BenchError(
                f"stocking the market failed: published {response.published} of "
                f"{request.quantity} {request.product.product_id}, so the shelf "
                f"capacity {LOAD_CAPACITY} is too small for this market shape"
            )

    call_many(
        stub.CreateCart,
        [pb.CreateCartRequest(consumer="bench-idle") for _ in range(shape.carts)],
    )
    return producer_ids


def run_load(
    settings: Settings,
    workdir: str,
    concurrency: tuple[int, int],
    targets: list[dict],
    windows: int,
) -> list[dict]:
    """Run load processes over `targets` in turn; return the totals of each window.

    Each target is a dict of benchmarks/load.py's plan: address, workload
    (noop or mix) and, for the mix, batch, kinds and producer_ids. Window w
    measures target w modulo len(targets).
    """
    processes_count, threads = concurrency
    plan_path = os.path.join(workdir, f"plan-{time.monotonic_ns()}.json")
    with open(plan_path, "w", encoding="utf-8") as file:
        json.dump({"targets": targets}, file)

    budget = settings.warmup + settings.window * windows
    processes = []
    results = []
    try:
        for index in range(processes_count):
            command = [
                sys.executable,
                "-m",
                "benchmarks.load",
                "--plan",
                plan_path,
                "--threads",
                str(threads),
                "--process-index",
                str(index),
                "--total-threads",
                str(processes_count * threads),
                "--window",
                repr(settings.window),
                "--windows",
                str(windows),
                "--time-limit",
                repr(budget + 60.0),
            ]
            processes.append(
                subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=_python_env(),
                )
            )
        deadline = time.monotonic() + 60.0
        for process in processes:
            _expect_line(process, b"ready", deadline)
        start = time.time() + settings.warmup
        for process in processes:
            process.stdin.write(f"go {start!r}\n".encode())
            process.stdin.flush()

        for process in processes:
            out, _ = process.communicate(timeout=budget + 60.0)
            if process.returncode != 0:
                raise BenchError(
                    f"load process exited with status {process.returncode}: "
                    f"{out.decode(errors='replace')[-500:]}"
                )
            results.append(json.loads(out.splitlines()[-1]))
    finally:
        for process in processes:
            _stop_process(process, timeout=5.0)
    failures = [failure for result in results for failure in result["failures"]]
    if failures:
        raise BenchError(f"load threads failed: {failures[:3]}")
    return merge_windows(settings, results)


def _expect_line(process: subprocess.Popen, expected: bytes, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    ready, _, _ = select.select([process.stdout], [], [], max(0.0, remaining))
    line = process.stdout.readline().strip() if ready else b""
    if line != expected:
        raise BenchError(
            f"load process {process.pid} sent {line!r} instead of {expected!r} "
            f"(exit status {process.poll()})"
        )


# --- statistics ------------------------------------------------------------


def percentile(sorted_values: list[int], fraction: float) -> float:
    """Return the nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * fraction // 1))
    return sorted_values[int(rank) - 1]


def spread(values: list[float]) -> dict[str, float]:
    """Return min, median and max of repeated measurements."""
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def merge_windows(settings: Settings, results: list[dict]) -> list[dict]:
    """Add up the windows of all load processes; return rates per window."""
    windows = []
    for number, first in enumerate(results[0]["windows"]):
        parts = [result["windows"][number] for result in results]
        latencies = sorted(x for part in parts for x in part["latencies_us"])
        errors: collections.Counter[str] = collections.Counter()
        for part in parts:
            errors.update(part["errors"])
        windows.append(
            {
                "target": first["target"],
                "calls_per_s": sum(p["calls"] for p in parts) / settings.window,
                "items_per_s": sum(p["items"] for p in parts) / settings.window,
                "p50_ms": percentile(latencies, 0.50) / 1000,
                "p99_ms": percentile(latencies, 0.99) / 1000,
                "short_adds": sum(p["short_adds"] for p in parts),
                "short_publishes": sum(p["short_publishes"] for p in parts),
                "errors": dict(errors),
            }
        )
    return windows


def summarize(windows: list[dict], target: int) -> dict:
    """Return min/median/max of each rate over the windows of target number `target`."""
    chosen = [window for window in windows if window["target"] == target]
    summary = {
        key: spread([window[key] for window in chosen])
        for key in ("calls_per_s", "items_per_s", "p50_ms", "p99_ms")
    }
    summary["short_adds"] = sum(window["short_adds"] for window in chosen)
    summary["short_publishes"] = sum(window["short_publishes"] for window in chosen)
    summary["errors"] = sum(sum(window["errors"].values()) for window in chosen)
    summary["windows"] = chosen
    return summary


# --- measurements ----------------------------------------------------------


def noop_target(server: ServerProcess) -> dict:
    return {"address": server.address, "workload": "noop"}


def mix_target(
    server: ServerProcess, shape: MarketShape, producer_ids: list[str], batch: int
) -> dict:
    return {
        "address": server.address,
        "workload": "mix",
        "batch": batch,
        "kinds": shape.kinds,
        "producer_ids": producer_ids,
    }


def stock_per_kind(concurrency: tuple[int, int], batch: int) -> int:
    """Return the stock per product that keeps every add of the mix whole.

    A round takes at most `batch` items more than it has put back, so all
    threads at once take at most threads x batch; 2 more keep shelves from
    running empty.
    """
    processes, threads = concurrency
    return processes * threads * batch + 2


def start_stocked(workdir: str, shape: MarketShape, batch: int) -> tuple[ServerProcess, dict]:
    """Start a server that also serves bench.Noop and stock it to `shape`.

    Returns the server and its mix target.
    """
    server = ServerProcess(workdir, LOAD_CAPACITY, check_noop=True)
    try:
        producer_ids = stock_market(server, shape)
    except BaseException:
        server.stop()
        raise
    return server, mix_target(server, shape, producer_ids, batch)


def measure_against_ceiling(
    settings: Settings,
    workdir: str,
    concurrency: tuple[int, int],
    shape: MarketShape,
    batch: int,
) -> tuple[dict, dict, dict]:
    """Alternate no-op and mix windows on one stocked server.

    Each mix window directly follows a no-op window, so that the two are
    measured close in time. Returns the ceiling summary, the market summary
    and min/median/max of the market/ceiling ratio within each pair.
    """
    server, target = start_stocked(workdir, shape, batch)
    try:
        windows = run_load(
            settings,
            workdir,
            concurrency,
            [noop_target(server), target],
            windows=2 * settings.windows,
        )
    finally:
        server.stop()
    ceiling = summarize(windows, 0)
    market = summarize(windows, 1)
    market["market"] = asdict(shape)
    pair_ratios = [
        market_window["calls_per_s"] / ceiling_window["calls_per_s"]
        for ceiling_window, market_window in zip(windows[0::2], windows[1::2])
    ]
    return ceiling, market, spread(pair_ratios)


def mix_shape(settings: Settings, concurrency: tuple[int, int], batch: int) -> MarketShape:
    return MarketShape(
        producers=settings.mix_producers,
        items=settings.mix_kinds * stock_per_kind(concurrency, batch),
        carts=0,
        kinds=settings.mix_kinds,
    )


def measure_ceiling_vs_market(settings: Settings, workdir: str) -> list[dict]:
    rows = []
    for concurrency in settings.concurrencies:
        ceiling, market, pair_ratio = measure_against_ceiling(
            settings, workdir, concurrency, mix_shape(settings, concurrency, 1), 1
        )
        rows.append(
            {
                "concurrency": _label(concurrency),
                "processes": concurrency[0],
                "threads_per_process": concurrency[1],
                "ceiling": ceiling,
                "market": market,
                "ratio": market["calls_per_s"]["median"]
                / ceiling["calls_per_s"]["median"],
                "pair_ratio": pair_ratio,
            }
        )
        _progress(
            f"ceiling vs market {_label(concurrency)}: "
            f"{ceiling['calls_per_s']['median']:.0f} vs "
            f"{market['calls_per_s']['median']:.0f} calls/s"
        )
    return rows


def measure_batching(settings: Settings, workdir: str) -> dict:
    concurrency = settings.batch_concurrency
    ceiling, market, _ = measure_against_ceiling(
        settings,
        workdir,
        concurrency,
        mix_shape(settings, concurrency, settings.batch),
        settings.batch,
    )
    ceiling_calls = ceiling["calls_per_s"]["median"]
    pair_ratios = [
        market_window["items_per_s"] / ceiling_window["calls_per_s"]
        for ceiling_window, market_window in zip(ceiling["windows"], market["windows"])
    ]
    _progress(
        f"batching {settings.batch}: {market['items_per_s']['median']:.0f} items/s"
    )
    return {
        "concurrency": _label(concurrency),
        "batch": settings.batch,
        "market": market,
        "ceiling": ceiling,
        "ceiling_calls_per_s": ceiling_calls,
        "items_per_ceiling_call": market["items_per_s"]["median"] / ceiling_calls,
        "pair_items_per_ceiling_call": spread(pair_ratios),
    }


def measure_cost_growth(settings: Settings, workdir: str) -> dict:
    """Run the mix on markets that differ in one dimension, in turn.

    For each dimension, one stocked server per value runs at the same time,
    and the windows cycle over them, so that all values of a dimension are
    measured close in time.
    """
    concurrency = settings.cost_concurrency
    stock = stock_per_kind(concurrency, 1)
    baseline = MarketShape(
        producers=settings.cost_producers[0],
        items=max(settings.cost_items[0], stock),
        carts=settings.cost_carts[0],
        kinds=settings.cost_kinds[0],
    )
    dimensions = {
        "producers": settings.cost_producers,
        "items": settings.cost_items,
        "carts": settings.cost_carts,
        "kinds": settings.cost_kinds,
    }
    growth = {}
    for dimension, values in dimensions.items():
        shapes = []
        for value in values:
            shape = MarketShape(**{**asdict(baseline), dimension: value})
            if dimension == "items":
                shape.items = max(value, stock * shape.kinds)
            else:
                # Many product kinds need more items, enough for every kind.
                shape.items = max(baseline.items, stock * shape.kinds)
            shapes.append(shape)

        servers: list[ServerProcess] = []
        targets = []
        stocking_s = []
        try:
            for shape in shapes:
                started = time.monotonic()
                server, target = start_stocked(workdir, shape, batch=1)
                servers.append(server)
                targets.append(target)
                stocking_s.append(time.monotonic() - started)
            windows = run_load(
                settings,
                workdir,
                concurrency,
                targets,
                windows=len(targets) * settings.windows,
            )
        finally:
            for server in servers:
                server.stop()

        rows = []
        for number, (value, shape) in enumerate(zip(values, shapes)):
            summary = summarize(windows, number)
            summary["market"] = asdict(shape)
            summary["stocking_s"] = round(stocking_s[number], 2)
            rows.append({"value": value, **summary})
        smallest = rows[0]["calls_per_s"]["median"]
        largest = rows[-1]["calls_per_s"]["median"]
        growth[dimension] = {"rows": rows, "largest_vs_smallest": largest / smallest}
        _progress(
            f"cost growth {dimension} {values[0]:,} -> {values[-1]:,}: "
            f"{smallest:.0f} -> {largest:.0f} calls/s"
        )
    return {"concurrency": _label(concurrency), "dimensions": growth}


def measure_memory(settings: Settings, workdir: str) -> dict:
    """Grow one real marketplace-server process step by step and read its VmRSS."""
    server = ServerProcess(workdir, LOAD_CAPACITY, module="marketplace_server.server")
    steps = []

    def record(step: str, what: str) -> None:
        steps.append(
            {"step": step, "what": what, "rss_kib": read_rss_kib(server.pid)}
        )

    try:
        stub = server.stub
        stub.GetMarketState(pb.GetMarketStateRequest(), timeout=10)
        record("started", "empty market, one call served")
        warm_calls = settings.memory_carts
        call_many(stub.GetMarketState, [pb.GetMarketStateRequest()] * warm_calls)
        record("empty", f"empty market after {warm_calls:,} more calls")

        producer_id = stub.RegisterProducer(
            pb.RegisterProducerRequest(name="bench-memory"), timeout=10
        ).producer_id
        stub.Publish(
            pb.PublishRequest(
                producer_id=producer_id,
                product=bench_product(0),
                quantity=settings.memory_items,
            ),
            timeout=10,
        )
        record("items", f"+{settings.memory_items:,} items of 1 product on 1 shelf")

        carts = call_many(
            stub.CreateCart,
            [pb.CreateCartRequest(consumer="bench-memory")] * settings.memory_carts,
        )
        record("carts", f"+{settings.memory_carts:,} open carts, empty")

        call_many(
            stub.AddToCart,
            [
                pb.AddToCartRequest(
                    cart_id=cart.cart_id, product_id="bench-0", quantity=1
                )
                for cart in carts
            ],
        )
        record("cart_items", f"+1 item in each of the {settings.memory_carts:,} carts")

        registered = call_many(
            stub.RegisterProducer,
            [
                pb.RegisterProducerRequest(name=f"bench-memory-{number}")
                for number in range(settings.memory_producers)
            ],
        )
        record("producers", f"+{settings.memory_producers:,} producers, empty shelves")

        per_shelf = settings.memory_items // settings.memory_producers
        call_many(
            stub.Publish,
            [
                pb.PublishRequest(
                    producer_id=response.producer_id,
                    product=bench_product(0),
                    quantity=per_shelf,
                )
                for response in registered
            ],
        )
        record(
            "spread_items",
            f"+{per_shelf * settings.memory_producers:,} items of 1 product, "
            f"{per_shelf:,} on each of those shelves",
        )
        # Each call carries a new request id, which the server remembers, and
        # changes nothing else: the cart does not hold the product removed.
        call_many(
            stub.RemoveFromCart,
            [
                pb.RemoveFromCartRequest(
                    request_id=f"bench-memory-{number}",
                    cart_id=carts[0].cart_id,
                    product_id="bench-absent",
                    quantity=1,
                )
                for number in range(settings.memory_carts)
            ],
        )
        record(
            "request_ids",
            f"+{settings.memory_carts:,} calls with a request id, which change "
            "nothing else",
        )
        state = stub.GetMarketState(pb.GetMarketStateRequest(), timeout=60)
    finally:
        server.stop()

    for previous, step in zip(steps, steps[1:]):
        step["delta_kib"] = step["rss_kib"] - previous["rss_kib"]
    _progress(f"memory: {steps[-1]['rss_kib'] / 1024:.1f} MiB at the end")
    return {
        "server_command": "python -m marketplace_server.server --queue-size "
        f"{LOAD_CAPACITY} --log-level WARNING",
        "counts": {
            "items": settings.memory_items,
            "carts": settings.memory_carts,
            "producers": settings.memory_producers,
        },
        "steps": steps,
        "final_state": {
            "shelves": len(state.shelves),
            "open_carts": len(state.carts),
            "items_published": state.items_published,
        },
    }


def measure_scenarios(settings: Settings, workdir: str) -> dict:
    """Run a generated classic-size market distributed and --local."""
    scenario, items_expected = generate.generate(
        settings.scenario_producers, settings.scenario_consumers, seed=1
    )
    path = os.path.join(workdir, "generated-market.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump(scenario, file)
    queue_size = scenario["marketplace"]["queue_size_per_producer"]

    runs = []
    for time_scale in settings.scenario_time_scales:
        for mode in ("distributed", "distributed, polling", "local"):
            walls, calls, bought = [], [], []
            for _ in range(settings.scenario_repeats):
                if mode == "local":
                    wall, count, lines = _run_local(settings, path, time_scale)
                else:
                    # Polling consumers (--add-wait 0) show what waiting
                    # adds save in calls per item bought.
                    extra = ["--add-wait", "0"] if mode.endswith("polling") else []
                    wall, count, lines = _run_distributed(
                        settings, workdir, path, queue_size, time_scale, extra
                    )
                if lines != items_expected:
                    raise BenchError(
                        f"{mode} run at time scale {time_scale} bought {lines} "
                        f"items; the generated market buys {items_expected}"
                    )
                walls.append(wall)
                calls.append(count)
                bought.append(lines)
            runs.append(
                {
                    "mode": mode,
                    "time_scale": time_scale,
                    "wall_s": spread(walls),
                    "calls": spread(calls),
                    "items_bought": bought[0],
                    "calls_per_item": spread([c / bought[0] for c in calls]),
                }
            )
            _progress(
                f"scenario {mode} x{time_scale}: "
                f"{statistics.median(walls):.2f} s, "
                f"{statistics.median(calls) / bought[0]:.2f} calls per item"
            )
    return {
        "producers": settings.scenario_producers,
        "consumers": settings.scenario_consumers,
        "items_expected": items_expected,
        "clients_per_process": settings.scenario_clients_per_process,
        "runs": runs,
    }


def _simulate_command(path: str, time_scale: float, settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "marketplace_clients.simulate",
        path,
        "--time-scale",
        repr(time_scale),
        "--timeout",
        repr(settings.scenario_timeout),
    ]


def _run_local(settings: Settings, path: str, time_scale: float):
    command = _simulate_command(path, time_scale, settings) + [
        "--local",
        "--log-level",
        "INFO",
    ]
    started = time.monotonic()
    result = subprocess.run(
        command,
        capture_output=True,
        env=_python_env(),
        timeout=settings.scenario_timeout + 30,
    )
    wall = time.monotonic() - started
    stderr = result.stderr.decode(errors="replace")
    if result.returncode != 0:
        raise BenchError(f"{shlex.join(command)} failed: {stderr[-500:]}")
    match = re.search(r"local calls: (\d+) in all", stderr)
    if match is None:
        raise BenchError("marketplace-simulate --local logged no 'local calls' line")
    return wall, int(match.group(1)), len(result.stdout.splitlines())


def _run_distributed(
    settings: Settings,
    workdir: str,
    path: str,
    queue_size: int,
    time_scale: float,
    extra: list[str] | None = None,
):
    server = ServerProcess(workdir, queue_size, count_calls=True)
    try:
        command = _simulate_command(path, time_scale, settings) + [
            "--server",
            server.address,
            "--clients-per-process",
            str(settings.scenario_clients_per_process),
            *(extra or []),
        ]
        started = time.monotonic()
        result = subprocess.run(
            command,
            capture_output=True,
            env=_python_env(),
            timeout=settings.scenario_timeout + 30,
        )
        wall = time.monotonic() - started
        if result.returncode != 0:
            raise BenchError(
                f"{shlex.join(command)} failed: "
                f"{result.stderr.decode(errors='replace')[-500:]}"
            )
        counts = server.call_counts()
    finally:
        server.stop()
    calls = sum(
        count
        for method, count in counts.items()
        if method.startswith(MARKET_METHOD_PREFIX)
    )
    return wall, calls, len(result.stdout.splitlines())


def measure_persistence(settings: Settings, workdir: str) -> dict:
    """Compare a durable server (--data-dir) with a memory-only one, and time its start.

    Both servers take the market mix with b = 1 at the same concurrency, in
    alternating windows as in measure_against_ceiling.
    """
    concurrency = settings.cost_concurrency
    shape = mix_shape(settings, concurrency, 1)
    memory = ServerProcess(workdir, LOAD_CAPACITY)
    durable = None
    try:
        data_dir = os.path.join(workdir, f"data-{time.monotonic_ns()}")
        durable = ServerProcess(workdir, LOAD_CAPACITY, flags=["--data-dir", data_dir])
        targets = [
            mix_target(server, shape, stock_market(server, shape), 1)
            for server in (memory, durable)
        ]
        windows = run_load(
            settings, workdir, concurrency, targets, windows=2 * settings.windows
        )
    finally:
        memory.stop()
        if durable is not None:
            durable.stop()
    memory_summary = summarize(windows, 0)
    durable_summary = summarize(windows, 1)
    pair_ratios = [
        durable_window["calls_per_s"] / memory_window["calls_per_s"]
        for memory_window, durable_window in zip(windows[0::2], windows[1::2])
    ]
    result = {
        "concurrency": _label(concurrency),
        "memory": memory_summary,
        "durable": durable_summary,
        "ratio": durable_summary["calls_per_s"]["median"]
        / memory_summary["calls_per_s"]["median"],
        "pair_ratio": spread(pair_ratios),
        "startup": measure_startup(settings, workdir),
    }
    _progress(
        f"durable vs memory-only {result['concurrency']}: "
        f"{durable_summary['calls_per_s']['median']:.0f} vs "
        f"{memory_summary['calls_per_s']['median']:.0f} calls/s"
    )
    return result


def measure_startup(settings: Settings, workdir: str, repeats: int = 3) -> dict:
    """Time starts of a server on a folder holding `memory_items` items on shelves.

    A start is timed from launching the process until the server replies on
    its port. Three cases: memory-only with no market (the fixed cost of
    the program), the folder after a clean stop (one snapshot to load), and
    after SIGKILL (every record since the first start to replay, because
    --snapshot-every is larger than their number).
    """
    kinds = max(1, settings.memory_producers // 10)
    shape = MarketShape(
        producers=kinds, items=settings.memory_items, carts=0, kinds=kinds
    )

    def timed_start(flags: list[str]) -> tuple[float, ServerProcess]:
        started = time.monotonic()
        server = ServerProcess(workdir, LOAD_CAPACITY, flags=flags)
        return time.monotonic() - started, server

    def kill(server: ServerProcess) -> None:
        server.process.kill()
        _stop_process(server.process)
        server.channel.close()
        server.log.close()

    def stocked_folder(stop: Callable[[ServerProcess], None]) -> list[str]:
        flags = [
            "--data-dir",
            os.path.join(workdir, f"data-{time.monotonic_ns()}"),
            "--snapshot-every",
            str(10 * (shape.producers + shape.kinds)),
        ]
        server = ServerProcess(workdir, LOAD_CAPACITY, flags=flags)
        try:
            stock_market(server, shape)
            state = server.stub.GetMarketState(pb.GetMarketStateRequest(), timeout=60)
            if sum(shelf.size for shelf in state.shelves) != shape.items:
                raise BenchError("stocking the durable market left fewer items")
        finally:
            stop(server)
        return flags

    cases = {"memory-only, empty market": ([], lambda server: server.stop())}
    cases["after a clean stop"] = (stocked_folder(ServerProcess.stop), ServerProcess.stop)
    cases["after SIGKILL"] = (stocked_folder(kill), kill)
    rows = []
    for name, (flags, stop) in cases.items():
        seconds = []
        for _ in range(repeats):
            elapsed, server = timed_start(flags)
            try:
                state = server.stub.GetMarketState(
                    pb.GetMarketStateRequest(), timeout=60
                )
            finally:
                stop(server)
            loaded = sum(shelf.size for shelf in state.shelves)
            if loaded != (shape.items if flags else 0):
                raise BenchError(f"server started {name} holds {loaded} items")
            seconds.append(elapsed)
        rows.append({"case": name, "start_s": spread(seconds)})
    return {"market": asdict(shape), "rows": rows}


# --- results ---------------------------------------------------------------


def machine_info() -> dict:
    cpu_model = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as file:
            for line in file:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import google.protobuf

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def evaluate_targets(results: dict) -> list[dict]:
    """Compare the medians with the project's speed targets; nothing is enforced."""
    targets = []
    for row in results["ceiling_vs_market"]:
        targets.append(
            {
                "target": f"market/ceiling calls/s at {row['concurrency']} >= 0.9",
                "measured": round(row["ratio"], 3),
                "met": row["ratio"] >= 0.9,
            }
        )
    batching = results["batching"]
    targets.append(
        {
            "target": f"batched items/s >= 5 x ceiling calls/s at "
            f"{batching['concurrency']}",
            "measured": round(batching["items_per_ceiling_call"], 2),
            "met": batching["items_per_ceiling_call"] >= 5,
        }
    )
    if "persistence" in results:
        persistence = results["persistence"]
        targets.append(
            {
                "target": "durable/memory-only calls/s at "
                f"{persistence['concurrency']} >= 0.5",
                "measured": round(persistence["ratio"], 3),
                "met": persistence["ratio"] >= 0.5,
            }
        )
    for dimension, growth in results["cost_growth"]["dimensions"].items():
        ratio = growth["largest_vs_smallest"]
        targets.append(
            {
                "target": f"calls/s with the most {dimension} within 10% of the fewest",
                "measured": round(ratio, 3),
                "met": ratio >= 0.9,
            }
        )
    return targets


def _label(concurrency: tuple[int, int]) -> str:
    return f"{concurrency[0]}x{concurrency[1]}"


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description="Measure the market server and write RESULTS.md and "
        "results.json. Servers and clients run as processes on 127.0.0.1.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run a tiny configuration in well under a minute, to check that "
        "the benchmark works; its numbers mean nothing",
    )
    parser.add_argument(
        "--out-dir",
        help="folder to write RESULTS.md and results.json into (default: "
        "benchmarks/ for a full run, a new temporary folder with --smoke, so "
        "that a smoke run never replaces the recorded results)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    settings = Settings.smoke() if args.smoke else Settings.full()
    python_command = shlex.join([sys.executable, "-m", "benchmarks.bench", *argv])

    started = time.monotonic()
    results: dict = {
        "schema": 1,
        "settings": asdict(settings),
        "command": os.environ.get("BENCH_COMMAND", python_command),
        "python_command": python_command,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
    }
    phases = {}
    with tempfile.TemporaryDirectory(prefix="marketplace-bench-") as workdir:
        try:
            for name, measure in (
                ("ceiling_vs_market", lambda: measure_ceiling_vs_market(settings, workdir)),
                ("batching", lambda: measure_batching(settings, workdir)),
                ("cost_growth", lambda: measure_cost_growth(settings, workdir)),
                ("memory", lambda: measure_memory(settings, workdir)),
                ("scenarios", lambda: measure_scenarios(settings, workdir)),
                ("persistence", lambda: measure_persistence(settings, workdir)),
            ):
                phase_started = time.monotonic()
                results[name] = measure()
                phases[name] = round(time.monotonic() - phase_started, 1)
        except (BenchError, grpc.RpcError, subprocess.TimeoutExpired, OSError) as error:
            print(f"bench: failed: {error}", file=sys.stderr)
            return 1

    results["phase_seconds"] = phases
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["targets"] = evaluate_targets(results)

    if args.out_dir is not None:
        out_dir = pathlib.Path(args.out_dir)
    elif args.smoke:
        out_dir = pathlib.Path(tempfile.mkdtemp(prefix="marketplace-bench-smoke-"))
    else:
        out_dir = ROOT / "benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.json", "w", encoding="utf-8") as file:
        json.dump(results, file, indent=1)
        file.write("\n")
    report.write_markdown(results, out_dir / "RESULTS.md")
    _progress(
        f"done in {results['duration_s']:.0f} s; wrote {out_dir / 'RESULTS.md'} "
        f"and {out_dir / 'results.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
