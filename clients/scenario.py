"""Load and validate scenario files, and render products as purchase lines."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from marketplace.v1 import marketplace_pb2 as pb
# The market's default limits: a scenario that breaks one fails validation
# with status 2 here, not with INVALID_ARGUMENT from the server mid-run.
# NOTE: a server started with other limits can still reject a valid scenario.
from marketplace_server import core

EXIT_INVALID_SCENARIO = 2


class ScenarioError(Exception):
    """A scenario file is malformed; str() is one line naming file, path and problem."""

    def __init__(self, file: str, path: str, problem: str) -> None:
        super().__init__(f"{file}: {path}: {problem}")


@dataclass(frozen=True)
class Operation:
    kind: str  # "add" or "remove"
    product_id: str
    quantity: int


@dataclass(frozen=True)
class ProducerSpec:
    name: str
    products: tuple[tuple[str, int, float], ...]  # (product id, quantity, wait)
    republish_wait_time: float


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    retry_wait_time: float
    carts: tuple[tuple[Operation, ...], ...]
    # Most one order of this consumer may cost; None means no limit.
    budget: pb.Money | None = None


@dataclass(frozen=True)
class Scenario:
    file: str
    products: dict[str, pb.Product]
    producers: tuple[ProducerSpec, ...]
    consumers: tuple[ConsumerSpec, ...]
    queue_size: int

    def producer(self, name: str) -> ProducerSpec:
        for spec in self.producers:
            if spec.name == name:
                return spec
        names = ", ".join(repr(spec.name) for spec in self.producers) or "none"
        raise ScenarioError(
            self.file, "$.producers", f"no producer named {name!r}; it has: {names}"
        )

    def consumer(self, name: str) -> ConsumerSpec:
        for spec in self.consumers:
            if spec.name == name:
                return spec
        names = ", ".join(repr(spec.name) for spec in self.consumers) or "none"
        raise ScenarioError(
            self.file, "$.consumers", f"no consumer named {name!r}; it has: {names}"
        )


def render_value(value: Any) -> str:
    """Render an attribute value as a Python dataclass repr renders it."""
    return repr(value)


def render_money(money: pb.Money) -> str:
    """Render a price: whole amounts as integers (9), others as decimals (9.5)."""
    if money.nanos == 0:
        return str(money.units)
    amount = Decimal(money.units) + Decimal(money.nanos).scaleb(-9)
    return format(amount.normalize(), "f")


def render_product(product: pb.Product) -> str:
    """Render a product as `Kind(name='...', price=..., other=...)`."""
    fields = [f"name={product.name!r}", f"price={render_money(product.price)}"]
    for attribute in product.attributes:
        value = getattr(attribute, attribute.WhichOneof("value"))
        fields.append(f"{attribute.key}={render_value(value)}")
    return f"{product.kind}({', '.join(fields)})"


def load(file: str) -> Scenario:
    """Read and validate a scenario file, raising ScenarioError on any fault."""
    try:
        with open(file, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as error:
        raise ScenarioError(file, "$", f"cannot read file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ScenarioError(file, "$", f"file is not UTF-8: {error.reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ScenarioError(
            file,
            "$",
            f"malformed JSON at line {error.lineno} column {error.colno}: {error.msg}",
        ) from None
    except RecursionError:
        raise ScenarioError(file, "$", "JSON is nested too deeply to parse") from None
    except ValueError as error:
        # For example an integer of more than 4300 digits, the default limit
        # of Python 3.11 and later.
        raise ScenarioError(file, "$", f"invalid JSON value: {error}") from None
    return _Validator(file).scenario(data)


class _Validator:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, path: str, problem: str) -> None:
        raise ScenarioError(self.file, path, problem)

    def object(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"expected an object, found {_describe(value)}")
        return value

    def list(self, value: Any, path: str) -> list:
        if not isinstance(value, list):
            self.fail(path, f"expected a list, found {_describe(value)}")
        return value

    def key(self, mapping: dict, key: str, path: str) -> Any:
        if key not in mapping:
            self.fail(path, f"missing key {key!r}")
        return mapping[key]

    def name(self, value: Any, path: str, max_length: int = core.MAX_NAME_LENGTH) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"expected a non-empty string, found {_describe(value)}")
        self.text(value, path, max_length)
        return value

    def text(self, value: str, path: str, max_length: int) -> None:
        """Check a name as the server does: its length, and no control characters."""
        if len(value) > max_length:
            self.fail(
                path,
                f"string is {len(value)} characters long; the maximum is {max_length}",
            )
        if not value.isprintable():
            self.fail(
                path,
                f"string {value!r} contains control or invisible format "
                "characters; use printable text",
            )

    def count(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected a whole number of items, found {_describe(value)}")
        if value < 0:
            self.fail(path, f"quantity {value} is negative; give 0 or more")
        if value > core.MAX_QUANTITY:
            self.fail(
                path, f"quantity {value} is too big; give at most {core.MAX_QUANTITY}"
            )
        return value

    def seconds(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"expected a number of seconds, found {_describe(value)}")
        if not math.isfinite(value) or value < 0:
            self.fail(path, f"wait {value} is not a finite number of seconds >= 0")
        return float(value)

    def scenario(self, data: Any) -> Scenario:
        root = self.object(data, "$")
        products = self.products(self.key(root, "products", "$"))
        market = self.object(self.key(root, "marketplace", "$"), "$.marketplace")
        path = "$.marketplace.queue_size_per_producer"
        queue_size = self.count(
            self.key(market, "queue_size_per_producer", "$.marketplace"), path
        )
        if queue_size < 1:
            self.fail(path, "shelf capacity is 0; give 1 or more")

        producers = []
        raw_producers = self.list(self.key(root, "producers", "$"), "$.producers")
        for index, raw in enumerate(raw_producers):
            producers.append(self.producer(raw, f"$.producers[{index}]", products))
        self.unique(producers, "$.producers")

        consumers = []
        raw_consumers = self.list(self.key(root, "consumers", "$"), "$.consumers")
        for index, raw in enumerate(raw_consumers):
            consumers.append(self.consumer(raw, f"$.consumers[{index}]", products))
        self.unique(consumers, "$.consumers")

        made = {pid for spec in producers for pid, quantity, _ in spec.products if quantity}
        for index, spec in enumerate(consumers):
            for cart_index, cart in enumerate(spec.carts):
                for op_index, op in enumerate(cart):
                    if op.kind == "add" and op.quantity and op.product_id not in made:
                        self.fail(
                            f"$.consumers[{index}].carts[{cart_index}][{op_index}].product",
                            f"no producer makes product {op.product_id!r}, so this add "
                            "would wait forever; add it to a producer's products",
                        )
        return Scenario(self.file, products, tuple(producers), tuple(consumers), queue_size)

    def unique(self, specs: list, path: str) -> None:
        seen: set[str] = set()
        for index, spec in enumerate(specs):
            if spec.name in seen:
                self.fail(f"{path}[{index}].name", f"duplicate name {spec.name!r}")
            seen.add(spec.name)

    def products(self, value: Any) -> dict[str, pb.Product]:
        products = {}
        for product_id, raw in self.object(value, "$.products").items():
            path = "$.products" + _key_path(product_id)
            if not product_id:
                self.fail(path, "empty product id; give every product a non-empty id")
            self.text(product_id, path, core.MAX_NAME_LENGTH)
            raw = self.object(raw, path)
            kind = self.name(
                self.key(raw, "product_type", path),
                f"{path}.product_type",
                core.MAX_KIND_LENGTH,
            )
            name = self.key(raw, "name", path)
            if not isinstance(name, str) or not name:
                self.fail(
                    f"{path}.name", f"expected a non-empty string, found {_describe(name)}"
                )
            self.text(name, f"{path}.name", core.MAX_PRODUCT_NAME_LENGTH)
            price = self.price(self.key(raw, "price", path), f"{path}.price")
            product = pb.Product(product_id=product_id, kind=kind, name=name, price=price)
            for key, attribute in raw.items():
                if key in ("product_type", "name", "price"):
                    continue
                key_path = path + _key_path(key)
                if not key:
                    self.fail(key_path, "empty attribute name; give it a non-empty name")
                self.text(key, key_path, core.MAX_ATTRIBUTE_KEY_LENGTH)
                self.attribute(product.attributes.add(key=key), attribute, key_path)
            if len(product.attributes) > core.MAX_ATTRIBUTES:
                self.fail(
                    path,
                    f"product has {len(product.attributes)} attributes; the maximum is "
                    f"{core.MAX_ATTRIBUTES}",
                )
            products[product_id] = product
        return products

    def price(self, value: Any, path: str) -> pb.Money:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"expected a number, found {_describe(value)}")
        if not math.isfinite(value) or value < 0:
            self.fail(path, f"price {value} is not a finite number >= 0")
        # NOTE: a float price with no fraction, such as 9.0, prints as 9,
        # not as Python's repr 9.0, because the market stores exact amounts.
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        units = int(amount)
        if units > core.MAX_PRICE_UNITS:
            self.fail(
                path, f"price {value} is too big; the maximum is {core.MAX_PRICE_UNITS}"
            )
        nanos = int((amount - units) * 1_000_000_000)
        if (amount - units) * 1_000_000_000 != nanos:
            self.fail(path, f"price {value} has more than 9 decimal places")
        return pb.Money(units=units, nanos=nanos)

    def attribute(self, message: pb.Attribute, value: Any, path: str) -> None:
        if isinstance(value, bool):
            message.bool_value = value
        elif isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                self.fail(path, f"integer {value} does not fit in 64 bits")
            message.int_value = value
        elif isinstance(value, float):
            if not math.isfinite(value):
                self.fail(path, f"number {value} is not finite")
            message.float_value = value
        elif isinstance(value, str):
            self.text(value, path, core.MAX_STRING_VALUE_LENGTH)
            message.string_value = value
        else:
            self.fail(
                path,
                f"expected a string, number or boolean, found {_describe(value)}",
            )

    def producer(self, raw: Any, path: str, products: dict) -> ProducerSpec:
        raw = self.object(raw, path)
        name = self.name(self.key(raw, "name", path), f"{path}.name")
        entries = []
        raw_entries = self.list(self.key(raw, "products", path), f"{path}.products")
        for index, entry in enumerate(raw_entries):
            entry_path = f"{path}.products[{index}]"
            entry = self.list(entry, entry_path)
            if len(entry) != 3:
                self.fail(
                    entry_path,
                    f"expected [product id, quantity, wait], found {len(entry)} values",
                )
            product_id = self.product_id(entry[0], f"{entry_path}[0]", products)
            quantity = self.count(entry[1], f"{entry_path}[1]")
            wait = self.seconds(entry[2], f"{entry_path}[2]")
            entries.append((product_id, quantity, wait))
        republish = self.seconds(
            self.key(raw, "republish_wait_time", path), f"{path}.republish_wait_time"
        )
        return ProducerSpec(name, tuple(entries), republish)

    def consumer(self, raw: Any, path: str, products: dict) -> ConsumerSpec:
        raw = self.object(raw, path)
        name = self.name(self.key(raw, "name", path), f"{path}.name")
        retry = self.seconds(
            self.key(raw, "retry_wait_time", path), f"{path}.retry_wait_time"
        )
        carts = []
        raw_carts = self.list(self.key(raw, "carts", path), f"{path}.carts")
        for cart_index, raw_cart in enumerate(raw_carts):
            cart_path = f"{path}.carts[{cart_index}]"
            operations = []
            for op_index, raw_op in enumerate(self.list(raw_cart, cart_path)):
                op_path = f"{cart_path}[{op_index}]"
                raw_op = self.object(raw_op, op_path)
                kind = self.key(raw_op, "type", op_path)
                if kind not in ("add", "remove"):
                    self.fail(
                        f"{op_path}.type",
                        f"unknown operation {kind!r}; give 'add' or 'remove'",
                    )
                product_id = self.product_id(
                    self.key(raw_op, "product", op_path), f"{op_path}.product", products
                )
                quantity = self.count(
                    self.key(raw_op, "quantity", op_path), f"{op_path}.quantity"
                )
                operations.append(Operation(kind, product_id, quantity))
            carts.append(tuple(operations))
        budget = None
        if "budget" in raw:
            budget = self.price(raw["budget"], f"{path}.budget")
        return ConsumerSpec(name, retry, tuple(carts), budget)

    def product_id(self, value: Any, path: str, products: dict) -> str:
        if not isinstance(value, str):
            self.fail(path, f"expected a product id string, found {_describe(value)}")
        if value not in products:
            self.fail(path, f"unknown product id {value!r}; define it under $.products")
        return value


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > 40:
        text = text[:37] + "..."
    kinds = {dict: "object", list: "list", str: "string", bool: "boolean"}
    kind = kinds.get(type(value), "null" if value is None else "number")
    return f"{kind} {text}"


def _key_path(key: str) -> str:
    if key.isidentifier():
        return f".{key}"
    return f"[{json.dumps(key, ensure_ascii=False)}]"


def money_nanos(money: pb.Money) -> int:
    """Return an amount in billionths of a unit, for exact sums and comparisons."""
    return money.units * 1_000_000_000 + money.nanos


def items_over_budget(
    budget: pb.Money, products: dict[str, pb.Product], contents: dict[str, int]
) -> list[tuple[str, int]]:
    """Return (product id, count) to remove so that `contents` costs at most `budget`.

    `contents` maps product ids to item counts. Items go most expensive
    first, and no more of them than needed.
    """

    limit = money_nanos(budget)
    total = sum(money_nanos(products[pid].price) * n for pid, n in contents.items())
    by_price = sorted(
        (pid for pid, count in contents.items() if count > 0),
        key=lambda pid: money_nanos(products[pid].price),
        reverse=True,
    )
    drops = []
    for product_id in by_price:
        if total <= limit:
            break
        price = money_nanos(products[product_id].price)
        count = 0
        while count < contents[product_id] and total > limit:
            count += 1
            total -= price
        drops.append((product_id, count))
    return drops
