"""Stall diagnosis: who waits for what, and which full shelves block producers."""

from __future__ import annotations

import time

import grpc

from marketplace.v1 import marketplace_pb2 as pb


def fetch_state(stub, timeout: float = 5.0) -> tuple[pb.GetMarketStateResponse, list, list]:
    """Return the first page's totals and every shelf and cart, following pages."""
    first = stub.GetMarketState(pb.GetMarketStateRequest(), timeout=timeout)
    shelves, carts = list(first.shelves), list(first.carts)
    token = first.next_page_token
    while token:
        page = stub.GetMarketState(
            pb.GetMarketStateRequest(page_token=token), timeout=timeout
        )
        shelves.extend(page.shelves)
        carts.extend(page.carts)
        token = page.next_page_token
    return first, shelves, carts


def describe_stall(shelves, carts, seconds: float) -> list[str]:
    """Return lines naming waiting consumers and blocked producers."""
    lines = [f"no item has moved for {seconds:.1f} s"]
    waiting = [cart for cart in carts if cart.waiting_product_id]
    for cart in waiting:
        lines.append(
            f"consumer {cart.consumer} (cart {cart.cart_label}) waits for "
            f"product {cart.waiting_product_id}"
        )
    if not waiting:
        lines.append("no open cart waits for a product")
    for shelf in shelves:
        if not shelf.blocked_product_id:
            continue
        contents = ", ".join(f"{c.product_id} x{c.quantity}" for c in shelf.items)
        lines.append(
            f"producer {shelf.producer} is blocked publishing "
            f"{shelf.blocked_product_id}: its shelf holds {shelf.size} of "
            f"{shelf.capacity} items ({contents or 'nothing'})"
        )
    wanted = {cart.waiting_product_id for cart in waiting}
    for shelf in shelves:
        held = {c.product_id for c in shelf.items}
        if shelf.blocked_product_id and held and not held & wanted:
            lines.append(
                f"nobody waiting wants what fills the shelf of {shelf.producer}, "
                "so it stays full"
            )
    return lines


class StallWatch:
    """Tracks GetMarketState.moves and reports when it stops changing."""

    def __init__(self, stall_after: float) -> None:
        self.stall_after = stall_after
        self._moves: int | None = None
        self._since = time.monotonic()

    def update(self, moves: int) -> float:
        """Record a reading; return seconds since `moves` last changed."""
        now = time.monotonic()
        if moves != self._moves:
            self._moves, self._since = moves, now
        return now - self._since

    def stalled(self, moves: int) -> float | None:
        """Return the seconds without a move once past `stall_after`, else None."""
        idle = self.update(moves)
        return idle if idle >= self.stall_after else None


def is_unavailable(error: grpc.RpcError) -> bool:
    return error.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
