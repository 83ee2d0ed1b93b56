"""TLS and mutual TLS: a scenario over TLS, clear client errors, identity rules.

Certificates are made per module with the `cryptography` package: a CA, a
second CA that signed nothing the server trusts, and leaf certificates that
are valid now or expired.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import pathlib
import subprocess

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import BIN, CLASSIC
from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_clients import security as client_security
from marketplace_server import core, security
from marketplace_server.server import create_server

CALL_TIMEOUT = 10.0
RUN_TIMEOUT = 120
SCENARIO = CLASSIC / "03.json"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class Authority:
    """A throwaway CA that writes the certificates it issues as PEM files."""

    def __init__(self, directory: pathlib.Path, common_name: str) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{common_name.replace(' ', '-')}.pem"
        self.path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        stem: str,
        common_name: str,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
        expired: bool = False,
    ) -> tuple[str, str]:
        """Write STEM.pem and STEM.key for a new leaf certificate; return their paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        day = datetime.timedelta(days=1)
        if expired:
            not_before, not_after = now - 3 * day, now - 2 * day
        else:
            not_before, not_after = now - day, now + day

        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        names = [x509.DNSName(name) for name in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(names), critical=False
            )
        certificate = builder.sign(self.key, hashes.SHA256())

        cert_path = self.directory / f"{stem}.pem"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return str(cert_path), str(key_path)


class Pki:
    """The certificates of this module, as file paths."""

    def __init__(self, directory: pathlib.Path) -> None:
        ca = Authority(directory, "market test CA")
        stranger = Authority(directory, "unrelated CA")
        self.ca = str(ca.path)
        self.other_ca = str(stranger.path)
        self.server = ca.issue("server", "market server", ("localhost",), ("127.0.0.1",))
        self.server_expired = ca.issue(
            "server-expired", "market server", ("localhost",), ("127.0.0.1",), expired=True
        )
        # Issued for a name only, to test --tls-server-name.
        self.server_named = ca.issue("server-named", "market.test", ("market.test",))
        # One certificate for all clients of SCENARIO: its producer is prod1.
        self.clients = ca.issue("clients", "scenario clients", ("prod1",))
        self.farm = ca.issue("farm", "farm-a", ("farm-b",))
        self.alice = ca.issue("alice", "alice")
        self.alice_again = ca.issue("alice-again", "alice")
        self.bob = ca.issue("bob", "bob")
        self.alice_expired = ca.issue("alice-expired", "alice", expired=True)
        self.bob_by_stranger = stranger.issue("bob-stranger", "bob")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def mutual_tls_flags(pki: Pki) -> list[str]:
    cert, key = pki.server
    return ["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", pki.ca]


def client_flags(pki: Pki, identity: tuple[str, str] | None, ca: str | None = None):
    flags = ["--tls-ca", ca or pki.ca]
    if identity is not None:
        flags += ["--tls-cert", identity[0], "--tls-key", identity[1]]
    return flags


def run_consumer(address: str, *flags: str) -> subprocess.CompletedProcess:
    """Run consumer cons1 of SCENARIO against `address`; wait at most 20 s to connect."""
    command = [
        str(BIN / "marketplace-consumer"),
        "--server",
        address,
        "--scenario",
        str(SCENARIO),
        "--name",
        "cons1",
        "--connect-timeout",
        "20",
        *flags,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT)


def assert_clear_failure(result: subprocess.CompletedProcess, *phrases: str) -> None:
    """Assert exit status 1 and a message on stderr with every phrase, no traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    assert result.stdout == ""


# Runs of the programs.


def test_scenario_over_mutual_tls(pki, start_server):
    queue_size = json.loads(SCENARIO.read_text())["marketplace"]["queue_size_per_producer"]
    server = start_server("--queue-size", str(queue_size), *mutual_tls_flags(pki))
    command = [
        str(BIN / "marketplace-simulate"),
        str(SCENARIO),
        "--server",
        server.address,
        "--time-scale",
        "0.1",
        "--timeout",
        "90",
        *client_flags(pki, pki.clients),
    ]

    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT)

    assert result.returncode == 0, result.stderr
    expected = (CLASSIC / "03.expected").read_text().splitlines()
    assert sorted(result.stdout.splitlines()) == sorted(expected)
    assert "client certificates signed by" in server.log_text()


def test_plaintext_client_to_tls_server(pki, start_server):
    server = start_server(*mutual_tls_flags(pki))

    result = run_consumer(server.address)

    assert_clear_failure(
        result, f"the server at {server.address} serves TLS", "give --tls-ca"
    )


def test_tls_client_to_plaintext_server(pki, start_server):
    server = start_server()

    result = run_consumer(server.address, *client_flags(pki, pki.alice))

    assert_clear_failure(
        result,
        f"the TLS handshake with the server at {server.address} failed",
        "the server may serve plaintext",
    )


def test_wrong_ca(pki, start_server):
    server = start_server(*mutual_tls_flags(pki))

    result = run_consumer(server.address, *client_flags(pki, pki.alice, pki.other_ca))

    assert_clear_failure(
        result,
        f"the TLS handshake with the server at {server.address} failed",
        "did not verify",
        f"--tls-ca {pki.other_ca}",
    )


def test_expired_server_certificate(pki, start_server):
    cert, key = pki.server_expired
    server = start_server("--tls-cert", cert, "--tls-key", key)

    result = run_consumer(server.address, *client_flags(pki, None))

    assert_clear_failure(result, "certificate has expired", "renewed certificate")


def test_expired_client_certificate(pki, start_server):
    server = start_server(*mutual_tls_flags(pki))

    result = run_consumer(server.address, *client_flags(pki, pki.alice_expired))

    assert_clear_failure(
        result,
        "rejected the client certificate",
        f"--tls-cert {pki.alice_expired[0]}, which expired at",
    )


def test_client_certificate_from_other_ca(pki, start_server):
    server = start_server(*mutual_tls_flags(pki))

    result = run_consumer(server.address, *client_flags(pki, pki.bob_by_stranger))

    assert_clear_failure(
        result, "rejected the client certificate", "--tls-client-ca"
    )


def test_missing_client_certificate(pki, start_server):
    server = start_server(*mutual_tls_flags(pki))

    result = run_consumer(server.address, *client_flags(pki, None))

    assert_clear_failure(result, "requires a client certificate", "--tls-cert")


def test_server_name_mismatch(pki, start_server):
    cert, key = pki.server_named
    server = start_server("--tls-cert", cert, "--tls-key", key)

    result = run_consumer(server.address, *client_flags(pki, None))

    assert_clear_failure(result, "not issued for '127.0.0.1'", "--tls-server-name")


def test_server_name_override_connects(pki):
    cert, key = pki.server_named
    market = core.Market(capacity=3)
    server, port = create_server(
        market,
        "127.0.0.1",
        0,
        workers=4,
        credentials=security.server_credentials(cert, key),
    )
    tls = client_security.TlsFiles(pki.ca, server_name="market.test")
    options = client_security.channel_options(tls)
    try:
        with grpc.secure_channel(
            f"127.0.0.1:{port}", client_security.channel_credentials(tls), options
        ) as channel:
            stub = pb_grpc.MarketServiceStub(channel)
            response = stub.CreateCart(
                pb.CreateCartRequest(consumer="alice"), timeout=CALL_TIMEOUT
            )
    finally:
        server.stop(None).wait()

    assert response.cart_label == "alice/cart-1"


def test_producer_under_other_name_exits_1(pki, start_server):
    server = start_server(*mutual_tls_flags(pki))
    command = [
        str(BIN / "marketplace-producer"),
        "--server",
        server.address,
        "--scenario",
        str(SCENARIO),
        "--name",
        "prod1",
        "--connect-timeout",
        "20",
        *client_flags(pki, pki.alice),
    ]

    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT)

    assert result.returncode == 1, result.stderr
    assert "PERMISSION_DENIED" in result.stderr
    assert "producer name 'prod1' is not in the client certificate" in result.stderr
    assert "'alice'" in result.stderr


def test_server_rejects_mismatched_key(pki, tmp_path):
    cert, _ = pki.server
    _, other_key = pki.alice
    command = [
        str(BIN / "marketplace-server"),
        "--port",
        "0",
        "--tls-cert",
        cert,
        "--tls-key",
        other_key,
    ]

    result = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert f"cannot use --tls-cert {cert} with --tls-key {other_key}" in result.stderr


def test_server_client_ca_needs_cert(pki):
    command = [str(BIN / "marketplace-server"), "--port", "0", "--tls-client-ca", pki.ca]

    result = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "--tls-client-ca needs --tls-cert and --tls-key" in result.stderr


def test_client_missing_ca_file(tmp_path):
    missing = tmp_path / "missing.pem"

    result = run_consumer("127.0.0.1:1", "--tls-ca", str(missing))

    assert_clear_failure(result, f"cannot use --tls-ca {missing}")


# Identity rules, in-process with several client certificates.


@pytest.fixture
def tls_market(pki):
    """Serve a market with mutual TLS; yield a function that opens a stub per identity."""
    cert, key = pki.server
    market = core.Market(capacity=3)
    server, port = create_server(
        market,
        "127.0.0.1",
        0,
        workers=4,
        credentials=security.server_credentials(cert, key, pki.ca),
    )
    channels: list[grpc.Channel] = []

    def stub_for(identity: tuple[str, str]) -> pb_grpc.MarketServiceStub:
        tls = client_security.TlsFiles(pki.ca, *identity)
        channel = grpc.secure_channel(
            f"127.0.0.1:{port}", client_security.channel_credentials(tls)
        )
        channels.append(channel)
        return pb_grpc.MarketServiceStub(channel)

    yield stub_for
    for channel in channels:
        channel.close()
    server.stop(None).wait()


def call_error(method, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        method(request, timeout=CALL_TIMEOUT)
    return caught.value


@pytest.mark.parametrize("name", ["farm-a", "farm-b"])
def test_producer_registers_under_certificate_name(pki, tls_market, name):
    stub = tls_market(pki.farm)

    response = stub.RegisterProducer(
        pb.RegisterProducerRequest(name=name), timeout=CALL_TIMEOUT
    )

    assert response.producer_id


def test_producer_under_other_name_is_permission_denied(pki, tls_market):
    stub = tls_market(pki.farm)

    error = call_error(stub.RegisterProducer, pb.RegisterProducerRequest(name="farm-c"))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'farm-c'" in error.details()
    assert "'farm-a', 'farm-b'" in error.details()


def _cart_with_tea(pki, tls_market) -> tuple[pb_grpc.MarketServiceStub, str]:
    """Publish one tea and put it in a cart of alice's certificate."""
    farm = tls_market(pki.farm)
    producer_id = farm.RegisterProducer(
        pb.RegisterProducerRequest(name="farm-a"), timeout=CALL_TIMEOUT
    ).producer_id
    tea = pb.Product(product_id="tea", kind="Tea", name="Linden", price=pb.Money(units=9))
    farm.Publish(
        pb.PublishRequest(producer_id=producer_id, product=tea, quantity=1),
        timeout=CALL_TIMEOUT,
    )
    alice = tls_market(pki.alice)
    cart_id = alice.CreateCart(
        pb.CreateCartRequest(consumer="alice"), timeout=CALL_TIMEOUT
    ).cart_id
    added = alice.AddToCart(
        pb.AddToCartRequest(cart_id=cart_id, product_id="tea", quantity=1),
        timeout=CALL_TIMEOUT,
    ).added
    assert added == 1
    return alice, cart_id


def _cart_calls(cart_id: str):
    return [
        ("AddToCart", pb.AddToCartRequest(cart_id=cart_id, product_id="tea", quantity=1)),
        (
            "RemoveFromCart",
            pb.RemoveFromCartRequest(cart_id=cart_id, product_id="tea", quantity=1),
        ),
        ("PlaceOrder", pb.PlaceOrderRequest(cart_id=cart_id)),
    ]


@pytest.mark.parametrize("intruder", ["bob", "alice_again"])
def test_open_cart_of_other_certificate_is_not_found(pki, tls_market, intruder):
    alice, cart_id = _cart_with_tea(pki, tls_market)
    other = tls_market(getattr(pki, intruder))
    unknown_id = "0" * 32

    for method, request in _cart_calls(cart_id):
        error = call_error(getattr(other, method), request)
        unknown = call_error(getattr(other, method), type(request)(**_with_id(request, unknown_id)))
        assert error.code() == grpc.StatusCode.NOT_FOUND, method
        assert error.details() == unknown.details(), method

    order = alice.PlaceOrder(pb.PlaceOrderRequest(cart_id=cart_id), timeout=CALL_TIMEOUT)
    assert [(line.product.product_id, line.quantity) for line in order.lines] == [("tea", 1)]


def test_ordered_cart_of_other_certificate_is_not_found(pki, tls_market):
    alice, cart_id = _cart_with_tea(pki, tls_market)
    alice.PlaceOrder(pb.PlaceOrderRequest(cart_id=cart_id), timeout=CALL_TIMEOUT)
    bob = tls_market(pki.bob)

    by_owner = call_error(alice.PlaceOrder, pb.PlaceOrderRequest(cart_id=cart_id))
    by_other = call_error(bob.PlaceOrder, pb.PlaceOrderRequest(cart_id=cart_id))

    assert by_owner.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert by_other.code() == grpc.StatusCode.NOT_FOUND
    assert "ordered" not in by_other.details()


def _with_id(request, cart_id: str) -> dict:
    fields = {field.name: value for field, value in request.ListFields()}
    fields["cart_id"] = cart_id
    return fields


def test_top_over_mutual_tls(pki, start_server):
    server = start_server(*mutual_tls_flags(pki))
    command = [
        str(BIN / "marketplace-top"),
        "--server",
        server.address,
        "--once",
        *client_flags(pki, pki.clients),
    ]

    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT)

    assert result.returncode == 0, result.stderr
    assert f"market {server.address}" in result.stdout


def test_shelf_of_other_certificate_is_not_found(pki, tls_market):
    farm = tls_market(pki.farm)
    producer_id = farm.RegisterProducer(
        pb.RegisterProducerRequest(name="farm-a"), timeout=CALL_TIMEOUT
    ).producer_id
    product = pb.Product(product_id="tea", kind="Tea", name="Linden")
    intruder = tls_market(pki.bob)

    publish = call_error(
        intruder.Publish,
        pb.PublishRequest(producer_id=producer_id, product=product, quantity=1),
    )
    withdraw = call_error(
        intruder.Withdraw,
        pb.WithdrawRequest(producer_id=producer_id, product_id="tea", quantity=1),
    )
    unknown = call_error(
        intruder.Publish,
        pb.PublishRequest(producer_id="0" * 32, product=product, quantity=1),
    )

    assert publish.code() == grpc.StatusCode.NOT_FOUND
    assert withdraw.code() == grpc.StatusCode.NOT_FOUND
    assert publish.details() == unknown.details()
    published = farm.Publish(
        pb.PublishRequest(producer_id=producer_id, product=product, quantity=1),
        timeout=CALL_TIMEOUT,
    )
    assert published.published == 1
