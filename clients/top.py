"""Live terminal view of a market: shelves, open carts, orders and refusals per second."""

from __future__ import annotations

import argparse
import sys
import time

import grpc
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

from . import common, security
from .diagnosis import StallWatch, describe_stall, fetch_state

# Rows shown per table; the rest are summarised in one line.
MAX_ROWS = 30


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marketplace-top",
        description="Show a market's shelves, open carts, orders per second and "
        "refusals per second, refreshed in the terminal.",
        formatter_class=common.HelpFormatter,
    )
    parser.add_argument(
        "--server", default="127.0.0.1:50051", help="HOST:PORT of the market server"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        help="stop after this many refreshes (0: run until Ctrl-C)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="print one view as plain text and exit, for scripts and pipes",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for each reply"
    )
    common.add_tls_arguments(parser)
    parser.add_argument(
        "--stall-after",
        type=float,
        default=10.0,
        help="seconds without any item moving after which the view shows who "
        "waits for what and which full shelves block producers",
    )
    return parser


def _bar(size: int, capacity: int, width: int = 20) -> str:
    filled = min(width, round(width * size / capacity)) if capacity else 0
    return "#" * filled + "." * (width - filled)


def render(
    state: pb.GetMarketStateResponse,
    previous: pb.GetMarketStateResponse | None,
    seconds: float,
    server: str,
    stall: list[str] | None = None,
) -> Group:
    """Build the view of one state; rates come from the change since `previous`."""

    def rate(field: str) -> str:
        if previous is None or seconds <= 0:
            return "-"
        return f"{(getattr(state, field) - getattr(previous, field)) / seconds:.1f}"

    refused_now = state.publishes_refused + state.adds_refused
    refused_rate = "-"
    if previous is not None and seconds > 0:
        refused_before = previous.publishes_refused + previous.adds_refused
        refused_rate = f"{(refused_now - refused_before) / seconds:.1f}"

    summary = Text(
        f"market {server}: {len(state.shelves)} shelves, {len(state.carts)} open "
        f"carts, {state.orders} orders ({rate('orders')}/s), "
        f"{state.items_ordered} items ordered, {state.items_published} published, "
        f"refusals {refused_rate}/s, {state.carts_expired} carts expired"
    )

    shelves = Table(title="Shelves", expand=False)
    shelves.add_column("producer")
    shelves.add_column("fill")
    shelves.add_column("items", justify="right")
    shelves.add_column("capacity", justify="right")
    shelves.add_column("products")
    for shelf in state.shelves[:MAX_ROWS]:
        products = ", ".join(f"{c.product_id}:{c.quantity}" for c in shelf.items)
        shelves.add_row(
            shelf.producer,
            _bar(shelf.size, shelf.capacity),
            str(shelf.size),
            str(shelf.capacity),
            products,
        )
    if len(state.shelves) > MAX_ROWS:
        shelves.caption = f"{len(state.shelves) - MAX_ROWS} more shelves not shown"

    carts = Table(title="Open carts", expand=False)
    carts.add_column("cart")
    carts.add_column("items", justify="right")
    carts.add_column("products")
    for cart in state.carts[:MAX_ROWS]:
        carts.add_row(
            cart.cart_label,
            str(sum(c.quantity for c in cart.items)),
            ", ".join(f"{c.product_id}:{c.quantity}" for c in cart.items),
        )
    if len(state.carts) > MAX_ROWS:
        carts.caption = f"{len(state.carts) - MAX_ROWS} more carts not shown"

    parts = [summary, shelves, carts]
    if stall:
        parts.append(Text("STALLED: " + "\n".join(stall), style="bold red"))
    return Group(*parts)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    common.check_server_address(parser, args.server)
    common.check_tls_args(parser, args)
    if not args.interval > 0:
        parser.error(f"--interval {args.interval} must be above 0")
    if args.count < 0:
        parser.error(f"--count {args.count} is negative; give 0 or more")

    console = Console(stderr=False)
    try:
        channel = common.open_channel(
            args.server, common.ChannelSettings(common.tls_files(args))
        )
    except security.CredentialsError as error:
        print(f"marketplace-top: {error}", file=sys.stderr)
        return 1
    with channel:
        stub = pb_grpc.MarketServiceStub(channel)

        watch = StallWatch(args.stall_after)

        def fetch() -> pb.GetMarketStateResponse:
            """Return the totals with every shelf and cart, from all pages."""
            first, shelves, carts = fetch_state(stub, args.timeout)
            del first.shelves[:]
            del first.carts[:]
            first.shelves.extend(shelves)
            first.carts.extend(carts)
            return first

        def stall_of(state: pb.GetMarketStateResponse) -> list[str] | None:
            idle = watch.stalled(state.moves)
            if idle is None or not state.carts:
                return None
            return describe_stall(state.shelves, state.carts, idle)

        try:
            if args.once:
                console.print(render(fetch(), None, 0.0, args.server))
                return 0
            previous, previous_at = None, time.monotonic()
            shown = 0
            with Live(console=console, auto_refresh=False) as live:
                while args.count == 0 or shown < args.count:
                    state = fetch()
                    now = time.monotonic()
                    live.update(
                        render(
                            state,
                            previous,
                            now - previous_at,
                            args.server,
                            stall_of(state),
                        ),
                        refresh=True,
                    )
                    previous, previous_at = state, now
                    shown += 1
                    if args.count == 0 or shown < args.count:
                        time.sleep(args.interval)
        except grpc.RpcError as error:
            print(
                f"marketplace-top: GetMarketState on {args.server} failed with "
                f"{error.code().name}: {error.details()}; check --server",
                file=sys.stderr,
            )
            return 1
        except KeyboardInterrupt:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
