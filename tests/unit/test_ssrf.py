"""SSRF rules for media URLs: what is refused, what the allow-list and dev mode
allow, redirects, DNS rebinding and TLS to a pinned address.

DNS is faked (``socket.getaddrinfo`` patched); "public" hosts are never
connected to: either only the guard is asked, or ``transport.open_socket`` is
patched so that a connection to the public address lands on the loopback media
server, as if it were that host.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from moderation.errors import ConfigError, InvalidInput, MediaFetchError, MediaUrlRefused
from moderation.media import transport
from moderation.media.fetch import MAX_REDIRECTS, MediaFetcher
from moderation.media.url_guard import Address, MediaUrlPolicy, parse_media_url, why_refused

PUBLIC = "93.184.216.34"


@dataclass
class FakeDns:
    """name -> addresses, or a callable giving them (a different answer each time)."""

    table: dict[str, Any] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def getaddrinfo(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        self.asked.append(host)
        answer = self.table.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = answer() if callable(answer) else answer
        infos = []
        for a in addresses:
            if ":" in a:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)))
        return infos


@pytest.fixture(autouse=True)
def dns(monkeypatch) -> FakeDns:
    fake = FakeDns()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    return fake


@pytest.fixture
def connections(monkeypatch, media_server) -> list[str]:
    """Every address the fetcher connects to; PUBLIC is served by the media server."""
    made: list[str] = []
    real_open = transport.open_socket

    def open_socket(address: Address, timeout: float) -> socket.socket:
        made.append(str(address.ip))
        if str(address.ip) == PUBLIC:
            address = Address(
                ipaddress.ip_address("127.0.0.1"), socket.AF_INET, ("127.0.0.1", media_server.port)
            )
        return real_open(address, timeout)

    monkeypatch.setattr(transport, "open_socket", open_socket)
    return made


def refusal(url: str, policy: MediaUrlPolicy | None = None) -> str:
    with pytest.raises(MediaUrlRefused) as info:
        (policy or MediaUrlPolicy()).resolve(parse_media_url(url))
    return str(info.value)


def accepted(url: str, policy: MediaUrlPolicy | None = None) -> list[str]:
    return [str(a.ip) for a in (policy or MediaUrlPolicy()).resolve(parse_media_url(url))]


def fetcher(**kw: Any) -> MediaFetcher:
    args: dict[str, Any] = dict(max_bytes=100_000, connect_timeout_s=1.0, read_timeout_s=1.0, retries=0)
    args.update(kw)
    return MediaFetcher(**args)


# -- address classes --------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("127.255.0.9", "a loopback address"),
        ("[::1]", "::1 is a loopback address"),
        ("10.0.0.5", "10.0.0.5 is a private address"),
        ("172.16.3.4", "a private address"),
        ("172.31.255.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("[fc00::1]", "a private address"),
        ("[fd12:3456::1]", "a private address"),
        ("169.254.1.1", "a link-local address"),
        ("[fe80::1]", "a link-local address"),
        ("[fe80::1%25eth0]", "a link-local address"),
        ("100.64.0.1", "a carrier-grade NAT (shared) address"),
        ("100.127.255.254", "a carrier-grade NAT (shared) address"),
        ("0.0.0.0", "an unspecified address"),
        ("[::]", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("[ff02::1]", "a multicast address"),
        ("255.255.255.255", "a broadcast address"),
        ("240.0.0.1", "a reserved address"),
        ("192.0.2.1", "non-public"),
        ("198.18.0.1", "non-public"),
        ("[2001:db8::1]", "non-public"),
        ("[::ffff:10.0.0.5]", "an IPv6 form of 10.0.0.5, a private address"),
        ("[::ffff:169.254.169.254]", "an IPv6 form of 169.254.169.254, a cloud metadata address"),
        ("[64:ff9b::a00:5]", "an IPv6 form of 10.0.0.5, a private address"),
        ("[2002:a00:5::1]", "an IPv6 form of 10.0.0.5, a private address"),
        ("169.254.169.254", "169.254.169.254 is a cloud metadata address"),
        ("[fd00:ec2::254]", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("168.63.129.16", "a cloud metadata address"),
    ],
)
def test_each_address_class_is_refused(host, why):
    assert why in refusal(f"http://{host}/a.jpg")


@pytest.mark.parametrize(
    "host", [PUBLIC, "8.8.8.8", "[2606:4700::1111]", "[::ffff:8.8.8.8]", "[64:ff9b::808:808]", "1.1.1.1:8443"]
)
def test_public_addresses_are_accepted_without_connecting(host):
    assert len(accepted(f"https://{host}/a.jpg")) == 1


# -- odd spellings ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("2130706433", "2130706433 is 127.0.0.1, a loopback address"),
        ("0177.0.0.1", "0177.0.0.1 is 127.0.0.1, a loopback"),
        ("0x7f.0.0.1", "is 127.0.0.1"),
        ("0x7f000001", "is 127.0.0.1"),
        ("017700000001", "is 127.0.0.1"),
        ("127.1", "127.1 is 127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1 is a loopback"),
        ("0", "0 is 0.0.0.0, an unspecified address"),
        ("10.1", "10.1 is 10.0.0.1, a private address"),
        ("0xa9.0xfe.0xa9.0xfe", "is 169.254.169.254, a cloud metadata address"),
        ("[::ffff:127.0.0.1]", "an IPv6 form of 127.0.0.1, a loopback address"),
        ("[::ffff:7f00:1]", "an IPv6 form of 127.0.0.1"),
        ("[0:0:0:0:0:ffff:127.0.0.1]", "an IPv6 form of 127.0.0.1"),
        ("[::127.0.0.1]", "a reserved address"),
        ("１２７.０.０.１", "is 127.0.0.1, a loopback address"),
    ],
)
def test_odd_spellings_are_parsed_and_refused(dns, host, shown):
    assert shown in refusal(f"http://{host}:8080/a.jpg")
    assert dns.asked == []  # never sent to DNS


@pytest.mark.parametrize(
    "host", ["999.1.1.1", "1.2.3.4.5", "example.0x10", "media.123", "%31%32%37.0.0.1", "a..b", "-a.com"]
)
def test_malformed_hosts_are_refused(dns, host):
    assert "host" in refusal(f"http://{host}/a.jpg")
    assert dns.asked == []


# -- schemes and credentials ------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x.jpg",
        "gopher://example.com:70/_GET",
        "dict://example.com:11211/stat",
        "ldap://example.com/",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "x.jpg",
        "//example.com/x.jpg",
    ],
)
def test_only_http_and_https_are_fetched(url):
    with pytest.raises(MediaUrlRefused, match="scheme") as info:
        fetcher(allow_files=True, allow_loopback=True).fetch(url)
    assert info.value.code == "media_url_refused"


def test_file_urls_are_refused_without_dev_mode(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"local")
    with pytest.raises(MediaUrlRefused, match="DEV_MODE=true"):
        fetcher().fetch(path.as_uri())
    assert fetcher(allow_files=True).fetch(path.as_uri()) == b"local"


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pass@example.com/a.jpg",
        "http://user@example.com/a.jpg",
        "http://@example.com/a.jpg",
        "https://example.com:443@127.0.0.1/a.jpg",
        "http://example.com@10.0.0.5/a.jpg",
    ],
)
def test_credentials_in_urls_are_refused(url):
    with pytest.raises(MediaUrlRefused, match=r"credentials \(user:password@\)"):
        fetcher().fetch(url)


@pytest.mark.parametrize(
    "url", ["http://exa\nmple.com/", "http://example.com/a b", "http://example.com\\@10.0.0.5/"]
)
def test_control_characters_and_backslashes_are_refused(url):
    with pytest.raises(MediaUrlRefused, match="control characters"):
        fetcher().fetch(url)


# -- names: every address is checked ---------------------------------------------
def test_a_name_resolving_to_a_private_address_is_refused(dns):
    dns.table["evil.example"] = ["10.0.0.5"]
    assert refusal("https://evil.example/a.jpg") == "evil.example resolves to 10.0.0.5, a private address"


def test_every_address_of_a_name_is_checked(dns):
    dns.table["mixed.example"] = [PUBLIC, "2606:4700::1111", "127.0.0.1"]
    assert "mixed.example resolves to 127.0.0.1, a loopback address" in refusal("http://mixed.example/")
    dns.table["mixed6.example"] = [PUBLIC, "::ffff:192.168.0.1"]
    assert "an IPv6 form of 192.168.0.1" in refusal("http://mixed6.example/")


def test_a_public_name_is_accepted(dns):
    dns.table["cdn.example"] = [PUBLIC, "2606:4700::1111"]
    assert accepted("https://CDN.Example./a.jpg") == [PUBLIC, "2606:4700::1111"]


@pytest.mark.parametrize(
    "host", ["metadata.google.internal", "METADATA.GOOGLE.INTERNAL.", "metadata", "instance-data"]
)
def test_metadata_names_are_refused_without_a_lookup(dns, host):
    assert "a cloud metadata service" in refusal(f"http://{host}/computeMetadata/v1/")
    assert dns.asked == []


def test_a_name_that_does_not_resolve_is_a_fetch_error(dns):
    with pytest.raises(MediaFetchError, match="does not resolve") as info:
        fetcher().fetch("http://nowhere.example/a.jpg")
    assert info.value.code == "media_fetch_failed"


# -- allow-list and dev mode --------------------------------------------------------
def test_an_allowed_name_may_resolve_anywhere_but_to_metadata(dns):
    policy = MediaUrlPolicy("media.internal, other.internal")
    dns.table["media.internal"] = ["10.1.2.3", "127.0.0.1"]
    dns.table["MEDIA.internal"] = dns.table["media.internal"]
    dns.table["evil.example"] = ["10.1.2.3"]
    assert accepted("http://media.internal/a.jpg", policy) == ["10.1.2.3", "127.0.0.1"]
    assert accepted("http://MEDIA.internal./a.jpg", policy) == ["10.1.2.3", "127.0.0.1"]
    assert "private" in refusal("http://evil.example/a.jpg", policy)  # same address, other name
    assert "private" in refusal("http://10.1.2.3/a.jpg", policy)
    dns.table["media.internal"] = ["169.254.169.254"]
    assert "cloud metadata" in refusal("http://media.internal/a.jpg", policy)


def test_allowed_ips_and_networks(dns):
    policy = MediaUrlPolicy("10.20.0.0/16,192.168.1.7,fd00:1::/64")
    dns.table["store.corp"] = ["10.20.5.5"]
    assert accepted("http://10.20.5.5/a.jpg", policy) == ["10.20.5.5"]
    assert accepted("http://store.corp/a.jpg", policy) == ["10.20.5.5"]  # the address is allowed
    assert accepted("http://[::ffff:10.20.0.1]/a.jpg", policy) == ["::ffff:a14:1"]
    assert accepted("http://192.168.1.7/a.jpg", policy) == ["192.168.1.7"]
    assert accepted("http://[fd00:1::9]/a.jpg", policy) == ["fd00:1::9"]
    assert "private" in refusal("http://10.21.0.1/a.jpg", policy)
    assert "private" in refusal("http://192.168.1.8/a.jpg", policy)
    assert "loopback" in refusal("http://127.0.0.1/a.jpg", policy)


def test_metadata_addresses_stay_refused_when_their_network_is_allowed():
    policy = MediaUrlPolicy("169.254.0.0/16,100.64.0.0/10,fd00::/8", allow_loopback=True)
    assert accepted("http://169.254.10.10/", policy) == ["169.254.10.10"]
    for host in ["169.254.169.254", "100.100.100.200", "[fd00:ec2::254]", "[::ffff:169.254.169.254]"]:
        assert "cloud metadata" in refusal(f"http://{host}/", policy)


@pytest.mark.parametrize("entry", ["http://media.internal", "media.internal:8080", "10.0.0.0/33", "*.corp"])
def test_a_malformed_allow_list_entry_stops_the_worker(entry):
    with pytest.raises(ConfigError, match="MEDIA_ALLOWED_HOSTS"):
        MediaFetcher(1000, allowed_hosts=f"media.ok, {entry}")


def test_dev_mode_allows_loopback_only(dns):
    dev = MediaUrlPolicy(allow_loopback=True)
    dns.table["localhost"] = ["127.0.0.1", "::1"]
    for url in ["http://127.0.0.1:8080/", "http://[::1]/", "http://127.1/", "http://[::ffff:127.0.0.1]/"]:
        assert accepted(url, dev)
    assert accepted("http://localhost/", dev) == ["127.0.0.1", "::1"]
    for host, why in [
        ("10.0.0.5", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "carrier-grade NAT"),
    ]:
        assert why in refusal(f"http://{host}/", dev)


def test_the_loopback_media_server_needs_dev_mode_or_the_allow_list(media_server):
    url = media_server.add("/a.jpg", b"jpeg")
    with pytest.raises(MediaUrlRefused, match="media URL refused: 127.0.0.1 is a loopback address"):
        fetcher().fetch(url)
    assert media_server.requests == 0
    assert fetcher(allow_loopback=True).fetch(url) == b"jpeg"
    assert fetcher(allowed_hosts="127.0.0.0/8").fetch(url) == b"jpeg"


def test_an_allowed_name_is_fetched_with_its_host_header(dns, media_server):
    dns.table["media.test"] = ["127.0.0.1"]
    media_server.add("/a.jpg", b"jpeg")
    url = f"http://media.test:{media_server.port}/a.jpg"
    assert fetcher(allowed_hosts="media.test").fetch(url) == b"jpeg"
    assert media_server.hosts == [f"media.test:{media_server.port}"]


# -- redirects ------------------------------------------------------------------------
def redirect(location: str, status: int = 302) -> Callable[[BaseHTTPRequestHandler], None]:
    def handle(request: BaseHTTPRequestHandler) -> None:
        request.send_response(status)
        request.send_header("Location", location.replace("{port}", str(request.server.server_address[1])))
        request.send_header("Content-Length", "0")
        request.end_headers()

    return handle


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://127.0.0.1:{port}/secret", "127.0.0.1 is a loopback address"),
        ("http://localhost:{port}/secret", "localhost resolves to 127.0.0.1, a loopback address"),
        ("http://evil.example/secret", "evil.example resolves to 10.0.0.5, a private address"),
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "a cloud metadata service"),
        ("http://2130706433:{port}/secret", "is 127.0.0.1, a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/secret", "an IPv6 form of 127.0.0.1"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://cdn.example:70/_x", "scheme 'gopher' is not allowed"),
        ("http://user:pw@cdn.example:{port}/a.jpg", "credentials"),
    ],
)
def test_redirects_are_checked_at_every_hop(dns, connections, media_server, location, why):
    dns.table.update({"cdn.example": [PUBLIC], "evil.example": ["10.0.0.5"], "localhost": ["127.0.0.1"]})
    media_server.route("/go", redirect(location))
    media_server.route("/hop", redirect("/go", 301))
    media_server.add("/secret", b"internal")
    started = time.monotonic()
    with pytest.raises(MediaUrlRefused, match="redirect 2 ") as info:
        # allow_files too: a redirect must never reach a local file, dev mode or not
        fetcher(allow_files=True).fetch(f"http://cdn.example:{media_server.port}/hop")
    assert why in str(info.value)
    assert info.value.code == "media_url_refused"
    assert connections == [PUBLIC, PUBLIC]  # never the redirect's target
    assert media_server.requests == 2
    assert time.monotonic() - started < 2


def test_redirect_messages_show_no_path_or_query(dns, connections, media_server):
    dns.table["cdn.example"] = [PUBLIC]
    media_server.route("/go", redirect("http://10.9.9.9:81/private/key?token=s3cr3t"))
    with pytest.raises(MediaUrlRefused) as info:
        fetcher().fetch(f"http://cdn.example:{media_server.port}/go")
    assert str(info.value) == "redirect 1 (to http://10.9.9.9:81) refused: 10.9.9.9 is a private address"


def test_allowed_redirects_are_followed(dns, connections, media_server):
    dns.table["cdn.example"] = [PUBLIC]
    media_server.add("/a.jpg", b"jpeg")
    media_server.route("/rel", redirect("/a.jpg", 307))
    media_server.route("/abs", redirect("http://cdn.example:{port}/rel", 308))
    assert fetcher().fetch(f"http://cdn.example:{media_server.port}/abs") == b"jpeg"
    assert connections == [PUBLIC] * 3


def test_a_redirect_loop_is_cut_after_the_hop_limit(dns, connections, media_server):
    dns.table["cdn.example"] = [PUBLIC]
    media_server.route("/loop", redirect("/loop"))
    started = time.monotonic()
    with pytest.raises(MediaFetchError, match=f"redirected more than {MAX_REDIRECTS} times"):
        fetcher().fetch(f"http://cdn.example:{media_server.port}/loop")
    assert media_server.requests == MAX_REDIRECTS + 1
    assert time.monotonic() - started < 2


def test_a_redirect_without_location_is_an_error(dns, connections, media_server):
    dns.table["cdn.example"] = [PUBLIC]

    def no_location(request: BaseHTTPRequestHandler) -> None:
        request.send_response(302)
        request.send_header("Content-Length", "0")
        request.end_headers()

    media_server.route("/nowhere", no_location)
    with pytest.raises(MediaFetchError, match="HTTP 302 without a Location"):
        fetcher().fetch(f"http://cdn.example:{media_server.port}/nowhere")


# -- DNS rebinding ------------------------------------------------------------------
def rebinding(first: str, then: str) -> Callable[[], list[str]]:
    answers = iter([[first]])
    return lambda: next(answers, [then])


def test_the_connection_goes_to_the_address_that_was_checked(dns, connections, media_server):
    dns.table["rebind.example"] = rebinding(PUBLIC, "127.0.0.1")
    media_server.add("/a.jpg", b"public bytes")
    url = f"http://rebind.example:{media_server.port}/a.jpg"
    assert fetcher().fetch(url) == b"public bytes"
    assert dns.asked == ["rebind.example"]  # one lookup, no second one at connect time
    assert connections == [PUBLIC]
    assert media_server.hosts == [f"rebind.example:{media_server.port}"]


def test_a_rebinding_name_is_checked_again_on_a_redirect(dns, connections, media_server):
    dns.table["rebind.example"] = rebinding(PUBLIC, "127.0.0.1")
    media_server.route("/go", redirect("http://rebind.example:{port}/secret"))
    media_server.add("/secret", b"internal")
    with pytest.raises(MediaUrlRefused, match="rebind.example resolves to 127.0.0.1, a loopback address"):
        fetcher().fetch(f"http://rebind.example:{media_server.port}/go")
    assert connections == [PUBLIC]
    assert media_server.requests == 1


def test_a_retry_resolves_and_checks_again(dns, connections, media_server):
    dns.table["rebind.example"] = rebinding(PUBLIC, "10.0.0.5")
    media_server.route("/busy", lambda r: (r.send_response(503), r.end_headers()))
    with pytest.raises(MediaUrlRefused, match="resolves to 10.0.0.5, a private address"):
        fetcher(retries=2, retry_backoff_s=0.01).fetch(f"http://rebind.example:{media_server.port}/busy")
    assert connections == [PUBLIC]


# -- TLS to a pinned address ----------------------------------------------------------
def make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}"]
        + ["-addext", f"subjectAltName=DNS:{name}"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return key, cert


@pytest.fixture
def tls_server(tmp_path) -> Iterator[Callable[[str], tuple[int, list[str], Path]]]:
    """start(name) -> (port, SNI names seen, CA file) of an https server on 127.0.0.1
    with a certificate for ``name``."""
    servers: list[ThreadingHTTPServer] = []

    def start(name: str) -> tuple[int, list[str], Path]:
        key, cert = make_cert(tmp_path, name)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        seen: list[str] = []
        context.sni_callback = lambda sock, server_name, ctx: seen.append(server_name)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = f"tls media for {self.headers['Host']}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                sock, addr = self.socket.accept()
                return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server.server_address[1], seen, cert

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_https_to_the_pinned_address_verifies_the_hostname(dns, tls_server):
    port, sni, ca = tls_server("media.test")
    dns.table["media.test"] = rebinding("127.0.0.1", "10.0.0.5")
    got = fetcher(allowed_hosts="media.test", ca_certs=str(ca)).fetch(f"https://media.test:{port}/a.jpg")
    assert got == f"tls media for media.test:{port}".encode()
    assert sni == ["media.test"]
    assert dns.asked == ["media.test"]


def test_https_with_a_certificate_for_another_name_fails(dns, tls_server):
    port, _, ca = tls_server("other.test")
    dns.table["media.test"] = ["127.0.0.1"]
    with pytest.raises(MediaFetchError, match="TLS with the media host failed: CERTIFICATE_VERIFY_FAILED"):
        fetcher(allowed_hosts="media.test", ca_certs=str(ca)).fetch(f"https://media.test:{port}/a.jpg")


def test_why_refused_is_none_for_public_addresses():
    for ip in [PUBLIC, "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1", "2002:808:808::1"]:
        assert why_refused(ipaddress.ip_address(ip)) is None


# -- wiring -------------------------------------------------------------------------
def test_a_refusal_is_invalid_input_with_its_own_code():
    assert issubclass(MediaUrlRefused, InvalidInput)  # dead-lettered, never retried
    assert MediaUrlRefused.code == "media_url_refused"


def test_the_worker_takes_its_rules_from_settings():
    from prometheus_client import CollectorRegistry

    from moderation import runtime
    from moderation.config import load_settings
    from moderation.metrics import Metrics

    def fetcher_for(**env: str) -> MediaFetcher:
        settings = load_settings(env)
        return runtime.build_pipeline(settings, Metrics(CollectorRegistry()), classifier=object()).fetcher

    production = fetcher_for(MEDIA_ALLOWED_HOSTS="media.internal, 10.20.0.0/16")
    assert production.policy.allowed_names == {"media.internal"}
    assert [str(n) for n in production.policy.allowed_networks] == ["10.20.0.0/16"]
    assert not production.policy.allow_loopback and not production.allow_files
    dev = fetcher_for(DEV_MODE="true")
    assert dev.policy.allow_loopback and dev.allow_files
    with pytest.raises(ConfigError, match="MEDIA_ALLOWED_HOSTS: 'https://x' is not a hostname"):
        fetcher_for(MEDIA_ALLOWED_HOSTS="https://x")
