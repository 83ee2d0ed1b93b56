"""Load-generating client process of the benchmarks, driven by benchmarks/bench.py.

The plan (a JSON file) lists targets, each a server address and a workload.
Measurement windows cycle through the targets: window w measures target
w modulo the number of targets. So measurements that are compared with each
other are taken in turn, close in time, which matters on a shared machine.
The process opens one channel per server address, shared by its threads as
the real client programs share theirs.

The workloads:

- `noop`: calls /bench.Noop/Call (see benchmarks/server.py) back to back.
- `mix`: the market mix. Each round is CreateCart, Publish(b), AddToCart(b),
  AddToCart(b), RemoveFromCart(b), PlaceOrder, with b = the target's batch.
  A round leaves the stock of its product where it found it: b published,
  2b taken, b returned, b ordered. So when the driver stocks at least
  threads x b + 2 items per product, adds never come back short and shelves
  never run empty. Round r of global thread g uses producer and product
  number (g + r x total threads), each modulo its count, so every producer
  and product of the target is used.

Protocol with the driver: after connecting, the process prints `ready`, then
reads `go START` from stdin, with START in seconds since the epoch. Calls
before START warm up every target in turn and are not counted. From START
on, each call is counted in the window of --window seconds in which it
completes, if it was made for that window's target. After --windows windows
the process prints one JSON object with the counts and latencies per
window, and exits.

Every loop is bounded: by the end of the last window, by --max-calls per
thread, and by --time-limit seconds after start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import grpc

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_server.server import stop_with_parent

from .server import NOOP_METHOD

# Deadline of each call, in seconds.
CALL_TIMEOUT = 10.0
KINDS = ("Tea", "Coffee", "Honey")


def bench_product(number: int) -> pb.Product:
    """Return product number `number` of the benchmark catalogue.

    The driver publishes these to stock the market and the load clients
    publish them again, so both must build equal messages.
    """
    kind = KINDS[number % len(KINDS)]
    product = pb.Product(
        product_id=f"bench-{number}",
        kind=kind,
        name=f"{kind} {number}",
        price=pb.Money(units=3 + number % 7, nanos=500_000_000),
    )
    product.attributes.add(key="origin", string_value="Assam")
    product.attributes.add(key="grams", int_value=250)
    return product


@dataclass
class Window:
    """Calls made for one target that completed within one measurement window."""

    target: int
    calls: int = 0
    # Items moved by Publish, AddToCart and RemoveFromCart.
    items: int = 0
    latencies_us: list[int] = field(default_factory=list)
    short_adds: int = 0
    short_publishes: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Recorder:
    """Assigns each completed call to its window; raises Finished after the last one.

    Times are on the time.perf_counter clock.
    """

    class Finished(Exception):
        pass

    def __init__(
        self, start: float, window: float, windows: int, targets: int, max_calls: int
    ):
        self.start = start
        self.window = window
        self.windows = [Window(number % targets) for number in range(windows)]
        self.end = start + window * windows
        self.targets = targets
        self.calls_left = max_calls

    def target_now(self, round_number: int) -> int:
        """Return the target to load now; before the first window, each in turn."""
        now = time.perf_counter()
        if now < self.start:
            return round_number % self.targets
        if now >= self.end:
            raise Recorder.Finished
        return self.windows[int((now - self.start) / self.window)].target

    def record(
        self, target: int, began: float, ended: float, items: int = 0
    ) -> Window | None:
        """Count one call made for `target`; return its window, or None if not counted."""
        self.calls_left -= 1
        if self.calls_left < 0 or ended >= self.end:
            raise Recorder.Finished
        if ended < self.start:
            return None
        current = self.windows[int((ended - self.start) / self.window)]
        if current.target != target:
            return None
        current.calls += 1
        current.items += items
        current.latencies_us.append(round((ended - began) * 1e6))
        return current

    def record_error(self, code: grpc.StatusCode) -> None:
        now = time.perf_counter()
        self.calls_left -= 1
        if self.calls_left < 0 or now >= self.end:
            raise Recorder.Finished
        if now >= self.start:
            errors = self.windows[int((now - self.start) / self.window)].errors
            errors[code.name] = errors.get(code.name, 0) + 1


class Target:
    """A server and the workload to run on it, from one entry of the plan."""

    def __init__(self, number: int, spec: dict, channel: grpc.Channel) -> None:
        self.number = number
        self.workload = spec["workload"]
        self.noop = channel.unary_unary(NOOP_METHOD)
        self.stub = pb_grpc.MarketServiceStub(channel)
        if self.workload == "mix":
            self.batch = spec["batch"]
            self.producer_ids = spec["producer_ids"]
            self.products = [bench_product(k) for k in range(spec["kinds"])]


class LoadThread:
    """The load of one thread over every target; see the module docstring."""

    def __init__(self, targets: list[Target], recorder: Recorder, index: int, total: int):
        self.targets = targets
        self.recorder = recorder
        self.index = index
        self.total = total
        self.consumer = f"bench-thread-{index}"

    def run(self) -> None:
        for round_number in range(sys.maxsize):
            target = self.targets[self.recorder.target_now(round_number)]
            try:
                if target.workload == "noop":
                    self.call_noop(target)
                else:
                    self.round(target, self.index + round_number * self.total)
            except grpc.RpcError as error:
                self.recorder.record_error(error.code())

    def call_noop(self, target: Target) -> None:
        began = time.perf_counter()
        target.noop(b"", timeout=CALL_TIMEOUT)
        self.recorder.record(target.number, began, time.perf_counter())

    def timed(
        self, target: Target, method, request, items_of=None
    ) -> tuple[object, Window | None]:
        began = time.perf_counter()
        response = method(request, timeout=CALL_TIMEOUT)
        ended = time.perf_counter()
        items = items_of(response) if items_of else 0
        return response, self.recorder.record(target.number, began, ended, items)

    def round(self, target: Target, slot: int) -> None:
        stub, b = target.stub, target.batch
        producer_id = target.producer_ids[slot % len(target.producer_ids)]
        product = target.products[slot % len(target.products)]
        created, _ = self.timed(
            target,
            stub.CreateCart,
            pb.CreateCartRequest(request_id=_request_id(), consumer=self.consumer),
        )
        cart_id = created.cart_id

        published, window = self.timed(
            target,
            stub.Publish,
            pb.PublishRequest(
                request_id=_request_id(),
                producer_id=producer_id,
                product=product,
                quantity=b,
            ),
            lambda response: response.published,
        )
        if window is not None and published.published < b:
            window.short_publishes += 1

        for _ in range(2):
            added, window = self.timed(
                target,
                stub.AddToCart,
                pb.AddToCartRequest(
                    request_id=_request_id(),
                    cart_id=cart_id,
                    product_id=product.product_id,
                    quantity=b,
                ),
                lambda response: response.added,
            )
            if window is not None and added.added < b:
                window.short_adds += 1

        self.timed(
            target,
            stub.RemoveFromCart,
            pb.RemoveFromCartRequest(
                request_id=_request_id(),
                cart_id=cart_id,
                product_id=product.product_id,
                quantity=b,
            ),
            lambda response: response.removed,
        )
        self.timed(
            target,
            stub.PlaceOrder,
            pb.PlaceOrderRequest(request_id=_request_id(), cart_id=cart_id),
        )


def _request_id() -> str:
    # A fresh id per call, as the real clients send.
    return uuid.uuid4().hex


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description="Load-generating client of benchmarks/bench.py.",
    )
    parser.add_argument(
        "--plan",
        required=True,
        help="JSON file: {targets: [{address, workload, and for the mix batch, "
        "kinds, producer_ids}]}",
    )
    parser.add_argument("--threads", type=int, required=True, help="threads in this process")
    parser.add_argument(
        "--process-index",
        type=int,
        required=True,
        help="number of this process among the load processes, from 0",
    )
    parser.add_argument(
        "--total-threads",
        type=int,
        required=True,
        help="threads over all load processes of the run",
    )
    parser.add_argument(
        "--window", type=float, required=True, help="length of each window, in seconds"
    )
    parser.add_argument("--windows", type=int, required=True, help="number of windows")
    parser.add_argument(
        "--max-calls", type=int, default=1_000_000, help="maximum calls per thread"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=120.0,
        help="seconds after start at which the process exits whatever happens",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    stop_with_parent()
    args = build_parser().parse_args(argv)
    with open(args.plan, encoding="utf-8") as file:
        specs = json.load(file)["targets"]

    # A watchdog: the process ends by itself even if the driver vanishes.
    watchdog = threading.Timer(args.time_limit, _exit_now, args=(3,))
    watchdog.daemon = True
    watchdog.start()
    channels: dict[str, grpc.Channel] = {}
    for spec in specs:
        if spec["address"] not in channels:
            channel = grpc.insecure_channel(spec["address"])
            grpc.channel_ready_future(channel).result(timeout=30)
            channels[spec["address"]] = channel
    targets = [
        Target(number, spec, channels[spec["address"]])
        for number, spec in enumerate(specs)
    ]

    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "go":
        print(f"load: expected 'go START' on stdin, got {line!r}", file=sys.stderr)
        return 2
    start = time.perf_counter() + (float(line[1]) - time.time())

    recorders = [
        Recorder(start, args.window, args.windows, len(targets), args.max_calls)
        for _ in range(args.threads)
    ]
    failures: list[str] = []

    def work(thread: int) -> None:
        index = args.process_index * args.threads + thread
        try:
            LoadThread(targets, recorders[thread], index, args.total_threads).run()
        except Recorder.Finished:
            pass
        except Exception as error:  # reported to the driver, which fails the run
            failures.append(f"thread {index}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for channel in channels.values():
        channel.close()

    windows = []
    for number in range(args.windows):
        merged = Window(number % len(targets))
        for recorder in recorders:
            part = recorder.windows[number]
            merged.calls += part.calls
            merged.items += part.items
            merged.latencies_us.extend(part.latencies_us)
            merged.short_adds += part.short_adds
            merged.short_publishes += part.short_publishes
            for code, count in part.errors.items():
                merged.errors[code] = merged.errors.get(code, 0) + count
        windows.append(merged.__dict__)
    json.dump({"windows": windows, "failures": failures}, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 1 if failures else 0


def _exit_now(status: int) -> None:
    print("load: time limit reached; exiting", file=sys.stderr, flush=True)
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
