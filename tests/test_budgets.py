"""Cart budgets: the core rule, its gRPC status, and the consumer that trims to fit.

Prices such as 0.1 and 0.2 have no exact binary float, so these tests also
check that totals are exact sums of units and nanos.
"""

from __future__ import annotations

import re
import subprocess

import grpc
import pytest

from conftest import CLASSIC, DATA, ROOT
from marketplace.v1 import marketplace_pb2 as pb
from marketplace_server import core

CALL_TIMEOUT = 10
RUN_TIMEOUT = 240
TENTH = 100_000_000  # nanos in 0.1

BUDGET_SCENARIO = DATA / "extra" / "budget.json"


def tea(price: core.Money, product_id: str = "tea") -> core.Product:
    return core.Product(product_id, "Tea", f"Tea at {product_id}", price)


def stocked_market(*products: core.Product) -> tuple[core.Market, str]:
    """Return a market whose one shelf contains 5 items of each product, and its
    producer id."""
    market = core.Market(capacity=50)
    producer_id = market.register_producer("prod1")
    for product in products:
        market.publish(producer_id, product, 5)
    return market, producer_id


def cart_items(market: core.Market, label: str) -> dict[str, int]:
    for cart in market.snapshot().carts:
        if cart.cart_label == label:
            return cart.items
    pytest.fail(f"cart {label} is not open")


# The core rule.


def test_over_budget_raises():
    market, _ = stocked_market(tea(core.Money(0, 6 * TENTH)))
    cart_id, _ = market.create_cart("alice", core.Money(1))
    market.add_to_cart(cart_id, "tea", 2)

    with pytest.raises(core.OverBudget) as raised:
        market.place_order(cart_id)

    assert "totals 1.2" in str(raised.value)
    assert "budget of 1" in str(raised.value)


def test_over_budget_leaves_cart_unchanged():
    market, _ = stocked_market(tea(core.Money(0, 6 * TENTH)))
    cart_id, label = market.create_cart("alice", core.Money(1))
    market.add_to_cart(cart_id, "tea", 2)
    before = market.snapshot()

    with pytest.raises(core.OverBudget):
        market.place_order(cart_id)
    after = market.snapshot()

    assert cart_items(market, label) == {"tea": 2}
    assert after.orders == before.orders
    assert after.items_ordered == before.items_ordered
    assert [s.items for s in after.shelves] == [s.items for s in before.shelves]


def test_over_budget_cart_can_be_trimmed_and_ordered():
    market, _ = stocked_market(tea(core.Money(0, 6 * TENTH)))
    cart_id, _ = market.create_cart("alice", core.Money(1))
    market.add_to_cart(cart_id, "tea", 2)
    with pytest.raises(core.OverBudget):
        market.place_order(cart_id)

    market.remove_from_cart(cart_id, "tea", 1)
    order = market.place_order(cart_id)

    assert order.total == core.Money(0, 6 * TENTH)
    assert order.lines[0][1] == 1


def test_total_at_budget_is_ordered():
    # 0.1 + 0.2 is 0.30000000000000004 in binary floats, above a budget of 0.3.
    market, _ = stocked_market(
        tea(core.Money(0, TENTH), "tenth"), tea(core.Money(0, 2 * TENTH), "fifth")
    )
    cart_id, _ = market.create_cart("alice", core.Money(0, 3 * TENTH))
    market.add_to_cart(cart_id, "tenth", 1)
    market.add_to_cart(cart_id, "fifth", 1)

    order = market.place_order(cart_id)

    assert order.total == core.Money(0, 3 * TENTH)


def test_total_under_budget_is_ordered():
    market, _ = stocked_market(tea(core.Money(2, 5 * TENTH)))
    cart_id, _ = market.create_cart("alice", core.Money(10))
    market.add_to_cart(cart_id, "tea", 3)

    order = market.place_order(cart_id)

    assert order.total == core.Money(7, 5 * TENTH)


def test_ten_tenths_total_one():
    market, _ = stocked_market(
        tea(core.Money(0, TENTH), "a"), tea(core.Money(0, TENTH), "b")
    )
    cart_id, _ = market.create_cart("alice", core.Money(1))
    market.add_to_cart(cart_id, "a", 5)
    market.add_to_cart(cart_id, "b", 5)

    order = market.place_order(cart_id)

    assert order.total == core.Money(1)


def test_one_nano_over_budget_raises():
    market, _ = stocked_market(tea(core.Money(0, TENTH + 1)))
    cart_id, _ = market.create_cart("alice", core.Money(0, TENTH))
    market.add_to_cart(cart_id, "tea", 1)

    with pytest.raises(core.OverBudget):
        market.place_order(cart_id)


def test_cart_without_budget_has_no_limit():
    market, _ = stocked_market(tea(core.Money(10**9)))
    cart_id, _ = market.create_cart("alice")
    market.add_to_cart(cart_id, "tea", 5)

    order = market.place_order(cart_id)

    assert order.total == core.Money(5 * 10**9)


# Over gRPC, on the in-process server of conftest.py (shelf capacity 3).


def publish(stub, product_id: str, units: int, nanos: int, quantity: int) -> None:
    producer_id = stub.RegisterProducer(
        pb.RegisterProducerRequest(name=f"maker of {product_id}"), timeout=CALL_TIMEOUT
    ).producer_id
    product = pb.Product(
        product_id=product_id,
        kind="Tea",
        name=product_id.title(),
        price=pb.Money(units=units, nanos=nanos),
    )
    response = stub.Publish(
        pb.PublishRequest(producer_id=producer_id, product=product, quantity=quantity),
        timeout=CALL_TIMEOUT,
    )
    assert response.published == quantity


def filled_cart(stub, budget: pb.Money, adds: dict[str, int]) -> str:
    cart_id = stub.CreateCart(
        pb.CreateCartRequest(consumer="alice", budget=budget), timeout=CALL_TIMEOUT
    ).cart_id
    for product_id, quantity in adds.items():
        added = stub.AddToCart(
            pb.AddToCartRequest(
                cart_id=cart_id, product_id=product_id, quantity=quantity
            ),
            timeout=CALL_TIMEOUT,
        ).added
        assert added == quantity
    return cart_id


def test_grpc_over_budget_status(stub):
    publish(stub, "sencha", 0, 6 * TENTH, 2)
    cart_id = filled_cart(stub, pb.Money(units=1), {"sencha": 2})

    with pytest.raises(grpc.RpcError) as raised:
        stub.PlaceOrder(pb.PlaceOrderRequest(cart_id=cart_id), timeout=CALL_TIMEOUT)
    error = raised.value

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ("marketplace-reason", "OVER_BUDGET") in tuple(error.trailing_metadata())
    assert "totals 1.2" in error.details()
    assert "budget of 1" in error.details()


def test_grpc_over_budget_keeps_cart(stub):
    publish(stub, "sencha", 0, 6 * TENTH, 2)
    cart_id = filled_cart(stub, pb.Money(units=1), {"sencha": 2})
    with pytest.raises(grpc.RpcError):
        stub.PlaceOrder(pb.PlaceOrderRequest(cart_id=cart_id), timeout=CALL_TIMEOUT)

    state = stub.GetMarketState(pb.GetMarketStateRequest(), timeout=CALL_TIMEOUT)

    assert state.orders == 0
    assert [(c.product_id, c.quantity) for c in state.carts[0].items] == [("sencha", 2)]


def test_grpc_total_exact(stub):
    publish(stub, "tenth", 0, TENTH, 1)
    publish(stub, "fifth", 0, 2 * TENTH, 1)
    cart_id = filled_cart(stub, pb.Money(nanos=3 * TENTH), {"tenth": 1, "fifth": 1})

    response = stub.PlaceOrder(
        pb.PlaceOrderRequest(cart_id=cart_id), timeout=CALL_TIMEOUT
    )

    assert response.total == pb.Money(units=0, nanos=3 * TENTH)


def test_grpc_total_carries_nanos(stub):
    publish(stub, "oolong", 2, 7 * TENTH, 3)
    cart_id = filled_cart(stub, pb.Money(units=100), {"oolong": 3})

    response = stub.PlaceOrder(
        pb.PlaceOrderRequest(cart_id=cart_id), timeout=CALL_TIMEOUT
    )

    assert response.total == pb.Money(units=8, nanos=TENTH)


# The consumer client, end to end through scripts/simulate.sh.


def run_simulate(scenario) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "simulate.sh"),
            str(scenario),
            "--time-scale",
            "0.1",
            "--timeout",
            "180",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=RUN_TIMEOUT,
    )


@pytest.fixture(scope="module")
def budget_run() -> subprocess.CompletedProcess:
    return run_simulate(BUDGET_SCENARIO)


@pytest.fixture(scope="module")
def classic_run() -> subprocess.CompletedProcess:
    return run_simulate(CLASSIC / "01.json")


def bought(run: subprocess.CompletedProcess, consumer: str) -> dict[str, int]:
    """Count the items a consumer bought, by product kind and name."""
    counts: dict[str, int] = {}
    for line in run.stdout.splitlines():
        name, _, product = line.partition(" bought ")
        if name == consumer:
            key = product.partition(", price=")[0]
            counts[key] = counts.get(key, 0) + 1
    return counts


def drop_lines(run: subprocess.CompletedProcess, consumer: str) -> list[str]:
    pattern = re.compile(
        rf"consumer {consumer}, cart {consumer}/cart-\d+: (dropped \d+ \w+) "
        "to stay within the budget"
    )
    return [m.group(1) for m in pattern.finditer(run.stderr)]


def test_budget_scenario_exits_0(budget_run):
    assert budget_run.returncode == 0, budget_run.stderr


def test_consumer_drops_most_expensive_first(budget_run):
    # alice's cart: 3 sencha at 0.1, 4 arabica at 0.2, 1 honey at 7.5, total
    # 8.6 against a budget of 1. Without the honey it is 1.1, and without one
    # arabica more it is 0.9, which fits.
    assert drop_lines(budget_run, "alice") == ["dropped 1 honey", "dropped 1 arabica"]


def test_consumer_buys_what_fits(budget_run):
    assert bought(budget_run, "alice") == {
        "Tea(name='Sencha'": 3,
        "Coffee(name='Arabica'": 3,
    }


def test_consumer_at_budget_drops_nothing(budget_run):
    assert drop_lines(budget_run, "bob") == []
    assert bought(budget_run, "bob") == {
        "Tea(name='Sencha'": 1,
        "Coffee(name='Arabica'": 1,
    }


def test_consumer_logs_rejection(budget_run):
    assert re.search(
        r"consumer alice: cart alice/cart-\d+ totals 8\.6, over its budget of 1;",
        budget_run.stderr,
    ), budget_run.stderr


@pytest.mark.parametrize(
    "line",
    [
        "simulate: alice spent 0.9, budget 1 per order",
        "simulate: bob spent 0.3, budget 0.3 per order",
        "simulate: carol spent 7.5, no budget",
    ],
)
def test_budget_summary_line(budget_run, line):
    assert line in budget_run.stderr.splitlines(), budget_run.stderr


def test_classic_output_unchanged(classic_run):
    expected = (CLASSIC / "01.expected").read_text(encoding="utf-8").splitlines()

    assert classic_run.returncode == 0, classic_run.stderr
    assert sorted(classic_run.stdout.splitlines()) == sorted(expected)


def test_classic_summary_has_no_budget(classic_run):
    summary = [
        line for line in classic_run.stderr.splitlines() if line.startswith("simulate:")
    ]

    assert len(summary) == 1, classic_run.stderr
    assert "budget" not in classic_run.stderr
    assert " spent " not in classic_run.stderr
