"""Conservation of items under concurrent load, in one process and over gRPC.

For every product, items ever published must equal the items on shelves, in
open carts, ordered and withdrawn, in every snapshot taken while the load runs
and after it. Every load is bounded both in calls and in seconds.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from conftest import ROOT
from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_server import core
from marketplace_server.core import Money, Product

# Threads against one core.Market.
THREADS = 4
THREAD_OPERATIONS = 40_000
THREAD_SECONDS = 10.0
THREAD_CAPACITY = 4
THREAD_PRODUCERS = 3
# Short enough that carts expire while the threads still use them.
THREAD_LEASE_SECONDS = 0.01
# Python switches threads every 5 ms by default, so a shorter interval makes
# the threads interleave inside each other's calls far more often.
SWITCH_INTERVAL = 1e-5
THREAD_PRODUCTS = {
    product_id: Product(product_id, "Tea", product_id.title(), Money(units))
    for product_id, units in (("linden", 9), ("sencha", 12), ("oolong", 7))
}

# Worker processes against a marketplace-server.
WORKER = ROOT / "tests" / "stress_worker.py"
PRODUCER_PROCESSES = 3
CONSUMER_PROCESSES = 3
PROCESS_OPERATIONS = 800
PROCESS_SECONDS = 8.0
# Time a worker process gets beyond PROCESS_SECONDS to start and to report.
PROCESS_GRACE = 60.0
SERVER_CAPACITY = 4
# Empty carts opened before the workers start. They make each state take
# longer to read, and they come before the workers' carts, so a state that
# was not read at one instant would likely count an item that moved from a
# shelf to a cart twice or not at all.
IDLE_CARTS = 1000
# Large enough for the whole market, so that each state is one page and so
# one instant.
PAGE_SIZE = 10_000


def state_violations(state: core.MarketState) -> list[str]:
    """Return the ways in which one snapshot breaks conservation."""
    problems = []
    for shelf in state.shelves:
        if shelf.size != sum(shelf.items.values()):
            problems.append(
                f"shelf {shelf.producer}: size {shelf.size}, items {shelf.items}"
            )
    on_shelves = sum(shelf.size for shelf in state.shelves)
    in_carts = sum(sum(cart.items.values()) for cart in state.carts)
    accounted = on_shelves + in_carts + state.items_ordered + state.items_withdrawn
    if accounted != state.items_published:
        problems.append(
            f"published {state.items_published}, but shelves {on_shelves} + "
            f"carts {in_carts} + ordered {state.items_ordered} + withdrawn "
            f"{state.items_withdrawn} = {accounted}"
        )
    return problems


def publish_violations(
    capacity: int, quantity: int, published: int, size: int
) -> list[str]:
    """Return how one publish result breaks the shelf capacity rule."""
    problems = []
    if published > 0 and size > capacity:
        problems.append(
            f"published {published}, leaving {size} on a shelf of {capacity}"
        )
    if published < quantity and size < capacity:
        problems.append(
            f"published {published} of {quantity} with only {size} on a shelf "
            f"of {capacity}"
        )
    return problems


# Threads on one core.Market


@dataclass
class ThreadReport:
    published: Counter = field(default_factory=Counter)
    ordered: Counter = field(default_factory=Counter)
    orders: int = 0
    carts_expired: int = 0
    problems: list[str] = field(default_factory=list)


def run_market_thread(
    market: core.Market, producers: list[str], seed: int, stop_at: float
) -> ThreadReport:
    """Make random calls on `market` and return what they moved and any problems."""
    rng = random.Random(seed)
    report = ThreadReport()
    # Net items per open cart: added minus removed, per product.
    carts: dict[str, Counter] = {}

    def place_order(cart_id: str) -> None:
        net = carts.pop(cart_id)
        try:
            order = market.place_order(cart_id)
        except core.CartExpired:
            report.carts_expired += 1
            return
        got = Counter({product.product_id: n for product, n in order.lines})
        if got != +net:
            report.problems.append(
                f"cart {order.cart_label}: net {+net}, ordered {got}"
            )
        report.ordered.update(got)
        report.orders += 1

    for _ in range(THREAD_OPERATIONS):
        if time.monotonic() >= stop_at:
            break
        product_id = rng.choice(sorted(THREAD_PRODUCTS))
        quantity = rng.randint(1, 3)
        choice = rng.random()
        if choice < 0.3:
            result = market.publish(
                rng.choice(producers), THREAD_PRODUCTS[product_id], quantity
            )
            report.published[product_id] += result.published
            report.problems += publish_violations(
                THREAD_CAPACITY, quantity, result.published, result.shelf_size
            )
        elif not carts or choice < 0.35:
            cart_id, _ = market.create_cart(f"thread-{seed}")
            carts[cart_id] = Counter()
        elif choice < 0.9:
            cart_id = rng.choice(sorted(carts))
            try:
                if choice < 0.65:
                    carts[cart_id][product_id] += market.add_to_cart(
                        cart_id, product_id, quantity
                    )
                else:
                    result = market.remove_from_cart(cart_id, product_id, quantity)
                    carts[cart_id][product_id] -= result.removed
            except core.CartExpired:
                del carts[cart_id]
                report.carts_expired += 1
        else:
            place_order(rng.choice(sorted(carts)))
    for cart_id in sorted(carts):
        place_order(cart_id)
    return report


def watch_market(market: core.Market, done: threading.Event) -> tuple[int, list[str]]:
    """Check snapshots until `done` is set, and return their number and problems."""
    count = 0
    problems = []
    previous = None
    while True:
        finished = done.is_set()
        state = market.snapshot()
        count += 1
        problems += state_violations(state)
        if previous is not None and state.items_published < previous.items_published:
            problems.append("items_published went down")
        if previous is not None and state.orders < previous.orders:
            problems.append("orders went down")
        previous = state
        if finished:
            return count, problems
        time.sleep(0.001)


def test_threads_conserve_items():
    market = core.Market(THREAD_CAPACITY, lease_seconds=THREAD_LEASE_SECONDS)
    producers = [market.register_producer(f"p{i}") for i in range(THREAD_PRODUCERS)]
    done = threading.Event()
    stop_at = time.monotonic() + THREAD_SECONDS

    def reap() -> None:
        while not done.is_set():
            market.expire_carts()
            time.sleep(0.005)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        with ThreadPoolExecutor(THREADS + 2) as pool:
            watcher = pool.submit(watch_market, market, done)
            reaper = pool.submit(reap)
            workers = [
                pool.submit(run_market_thread, market, producers, seed, stop_at)
                for seed in range(THREADS)
            ]
            try:
                reports = [worker.result() for worker in workers]
            finally:
                done.set()
            snapshots, watch_problems = watcher.result()
            reaper.result()
    finally:
        sys.setswitchinterval(old_interval)

    state = market.snapshot()
    published = sum((r.published for r in reports), Counter())
    ordered = sum((r.ordered for r in reports), Counter())
    assert watch_problems == []
    assert snapshots > 1
    assert [p for r in reports for p in r.problems] == []
    assert state_violations(state) == []
    assert state.carts == []
    assert state.items_published == sum(published.values())
    assert state.items_ordered == sum(ordered.values())
    assert state.orders == sum(r.orders for r in reports)
    assert state.carts_expired == sum(r.carts_expired for r in reports)
    on_shelves = Counter()
    for shelf in state.shelves:
        on_shelves.update(shelf.items)
    for product_id in THREAD_PRODUCTS:
        accounted = on_shelves[product_id] + ordered[product_id]
        assert accounted == published[product_id], product_id


# Worker processes over gRPC


def state_from_proto(response: pb.GetMarketStateResponse) -> core.MarketState:
    def counts(items) -> dict[str, int]:
        return {item.product_id: item.quantity for item in items}

    return core.MarketState(
        shelves=[
            core.ShelfState(s.producer, s.capacity, s.size, counts(s.items))
            for s in response.shelves
        ],
        carts=[
            core.CartState(c.cart_label, c.consumer, counts(c.items))
            for c in response.carts
        ],
        orders=response.orders,
        items_ordered=response.items_ordered,
        items_published=response.items_published,
        carts_expired=response.carts_expired,
        items_withdrawn=response.items_withdrawn,
    )


def read_state(stub) -> core.MarketState:
    response = stub.GetMarketState(
        pb.GetMarketStateRequest(page_size=PAGE_SIZE), timeout=10, wait_for_ready=True
    )
    # The market must fit in one page, which is read at one instant. Later
    # pages would come from other instants and could not be added up.
    assert response.next_page_token == ""
    return state_from_proto(response)


def start_worker(address: str, role: str, index: int, tmp_path) -> subprocess.Popen:
    name = f"{role}-{index}"
    with (
        open(tmp_path / f"{name}.out", "w") as out,
        open(tmp_path / f"{name}.err", "w") as err,
    ):
        return subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--server",
                address,
                "--role",
                role,
                "--name",
                name,
                "--seed",
                str(index),
                "--operations",
                str(PROCESS_OPERATIONS),
                "--seconds",
                str(PROCESS_SECONDS),
            ],
            stdout=out,
            stderr=err,
        )


def test_processes_conserve_items(start_server, tmp_path):
    server = start_server("--lease", "5", "--queue-size", str(SERVER_CAPACITY))
    roles = ["producer"] * PRODUCER_PROCESSES + ["consumer"] * CONSUMER_PROCESSES
    processes: dict[str, subprocess.Popen] = {}
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.MarketServiceStub(channel)
            for _ in range(IDLE_CARTS):
                request = pb.CreateCartRequest(consumer="idle")
                stub.CreateCart(request, timeout=10, wait_for_ready=True)
            for index, role in enumerate(roles):
                processes[f"{role}-{index}"] = start_worker(
                    server.address, role, index, tmp_path
                )

            # Watch the market while the workers run, and once after.
            deadline = time.monotonic() + PROCESS_SECONDS + PROCESS_GRACE
            snapshots_while_busy = 0
            watch_problems = []
            previous = None
            while True:
                running = any(p.poll() is None for p in processes.values())
                state = read_state(stub)
                watch_problems += state_violations(state)
                if (
                    previous is not None
                    and state.items_published < previous.items_published
                ):
                    watch_problems.append("items_published went down")
                previous = state
                if running and state.items_published > 0:
                    snapshots_while_busy += 1
                if not running or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            final = read_state(stub)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)

    reports = {}
    for name, process in processes.items():
        stderr = (tmp_path / f"{name}.err").read_text()
        assert process.returncode == 0, f"{name}: {stderr}"
        reports[name] = json.loads((tmp_path / f"{name}.out").read_text())
    status = server.stop()

    producers = [r for r in reports.values() if r["role"] == "producer"]
    carts = [c for r in reports.values() if r["role"] == "consumer" for c in r["carts"]]
    publishes = [(r["capacity"], p) for r in producers for p in r["publishes"]]
    published = Counter()
    for _, publish in publishes:
        published[publish["product_id"]] += publish["published"]
    ordered = Counter()
    for cart in carts:
        ordered.update(cart["ordered"])

    assert watch_problems == []
    assert snapshots_while_busy > 0
    assert state_violations(final) == []
    assert [r["errors"] for r in reports.values() if r["errors"]] == []

    # A publish succeeds only below capacity and fills the shelf at most to it.
    capacity_problems = [
        problem
        for capacity, p in publishes
        for problem in publish_violations(
            capacity, p["quantity"], p["published"], p["shelf_size"]
        )
    ]
    assert capacity_problems == []

    # Each ordered cart contains what its consumer added minus what it removed.
    mismatches = [
        cart["label"]
        for cart in carts
        if cart["status"] == "ordered"
        and Counter(cart["ordered"])
        != +(Counter(cart["added"]) - Counter(cart["removed"]))
    ]
    assert mismatches == []
    assert {cart["status"] for cart in carts} <= {"ordered", "expired"}

    # Only idle carts are left open, and the lease may have expired some.
    assert [c for c in final.carts if c.consumer != "idle" or c.items] == []
    idle_expired = IDLE_CARTS - len(final.carts)
    assert final.items_published == sum(published.values())
    assert final.items_ordered == sum(ordered.values())
    assert final.orders == sum(cart["status"] == "ordered" for cart in carts)
    expired = sum(cart["status"] == "expired" for cart in carts)
    assert final.carts_expired == expired + idle_expired
    on_shelves = Counter()
    for shelf in final.shelves:
        on_shelves.update(shelf.items)
    for product_id in published:
        accounted = on_shelves[product_id] + ordered[product_id]
        assert accounted == published[product_id], product_id

    # Shelves exceed capacity only by items that came back from carts.
    excess = sum(max(0, shelf.size - shelf.capacity) for shelf in final.shelves)
    came_back = sum(sum(cart["removed"].values()) for cart in carts)
    came_back += sum(
        sum((Counter(cart["added"]) - Counter(cart["removed"])).values())
        for cart in carts
        if cart["status"] == "expired"
    )
    assert excess <= came_back

    assert status == 0, server.log_text()
    assert "Traceback" not in server.log_text()
