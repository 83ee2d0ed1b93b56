"""The Node.js consumer in clients/node behaves like the Python one.

Its dependencies are installed with `npm ci` in a temporary copy of
clients/node. The Python consumer is the reference: most tests run both
programs, or the Python code, on the same input and compare what they print.
"""

from __future__ import annotations

import base64
import json
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from conftest import CLASSIC, DATA, ROOT
from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_clients import scenario as py_scenario

BIN = Path(sys.executable).parent
# The classic scenarios, and one with other kinds, every attribute type,
# quotes and non-ASCII text, and removes of items a cart does not hold.
SCENARIOS = sorted(CLASSIC.glob("*.json")) + [DATA / "extra" / "mixed.json"]
# Strips the time and the program name from a log line: "LEVEL message".
LOG_PREFIX = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR) [\w-]+: ")


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory) -> Path:
    """A copy of clients/node with its dependencies installed by `npm ci`.

    The copy keeps concurrent test runs from deleting each other's
    node_modules; proto/ beside it links to the repository's, where the
    consumer looks for the .proto.
    """
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the Node.js consumer")
    root = tmp_path_factory.mktemp("node-consumer")
    (root / "proto").symlink_to(ROOT / "proto")
    copy = root / "clients" / "node"
    shutil.copytree(
        ROOT / "clients" / "node", copy, ignore=shutil.ignore_patterns("node_modules")
    )
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=copy,
        capture_output=True,
        encoding="utf-8",
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return copy


@pytest.fixture(scope="module")
def node(node_dir) -> list[str]:
    """The command that runs the Node.js consumer."""
    return [shutil.which("node"), str(node_dir / "consumer.js")]


def run_node(node: list[str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*node, *args],
        capture_output=True,
        encoding="utf-8",
        timeout=timeout,
    )


def run_python(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "marketplace-consumer"), *args],
        capture_output=True,
        encoding="utf-8",
        timeout=timeout,
    )


def log_lines(stderr: str) -> list[str]:
    return [LOG_PREFIX.sub(r"\1 ", line) for line in stderr.splitlines()]


@pytest.fixture
def refused_address():
    """HOST:PORT of a loopback port that is bound but does not listen."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


# --- whole scenarios against the real server and producers -----------------


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda path: path.stem)
def test_scenario(path, node, tmp_path):
    data = json.loads(path.read_text(encoding="utf-8"))
    port_file = tmp_path / "port"
    server = subprocess.Popen(
        [
            str(BIN / "marketplace-server"),
            "--port", "0",
            "--port-file", str(port_file),
            "--queue-size", str(data["marketplace"]["queue_size_per_producer"]),
        ],
        stderr=subprocess.DEVNULL,
    )
    producers = None
    try:
        for _ in range(600):
            if port_file.exists() and port_file.read_text().strip():
                break
            assert server.poll() is None, "marketplace-server exited at start"
            time.sleep(0.05)
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        names = [arg for p in data["producers"] for arg in ("--name", p["name"])]
        producers = subprocess.Popen(
            [
                str(BIN / "marketplace-producer"),
                "--server", address,
                "--scenario", str(path),
                "--time-scale", "0.1",
                *names,
            ],
            stderr=subprocess.DEVNULL,
        )
        names = [arg for c in data["consumers"] for arg in ("--name", c["name"])]
        result = run_node(
            node, "--server", address, "--scenario", str(path), "--time-scale", "0.1", *names
        )
    finally:
        if producers is not None:
            stop_process(producers)
        stop_process(server)

    assert result.returncode == 0, result.stderr
    expected = path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    assert sorted(result.stdout.splitlines()) == sorted(expected)
    if path.stem == "mixed":
        warnings = sorted(re.sub(r"/cart-\d+", "/cart-N", line) for line in log_lines(result.stderr))
        assert warnings == [
            "WARNING consumer Zo\u00eb, cart Zo\u00eb/cart-N: could not remove 1 of 1 bread, "
            "the cart did not hold them",
            "WARNING consumer d'Artagnan, cart d'Artagnan/cart-N: could not remove 3 of 5 "
            "jam, the cart did not hold them",
        ]


# --- rendering of purchase lines ---------------------------------------------


def random_doubles(count: int) -> list[float]:
    """Finite doubles from random bit patterns, so every exponent shows up."""
    rng = random.Random(20240501)
    values = []
    while len(values) < count:
        (value,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if value == value and abs(value) != float("inf"):
            values.append(value)
    return values


TRICKY_STRINGS = [
    "plain",
    "it's",
    'say "hi"',
    "both ' and \"",
    "back\\slash",
    "tab\tnew\nline\rcr",
    "\x00\x07\x1b\x7f",
    "caf\u00e9 \u4e2d\u6587 \U0001f600",
    "\u00a0nbsp \u00ad soft hyphen",
    "\u200b\u200e\u2028\u2029\ufeff",
    "\u0301combining",
    "\ue000 private",
    "\x85\x9f",
    "",
]
TRICKY_FLOATS = [
    5.05, 1e-05, 1e16, 1e15, 0.1, 0.0001, 0.00011, -0.0, 0.0, 1.5e-07, 2.5, 100.0,
    1e22, 123456789.123, 5e-324, 1.7976931348623157e308, 0.30000000000000004,
    9007199254740993.0, -1.25e-300, 1234567890123456.7,
]
TRICKY_INTS = [0, -1, 5, 2**53 + 1, 2**63 - 1, -(2**63)]
PRICES = [(0, 0), (9, 0), (9, 500_000_000), (0, 1), (1, 10), (10**15, 999_999_999), (12, 120_000_000)]


def tricky_products() -> list[pb.Product]:
    products = []
    for index, (units, nanos) in enumerate(PRICES):
        products.append(
            pb.Product(
                product_id=f"price{index}", kind="Tea", name="Linden",
                price=pb.Money(units=units, nanos=nanos),
            )
        )
    for index, text in enumerate(TRICKY_STRINGS):
        products.append(
            pb.Product(
                product_id=f"text{index}", kind="Kind", name=text or "x",
                price=pb.Money(units=1),
                attributes=[pb.Attribute(key="note", string_value=text)],
            )
        )
    numbers = [pb.Attribute(key="i", int_value=value) for value in TRICKY_INTS]
    numbers += [pb.Attribute(key="b", bool_value=value) for value in (True, False)]
    products.append(
        pb.Product(product_id="numbers", kind="Mix", name="n", price=pb.Money(), attributes=numbers)
    )
    floats = TRICKY_FLOATS + random_doubles(3000)
    for start in range(0, len(floats), 50):
        products.append(
            pb.Product(
                product_id=f"floats{start}", kind="Float", name="f", price=pb.Money(units=2),
                attributes=[pb.Attribute(key="x", float_value=v) for v in floats[start:start + 50]],
            )
        )
    return products


# Decodes a PlaceOrderResponse as the consumer does and prints each line.
RENDER_SCRIPT = """
const { loadService } = require('./consumer.js');
const { renderProduct } = require('./lib/scenario.js');
const { definition } = loadService();
const decode = definition['marketplace.v1.MarketService'].PlaceOrder.responseDeserialize;
const order = decode(Buffer.from(require('fs').readFileSync(0, 'utf8'), 'base64'));
process.stdout.write(order.lines.map((line) => renderProduct(line.product) + '\\n').join(''));
"""


def test_render_matches_python(node, node_dir):
    products = tricky_products()
    order = pb.PlaceOrderResponse(
        lines=[pb.OrderLine(product=product, quantity=1) for product in products]
    )
    result = subprocess.run(
        [node[0], "-e", RENDER_SCRIPT],
        cwd=node_dir,
        input=base64.b64encode(order.SerializeToString()),
        capture_output=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr.decode()
    rendered = result.stdout.decode("utf-8").split("\n")[:-1]
    expected = [py_scenario.render_product(product) for product in products]
    assert len(rendered) == len(expected)
    for mine, reference in zip(rendered, expected):
        assert mine == reference


# --- scenario validation -----------------------------------------------------


def product(**extra) -> dict:
    return {"product_type": "Tea", "name": "Linden", "price": 9, **extra}


def scenario(products=None, producers=None, consumers=None, queue=15) -> dict:
    return {
        "products": {"id1": product()} if products is None else products,
        "producers": (
            [{"name": "prod1", "products": [["id1", 1, 0.1]], "republish_wait_time": 0.1}]
            if producers is None
            else producers
        ),
        "consumers": (
            [{"name": "cons1", "retry_wait_time": 0.1,
              "carts": [[{"type": "add", "product": "id1", "quantity": 1}]]}]
            if consumers is None
            else consumers
        ),
        "marketplace": {"queue_size_per_producer": queue},
    }


def consumer(op=None, **fields) -> list[dict]:
    spec = {"name": "cons1", "retry_wait_time": 0.1,
            "carts": [[op or {"type": "add", "product": "id1", "quantity": 1}]], **fields}
    return [spec]


def raw(text: str) -> bytes:
    return text.encode()


def doc(data) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


INVALID = {
    "empty": b"",
    "bom": b"\xef\xbb\xbf{}",
    "not-utf8": b'{"a": "\xff"}',
    "truncated-utf8": b'{"a": "\xe2\x82',
    "bad-continuation": b'{"a": "\xe0\x80"}',
    "trailing-comma": raw('{"products": {"id1": 1,}}'),
    "array-comma": raw("[1,]"),
    "missing-colon": raw('{"a" 1}'),
    "bad-escape": raw('{"a": "\\q"}'),
    "bad-unicode-escape": raw('{"a": "\\u12G4"}'),
    "control-char": raw('{"a": "x\ty"}'),
    "unterminated": raw('{"a": "xyz'),
    "extra-data": raw("{}\n\n  x"),
    "crlf-lines": raw('{\r\n"a": 1,\r\n  "b" 2}'),
    "no-value": raw('{"a": }'),
    "deep": raw("[" * 5000 + "]" * 5000),
    "huge-int": raw('{"products": ' + "9" * 5000 + "}"),
    "root-list": raw("[1, 2.0, null]"),
    "missing-products": doc({"producers": []}),
    "products-list": doc(scenario(products=[1])),
    "product-order": raw(
        '{"products": {"b": {"name": "x"}, "1": {"name": "y"}}, '
        '"producers": [], "consumers": [], "marketplace": {"queue_size_per_producer": 1}}'
    ),
    "empty-id": doc(scenario(products={"": product()})),
    "id-not-identifier": doc(scenario(products={"a b\u00e9": {"name": 1}})),
    "blank-kind": doc(scenario(products={"id1": product(product_type=" \u00a0\u3000")})),
    "blank-kind-separator": doc(scenario(products={"id1": product(product_type="\x1c")})),
    "long-kind": doc(scenario(products={"id1": product(product_type="\U0001f600" * 65)})),
    "empty-name": doc(scenario(products={"id1": product(name="")})),
    "price-string": doc(scenario(products={"id1": product(price="9")})),
    "price-bool": doc(scenario(products={"id1": product(price=True)})),
    "price-negative": doc(scenario(products={"id1": product(price=-0.5)})),
    "price-nan": raw(doc(scenario()).decode().replace('"price": 9', '"price": NaN')),
    "price-inf": raw(doc(scenario()).decode().replace('"price": 9', '"price": 1e400')),
    "price-decimals": doc(scenario(products={"id1": product(price=1e-10)})),
    "price-decimals-float": doc(scenario(products={"id1": product(price=0.1234567891)})),
    "price-big": doc(scenario(products={"id1": product(price=1e16)})),
    "price-big-int": doc(scenario(products={"id1": product(price=10**15 + 1)})),
    "attr-null": doc(scenario(products={"id1": product(extra=None)})),
    "attr-object": doc(scenario(products={"id1": product(extra={"k\u00e9y": [1, 2.5, "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"]})})),
    "attr-int64": doc(scenario(products={"id1": product(extra=2**63)})),
    "attr-inf": raw(doc(scenario()).decode().replace('"price": 9', '"price": 9, "x": -Infinity')),
    "attr-long-string": doc(scenario(products={"id1": product(note="x" * 1025)})),
    "attr-empty-key": doc(scenario(products={"id1": product(**{"": 1})})),
    "attr-too-many": doc(scenario(products={"id1": product(**{f"a{i}": i for i in range(65)})})),
    "queue-zero": doc(scenario(queue=0)),
    "queue-float": doc(scenario(queue=5.0)),
    "quantity-float": doc(scenario(consumers=consumer({"type": "add", "product": "id1", "quantity": 5.0}))),
    "quantity-negative": doc(scenario(consumers=consumer({"type": "add", "product": "id1", "quantity": -3}))),
    "quantity-big": doc(scenario(consumers=consumer({"type": "add", "product": "id1", "quantity": 10**6 + 1}))),
    "quantity-bool": doc(scenario(consumers=consumer({"type": "add", "product": "id1", "quantity": False}))),
    "op-type": doc(scenario(consumers=consumer({"type": {"x": [1, 2.0, None, True]}, "product": "id1", "quantity": 1}))),
    "op-type-string": doc(scenario(consumers=consumer({"type": "buy 'it'", "product": "id1", "quantity": 1}))),
    "op-missing-key": doc(scenario(consumers=consumer({"type": "add", "quantity": 1}))),
    "op-unknown-product": doc(scenario(consumers=consumer({"type": "add", "product": "id\"9", "quantity": 1}))),
    "op-product-number": doc(scenario(consumers=consumer({"type": "add", "product": 1, "quantity": 1}))),
    "wait-negative": doc(scenario(consumers=consumer(retry_wait_time=-1))),
    "wait-string": doc(scenario(consumers=consumer(retry_wait_time="1"))),
    "wait-tiny-negative": doc(scenario(consumers=consumer(retry_wait_time=-1e-05))),
    "entry-length": doc(scenario(producers=[{"name": "p", "products": [["id1", 1]], "republish_wait_time": 0}])),
    "producer-name-blank": doc(scenario(producers=[{"name": "\t", "products": [], "republish_wait_time": 0}])),
    "producer-name-long": doc(scenario(producers=[{"name": "n" * 129, "products": [], "republish_wait_time": 0}])),
    "duplicate-consumer": doc(scenario(consumers=consumer() + consumer())),
    "nobody-makes-it": doc(scenario(producers=[{"name": "p", "products": [["id1", 0, 0]], "republish_wait_time": 0}])),
    "duplicate-key-last-wins": raw(doc(scenario()).decode().replace('"queue_size_per_producer": 15', '"queue_size_per_producer": 15, "queue_size_per_producer": -1')),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_scenario(case, node, tmp_path, refused_address):
    path = tmp_path / f"{case}.json"
    path.write_bytes(INVALID[case])
    with pytest.raises(py_scenario.ScenarioError) as error:
        py_scenario.load(str(path))

    result = run_node(
        node, "--scenario", str(path), "--name", "cons1",
        "--server", refused_address, "--connect-timeout", "1",
    )

    assert result.returncode == 2
    assert result.stderr == f"invalid scenario: {error.value}\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["--scenario", "no-such-file.json", "--name", "cons1"],
        ["--scenario", str(CLASSIC), "--name", "cons1"],
        ["--scenario", str(CLASSIC / "02.json"), "--name", "cons1", "--name", "nobody"],
        ["--scenario", str(CLASSIC / "01.json"), "--name", "cons1"],  # valid: cannot connect
    ],
    ids=["missing-file", "directory", "unknown-name", "unreachable"],
)
def test_same_errors(args, node, refused_address):
    args = [*args, "--server", refused_address, "--connect-timeout", "0.5"]
    python = run_python(*args)
    mine = run_node(node, *args)

    assert (mine.returncode, mine.stderr, mine.stdout) == (
        python.returncode, python.stderr, python.stdout
    )
    assert mine.returncode in (1, 2)


def test_usage_errors(node):
    for args in (["--scenario", "x"], ["--scenario", "x", "--name", "a", "--time-scale", "-1"]):
        python, mine = run_python(*args), run_node(node, *args)
        assert mine.returncode == python.returncode == 2
        assert mine.stderr.splitlines()[-1].split(": error: ")[1] == (
            python.stderr.splitlines()[-1].split(": error: ")[1]
        )


# --- calls, retries and warnings against a scripted server ------------------


def abort(context, code, details="scripted failure", reason=None):
    if reason:
        context.set_trailing_metadata((("marketplace-reason", reason),))
    context.abort(code, details)


class ScriptedMarket(pb_grpc.MarketServiceServicer):
    """Serves AddToCart and RemoveFromCart from a script and records requests.

    Each script item is an int, the count moved, or a tuple of arguments for
    abort() to fail with. Once a script is used up, the call moves all it is
    asked to.
    """

    def __init__(self, adds, removes=(), on_add=None):
        self.adds = list(adds)
        self.removes = list(removes)
        self.on_add = on_add
        self.calls: list[tuple] = []
        self.carts = 0
        self.lock = threading.Lock()

    def CreateCart(self, request, context):
        with self.lock:
            self.carts += 1
            self.calls.append(("CreateCart", request.request_id))
            return pb.CreateCartResponse(
                cart_id=f"secret{self.carts}",
                cart_label=f"{request.consumer}/cart-{self.carts}",
                lease_ms=60_000,
            )

    def _step(self, script, context):
        item = script.pop(0) if script else None
        if isinstance(item, tuple):
            abort(context, *item)
        return item

    def AddToCart(self, request, context):
        with self.lock:
            self.calls.append(("AddToCart", request.request_id, request.cart_id, request.quantity))
            item = self._step(self.adds, context)
        if self.on_add:
            self.on_add()
        return pb.AddToCartResponse(added=request.quantity if item is None else item)

    def RemoveFromCart(self, request, context):
        with self.lock:
            self.calls.append(("RemoveFromCart", request.request_id, request.quantity))
            item = self._step(self.removes, context)
        removed = request.quantity if item is None else item
        return pb.RemoveFromCartResponse(removed=removed, missing=request.quantity - removed)

    def PlaceOrder(self, request, context):
        with self.lock:
            self.calls.append(("PlaceOrder", request.request_id, request.cart_id))
        tea = pb.Product(
            product_id="id1", kind="Tea", name="Linden", price=pb.Money(units=9, nanos=5),
            attributes=[pb.Attribute(key="type", string_value="Herbal")],
        )
        return pb.PlaceOrderResponse(lines=[pb.OrderLine(product=tea, quantity=2)])


def serve(servicer):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_MarketServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


CART = [
    {"type": "add", "product": "id1", "quantity": 3},
    {"type": "remove", "product": "id1", "quantity": 2},
]


def run_scripted(program, node, tmp_path, servicer, *extra, retry_wait=0.0):
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario(consumers=[
        {"name": "cons", "retry_wait_time": retry_wait, "carts": [CART]}
    ])))
    server, address = serve(servicer)
    try:
        args = ["--server", address, "--scenario", str(path), "--name", "cons", *extra]
        if program == "node":
            return run_node(node, *args)
        # The Node consumer polls; make the Python one poll too, so both send
        # the same calls.
        return run_python(*args, "--add-wait", "0")
    finally:
        server.stop(None).wait()


def shape(calls):
    """Replace request ids by their order of first use: 0, 1, 2..."""
    ids: dict[str, int] = {}
    return [(call[0], ids.setdefault(call[1], len(ids)), *call[2:]) for call in calls]


@pytest.mark.parametrize("program", ["python", "node"])
def test_retries(program, node, tmp_path):
    unavailable = (grpc.StatusCode.UNAVAILABLE,)
    servicer = ScriptedMarket(
        adds=[unavailable, unavailable, 1, (grpc.StatusCode.RESOURCE_EXHAUSTED,), 0,
              (grpc.StatusCode.DEADLINE_EXCEEDED,), 2],
        removes=[unavailable, 1],
    )
    result = run_scripted(program, node, tmp_path, servicer, "--time-scale", "0")

    assert result.returncode == 0, result.stderr
    # A transport failure resends the same request id; a partial add sends
    # a new request for the rest.
    assert shape(servicer.calls) == [
        ("CreateCart", 0),
        ("AddToCart", 1, "secret1", 3),
        ("AddToCart", 1, "secret1", 3),
        ("AddToCart", 1, "secret1", 3),
        ("AddToCart", 2, "secret1", 2),
        ("AddToCart", 2, "secret1", 2),
        ("AddToCart", 3, "secret1", 2),
        ("AddToCart", 3, "secret1", 2),
        ("RemoveFromCart", 4, 2),
        ("RemoveFromCart", 4, 2),
        ("PlaceOrder", 5, "secret1"),
    ]
    line = "cons bought Tea(name='Linden', price=9.000000005, type='Herbal')"
    assert result.stdout.splitlines() == [line, line]
    assert log_lines(result.stderr) == [
        "WARNING consumer cons, cart cons/cart-1: could not remove 1 of 2 id1, "
        "the cart did not hold them"
    ]


@pytest.mark.parametrize("program", ["python", "node"])
def test_gives_up(program, node, tmp_path):
    servicer = ScriptedMarket(adds=[(grpc.StatusCode.UNAVAILABLE,)] * 1000)
    result = run_scripted(
        program, node, tmp_path, servicer, "--time-scale", "0", "--retry-deadline", "0.3"
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert log_lines(result.stderr) == [
        "ERROR cons gave up: cart cons/cart-1 add id1 failed for 0 s, "
        "last with UNAVAILABLE: scripted failure"
    ]
    assert len({call[1] for call in servicer.calls if call[0] == "AddToCart"}) == 1


@pytest.mark.parametrize("program", ["python", "node"])
def test_lost_cart_restarts(program, node, tmp_path):
    servicer = ScriptedMarket(
        adds=[(grpc.StatusCode.NOT_FOUND,), (grpc.StatusCode.FAILED_PRECONDITION, "x", "CART_EXPIRED")]
    )
    result = run_scripted(program, node, tmp_path, servicer, "--time-scale", "0")

    assert result.returncode == 0, result.stderr
    assert [call[0] for call in servicer.calls] == [
        "CreateCart", "AddToCart", "CreateCart", "AddToCart", "CreateCart", "AddToCart",
        "RemoveFromCart", "PlaceOrder",
    ]
    assert log_lines(result.stderr) == [
        "WARNING consumer cons: cart is unknown to the server, which may have "
        "restarted; filling a new cart from the start (1 of 10)",
        "WARNING consumer cons: cart expired, and its items went back to their "
        "shelves; filling a new cart from the start (2 of 10)",
    ]
    assert len(result.stdout.splitlines()) == 2


@pytest.mark.parametrize("program", ["python", "node"])
def test_fatal_status(program, node, tmp_path):
    servicer = ScriptedMarket(adds=[(grpc.StatusCode.INVALID_ARGUMENT, "bad quantity")])
    result = run_scripted(program, node, tmp_path, servicer, "--time-scale", "0")

    assert result.returncode == 1
    assert log_lines(result.stderr) == ["ERROR cons failed: INVALID_ARGUMENT: bad quantity"]
    assert [call[0] for call in servicer.calls] == ["CreateCart", "AddToCart"]


@pytest.mark.parametrize("program", ["python", "node"])
def test_sigterm_stops(program, node, tmp_path):
    """A consumer waiting for stock exits 0 on SIGTERM without printing."""
    waiting = threading.Event()
    servicer = ScriptedMarket(adds=[0] * 1000, on_add=waiting.set)
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario(consumers=[
        {"name": "cons", "retry_wait_time": 3600, "carts": [CART]}
    ])))
    server, address = serve(servicer)
    command = node if program == "node" else [str(BIN / "marketplace-consumer")]
    process = subprocess.Popen(
        [*command, "--server", address, "--scenario", str(path), "--name", "cons"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
    )
    try:
        assert waiting.wait(60), "the consumer never called AddToCart"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
        server.stop(None).wait()

    assert process.returncode == 0, stderr
    assert stdout == ""
