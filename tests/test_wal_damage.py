"""Damage inside SQLite's write-ahead log stops the start instead of losing calls."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess

from conftest import BIN
from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

import grpc


def fill_data_dir(start_server, data_dir) -> None:
    """Make some calls to a durable server, then SIGKILL it so the WAL stays."""
    server = start_server("--data-dir", str(data_dir))
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        producer = stub.RegisterProducer(
            pb.RegisterProducerRequest(name="farm"), timeout=10
        ).producer_id
        product = pb.Product(product_id="tea", kind="Tea", name="Linden")
        for _ in range(400):
            stub.Publish(
                pb.PublishRequest(producer_id=producer, product=product, quantity=1),
                timeout=10,
            )
            cart = stub.CreateCart(pb.CreateCartRequest(consumer="alice"), timeout=10)
            stub.AddToCart(
                pb.AddToCartRequest(cart_id=cart.cart_id, product_id="tea", quantity=1),
                timeout=10,
            )
            stub.PlaceOrder(pb.PlaceOrderRequest(cart_id=cart.cart_id), timeout=10)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)


def digests(folder) -> dict[str, str]:
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in sorted(os.listdir(folder))
        if name.startswith("market.sqlite3")
    }


def test_damaged_wal_stops_start(start_server, tmp_path):
    data_dir = tmp_path / "data"
    fill_data_dir(start_server, data_dir)
    damaged = tmp_path / "damaged"
    shutil.copytree(data_dir, damaged)
    wal = damaged / "market.sqlite3-wal"
    with open(wal, "r+b") as file:
        file.seek(wal.stat().st_size // 2)
        file.write(b"GARBAGE" * 100)
    before = digests(damaged)

    result = subprocess.run(
        [str(BIN / "marketplace-server"), "--port", "0", "--data-dir", str(damaged)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "-wal file fails its checksum" in result.stderr
    assert digests(damaged) == before


def test_intact_wal_after_sigkill_starts(start_server, tmp_path):
    data_dir = tmp_path / "data"
    fill_data_dir(start_server, data_dir)

    server = start_server("--data-dir", str(data_dir))
    with grpc.insecure_channel(server.address) as channel:
        state = pb_grpc.MarketServiceStub(channel).GetMarketState(
            pb.GetMarketStateRequest(), timeout=10
        )

    assert state.orders == 400
    assert state.items_published == 400
