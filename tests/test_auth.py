"""Identity: real signed JWTs (HS256, and RS256 from a JWKS served over HTTP), the trusted
header, a host's user loader, and stream ownership."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from app import create_app
from rill import Rill
from tests.conftest import TEST_CONFIG, FakeUpstream, _free_port

SECRET = "test-secret-0123456789abcdef0123456789"
USER = {"messages": [{"role": "user", "content": "Hi"}]}
DONE = ("done", {"finish_reason": "stop", "usage": None})


def token(key=SECRET, alg="HS256", headers=None, **claims) -> str:
    # An hour: tokens in parametrize lists are made at collection, and the whole suite runs
    # before some of them are used (at five minutes they expired mid-run in CI).
    body = {"sub": "alice", "exp": int(time.time()) + 3600, "scope": "chat", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg,
                      headers=headers)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def jwt_app(**config) -> tuple[Flask, FakeUpstream]:
    app = create_app({**TEST_CONFIG, "RILL_AUTH": "jwt", "RILL_JWT_SECRET": SECRET,
                      "RILL_JWT_AUDIENCE": "rill", "RILL_JWT_SCOPE": "chat", **config})
    fake = FakeUpstream()
    app.extensions["rill"].upstream = fake
    return app, fake


def post(app: Flask, fake: FakeUpstream, headers: dict[str, str]):
    fake.enqueue([("delta", {"content": "x"}), DONE])
    response = app.test_client().post("/api/chat", json=USER, headers=headers)
    response.get_data()
    return response


def test_valid_token_streams_as_its_subject() -> None:
    app, fake = jwt_app()
    response = post(app, fake, bearer(token(aud="rill")))
    assert response.status_code == 200
    stream_id = json.loads(response.get_data().split(b"data: ")[1].split(b"\n")[0])["stream_id"]
    assert app.extensions["rill"].hub.owner(stream_id) == "alice"


@pytest.mark.parametrize(
    ("headers", "status", "challenge"),
    [
        ({}, 401, 'Bearer realm="rill"'),
        ({"Authorization": "Basic YWxpY2U6cHc="}, 401, 'Bearer realm="rill"'),
        (bearer(token(aud="rill", exp=int(time.time()) - 120)), 401,
         'Bearer realm="rill", error="invalid_token", error_description="The token has '
         'expired."'),
        (bearer(token(aud="other")), 401,
         'Bearer realm="rill", error="invalid_token", error_description="The token is not '
         'valid: wrong audience."'),
        (bearer(token(key="another-secret-0123456789abcdef01", aud="rill")), 401,
         'Bearer realm="rill", error="invalid_token", error_description="The token is not '
         'valid: bad signature."'),
        (bearer(jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600, "aud": "rill",
                            "scope": "chat"}, None, algorithm="none")), 401,
         'Bearer realm="rill", error="invalid_token", error_description="The token is not '
         'valid: algorithm not allowed."'),
        (bearer(token(aud="rill", exp=None)), 401,
         'Bearer realm="rill", error="invalid_token", error_description="The token is not '
         'valid: a required claim is missing."'),
        (bearer("not.a.jwt"), 401,
         'Bearer realm="rill", error="invalid_token", error_description="The token is not '
         'valid: malformed."'),
        (bearer(token(aud="rill", scope="read")), 403,
         'Bearer realm="rill", error="insufficient_scope", error_description="This token '
         'lacks the scope this API needs.", scope="chat"'),
    ],
)
def test_bad_credentials_get_the_exact_status_and_challenge(headers, status,
                                                            challenge) -> None:
    app, fake = jwt_app()
    response = post(app, fake, headers)
    assert response.status_code == status
    assert response.headers["WWW-Authenticate"] == challenge
    assert response.json["error"]["code"] in ("unauthorized", "insufficient_scope")
    assert SECRET not in response.get_data(as_text=True)
    assert fake.requests == [], "nothing reached the upstream"


def test_streams_belong_to_their_user_and_others_get_404() -> None:
    app, fake = jwt_app()
    alice, bob = bearer(token(aud="rill")), bearer(token(aud="rill", sub="bob"))
    body = post(app, fake, alice).get_data()
    stream_id = json.loads(body.split(b"data: ")[1].split(b"\n")[0])["stream_id"]
    client = app.test_client()
    for method, path in (("get", "events"), ("post", "cancel")):
        response = getattr(client, method)(f"/api/chat/{stream_id}/{path}", headers=bob)
        assert (response.status_code, response.json["error"]["code"]) == (404,
                                                                          "stream_not_found")
    replay = client.get(f"/api/chat/{stream_id}/events", headers=alice)
    assert replay.status_code == 200
    assert replay.get_data() == body


@pytest.fixture
def jwks_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request

    (tmp_path / "jwks.json").write_text('{"keys": []}')
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/jwks.json", timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/jwks.json", tmp_path / "jwks.json"
    process.terminate()
    process.wait()


def publish(path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    jwks = []
    for kid, key in keys.items():
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwks.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
    path.write_text(json.dumps({"keys": jwks}))


def test_jwks_keys_verify_and_an_unknown_kid_refetches_the_set(jwks_server) -> None:
    url, path = jwks_server
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    second = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    publish(path, {"k1": first})
    app, fake = jwt_app(RILL_JWT_SECRET="", RILL_JWT_JWKS_URL=url,
                        RILL_JWT_JWKS_COOLDOWN_SECONDS=0)
    ok = token(key=first, alg="RS256", headers={"kid": "k1"}, aud="rill")
    assert post(app, fake, bearer(ok)).status_code == 200
    rotated = token(key=second, alg="RS256", headers={"kid": "k2"}, aud="rill")
    unpublished = post(app, fake, bearer(rotated))
    assert unpublished.status_code == 401, "k2 is not published yet"
    assert unpublished.headers["WWW-Authenticate"] == (
        'Bearer realm="rill", error="invalid_token", error_description="The token is not '
        'valid: unknown signing key."')
    publish(path, {"k1": first, "k2": second})
    assert post(app, fake, bearer(rotated)).status_code == 200, "refetched on unknown kid"
    forged = token(key=second, alg="RS256", headers={"kid": "k1"}, aud="rill")
    assert post(app, fake, bearer(forged)).status_code == 401
    hs = token(key=SECRET, alg="HS256", headers={"kid": "k1"}, aud="rill")
    assert post(app, fake, bearer(hs)).status_code == 401, "no algorithm confusion"


def test_header_identity_is_believed_only_from_trusted_proxies() -> None:
    app = create_app({**TEST_CONFIG, "RILL_AUTH": "header"})
    fake = FakeUpstream()
    app.extensions["rill"].upstream = fake
    client = app.test_client()
    fake.enqueue([DONE])
    trusted = client.post("/api/chat", json=USER, headers={"X-Forwarded-User": "carol"})
    assert trusted.status_code == 200
    trusted.get_data()
    spoofed = client.post("/api/chat", json=USER, headers={"X-Forwarded-User": "carol"},
                          environ_base={"REMOTE_ADDR": "203.0.113.5"})
    assert spoofed.status_code == 401
    assert client.post("/api/chat", json=USER).status_code == 401


def test_a_host_app_user_loader_is_the_identity() -> None:
    from flask import request as flask_request

    host = Flask("host")
    host.config.update({**TEST_CONFIG})
    Rill(host, user_loader=lambda: flask_request.headers.get("X-Host-User"))
    fake = FakeUpstream()
    host.extensions["rill"].upstream = fake
    client = host.test_client()
    assert client.post("/api/chat", json=USER).status_code == 401
    fake.enqueue([DONE])
    response = client.post("/api/chat", json=USER, headers={"X-Host-User": "dave"})
    assert response.status_code == 200
    response.get_data()


def test_per_user_overrides_raise_limits_for_some_users() -> None:
    app = create_app({**TEST_CONFIG, "RILL_AUTH": "header", "RILL_RATELIMIT_ENABLED": True,
                      "RILL_RATE_LIMIT": "1/minute", "RILL_MAX_STREAMS_PER_CLIENT": 1,
                      "RILL_USER_LIMITS": {"vip": {"rate_limit": "3/minute",
                                                   "max_streams": 2}}})
    fake = FakeUpstream()
    app.extensions["rill"].upstream = fake
    client = app.test_client()

    def post(user: str) -> int:
        fake.enqueue([DONE])
        response = client.post("/api/chat", json=USER, headers={"X-Forwarded-User": user})
        response.get_data()
        return response.status_code

    assert [post("vip") for _ in range(4)] == [200, 200, 200, 429]
    assert [post("pleb") for _ in range(2)] == [200, 429]
    caps = app.extensions["rill"].caps
    held = [caps.acquire("user:vip", f"s{i}", cap=2) for i in range(2)]
    with pytest.raises(Exception, match="2 answers"):
        caps.acquire("user:vip", "s3", cap=2)
    for slot in held:
        slot.release()


def test_a_pem_public_key_verifies_es256_tokens() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    app, fake = jwt_app(RILL_JWT_SECRET="", RILL_JWT_PUBLIC_KEY=pem.decode())
    good = token(key=key, alg="ES256", aud="rill")
    assert post(app, fake, bearer(good)).status_code == 200
    other = token(key=ec.generate_private_key(ec.SECP256R1()), alg="ES256", aud="rill")
    assert post(app, fake, bearer(other)).status_code == 401
