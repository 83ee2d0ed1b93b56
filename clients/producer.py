"""Producer program: publishes a scenario producer's products until stopped."""

from __future__ import annotations

import logging
import sys
import threading

import grpc

from marketplace.v1 import marketplace_pb2 as pb

from . import common
from .retry import RetryPolicy, call, move_all, new_request_id

log = logging.getLogger(__name__)

# Registrations in a row, with no successful publish between them, after
# which the producer fails.
MAX_REREGISTRATIONS = 10


def run_producer(stub, scenario, name, time_scale, retry_deadline, stop) -> None:
    """Register producer `name`, then publish its list over and over until `stop`."""
    spec = scenario.producer(name)
    policy = RetryPolicy(
        refusal_wait=spec.republish_wait_time * time_scale, deadline=retry_deadline
    )
    def register() -> str:
        response = call(
            stub.RegisterProducer,
            pb.RegisterProducerRequest(request_id=new_request_id(), name=name),
            policy,
            stop,
            what=f"register producer {name}",
        )
        log.info("producer %s registered, shelf capacity %d", name, response.capacity)
        if response.capacity != scenario.queue_size:
            log.warning(
                "producer %s: the server's shelf capacity is %d but the scenario "
                "asks for %d; the output may differ, or the market may stall",
                name,
                response.capacity,
                scenario.queue_size,
            )
        return response.producer_id

    producer_id = register()
    reregistrations = 0

    if not any(quantity for _, quantity, _ in spec.products):
        log.info("producer %s has nothing to publish; idling until stopped", name)
        stop.wait()
        return

    def publish_one(product_id: str) -> int:
        nonlocal producer_id, reregistrations
        request = pb.PublishRequest(
            request_id=new_request_id(),
            producer_id=producer_id,
            product=scenario.products[product_id],
            quantity=1,
        )
        what = f"producer {name} publish {product_id}"
        try:
            published = call(stub.Publish, request, policy, stop, what=what).published
        except grpc.RpcError as error:
            # A server restarted without --data-dir has no record of the producer.
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            if reregistrations >= MAX_REREGISTRATIONS:
                raise
            reregistrations += 1
            log.warning(
                "producer %s is unknown to the server, which may have "
                "restarted; registering again (%d of %d)",
                name,
                reregistrations,
                MAX_REREGISTRATIONS,
            )
            producer_id = register()
            return 0
        reregistrations = 0
        return published

    while not stop.is_set():
        for product_id, quantity, wait in spec.products:
            for _ in range(quantity):
                move_all(
                    lambda remaining: publish_one(product_id),
                    1,
                    policy,
                    stop,
                    what=f"producer {name} publish {product_id}",
                )
                if stop.wait(wait * time_scale):
                    return


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(
        "marketplace-producer",
        "Run producers of a scenario: publish their products one item at a "
        "time, over and over, until SIGINT or SIGTERM.",
    )
    args = common.parse(parser, argv)
    scenario = common.load_scenario(args.scenario)
    common.check_names(scenario, args.name, "producer")

    stop = threading.Event()
    common.install_stop_handlers(stop)
    channel, stub = common.connect(
        args.server, args.connect_timeout, common.channel_settings(args)
    )
    with channel:
        return common.run_clients(
            args.name,
            lambda name: run_producer(
                stub, scenario, name, args.time_scale, args.retry_deadline, stop
            ),
            stop,
        )


if __name__ == "__main__":
    sys.exit(main())
