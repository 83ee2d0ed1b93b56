"""The market kept in SQLite with --data-dir: restarts, crashes, damage, compaction.

The first tests drive `persistence.Journal` in this process and compare the
market before and after a reload. The others run marketplace-server
processes on loopback ports, kill them with SIGKILL and start them again on
the same folder. Run as a script, this file is the worker process of the
crash test (see `run_worker`).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import grpc
import pytest

from conftest import BIN
from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_server import core, persistence
from marketplace_server.requests import RequestLog
from marketplace_server.servicer import MarketServicer

CALL_TIMEOUT = 10.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
DIVERGED = "gave another outcome"

PRODUCTS = [
    pb.Product(
        product_id=f"tea-{number}",
        kind="Tea",
        name=f"Blend {number}",
        price=pb.Money(units=2 + number, nanos=250_000_000 * number),
        attributes=[
            pb.Attribute(key="origin", string_value="Assam"),
            pb.Attribute(key="grams", int_value=100 * number),
            pb.Attribute(key="acidity", float_value=4.5 + number),
            pb.Attribute(key="organic", bool_value=number % 2 == 0),
        ],
    )
    for number in range(3)
]


# In-process journal.


class Client:
    """Calls a servicer through a RequestLog and a Journal, as the gRPC handler does."""

    def __init__(self, folder, settings, **options) -> None:
        self.journal = persistence.Journal.open(str(folder), **options)
        self.request_log = RequestLog()
        self.market = self.journal.restore(settings, self.request_log, MarketServicer)
        self.servicer = MarketServicer(self.market)

    def call(self, name: str, request, context=None):
        raw = request.SerializeToString()
        method = getattr(self.servicer, name)

        def apply():
            return self.journal.call(
                name, request, raw, context, method, self.servicer._waiter_slot
            )

        return self.request_log.run(name, request.request_id, raw, apply)

    def try_call(self, name: str, request, context=None):
        """Return the response, or the MarketError that the call raised."""
        try:
            return self.call(name, request, context)
        except core.MarketError as error:
            return error

    def recorded(self, name: str, request):
        """Return the RequestLog's recorded outcome, failing if it would apply."""

        def unexpected():
            raise AssertionError(f"{name} {request.request_id} was not recorded")

        raw = request.SerializeToString()
        try:
            return self.request_log.run(name, request.request_id, raw, unexpected)
        except core.MarketError as error:
            return error


def crash_copy(source, target) -> None:
    """Copy the database files as a crash would leave them: no final snapshot."""
    target.mkdir()
    for name in os.listdir(source):
        if name.startswith(persistence.DATABASE_NAME):
            shutil.copyfile(source / name, target / name)


def exported(market: core.Market):
    """Return the market's state as JSON data, tuples and lists alike."""
    return json.loads(json.dumps(market.export_state()))


def same_outcome(left, right) -> bool:
    if isinstance(left, core.MarketError):
        return type(left) is type(right) and str(left) == str(right)
    return left == right


def random_session(client: Client, rng: random.Random, steps: int) -> list:
    """Run random calls of every mutating kind; return (name, request) pairs sent."""
    sent = []

    def call(name, request):
        sent.append((name, request))
        return client.try_call(name, request)

    def new_id() -> str:
        return f"req-{len(sent)}"

    producers = []
    for name in ("north", "south", "east"):
        response = call(
            "RegisterProducer",
            pb.RegisterProducerRequest(request_id=new_id(), name=name),
        )
        producers.append(response.producer_id)
    carts = []
    for step in range(steps):
        choice = rng.random()
        product = rng.choice(PRODUCTS)
        if choice < 0.3:
            call(
                "Publish",
                pb.PublishRequest(
                    request_id=new_id(),
                    producer_id=rng.choice(producers),
                    product=product,
                    quantity=rng.randint(1, 4),
                ),
            )
        elif choice < 0.4 or not carts:
            request = pb.CreateCartRequest(request_id=new_id(), consumer="alice")
            if rng.random() < 0.3:
                request.budget.units = rng.randint(5, 30)
            response = call("CreateCart", request)
            carts.append(response.cart_id)
        elif choice < 0.6:
            request = pb.AddToCartRequest(
                request_id=new_id(),
                cart_id=rng.choice(carts),
                product_id=product.product_id,
                quantity=rng.randint(1, 3),
            )
            if rng.random() < 0.1:
                request.wait_ms = 20
            call("AddToCart", request)
        elif choice < 0.7:
            call(
                "RemoveFromCart",
                pb.RemoveFromCartRequest(
                    request_id=new_id(),
                    cart_id=rng.choice(carts),
                    product_id=product.product_id,
                    quantity=rng.randint(1, 2),
                ),
            )
        elif choice < 0.8:
            call(
                "PlaceOrder",
                pb.PlaceOrderRequest(request_id=new_id(), cart_id=rng.choice(carts)),
            )
        elif choice < 0.87:
            call(
                "Withdraw",
                pb.WithdrawRequest(
                    request_id=new_id(),
                    producer_id=rng.choice(producers),
                    product_id=product.product_id,
                    quantity=1,
                ),
            )
        elif choice < 0.93:
            # Rejected calls: an unknown cart and a zero quantity.
            call(
                "AddToCart",
                pb.AddToCartRequest(
                    request_id=new_id(), cart_id="0" * 32, product_id="x", quantity=1
                ),
            )
            call(
                "Publish",
                pb.PublishRequest(
                    request_id=new_id(),
                    producer_id=producers[0],
                    product=product,
                    quantity=0,
                ),
            )
        elif step % 3 == 0:
            # Let some leases (0.3 s) run out, and the reaper expire them.
            time.sleep(0.35)
            client.journal.expire_carts()
        else:
            call("CreateCart", pb.CreateCartRequest(consumer="bob"))
    # A last call waited for, so that every record before it is committed.
    call("RegisterProducer", pb.RegisterProducerRequest(name="west"))
    return sent


@pytest.mark.parametrize("snapshot_every", [100_000, 7])
def test_reload_rebuilds_same_market(tmp_path, caplog, snapshot_every):
    settings = persistence.Settings(5, 0.3, core.Limits())
    live = Client(tmp_path / "live", settings, snapshot_every=snapshot_every)
    sent = random_session(live, random.Random(5), 400)
    before = exported(live.market)

    crash_copy(tmp_path / "live", tmp_path / "copy")
    live.journal.close()
    reloaded = Client(tmp_path / "copy", settings, snapshot_every=snapshot_every)
    try:
        after = exported(reloaded.market)
        for name, request in sent:
            if request.request_id:
                assert same_outcome(
                    reloaded.recorded(name, request), live.recorded(name, request)
                ), f"{name} {request.request_id}"
    finally:
        reloaded.journal.close()

    assert after == before
    assert before["counters"]["carts_expired"] > 0
    assert before["counters"]["orders"] > 0
    assert DIVERGED not in caplog.text


def test_waiting_add_replays_as_filled(tmp_path, caplog):
    settings = persistence.Settings(5, 60.0, core.Limits())
    live = Client(tmp_path / "live", settings)
    producer = live.call("RegisterProducer", pb.RegisterProducerRequest(name="north"))
    cart = live.call("CreateCart", pb.CreateCartRequest(consumer="alice"))
    wait_request = pb.AddToCartRequest(
        request_id="wait-1",
        cart_id=cart.cart_id,
        product_id=PRODUCTS[0].product_id,
        quantity=2,
        wait_ms=5000,
    )
    outcome = []
    waiter = threading.Thread(
        target=lambda: outcome.append(live.call("AddToCart", wait_request)),
        daemon=True,
    )
    waiter.start()
    time.sleep(0.2)
    live.call(
        "Publish",
        pb.PublishRequest(
            producer_id=producer.producer_id, product=PRODUCTS[0], quantity=3
        ),
    )
    waiter.join(timeout=CALL_TIMEOUT)
    before = exported(live.market)

    crash_copy(tmp_path / "live", tmp_path / "copy")
    live.journal.close()
    reloaded = Client(tmp_path / "copy", settings)
    try:
        assert outcome == [pb.AddToCartResponse(added=2)]
        assert exported(reloaded.market) == before
        assert reloaded.recorded("AddToCart", wait_request) == outcome[0]
    finally:
        reloaded.journal.close()
    assert DIVERGED not in caplog.text


def test_waiting_add_ends_on_stop(tmp_path):
    settings = persistence.Settings(5, 600.0, core.Limits())
    live = Client(tmp_path / "live", settings, max_wait=300.0)
    cart = live.call("CreateCart", pb.CreateCartRequest(consumer="alice"))
    wait_request = pb.AddToCartRequest(
        cart_id=cart.cart_id, product_id="tea-0", quantity=1, wait_ms=300_000
    )
    outcome = []
    waiter = threading.Thread(
        target=lambda: outcome.append(live.call("AddToCart", wait_request)),
        daemon=True,
    )
    waiter.start()
    time.sleep(0.2)
    live.journal.stop_waiting()
    waiter.join(timeout=CALL_TIMEOUT)
    still_waiting = waiter.is_alive()
    live.journal.close()
    assert not still_waiting
    assert outcome == [pb.AddToCartResponse(added=0)]


def test_new_capacity_applies_after_reload(tmp_path, caplog):
    small = persistence.Settings(3, 60.0, core.Limits())
    large = persistence.Settings(5, 60.0, core.Limits())
    first = Client(tmp_path / "first", small)
    producer = first.call("RegisterProducer", pb.RegisterProducerRequest(name="north"))
    publish = pb.PublishRequest(
        producer_id=producer.producer_id, product=PRODUCTS[0], quantity=4
    )
    first_publish = first.call("Publish", publish)
    first.journal.close()

    second = Client(tmp_path / "first", large)
    second_publish = second.call("Publish", publish)
    before = exported(second.market)
    crash_copy(tmp_path / "first", tmp_path / "copy")
    second.journal.close()
    third = Client(tmp_path / "copy", large)
    after = exported(third.market)
    capacity = third.market.capacity
    third.journal.close()

    assert first_publish == pb.PublishResponse(published=3, shelf_size=3)
    assert second_publish == pb.PublishResponse(published=2, shelf_size=5)
    assert after == before
    assert capacity == 5
    assert DIVERGED not in caplog.text


class CertificateContext:
    """A gRPC context whose caller presented a client certificate."""

    def __init__(self, name: str) -> None:
        self.properties = {
            "transport_security_type": [b"ssl"],
            "x509_pem_cert": [f"PEM of {name}".encode()],
            "x509_common_name": [name.encode()],
            "peer_dns": [f"{name}.example".encode()],
        }

    def auth_context(self):
        return self.properties

    def is_active(self) -> bool:
        return True


def test_reload_keeps_certificate_owners(tmp_path, caplog):
    settings = persistence.Settings(5, 60.0, core.Limits())
    live = Client(tmp_path / "live", settings)
    north, alice = CertificateContext("north"), CertificateContext("alice")
    mallory = CertificateContext("mallory")
    producer = live.call(
        "RegisterProducer", pb.RegisterProducerRequest(name="north"), north
    )
    live.call(
        "Publish",
        pb.PublishRequest(
            producer_id=producer.producer_id, product=PRODUCTS[0], quantity=2
        ),
        north,
    )
    cart = live.call("CreateCart", pb.CreateCartRequest(consumer="alice"), alice)
    add = pb.AddToCartRequest(
        cart_id=cart.cart_id, product_id=PRODUCTS[0].product_id, quantity=1
    )
    live.call("AddToCart", add, alice)
    stranger_add = live.try_call("AddToCart", add, mallory)
    before = exported(live.market)

    crash_copy(tmp_path / "live", tmp_path / "copy")
    live.journal.close()
    reloaded = Client(tmp_path / "copy", settings)
    try:
        after = exported(reloaded.market)
        stranger_again = reloaded.try_call("AddToCart", add, mallory)
        owner_again = reloaded.call("AddToCart", add, alice)
    finally:
        reloaded.journal.close()
    assert isinstance(stranger_add, core.NotFound)
    assert after == before
    assert isinstance(stranger_again, core.NotFound)
    assert owner_again == pb.AddToCartResponse(added=1)
    assert DIVERGED not in caplog.text


def test_export_refuses_unknown_state():
    market = core.Market(3)
    market._new_counter = 0
    with pytest.raises(RuntimeError, match="_new_counter"):
        market.export_state()


# Server processes.


_server_numbers = itertools.count()


class Server:
    """A marketplace-server process on a loopback port; see `start`."""

    def __init__(self, process: subprocess.Popen, port: int, log_path) -> None:
        self.process = process
        self.address = f"127.0.0.1:{port}"
        self.port = port
        self.log_path = log_path

    @classmethod
    def start(cls, tmp_path, *flags: str, port: int = 0) -> Server:
        number = next(_server_numbers)
        port_file = tmp_path / f"server{number}.port"
        log_path = tmp_path / f"server{number}.log"
        command = [
            str(BIN / "marketplace-server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--port-file",
            str(port_file),
            *flags,
        ]
        with open(log_path, "w", encoding="utf-8") as log:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if process.poll() is not None:
                pytest.fail(
                    f"marketplace-server exited with {process.returncode}: "
                    + log_path.read_text(encoding="utf-8")
                )
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"marketplace-server wrote no port in {START_TIMEOUT} s")
            time.sleep(0.02)
        return cls(process, int(port_file.read_text()), log_path)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def servers():
    """Yield a list to put started Servers in; those still running are killed."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=STOP_TIMEOUT)


def channel_to(address: str) -> grpc.Channel:
    # Reconnect within 0.5 s of a restart; gRPC's default back-off starts at 1 s.
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ],
    )


def market_state(stub) -> pb.GetMarketStateResponse:
    return stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)


def shelf_items(state: pb.GetMarketStateResponse) -> dict[str, dict[str, int]]:
    return {
        shelf.producer: {item.product_id: item.quantity for item in shelf.items}
        for shelf in state.shelves
    }


def start_on(tmp_path, servers, data_dir, *flags: str, port: int = 0) -> Server:
    server = Server.start(tmp_path, "--data-dir", str(data_dir), *flags, port=port)
    servers.append(server)
    return server


def test_restart_keeps_market(tmp_path, servers):
    data_dir = tmp_path / "data"
    flags = ("--queue-size", "4", "--lease", "60")
    server = start_on(tmp_path, servers, data_dir, *flags)
    tea = PRODUCTS[0]
    honey = PRODUCTS[1]
    with channel_to(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        north = stub.RegisterProducer(
            pb.RegisterProducerRequest(request_id="reg-north", name="north"),
            timeout=CALL_TIMEOUT,
        )
        south = stub.RegisterProducer(
            pb.RegisterProducerRequest(request_id="reg-south", name="south"),
            timeout=CALL_TIMEOUT,
        )
        stub.Publish(
            pb.PublishRequest(producer_id=north.producer_id, product=tea, quantity=3),
            timeout=CALL_TIMEOUT,
        )
        cart_request = pb.CreateCartRequest(request_id="cart-alice", consumer="alice")
        cart = stub.CreateCart(cart_request, timeout=CALL_TIMEOUT)
        added = stub.AddToCart(
            pb.AddToCartRequest(
                cart_id=cart.cart_id, product_id=tea.product_id, quantity=2
            ),
            timeout=CALL_TIMEOUT,
        )
        # South's tea arrives after Alice took north's: a removal must still
        # return hers to north.
        stub.Publish(
            pb.PublishRequest(producer_id=south.producer_id, product=tea, quantity=3),
            timeout=CALL_TIMEOUT,
        )
        stub.Publish(
            pb.PublishRequest(producer_id=south.producer_id, product=honey, quantity=1),
            timeout=CALL_TIMEOUT,
        )
        bob = stub.CreateCart(
            pb.CreateCartRequest(consumer="bob"), timeout=CALL_TIMEOUT
        )
        stub.AddToCart(
            pb.AddToCartRequest(
                cart_id=bob.cart_id, product_id=honey.product_id, quantity=1
            ),
            timeout=CALL_TIMEOUT,
        )
        order_request = pb.PlaceOrderRequest(
            request_id="order-bob", cart_id=bob.cart_id
        )
        order = stub.PlaceOrder(order_request, timeout=CALL_TIMEOUT)
        before = market_state(stub)
    server.kill()

    server = start_on(tmp_path, servers, data_dir, *flags)
    with channel_to(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        after_crash = market_state(stub)
        order_again = stub.PlaceOrder(order_request, timeout=CALL_TIMEOUT)
        cart_again = stub.CreateCart(cart_request, timeout=CALL_TIMEOUT)
        removed = stub.RemoveFromCart(
            pb.RemoveFromCartRequest(
                cart_id=cart.cart_id, product_id=tea.product_id, quantity=2
            ),
            timeout=CALL_TIMEOUT,
        )
        after_remove = market_state(stub)
    assert server.stop() == 0

    server = start_on(tmp_path, servers, data_dir, *flags)
    with channel_to(server.address) as channel:
        after_clean_stop = market_state(pb_grpc.MarketServiceStub(channel))
    assert server.stop() == 0

    assert added.added == 2
    assert after_crash == before
    assert order_again == order
    assert len(order.lines) == 1
    assert cart_again == cart
    assert removed == pb.RemoveFromCartResponse(removed=2, missing=0)
    assert shelf_items(after_remove) == {
        "north": {tea.product_id: 3},
        "south": {tea.product_id: 3},
    }
    assert after_clean_stop == after_remove
    assert DIVERGED not in server.log_text()


def test_lease_runs_on_while_down(tmp_path, servers):
    data_dir = tmp_path / "data"
    flags = ("--queue-size", "3", "--lease", "2")
    server = start_on(tmp_path, servers, data_dir, *flags)
    tea = PRODUCTS[0]
    with channel_to(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        producer = stub.RegisterProducer(
            pb.RegisterProducerRequest(name="north"), timeout=CALL_TIMEOUT
        )
        stub.Publish(
            pb.PublishRequest(
                producer_id=producer.producer_id, product=tea, quantity=3
            ),
            timeout=CALL_TIMEOUT,
        )
        cart = stub.CreateCart(
            pb.CreateCartRequest(consumer="alice"), timeout=CALL_TIMEOUT
        )
        stub.AddToCart(
            pb.AddToCartRequest(
                cart_id=cart.cart_id, product_id=tea.product_id, quantity=2
            ),
            timeout=CALL_TIMEOUT,
        )
        last_call = time.time()
    server.kill()
    # Stay down past the cart's deadline, 2 s after its last call.
    time.sleep(max(0.0, last_call + 2.5 - time.time()))

    server = start_on(tmp_path, servers, data_dir, *flags)
    with channel_to(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.AddToCart(
                pb.AddToCartRequest(
                    cart_id=cart.cart_id, product_id=tea.product_id, quantity=1
                ),
                timeout=CALL_TIMEOUT,
            )
        state = market_state(stub)
    assert server.stop() == 0
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in raised.value.details()
    assert state.carts_expired == 1
    assert shelf_items(state) == {"north": {tea.product_id: 3}}


def test_memory_only_is_logged(tmp_path, servers):
    server = Server.start(tmp_path)
    servers.append(server)
    assert server.stop() == 0
    assert (
        "no --data-dir: state is kept in memory only and lost on stop"
        in server.log_text()
    )


def test_second_server_on_folder_rejected(tmp_path, servers):
    data_dir = tmp_path / "data"
    first = start_on(tmp_path, servers, data_dir)
    second = subprocess.run(
        [str(BIN / "marketplace-server"), "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert first.stop() == 0
    assert second.returncode == 1
    assert "in use by another marketplace-server" in second.stderr


def fill_folder(tmp_path, servers, data_dir) -> None:
    """Leave a database of several pages in `data_dir`, from a clean stop."""
    server = start_on(tmp_path, servers, data_dir, "--queue-size", "1000")
    with channel_to(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        for number in range(80):
            producer = stub.RegisterProducer(
                pb.RegisterProducerRequest(
                    request_id=f"reg-{number}", name=f"farm-{number}"
                ),
                timeout=CALL_TIMEOUT,
            )
            product = pb.Product(
                product_id=f"jam-{number}",
                kind="Jam",
                name="Plum " * 40,
                price=pb.Money(units=number),
            )
            stub.Publish(
                pb.PublishRequest(
                    request_id=f"pub-{number}",
                    producer_id=producer.producer_id,
                    product=product,
                    quantity=5,
                ),
                timeout=CALL_TIMEOUT,
            )
    assert server.stop() == 0


def truncate_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def overwrite_middle_page(data: bytes) -> bytes:
    page = 4096
    start = (len(data) // page // 2) * page
    return data[:start] + b"\xa5" * page + data[start + page :]


@pytest.mark.parametrize("damage", [truncate_half, overwrite_middle_page])
def test_damaged_database_rejected(tmp_path, servers, damage):
    data_dir = tmp_path / "data"
    fill_folder(tmp_path, servers, data_dir)
    path = data_dir / persistence.DATABASE_NAME
    original = path.read_bytes()
    assert len(original) >= 8 * 4096
    damaged = damage(original)
    path.write_bytes(damaged)

    result = subprocess.run(
        [str(BIN / "marketplace-server"), "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert result.returncode == 1
    assert str(path) in result.stderr
    assert "is damaged" in result.stderr
    assert "restore it from a backup" in result.stderr
    assert path.read_bytes() == damaged


def test_compaction_bounds_file(tmp_path, servers):
    data_dir = tmp_path / "data"
    server = start_on(
        tmp_path,
        servers,
        data_dir,
        "--queue-size",
        "1000",
        "--snapshot-every",
        "200",
        "--request-ids",
        "50",
    )
    # Each order carries this product, about 6 kB, in its Publish request
    # and its PlaceOrder response.
    product = pb.Product(
        product_id="big", kind="Crate", name="Crate", price=pb.Money(units=1)
    )
    for number in range(20):
        product.attributes.add(key=f"label{number}", string_value="x" * 300)
    orders_per_thread, threads = 150, 8

    def buy(stub, producer_id: str, thread: int) -> None:
        for number in range(orders_per_thread):
            stub.Publish(
                pb.PublishRequest(
                    request_id=f"pub-{thread}-{number}",
                    producer_id=producer_id,
                    product=product,
                    quantity=1,
                ),
                timeout=CALL_TIMEOUT,
            )
            cart = stub.CreateCart(
                pb.CreateCartRequest(
                    request_id=f"cart-{thread}-{number}", consumer="c"
                ),
                timeout=CALL_TIMEOUT,
            )
            stub.AddToCart(
                pb.AddToCartRequest(
                    request_id=f"add-{thread}-{number}",
                    cart_id=cart.cart_id,
                    product_id="big",
                    quantity=1,
                ),
                timeout=CALL_TIMEOUT,
            )
            stub.PlaceOrder(
                pb.PlaceOrderRequest(
                    request_id=f"order-{thread}-{number}", cart_id=cart.cart_id
                ),
                timeout=CALL_TIMEOUT,
            )

    with channel_to(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        producer = stub.RegisterProducer(
            pb.RegisterProducerRequest(name="north"), timeout=CALL_TIMEOUT
        )
        workers = [
            threading.Thread(target=buy, args=(stub, producer.producer_id, thread))
            for thread in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        state = market_state(stub)
    assert server.stop() == 0

    orders = orders_per_thread * threads
    journaled_bytes = orders * 2 * product.ByteSize()
    path = data_dir / persistence.DATABASE_NAME
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as database:
        records = database.execute("SELECT count(*) FROM journal").fetchone()[0]
        snapshots = database.execute("SELECT count(*) FROM snapshot").fetchone()[0]
    database.close()
    assert state.orders == orders
    assert journaled_bytes > 7_000_000
    assert path.stat().st_size < 1_000_000
    assert records <= 50
    assert snapshots == 1


# Crash test: worker processes under SIGKILLs of the server.


RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def run_worker(address: str, seed: int, seconds: float, out_path: str) -> None:
    """Call the server at random for `seconds`, retrying with request ids.

    Writes what the server acknowledged to `out_path` as JSON: the items
    published, and each order's request id and item count.
    """
    rng = random.Random(seed)
    channel = channel_to(address)
    stub = pb_grpc.MarketServiceStub(channel)

    def call(name: str, request):
        request.request_id = uuid.uuid4().hex
        delay = 0.05
        give_up = time.monotonic() + 90
        while True:
            try:
                return getattr(stub, name)(request, timeout=3.0)
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() > give_up:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    acknowledged = {"published": 0, "orders": []}
    producer = call(
        "RegisterProducer", pb.RegisterProducerRequest(name=f"worker-{seed}")
    )
    cart_id = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        choice = rng.random()
        product = rng.choice(PRODUCTS)
        if choice < 0.35:
            response = call(
                "Publish",
                pb.PublishRequest(
                    producer_id=producer.producer_id,
                    product=product,
                    quantity=rng.randint(1, 3),
                ),
            )
            acknowledged["published"] += response.published
        elif cart_id is None:
            cart_id = call(
                "CreateCart", pb.CreateCartRequest(consumer=f"buyer-{seed}")
            ).cart_id
        elif choice < 0.65:
            call(
                "AddToCart",
                pb.AddToCartRequest(
                    cart_id=cart_id,
                    product_id=product.product_id,
                    quantity=rng.randint(1, 2),
                ),
            )
        elif choice < 0.8:
            call(
                "RemoveFromCart",
                pb.RemoveFromCartRequest(
                    cart_id=cart_id, product_id=product.product_id, quantity=1
                ),
            )
        else:
            request = pb.PlaceOrderRequest(cart_id=cart_id)
            response = call("PlaceOrder", request)
            items = sum(line.quantity for line in response.lines)
            acknowledged["orders"].append([request.request_id, items])
            cart_id = None
    channel.close()
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(acknowledged, out)


def free_port() -> int:
    """Return a loopback port that was free a moment ago, for restarts in place."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigkill_loses_no_acknowledged_call(tmp_path, servers):
    data_dir = tmp_path / "data"
    flags = ("--queue-size", "20", "--snapshot-every", "300")
    port = free_port()
    server = start_on(tmp_path, servers, data_dir, *flags, port=port)
    outputs = [tmp_path / f"worker{number}.json" for number in range(3)]
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, server.address, str(number), "14", str(out)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for number, out in enumerate(outputs)
    ]
    try:
        rng = random.Random(11)
        logs = []
        for _ in range(3):
            time.sleep(rng.uniform(1.5, 3.5))
            server.kill()
            logs.append(server.log_text())
            server = start_on(tmp_path, servers, data_dir, *flags, port=port)
        for worker in workers:
            _, errors = worker.communicate(timeout=120)
            assert worker.returncode == 0, errors
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    with channel_to(server.address) as channel:
        state = market_state(pb_grpc.MarketServiceStub(channel))
    assert server.stop() == 0
    logs.append(server.log_text())

    acknowledged = [json.loads(out.read_text()) for out in outputs]
    orders = [order for worker in acknowledged for order in worker["orders"]]
    on_shelves = sum(shelf.size for shelf in state.shelves)
    in_carts = sum(item.quantity for cart in state.carts for item in cart.items)
    assert state.items_published == (
        on_shelves + in_carts + state.items_ordered + state.items_withdrawn
    )
    assert state.items_published == sum(worker["published"] for worker in acknowledged)
    assert len({request_id for request_id, _ in orders}) == len(orders)
    assert state.orders == len(orders)
    assert state.items_ordered == sum(items for _, items in orders)
    assert len(orders) > 10
    for text in logs:
        assert DIVERGED not in text
    assert sum("replayed" in text for text in logs) >= 3


if __name__ == "__main__":
    run_worker(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
