"""In-process scenario runner behind `marketplace-simulate --local`.

Runs every producer and consumer of a scenario as a thread of this process
and calls `marketplace_server.core.Market` directly, with no gRPC. Purchase
lines go to stdout and the summary to stderr, in the same format as a
distributed run. Producers stop once every consumer has finished.
"""

from __future__ import annotations

import argparse
import collections
import logging
import signal
import sys
import threading
import time

from marketplace.v1 import marketplace_pb2 as pb
from marketplace_server import core
from marketplace_server.servicer import (
    MarketServicer,
    product_from_proto,
    product_to_proto,
)

from . import common
from .diagnosis import StallWatch, describe_stall, fetch_state
from .consumer import DEFAULT_ADD_WAIT
from .retry import RetryPolicy, Stopped, add_all, move_all
from .scenario import Scenario, items_over_budget, render_product
from .simulate import EXIT_INTERRUPTED, EXIT_STALLED, budget_summary

log = logging.getLogger(__name__)

# Seconds that producer threads get to return once asked to stop. A producer
# checks the stop event between market calls, which take microseconds.
PRODUCER_STOP_TIMEOUT = 5.0
# Interval at which the main thread wakes to check for a timeout or a signal.
POLL_INTERVAL = 0.05


class LocalRun:
    """One in-process run of a scenario: the market, the threads and their outcome."""

    def __init__(
        self, scenario: Scenario, time_scale: float, add_wait: float = DEFAULT_ADD_WAIT
    ) -> None:
        self.scenario = scenario
        self.time_scale = time_scale
        # Seconds an add waits in the market for an item, as with
        # marketplace-consumer's default --add-wait.
        self.add_wait = add_wait
        self.market = core.Market(scenario.queue_size)
        self.products = {
            product_id: product_from_proto(message)
            for product_id, message in scenario.products.items()
        }
        # Set to stop producers (and, on a failure or timeout, consumers too).
        self.stop = threading.Event()
        self.interrupted = threading.Event()
        self.failures: list[str] = []
        # Diagnosis lines once no item has moved for the stall timeout.
        self.stall: list[str] = []
        self.items_bought = 0
        # Amount spent per consumer name, in billionths of a unit.
        self.spent: dict[str, int] = {}
        # Market calls per method name, summed over all threads.
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def run_producer(self, name: str, calls: collections.Counter[str]) -> None:
        """Register producer `name`, then publish its list over and over until stopped."""
        spec = self.scenario.producer(name)
        policy = RetryPolicy(refusal_wait=spec.republish_wait_time * self.time_scale)
        calls["register_producer"] += 1
        producer_id = self.market.register_producer(name)
        if not any(quantity for _, quantity, _ in spec.products):
            log.info("producer %s has nothing to publish; idling until stopped", name)
            self.stop.wait()
            return

        def publish_one(product: core.Product) -> int:
            calls["publish"] += 1
            return self.market.publish(producer_id, product, 1).published

        while not self.stop.is_set():
            for product_id, quantity, wait in spec.products:
                product = self.products[product_id]
                for _ in range(quantity):
                    move_all(
                        lambda remaining: publish_one(product),
                        1,
                        policy,
                        self.stop,
                        what=f"producer {name} publish {product_id}",
                    )
                    if self.stop.wait(wait * self.time_scale):
                        return

    def run_consumer(self, name: str, calls: collections.Counter[str]) -> None:
        """Fill, order and print every cart of consumer `name`.

        Like marketplace-consumer: an add waits up to `add_wait` seconds in
        the market for an item, and a cart over the consumer's budget loses
        its most expensive items until it fits.
        """
        spec = self.scenario.consumer(name)
        policy = RetryPolicy(refusal_wait=spec.retry_wait_time * self.time_scale)
        budget = None
        if spec.budget is not None:
            budget = core.Money(
                spec.budget.units, spec.budget.nanos, spec.budget.currency_code
            )
        for operations in spec.carts:
            calls["create_cart"] += 1
            cart_id, label = self.market.create_cart(name, budget)
            # Items in the cart per product id.
            contents: dict[str, int] = {}
            for operation in operations:
                if operation.quantity == 0:
                    continue
                product_id = operation.product_id
                if operation.kind == "add":
                    self._add(calls, policy, cart_id, label, operation)
                    contents[product_id] = contents.get(product_id, 0) + operation.quantity
                else:
                    removed = self._remove(
                        calls, name, cart_id, label, product_id, operation.quantity
                    )
                    contents[product_id] = contents.get(product_id, 0) - removed

            order = self._place_order(calls, name, cart_id, label, spec, contents)
            lines = []
            for product, count in order.lines:
                text = f"{name} bought {render_product(product_to_proto(product))}"
                lines.extend([text] * count)
            self._write(name, lines, order.total)
            log.info("cart %s ordered: %d items", label, len(lines))

    def _add(self, calls, policy, cart_id, label, operation) -> None:
        def attempt(remaining: int) -> int:
            calls["add_to_cart"] += 1
            return self.market.add_to_cart(
                cart_id,
                operation.product_id,
                remaining,
                wait=self.add_wait,
                is_active=lambda: not self.stop.is_set(),
            )

        what = f"cart {label} add {operation.product_id}"
        add_all(attempt, operation.quantity, policy, self.stop, what=what)

    def _remove(self, calls, name, cart_id, label, product_id, quantity) -> int:
        """Remove items and return how many were removed."""
        calls["remove_from_cart"] += 1
        result = self.market.remove_from_cart(cart_id, product_id, quantity)
        if result.missing:
            # Waiting cannot put an item into the cart, so this is not retried.
            log.warning(
                "consumer %s, cart %s: could not remove %d of %d %s, "
                "the cart did not hold them",
                name,
                label,
                result.missing,
                quantity,
                product_id,
            )
        return result.removed

    def _place_order(self, calls, name, cart_id, label, spec, contents) -> core.Order:
        calls["place_order"] += 1
        try:
            return self.market.place_order(cart_id)
        except core.OverBudget as error:
            log.warning("consumer %s: %s", name, error)
        drops = items_over_budget(spec.budget, self.scenario.products, contents)
        for product_id, count in drops:
            removed = self._remove(calls, name, cart_id, label, product_id, count)
            log.warning(
                "consumer %s, cart %s: dropped %d %s to stay within the budget",
                name,
                label,
                removed,
                product_id,
            )
        calls["place_order"] += 1
        return self.market.place_order(cart_id)

    def _write(self, consumer: str, lines: list[str], total: core.Money) -> None:
        with self._lock:
            for line in lines:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
            self.items_bought += len(lines)
            self.spent[consumer] = (
                self.spent.get(consumer, 0) + total.units * 1_000_000_000 + total.nanos
            )

    def watch_for_stall(self, stall_timeout: float, done: threading.Event) -> None:
        """Poll the market until `done`; on a stall, fill self.stall and return.

        Uses the diagnosis of the distributed runner, on market states that
        the servicer builds in this process.
        """
        stub = _StateStub(self.market)
        watch = StallWatch(stall_timeout)
        while not done.wait(min(0.5, stall_timeout / 4)):
            try:
                first, shelves, carts = fetch_state(stub)
            except Exception as error:  # the run goes on without the watch
                print(f"simulate: cannot watch for stalls: {error}", file=sys.stderr)
                return
            idle = watch.stalled(first.moves)
            if idle is not None and not done.is_set():
                self.stall = describe_stall(shelves, carts, idle)
                return

    def _thread(self, role: str, name: str) -> threading.Thread:
        target = self.run_producer if role == "producer" else self.run_consumer

        def guarded() -> None:
            calls: collections.Counter[str] = collections.Counter()
            try:
                target(name, calls)
            except Stopped:
                pass
            except Exception as error:
                log.exception("%s %s failed", role, name)
                with self._lock:
                    self.failures.append(f"{role} {name} failed: {error}")
                if role == "producer":
                    # Consumers may wait for this producer's items for ever.
                    self.stop.set()
            finally:
                with self._lock:
                    self.calls.update(calls)

        return threading.Thread(target=guarded, name=name, daemon=True)

    def run(self, timeout: float, stall_timeout: float = 0.0) -> None:
        """Run the scenario until every consumer finishes, a failure, `timeout` or a signal.

        `timeout` is in seconds; 0 waits for ever. After `stall_timeout`
        seconds with no item moving, the run stops with a diagnosis in
        self.stall; 0 never stops.
        """
        done = threading.Event()
        if stall_timeout > 0:
            threading.Thread(
                target=self.watch_for_stall,
                args=(stall_timeout, done),
                name="stall-watch",
                daemon=True,
            ).start()
        producers = [
            self._thread("producer", spec.name) for spec in self.scenario.producers
        ]
        consumers = [
            self._thread("consumer", spec.name) for spec in self.scenario.consumers
        ]
        for thread in producers + consumers:
            thread.start()

        deadline = time.monotonic() + timeout if timeout > 0 else None
        for thread in consumers:
            # Join in steps so that the main thread still runs signal handlers.
            while thread.is_alive() and not self.stop.is_set():
                if self.stall:
                    with self._lock:
                        self.failures.append("the market stalled")
                    self.stop.set()
                    break
                if deadline is not None and time.monotonic() > deadline:
                    pending = [t.name for t in consumers if t.is_alive()]
                    with self._lock:
                        self.failures.append(
                            f"timed out after {timeout:g} s waiting for "
                            f"consumers {', '.join(pending)}"
                        )
                    self.stop.set()
                    break
                if self.interrupted.is_set():
                    with self._lock:
                        self.failures.append("interrupted")
                    self.stop.set()
                    break
                thread.join(POLL_INTERVAL)

        done.set()
        self.stop.set()
        stop_deadline = time.monotonic() + PRODUCER_STOP_TIMEOUT
        for thread in producers + consumers:
            thread.join(max(0.0, stop_deadline - time.monotonic()))
        stuck = [thread.name for thread in producers + consumers if thread.is_alive()]
        if stuck:
            with self._lock:
                self.failures.append(
                    f"threads {', '.join(stuck)} did not stop within "
                    f"{PRODUCER_STOP_TIMEOUT:g} s"
                )


def main(args: argparse.Namespace, scenario: Scenario) -> int:
    """Run `scenario` in this process for `marketplace-simulate --local`.

    `args` are the parsed arguments of marketplace-simulate. Returns the exit
    status as marketplace-simulate does: 0, 1 for a failure or timeout, 4
    for a stall, 130 when interrupted.
    """
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s marketplace-simulate: %(message)s",
    )
    run = LocalRun(scenario, args.time_scale)

    def request_stop(signum, frame):
        run.interrupted.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    started = time.monotonic()
    run.run(args.timeout, args.stall_timeout)
    elapsed = time.monotonic() - started

    print(
        f"simulate: {len(scenario.consumers)} consumers, {run.items_bought} items "
        f"bought, {elapsed:.2f} s elapsed",
        file=sys.stderr,
    )
    for line in budget_summary(scenario, run.spent):
        print(line, file=sys.stderr)
    for failure in run.failures:
        print(f"simulate: failed: {failure}", file=sys.stderr)
    for line in run.stall:
        print(f"simulate: stalled: {line}", file=sys.stderr)
    log.info(
        "local calls: %d in all, %s",
        sum(run.calls.values()),
        ", ".join(f"{name}={count}" for name, count in sorted(run.calls.items())),
    )
    if run.stall:
        return EXIT_STALLED
    if run.interrupted.is_set():
        return EXIT_INTERRUPTED
    return common.EXIT_FAILED if run.failures else 0


class _StateStub:
    """Serves GetMarketState from an in-process market, as diagnosis.fetch_state calls it."""

    def __init__(self, market: core.Market) -> None:
        self._servicer = MarketServicer(market)

    def GetMarketState(
        self, request: pb.GetMarketStateRequest, timeout: float | None = None
    ) -> pb.GetMarketStateResponse:
        return self._servicer.GetMarketState(request, None)
