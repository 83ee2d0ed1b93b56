"""GetMarketState stays readable by default clients whatever one entry holds."""

from __future__ import annotations

import grpc
import pytest

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_server import core
from marketplace_server.server import create_server
from marketplace_server.servicer import MAX_COUNTS_PER_ENTRY

PRODUCTS = MAX_COUNTS_PER_ENTRY + 1000


@pytest.fixture
def crowded_stub():
    """A market with one shelf and one cart, each holding PRODUCTS long-named products."""
    market = core.Market(capacity=2 * PRODUCTS)
    producer = market.register_producer("farm")
    for index in range(PRODUCTS):
        product_id = f"{index:06d}" + "x" * 120
        product = core.Product(product_id, "Tea", "Linden", core.Money(1))
        market.publish(producer, product, 2)
    cart_id, _ = market.create_cart("alice")
    for index in range(PRODUCTS):
        market.add_to_cart(cart_id, f"{index:06d}" + "x" * 120, 1)
    server, port = create_server(market, "127.0.0.1", 0, workers=4)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.MarketServiceStub(channel)
    server.stop(None).wait()


def test_crowded_entries_are_cut(crowded_stub):
    state = crowded_stub.GetMarketState(pb.GetMarketStateRequest(), timeout=30)

    assert len(state.shelves[0].items) == MAX_COUNTS_PER_ENTRY
    assert state.shelves[0].more_products == PRODUCTS - MAX_COUNTS_PER_ENTRY
    assert len(state.carts[0].items) == MAX_COUNTS_PER_ENTRY
    assert state.carts[0].more_products == PRODUCTS - MAX_COUNTS_PER_ENTRY
    assert state.ByteSize() < 4 * 1024 * 1024
