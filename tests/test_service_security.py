"""Security of the gRPC service on loopback: bearer tokens, TLS, mutual TLS, and both together.

What it checks, against a real GuardServer (BackgroundServer on 127.0.0.1, any free port, the
session's demo engine shared so no model is reloaded):

- Bearer tokens: Classify/ListModels/ClassifyStream/reflection without a valid
  ``authorization: Bearer <token>`` get UNAUTHENTICATED (no token, wrong token, wrong scheme);
  either configured token works; health checks are exempt; denials are counted in
  ``guardedge_requests_total{code="UNAUTHENTICATED"}``. Tokens from ``token_file`` (comments and
  blank lines skipped) and ``GUARDEDGE_TOKENS``; ConfigError for a missing token file or a short
  token.
- TLS: a client trusting the CA works (by IP SAN and by ``server_name`` override); plaintext,
  a client trusting another CA, and a wrong server name fail with UNAVAILABLE.
- Mutual TLS: a CA-signed client certificate works; no certificate or one from a rogue CA fails
  the handshake (UNAVAILABLE). ConfigError for inconsistent or missing TLS files.
- TLS + token: both are required.

Certificates (EC P-256) are made here with ``cryptography`` (the ``test`` extra), once per module.
Failing clients use ``attempts=2`` (the fewest the client's retry policy allows: gRPC rejects
maxAttempts=1) so handshake failures come back in well under a second. Every call has a deadline.

    .venv/bin/pytest tests/test_service_security.py -q
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from guardedge.runtime.service.background import BackgroundServer
from guardedge.runtime.service.client import GuardClient, GuardRpcError, Tls, request_from_dict
from guardedge.runtime.service.config import ConfigError, load_config
from guardedge.runtime.service.server import SERVICE_NAME
from guardedge.v1 import guard_pb2_grpc

TIMEOUT = 30.0
FAST_FAIL = 2  # client attempts for calls expected to fail: gRPC's retry policy needs >= 2
REQUEST = {"messages": [{"role": "user", "content": "How do I bake sourdough bread?"}]}
TOKEN_A = "tok-A-0123456789abcdef"
TOKEN_B = "tok-B-fedcba9876543210"
WRONG_TOKEN = "tok-X-not-a-configured-token"
BASE = {"port": 0, "metrics_port": -1, "host": "127.0.0.1", "grace_seconds": 2.0}


# -- helpers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(engine, **settings):
    """A server with BASE + ``settings`` on a background thread; always stopped."""
    with BackgroundServer(load_config({**BASE, **settings}), engines={"demo": engine}, ready_timeout=60.0) as server:
        yield server


def assert_verdict(response) -> None:
    assert response.verdict in (1, 2, 3), response  # VERDICT_SAFE, VERDICT_UNSAFE, VERDICT_UNPARSEABLE


def classify_fails(target: str, code: grpc.StatusCode, **client_kwargs) -> GuardRpcError:
    """Classify through a fresh client; assert it fails with ``code`` and return the error."""
    with GuardClient(target, timeout=TIMEOUT, **client_kwargs) as client:
        with pytest.raises(GuardRpcError) as caught:
            client.classify(REQUEST, timeout=TIMEOUT)
    assert caught.value.code == code, caught.value
    return caught.value


def classify_ok(target: str, **client_kwargs) -> None:
    with GuardClient(target, timeout=TIMEOUT, **client_kwargs) as client:
        assert_verdict(client.classify(REQUEST, timeout=TIMEOUT))


def unauthenticated(server, method: str) -> float:
    value = server.server.metrics.registry.get_sample_value(
        "guardedge_requests_total", {"method": method, "code": "UNAUTHENTICATED"})
    return value or 0.0


def reflection_services(target: str, metadata=()) -> list[str]:
    """list_services through the raw reflection stub (no GuardClient involved)."""
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT, metadata=metadata)
        return [s.name for r in responses for s in r.list_services_response.service]


# -- certificates -------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path, cert: x509.Certificate, key) -> tuple[str, str]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _cert(subject: str, key, issuer: x509.Certificate | None, issuer_key, *, ca=False, server=False, client=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key if issuer else key, hashes.SHA256())


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server cert (localhost, 127.0.0.1) and a client cert it signed; a rogue CA and its client cert."""
    root = tmp_path_factory.mktemp("pki")
    out = {}
    for prefix in ("", "rogue_"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert(f"guardedge test {prefix or 'good_'}ca", ca_key, None, None, ca=True)
        out[f"{prefix}ca"], _ = _write(root / f"{prefix}ca", ca, ca_key)
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _cert(f"{prefix}client", client_key, ca, ca_key, client=True)
        out[f"{prefix}client_cert"], out[f"{prefix}client_key"] = _write(root / f"{prefix}client", client, client_key)
        if not prefix:
            server_key = ec.generate_private_key(ec.SECP256R1())
            server = _cert("localhost", server_key, ca, ca_key, server=True)
            out["server_cert"], out["server_key"] = _write(root / "server", server, server_key)
    return out


def tls_settings(certs, mutual: bool = False) -> dict:
    settings = {"tls_cert": certs["server_cert"], "tls_key": certs["server_key"]}
    return {**settings, "tls_client_ca": certs["ca"]} if mutual else settings


def client_tls(certs, *, ca="ca", client="", server_name="") -> Tls:
    """Client TLS trusting ``certs[ca]``; ``client`` "" (no certificate), "client_" or "rogue_client_"."""
    cert, key = (certs[f"{client}cert"], certs[f"{client}key"]) if client else ("", "")
    return Tls(ca=certs[ca], cert=cert, key=key, server_name=server_name)


# -- bearer tokens ------------------------------------------------------------------------------


def test_token_is_required_for_classify(demo_engine):
    with running(demo_engine, tokens=(TOKEN_A, TOKEN_B)) as server:
        target = server.address
        classify_fails(target, grpc.StatusCode.UNAUTHENTICATED)
        classify_fails(target, grpc.StatusCode.UNAUTHENTICATED, token=WRONG_TOKEN)
        classify_ok(target, token=TOKEN_A)
        classify_ok(target, token=TOKEN_B)  # any configured token, not just the first


def test_token_scheme_must_be_bearer(demo_engine):
    with running(demo_engine, tokens=(TOKEN_A, TOKEN_B)) as server, grpc.insecure_channel(server.address) as channel:
        stub = guard_pb2_grpc.GuardServiceStub(channel)
        request = request_from_dict(REQUEST)
        for value in (f"Basic {TOKEN_B}", TOKEN_B, f"Bearer{TOKEN_B}", f"Bearer {TOKEN_B}x", "Bearer ", ""):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Classify(request, timeout=TIMEOUT, metadata=(("authorization", value),))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, value
        for value in (f"Bearer {TOKEN_B}", f"bearer {TOKEN_B}"):  # the scheme is case-insensitive (RFC 6750/7235)
            assert_verdict(stub.Classify(request, timeout=TIMEOUT, metadata=(("authorization", value),)))


def test_other_methods_need_a_token_and_health_does_not(demo_engine):
    with running(demo_engine, tokens=(TOKEN_A, TOKEN_B)) as server:
        target = server.address
        with GuardClient(target, timeout=TIMEOUT) as anonymous:
            with pytest.raises(GuardRpcError) as caught:
                anonymous.list_models(timeout=TIMEOUT)
            assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(GuardRpcError) as caught:
                list(anonymous.classify_stream([{**REQUEST, "request_id": "r1"}], timeout=TIMEOUT))
            assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
            # Health is exempt: load balancers probe without credentials.
            assert anonymous.health("", timeout=TIMEOUT) == "SERVING"
            assert anonymous.health(SERVICE_NAME, timeout=TIMEOUT) == "SERVING"
        with pytest.raises(grpc.RpcError) as caught:
            reflection_services(target)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # The same calls with a token succeed (the denials above are auth, not broken methods).
        with GuardClient(target, token=TOKEN_A, timeout=TIMEOUT) as client:
            assert [m.name for m in client.list_models(timeout=TIMEOUT).models] == ["demo"]
            streamed = list(client.classify_stream([{**REQUEST, "request_id": "r1"}], timeout=TIMEOUT))
            assert [r.request_id for r in streamed] == ["r1"] and not streamed[0].HasField("error")
            assert_verdict(streamed[0])
        assert SERVICE_NAME in reflection_services(target, metadata=(("authorization", f"Bearer {TOKEN_A}"),))


def test_denied_calls_are_counted(demo_engine):
    with running(demo_engine, tokens=(TOKEN_A, TOKEN_B)) as server:
        target = server.address
        assert unauthenticated(server, "Classify") == 0
        classify_fails(target, grpc.StatusCode.UNAUTHENTICATED)
        classify_fails(target, grpc.StatusCode.UNAUTHENTICATED, token=WRONG_TOKEN)
        with GuardClient(target, timeout=TIMEOUT) as anonymous, pytest.raises(GuardRpcError):
            anonymous.list_models(timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError):
            reflection_services(target)
        classify_ok(target, token=TOKEN_A)
        assert unauthenticated(server, "Classify") == 2
        assert unauthenticated(server, "ListModels") == 1
        assert unauthenticated(server, "ServerReflectionInfo") == 1
        registry = server.server.metrics.registry
        assert registry.get_sample_value("guardedge_requests_total", {"method": "Classify", "code": "OK"}) == 1


def test_tokens_from_token_file(demo_engine, tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text(f"# guardedge bearer tokens, one per line\n{TOKEN_A}\n\n   {TOKEN_B}  \n")
    config = load_config({**BASE, "token_file": str(path)})
    assert config.tokens == (TOKEN_A, TOKEN_B) and config.auth_enabled
    with running(demo_engine, token_file=str(path)) as server:
        classify_fails(server.address, grpc.StatusCode.UNAUTHENTICATED)
        classify_fails(server.address, grpc.StatusCode.UNAUTHENTICATED, token="# guardedge bearer tokens, one per line")
        classify_ok(server.address, token=TOKEN_B)


def test_tokens_from_environment_and_flags_combine_with_token_file(tmp_path):
    config = load_config(BASE, env={"GUARDEDGE_TOKENS": f"{TOKEN_A}, {TOKEN_B}"})
    assert config.tokens == (TOKEN_A, TOKEN_B)
    path = tmp_path / "tokens.txt"
    path.write_text(f"{TOKEN_B}\n")
    assert load_config({**BASE, "tokens": (TOKEN_A,), "token_file": str(path)}).tokens == (TOKEN_A, TOKEN_B)
    assert not load_config(BASE, env={}).auth_enabled


@pytest.mark.parametrize("case", ["missing_file", "short_flag", "short_env", "short_in_file", "only_comments", "space_inside"])
def test_token_config_errors(tmp_path, case):
    short = "short-secret"  # 12 characters
    path = tmp_path / "tokens.txt"
    flags, env, setting = dict(BASE), {}, "tokens"
    if case == "missing_file":
        flags["token_file"], setting = str(tmp_path / "absent.txt"), "token_file"
    elif case == "short_flag":
        flags["tokens"] = (TOKEN_A, short)
    elif case == "short_env":
        env["GUARDEDGE_TOKENS"] = f"{TOKEN_A},{short}"
    elif case == "short_in_file":
        path.write_text(f"{TOKEN_A}\n{short}\n")
        flags["token_file"] = str(path)
    elif case == "only_comments":
        path.write_text("# nothing here\n\n")
        flags["token_file"], setting = str(path), "token_file"
    else:
        path.write_text("this token has spaces in it\n")
        flags["token_file"] = str(path)
    with pytest.raises(ConfigError, match=setting) as caught:
        load_config(flags, env=env)
    for secret in (TOKEN_A, short, "this token has spaces in it"):
        assert secret not in str(caught.value)  # a secret (even a bad one) is never echoed


# -- TLS ----------------------------------------------------------------------------------------


def test_tls(demo_engine, certs):
    with running(demo_engine, **tls_settings(certs)) as server:
        by_ip, by_name = f"127.0.0.1:{server.port}", f"localhost:{server.port}"
        classify_ok(by_ip, tls=client_tls(certs))  # IP SAN
        classify_ok(by_name, tls=client_tls(certs))  # DNS SAN
        classify_ok(by_ip, tls=client_tls(certs, server_name="localhost"))  # name override
        classify_fails(by_ip, grpc.StatusCode.UNAVAILABLE, attempts=FAST_FAIL)  # plaintext
        classify_fails(by_ip, grpc.StatusCode.UNAVAILABLE, tls=client_tls(certs, ca="rogue_ca"), attempts=FAST_FAIL)
        classify_fails(by_ip, grpc.StatusCode.UNAVAILABLE, tls=client_tls(certs, server_name="other.example"),
                       attempts=FAST_FAIL)


def test_mutual_tls(demo_engine, certs):
    with running(demo_engine, **tls_settings(certs, mutual=True)) as server:
        target = f"127.0.0.1:{server.port}"
        classify_ok(target, tls=client_tls(certs, client="client_"))
        classify_fails(target, grpc.StatusCode.UNAVAILABLE, tls=client_tls(certs), attempts=FAST_FAIL)
        classify_fails(target, grpc.StatusCode.UNAVAILABLE, tls=client_tls(certs, client="rogue_client_"),
                       attempts=FAST_FAIL)
        classify_fails(target, grpc.StatusCode.UNAVAILABLE, attempts=FAST_FAIL)  # plaintext


@pytest.mark.parametrize("case, setting", [
    ("client_ca_without_cert", "tls_client_ca"),
    ("cert_without_key", "tls_key"),
    ("key_without_cert", "tls_cert"),
    ("missing_cert", "tls_cert"),
    ("missing_key", "tls_key"),
    ("missing_client_ca", "tls_client_ca"),
])
def test_tls_config_errors(certs, tmp_path, case, setting):
    absent = str(tmp_path / "absent.pem")
    flags = {
        "client_ca_without_cert": {"tls_client_ca": certs["ca"]},
        "cert_without_key": {"tls_cert": certs["server_cert"]},
        "key_without_cert": {"tls_key": certs["server_key"]},
        "missing_cert": {"tls_cert": absent, "tls_key": certs["server_key"]},
        "missing_key": {"tls_cert": certs["server_cert"], "tls_key": absent},
        "missing_client_ca": {**tls_settings(certs), "tls_client_ca": absent},
    }[case]
    with pytest.raises(ConfigError, match=setting) as caught:
        load_config({**BASE, **flags})
    if case.startswith("missing"):
        assert f"{setting}: {absent} does not exist" in str(caught.value)


# -- TLS and tokens together --------------------------------------------------------------------


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_tls_and_token_are_both_required(demo_engine, certs, mutual):
    with running(demo_engine, tokens=(TOKEN_A, TOKEN_B), **tls_settings(certs, mutual)) as server:
        target = f"127.0.0.1:{server.port}"
        tls = client_tls(certs, client="client_" if mutual else "")
        classify_ok(target, tls=tls, token=TOKEN_A)
        classify_fails(target, grpc.StatusCode.UNAUTHENTICATED, tls=tls)
        classify_fails(target, grpc.StatusCode.UNAUTHENTICATED, tls=tls, token=WRONG_TOKEN)
        classify_fails(target, grpc.StatusCode.UNAVAILABLE, token=TOKEN_A, attempts=FAST_FAIL)  # plaintext
        if mutual:
            classify_fails(target, grpc.StatusCode.UNAVAILABLE, tls=client_tls(certs), token=TOKEN_A, attempts=FAST_FAIL)
        with GuardClient(target, tls=tls, timeout=TIMEOUT) as anonymous:
            assert anonymous.health("", timeout=TIMEOUT) == "SERVING"  # still exempt over TLS
        assert unauthenticated(server, "Classify") == 2


# -- the HTTP API (--http-port): the gRPC port's TLS and tokens ----------------------------------


def _https_moderation(port: int, certs, client: str = "", token: str = TOKEN_A) -> int:
    import json
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=certs["ca"])
    if client:
        context.load_cert_chain(certs[f"{client}cert"], certs[f"{client}key"])
    request = urllib.request.Request(f"https://localhost:{port}/v1/moderations", method="POST",
                                     data=json.dumps({"input": "How do I bake sourdough bread?"}).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_http_api_uses_the_grpc_ports_mutual_tls_and_tokens(demo_engine, certs):
    import ssl
    import urllib.error

    with running(demo_engine, http_port=0, tokens=(TOKEN_A,), **tls_settings(certs, mutual=True)) as server:
        port = server.server.http_port
        assert _https_moderation(port, certs, client="client_") == 200
        assert _https_moderation(port, certs, client="client_", token=WRONG_TOKEN) == 401
        for client in ("", "rogue_client_"):  # no client certificate, or one the CA did not sign
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                _https_moderation(port, certs, client=client)


def test_http_port_settings_are_checked():
    with pytest.raises(ConfigError, match="http_port: 70000"):
        load_config({**BASE, "http_port": 70000})
    with pytest.raises(ConfigError, match="give the HTTP API its own port"):
        load_config({**BASE, "port": 50123, "http_port": 50123})
    assert load_config(BASE).http_port == -1  # off unless asked for
