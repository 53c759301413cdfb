"""mTLS and identity, TLS origination (ambassador), PROXY protocol and session resumption, end to
end: the real binary, real curl / openssl s_client, real nginx, and a PKI made with the openssl
CLI."""
import hashlib
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, TLS_BACKEND, Nginx, ScriptedUpstream, base_config, free_port, run, tls_listener

SPIFFE_WEB = "spiffe://cluster.local/ns/default/sa/web"
SPIFFE_DB = "spiffe://cluster.local/ns/default/sa/db"


# ---- a small PKI ----

class Pki:
    """CAs and leaf certificates (EC P-256) made with the openssl CLI in one directory."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name, ext):
        return self.root / f"{name}.{ext}"

    def _ossl(self, *args):
        r = run(["openssl", *args])
        assert r.returncode == 0, f"openssl {' '.join(map(str, args))}: {r.stderr}"
        return r

    def _key_and_csr(self, name, subject):
        key, csr = self.path(name, "key"), self.path(name, "csr")
        self._ossl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                   "-keyout", key, "-out", csr, "-subj", subject)
        return key, csr

    def ca(self, name, cn):
        key = self.path(name, "key")
        crt = self.path(name, "crt")
        self._ossl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                   "-nodes", "-keyout", key, "-out", crt, "-days", "30", "-subj", f"/CN={cn}",
                   "-addext", "basicConstraints=critical,CA:TRUE",
                   "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return crt, key

    def leaf(self, name, ca, subject, san=None, eku="clientAuth"):
        """A certificate valid from now for 30 days, signed by `ca` (a name given to ca())."""
        key, csr = self._key_and_csr(name, subject)
        ext = self.path(name, "ext")
        lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
                 f"extendedKeyUsage={eku}"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        crt = self.path(name, "crt")
        self._ossl("x509", "-req", "-in", csr, "-CA", self.path(ca, "crt"), "-CAkey", self.path(ca, "key"),
                   "-CAcreateserial", "-out", crt, "-days", "30", "-sha256", "-extfile", ext)
        return crt, key

    def expired_leaf(self, name, ca, subject, san):
        """openssl 3.0 has no `x509 -not_before`; `openssl ca` takes explicit dates."""
        key, csr = self._key_and_csr(name, subject)
        db = self.root / f"{name}-ca"
        db.mkdir()
        (db / "index.txt").write_text("")
        (db / "serial").write_text("1000\n")
        conf = db / "ca.cnf"
        conf.write_text(f"""
[ ca ]
default_ca = past
[ past ]
dir = {db}
database = {db}/index.txt
serial = {db}/serial
new_certs_dir = {db}
certificate = {self.path(ca, 'crt')}
private_key = {self.path(ca, 'key')}
default_md = sha256
policy = anything
x509_extensions = leaf
copy_extensions = none
unique_subject = no
[ anything ]
commonName = supplied
[ leaf ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = {san}
""")
        crt = self.path(name, "crt")
        self._ossl("ca", "-batch", "-config", conf, "-in", csr, "-out", crt, "-notext",
                   "-startdate", "20200101000000Z", "-enddate", "20200201000000Z")
        return crt, key

    def der_sha256(self, crt):
        der = self._ossl_bytes("x509", "-in", crt, "-outform", "der")
        return hashlib.sha256(der).hexdigest()

    def _ossl_bytes(self, *args):
        r = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout


@pytest.fixture(scope="session")
def pki(session_dir):
    p = Pki(session_dir / "pki")
    p.ca_crt, _ = p.ca("ca", "sidecar test CA")
    p.other_ca_crt, _ = p.ca("other-ca", "some other CA")
    p.server = p.leaf("server", "ca", "/CN=localhost", san="DNS:localhost,IP:127.0.0.1", eku="serverAuth")
    p.good = p.leaf("good", "ca", "/O=acme/CN=web", san=f"URI:{SPIFFE_WEB}")
    p.dns_client = p.leaf("dnsclient", "ca", "/CN=batch", san="DNS:batch.default.svc.cluster.local")
    p.expired = p.expired_leaf("expired", "ca", "/CN=web", san=f"URI:{SPIFFE_WEB}")
    p.wrong_eku = p.leaf("wrong-eku", "ca", "/CN=web", san=f"URI:{SPIFFE_WEB}", eku="serverAuth")
    p.foreign = p.leaf("foreign", "other-ca", "/CN=web", san=f"URI:{SPIFFE_WEB}")
    p.not_allowed = p.leaf("not-allowed", "ca", "/CN=db", san=f"URI:{SPIFFE_DB}")
    # for the remote side of the ambassador
    p.other_server = p.leaf("other-server", "other-ca", "/CN=localhost", san="DNS:localhost,IP:127.0.0.1",
                            eku="serverAuth")
    return p


# ---- helpers ----

def curl(*args, timeout=30):
    return run(["curl", "-sS", "--max-time", str(timeout), *map(str, args)], timeout=timeout + 10)


def curl_mtls(port, pki, client=None, path="/", extra=()):
    args = ["--cacert", pki.ca_crt]
    if client is not None:
        args += ["--cert", client[0], "--key", client[1]]
    return curl(*args, *extra, f"https://localhost:{port}{path}")


def s_client(port, *args, data=b"", timeout=30):
    """openssl s_client against the proxy; returns (returncode, stdout, stderr) as text."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
           *map(str, args)]
    r = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def mtls_listener(name, port, upstream_port, pki, client_auth="required", allow="", protocol="http",
                  extra_tls="", upstream_extra="", extra=""):
    tls = f"      client_auth: {client_auth}\n      client_ca: {pki.ca_crt}\n"
    if allow:
        tls += f"      allow:\n{allow}\n"
    return tls_listener(name, port, upstream_port, pki.server, protocol=protocol, extra_tls=tls + extra_tls,
                        upstream_extra=upstream_extra, extra=extra)


def start(proxies, workdir, listeners, admin_port=None, extra=""):
    return proxies(base_config(listeners, admin_port=admin_port, extra=extra), workdir).start()


def headers_of(text):
    """nginx's /headers echo as a dict."""
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def metrics(admin_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric_value(text, name, labels):
    """The sample of `name` whose label set contains every label in `labels`."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


# AddressSanitizer makes public-key work several times slower.
SANITIZED = b"__asan_init" in BIN.read_bytes()

ALLOW_WEB = f"        san_uri: [\"{SPIFFE_WEB}\"]"


# ---- client authentication ----

@pytest.fixture
def mtls_proxy(proxies, workdir, nginx, pki):
    port = free_port()
    p = start(proxies, workdir, mtls_listener("api", port, nginx.port, pki, allow=ALLOW_WEB))
    return p, port


@pytest.mark.parametrize("client,reason", [
    (None, "client certificate required"),
    ("foreign", "unknown ca"),
    ("expired", "expired"),
    ("wrong_eku", "key usage"),
    ("not_allowed", "not allowed"),
])
def test_required_refuses_bad_clients(mtls_proxy, nginx, pki, client, reason):
    p, port = mtls_proxy
    r = curl_mtls(port, pki, getattr(pki, client) if client else None, path="/headers")
    assert r.returncode != 0, r.stdout
    assert "xfcc=" not in r.stdout
    line = p.log.wait_for("TLS handshake failed")
    assert reason in line.lower(), line
    if client == "not_allowed":
        # The refusal says whose certificate it was.
        assert SPIFFE_DB in line and "CN=db" in line, line
    assert nginx.access_log() == ""


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_required_refusal_reason_per_version(mtls_proxy, nginx, pki, version):
    """Both TLS versions refuse a certificate from another CA during the handshake, with an alert the
    client can read (openssl names it)."""
    p, port = mtls_proxy
    rc, out, err = s_client(port, f"-tls{version.replace('.', '_')}", "-CAfile", pki.ca_crt,
                            "-cert", pki.foreign[0], "-key", pki.foreign[1], "-ign_eof",
                            data=b"GET /headers HTTP/1.0\r\nHost: localhost\r\n\r\n")
    assert "xfcc=" not in out
    # TLS 1.3: the client has finished before the server judges it; the alert comes after
    assert re.search(r"alert (unknown ca|bad certificate)", err), err
    p.log.wait_for("TLS handshake failed")
    assert nginx.access_log() == ""


def test_allowed_identity_gets_xfcc(mtls_proxy, nginx, pki):
    p, port = mtls_proxy
    r = curl_mtls(port, pki, pki.good, path="/headers")
    assert r.returncode == 0, r.stderr
    xfcc = headers_of(r.stdout)["xfcc"]
    fields = dict(f.split("=", 1) for f in xfcc.split(";"))
    assert fields["Hash"] == pki.der_sha256(pki.good[0])
    assert fields["URI"] == SPIFFE_WEB
    assert fields["Subject"] == '"CN=web,O=acme"'
    assert "DNS" not in fields


def test_allow_by_san_dns_and_cn(proxies, workdir, nginx, pki):
    port = free_port()
    allow = "        san_dns: [BATCH.default.svc.cluster.local]\n        cn: [db]"
    start(proxies, workdir, mtls_listener("api", port, nginx.port, pki, allow=allow))
    r = curl_mtls(port, pki, pki.dns_client, path="/headers")
    assert r.returncode == 0, r.stderr
    assert "DNS=batch.default.svc.cluster.local" in headers_of(r.stdout)["xfcc"]
    r = curl_mtls(port, pki, pki.not_allowed, path="/headers")  # CN=db
    assert r.returncode == 0, r.stderr
    assert f"URI={SPIFFE_DB}" in headers_of(r.stdout)["xfcc"]
    r = curl_mtls(port, pki, pki.good, path="/headers")  # CN=web, URI .../web: neither listed
    assert r.returncode != 0


SPOOFED = 'Hash=00;Subject="CN=admin";URI=spiffe://cluster.local/ns/kube-system/sa/admin'


def test_client_sent_xfcc_is_replaced(mtls_proxy, nginx, pki):
    p, port = mtls_proxy
    r = curl_mtls(port, pki, pki.good, path="/headers",
                  extra=["-H", f"X-Forwarded-Client-Cert: {SPOOFED}", "-H", f"x-forwarded-client-cert: {SPOOFED}"])
    assert r.returncode == 0, r.stderr
    xfcc = headers_of(r.stdout)["xfcc"]
    assert "admin" not in xfcc and "Hash=00;" not in xfcc
    assert xfcc.startswith("Hash=" + pki.der_sha256(pki.good[0]))
    assert xfcc.count("Hash=") == 1  # nginx joins repeated headers with ", "


@pytest.mark.parametrize("client_auth", ["none", "optional"])
def test_client_sent_xfcc_dropped_without_client_cert(proxies, workdir, nginx, pki, client_auth):
    port = free_port()
    if client_auth == "none":
        listener = tls_listener("web", port, nginx.port, pki.server, protocol="http")
    else:
        listener = mtls_listener("api", port, nginx.port, pki, client_auth="optional")
    start(proxies, workdir, listener)
    r = curl_mtls(port, pki, None, path="/headers", extra=["-H", f"X-Forwarded-Client-Cert: {SPOOFED}"])
    assert r.returncode == 0, r.stderr
    assert headers_of(r.stdout)["xfcc"] == ""


def test_client_sent_xfcc_dropped_on_plain_listener(proxies, workdir, nginx):
    port = free_port()
    listener = f"""
  - name: plain
    listen: 127.0.0.1:{port}
    protocol: http
    upstream:
      address: 127.0.0.1:{nginx.port}
"""
    start(proxies, workdir, listener)
    r = curl("-H", f"X-Forwarded-Client-Cert: {SPOOFED}", f"http://127.0.0.1:{port}/headers")
    assert r.returncode == 0, r.stderr
    assert headers_of(r.stdout)["xfcc"] == ""


def test_optional_serves_clients_without_certificate(proxies, workdir, nginx, pki):
    port = free_port()
    p = start(proxies, workdir, mtls_listener("api", port, nginx.port, pki, client_auth="optional",
                                              allow=ALLOW_WEB))
    r = curl_mtls(port, pki, None, path="/headers")
    assert r.returncode == 0, r.stderr
    assert headers_of(r.stdout)["xfcc"] == ""
    r = curl_mtls(port, pki, pki.good, path="/headers")
    assert r.returncode == 0, r.stderr
    assert f"URI={SPIFFE_WEB}" in headers_of(r.stdout)["xfcc"]
    # a certificate that is presented is still verified, and held to the allow list
    for bad in (pki.foreign, pki.not_allowed, pki.expired):
        r = curl_mtls(port, pki, bad, path="/headers")
        assert r.returncode != 0, bad
    assert nginx.wait_access("GET /headers", count=2).count("GET /headers") == 2


def test_client_cert_header_off(proxies, workdir, nginx, pki):
    port = free_port()
    start(proxies, workdir, mtls_listener("api", port, nginx.port, pki,
                                          extra="    http:\n      client_cert_header: false"))
    r = curl_mtls(port, pki, pki.good, path="/headers", extra=["-H", f"X-Forwarded-Client-Cert: {SPOOFED}"])
    assert r.returncode == 0, r.stderr
    assert headers_of(r.stdout)["xfcc"] == ""


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_allowed_identity_both_versions(mtls_proxy, nginx, pki, version):
    p, port = mtls_proxy
    r = curl_mtls(port, pki, pki.good, path="/headers", extra=[f"--tlsv{version}", "--tls-max", version])
    assert r.returncode == 0, r.stderr
    assert f"URI={SPIFFE_WEB}" in headers_of(r.stdout)["xfcc"]
    p.log.wait_for(f'"version":"TLSv{version}"')


# ---- PROXY protocol ----

PP_LOCATION = """
    location = /pp {
      default_type text/plain;
      echo "ppaddr=$proxy_protocol_addr";
      echo "ppport=$proxy_protocol_port";
      echo "remote=$remote_addr";
    }"""


@pytest.mark.parametrize("version", [1, 2])
def test_proxy_protocol_to_nginx(proxies, workdir, pki, version):
    n = Nginx(workdir, listen_extra=" proxy_protocol", extra_server=PP_LOCATION).start()
    try:
        port = free_port()
        start(proxies, workdir, tls_listener("pp", port, n.port, pki.server, protocol="tcp",
                                             upstream_extra=f"      proxy_protocol: {version}"))
        r = curl("--cacert", pki.ca_crt, "-w", "local_port=%{local_port}\n", f"https://localhost:{port}/pp")
        assert r.returncode == 0, r.stderr
        h = headers_of(r.stdout)
        assert h["ppaddr"] == "127.0.0.1"
        assert h["ppport"] == h["local_port"]  # the client's own source port, not the proxy's
        # without the header nginx would have refused the request: it parsed one
        assert "broken header" not in (n.dir / "error.log").read_text()
    finally:
        n.stop()


class ProxyV2Server(ScriptedUpstream):
    """Accepts connections, parses a PROXY v2 header (addresses and TLVs), answers 'ok' and
    closes. Parsed headers go to `headers` (a list), each a dict."""

    def __init__(self):
        self.headers = []
        self.cond = threading.Condition()
        super().__init__(self._serve_one)

    @staticmethod
    def _read(c, n):
        buf = b""
        while len(buf) < n:
            d = c.recv(n - len(buf))
            if not d:
                raise ConnectionError("short PROXY header")
            buf += d
        return buf

    @staticmethod
    def parse_tlvs(data):
        out = []
        while data:
            assert len(data) >= 3, data
            t, n = data[0], struct.unpack("!H", data[1:3])[0]
            assert len(data) >= 3 + n, (t, n, data)
            out.append((t, data[3:3 + n]))
            data = data[3 + n:]
        return out

    def _parse(self, c):
        head = self._read(c, 16)
        assert head[:12] == b"\r\n\r\n\x00\r\nQUIT\n", head
        ver_cmd, fam, length = head[12], head[13], struct.unpack("!H", head[14:16])[0]
        body = self._read(c, length)
        h = {"version": ver_cmd >> 4, "command": ver_cmd & 15, "family": fam}
        if fam == 0x11:
            h["src"] = socket.inet_ntop(socket.AF_INET, body[0:4])
            h["dst"] = socket.inet_ntop(socket.AF_INET, body[4:8])
            h["sport"], h["dport"] = struct.unpack("!HH", body[8:12])
            rest = body[12:]
        elif fam == 0x21:
            h["src"] = socket.inet_ntop(socket.AF_INET6, body[0:16])
            h["dst"] = socket.inet_ntop(socket.AF_INET6, body[16:32])
            h["sport"], h["dport"] = struct.unpack("!HH", body[32:36])
            rest = body[36:]
        else:
            rest = body
        h["tlvs"] = {}
        for t, v in self.parse_tlvs(rest):
            assert t not in h["tlvs"], f"TLV {t:#x} twice"
            h["tlvs"][t] = v
        if 0x20 in h["tlvs"]:
            ssl = h["tlvs"][0x20]
            h["ssl_client"] = ssl[0]
            h["ssl_verify"] = struct.unpack("!I", ssl[1:5])[0]
            h["ssl"] = {t: v.decode() for t, v in self.parse_tlvs(ssl[5:])}
        return h

    def _serve_one(self, c):
        try:
            h = self._parse(c)
            c.sendall(b"ok\n")
        except Exception as e:  # reported to the test through headers
            h = {"error": repr(e)}
        with self.cond:
            self.headers.append(h)
            self.cond.notify_all()
        c.close()

    def wait(self, count=1, timeout=10):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.headers) >= count, timeout), self.headers
            return self.headers[count - 1]


@pytest.fixture
def pp2_server():
    s = ProxyV2Server()
    yield s
    s.close()


@pytest.mark.parametrize("version,cipher_re", [("1.3", r"^TLS_(AES|CHACHA20)_"),
                                               ("1.2", r"^TLS_ECDHE_ECDSA_WITH_")])
def test_proxy_protocol_v2_tlvs(proxies, workdir, pki, pp2_server, version, cipher_re):
    port = free_port()
    start(proxies, workdir, mtls_listener("pp2", port, pp2_server.port, pki, client_auth="optional",
                                          protocol="tcp", extra_tls="      alpn: [pp-test, http/1.1]",
                                          upstream_extra="      proxy_protocol: 2"))
    flag = f"-tls{version.replace('.', '_')}"
    # without a client certificate
    rc, out, err = s_client(port, flag, "-CAfile", pki.ca_crt, "-alpn", "pp-test", "-ign_eof", data=b"")
    assert "ok" in out.splitlines(), (out, err)
    h = pp2_server.wait(1)
    assert "error" not in h, h
    assert (h["version"], h["command"], h["family"]) == (2, 1, 0x11)
    assert h["src"] == "127.0.0.1" and h["dst"] == "127.0.0.1" and h["dport"] == port
    assert h["tlvs"][0x01] == b"pp-test"       # PP2_TYPE_ALPN
    assert h["tlvs"][0x02] == b"localhost"     # PP2_TYPE_AUTHORITY: the SNI sent
    assert h["ssl_client"] & 0x01              # PP2_CLIENT_SSL
    assert not h["ssl_client"] & 0x06          # no certificate, over the connection or session
    assert h["ssl_verify"] != 0                # "zero if the client presented a certificate and it
                                               # was successfully verified, non-zero otherwise"
    assert h["ssl"][0x21] == f"TLSv{version}"  # PP2_SUBTYPE_SSL_VERSION
    assert re.match(cipher_re, h["ssl"][0x23]), h["ssl"]  # PP2_SUBTYPE_SSL_CIPHER
    assert 0x22 not in h["ssl"]                # PP2_SUBTYPE_SSL_CN
    # with one
    rc, out, err = s_client(port, flag, "-CAfile", pki.ca_crt, "-cert", pki.good[0], "-key", pki.good[1],
                            "-ign_eof", data=b"")
    assert "ok" in out.splitlines(), (out, err)
    h = pp2_server.wait(2)
    assert 0x01 not in h["tlvs"]               # no ALPN negotiated, none sent
    assert h["ssl_client"] == 0x07             # SSL | CERT_CONN | CERT_SESS
    assert h["ssl_verify"] == 0
    assert h["ssl"][0x22] == "web"
    assert h["ssl"][0x21] == f"TLSv{version}"


def test_proxy_protocol_v2_plain_listener(proxies, workdir, pp2_server):
    """A plain listener sends addresses and no TLS facts."""
    port = free_port()
    listener = f"""
  - name: plainpp
    listen: 127.0.0.1:{port}
    protocol: tcp
    upstream:
      address: 127.0.0.1:{pp2_server.port}
      proxy_protocol: 2
"""
    start(proxies, workdir, listener)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        sport = s.getsockname()[1]
        assert s.makefile("rb").readline() == b"ok\n"
    h = pp2_server.wait(1)
    assert (h["src"], h["sport"], h["dport"]) == ("127.0.0.1", sport, port)
    assert h["tlvs"] == {}


# ---- TLS origination (ambassador) ----

def tls_nginx(workdir, crt_key, verify_client_ca=None, protocols="TLSv1.2 TLSv1.3"):
    crt, key = crt_key
    # nginx 1.22 leaves TLS 1.3 out of its default ssl_protocols
    extra = f"""
    ssl_protocols {protocols};
    ssl_certificate {crt};
    ssl_certificate_key {key};
    location = /whoami {{
      default_type text/plain;
      echo "verify=$ssl_client_verify";
      echo "dn=$ssl_client_s_dn";
      echo "sni=$ssl_server_name";
      echo "proto=$ssl_protocol";
      echo "reused=$ssl_session_reused";
    }}"""
    if verify_client_ca:
        extra += f"\n    ssl_verify_client on;\n    ssl_client_certificate {verify_client_ca};"
    return Nginx(workdir, listen_extra=" ssl", extra_server=extra).start()


def ambassador_listener(port, upstream_port, tls_lines, protocol="tcp", name="amb"):
    return f"""
  - name: {name}
    listen: 127.0.0.1:{port}
    protocol: {protocol}
    upstream:
      address: 127.0.0.1:{upstream_port}
      tls:
{tls_lines}
"""


@pytest.fixture
def remote(workdir, pki):
    n = tls_nginx(workdir, pki.server)
    yield n
    n.stop()


@pytest.mark.parametrize("protocol", ["tcp", "http"])
def test_ambassador_originates_tls(proxies, workdir, pki, remote, protocol):
    port = free_port()
    start(proxies, workdir, ambassador_listener(
        port, remote.port, f"        ca: {pki.ca_crt}\n        server_name: localhost", protocol=protocol))
    r = curl(f"http://127.0.0.1:{port}/")
    assert r.returncode == 0, r.stderr
    assert "hello from nginx" in r.stdout
    r = curl(f"http://127.0.0.1:{port}/whoami")
    h = headers_of(r.stdout)
    assert h["sni"] == "localhost" and h["verify"] == "NONE"
    assert h["proto"] == "TLSv1.3"


def test_origination_handshakes_wait_in_the_handshake_queue(proxies, workdir, pki, remote):
    """200 plain clients at once through a TCP ambassador: each needs a TLS handshake with the
    app. Those steps wait in the loop's handshake queue like client handshakes (the gauge shows
    them), every client is answered, and the queue is empty afterwards."""
    port, admin = free_port(), free_port()
    # The default connect_timeout (1 s) with the normal build: the burst fits in it because the
    # accept pacing holds back the clients whose app connections could not be served in time.
    # The sanitized build's steps are several times slower than the ones the pacing is sized for.
    timeout = "10s" if SANITIZED else "1s"
    listener = ambassador_listener(port, remote.port, f"        ca: {pki.ca_crt}\n        server_name: localhost")
    listener = listener.replace("    upstream:\n", f"    upstream:\n      connect_timeout: {timeout}\n")
    start(proxies, workdir, listener, admin_port=admin)
    waiting, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            waiting.append(metric_value(metrics(admin), "sidecar_tls_handshakes_waiting", {"listener": "amb"}))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(200)]
        for c in clients:
            c.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answers = []
        for c in clients:
            data = b""
            while chunk := c.recv(65536):
                data += chunk
            c.close()
            answers.append(data)
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert all(a.startswith(b"HTTP/1.1 200") and b"hello from nginx" in a for a in answers), \
        [a[:80] for a in answers if b"hello from nginx" not in a][:3]
    assert metric_value(metrics(admin), "sidecar_tls_handshakes_waiting", {"listener": "amb"}) == 0
    if TLS_BACKEND == "mbedtls":
        # About 1 ms and more per origination step: 200 of them at once keep the queue visible.
        assert max(waiting) >= 1, waiting


@pytest.mark.parametrize("protocol", ["tcp", "http"])
@pytest.mark.parametrize("case", ["wrong_name", "other_ca"])
def test_ambassador_refuses_unverified_upstream(proxies, workdir, pki, remote, protocol, case):
    port = free_port()
    if case == "wrong_name":
        tls_lines, reason = f"        ca: {pki.ca_crt}\n        server_name: wrong.example", "server name"
    else:
        tls_lines, reason = f"        ca: {pki.other_ca_crt}\n        server_name: localhost", "unknown ca"
    p = start(proxies, workdir, ambassador_listener(port, remote.port, tls_lines, protocol=protocol))
    r = curl("-i", f"http://127.0.0.1:{port}/")
    assert "hello from nginx" not in r.stdout
    if protocol == "http":
        # the application gets an answer it understands rather than a reset
        assert r.returncode == 0 and r.stdout.startswith("HTTP/1.1 502"), (r.returncode, r.stdout, r.stderr)
    else:
        assert r.returncode != 0  # closed without a byte
    line = p.log.wait_for("upstream TLS handshake failed")
    assert reason in line.lower(), line
    assert remote.access_log() == ""


def test_ambassador_mtls_to_remote(proxies, workdir, pki):
    n = tls_nginx(workdir, pki.server, verify_client_ca=pki.ca_crt)
    try:
        port, bare = free_port(), free_port()
        with_cert = (f"        ca: {pki.ca_crt}\n        server_name: localhost\n"
                     f"        certificate: {pki.good[0]}\n        private_key: {pki.good[1]}")
        without = f"        ca: {pki.ca_crt}\n        server_name: localhost"
        start(proxies, workdir, ambassador_listener(port, n.port, with_cert, name="with") +
              ambassador_listener(bare, n.port, without, name="without"))
        r = curl(f"http://127.0.0.1:{port}/whoami")
        assert r.returncode == 0, r.stderr
        h = headers_of(r.stdout)
        assert h["verify"] == "SUCCESS" and h["dn"] == "CN=web,O=acme", h
        r = curl("-i", f"http://127.0.0.1:{bare}/whoami")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("HTTP/1.1 400"), r.stdout
        assert "No required SSL certificate was sent" in r.stdout
    finally:
        n.stop()


def test_tls_reencryption(proxies, workdir, pki, remote):
    """TLS in from the client, TLS out to the upstream, each verified against its own names."""
    port = free_port()
    start(proxies, workdir, mtls_listener(
        "reenc", port, remote.port, pki, protocol="http", allow=ALLOW_WEB,
        upstream_extra=f"      tls:\n        ca: {pki.ca_crt}\n        server_name: localhost"))
    r = curl_mtls(port, pki, pki.good, path="/whoami")
    assert r.returncode == 0, r.stderr
    assert headers_of(r.stdout)["sni"] == "localhost"
    r = curl_mtls(port, pki, pki.good, path="/")
    assert "hello from nginx" in r.stdout


# ---- session resumption ----

REQUEST = b"GET /small HTTP/1.0\r\nHost: localhost\r\n\r\n"


def resume_pair(port, pki, version, sess, *extra):
    """Two s_client runs: a full handshake that saves its session (for TLS 1.3 the ticket comes
    after the handshake: the request is answered, so it has arrived by the time the upstream
    closes), then one that offers it. Returns the outputs of both."""
    flag = f"-tls{version.replace('.', '_')}"
    common = [flag, "-CAfile", pki.ca_crt, "-verify_return_error", "-ign_eof", *extra]
    first = s_client(port, *common, "-sess_out", sess, data=REQUEST)
    assert "ok" in first[1].splitlines(), first
    assert sess.exists() and sess.stat().st_size > 0
    second = s_client(port, *common, "-sess_in", sess, data=REQUEST)
    assert "ok" in second[1].splitlines(), second
    return first[1], second[1]


def handshake_kind(out, version):
    m = re.search(r"^(New|Reused), (TLSv1\.[23]),", out, re.M)
    assert m, out
    assert m.group(2) == f"TLSv{version}"
    return m.group(1)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_session_resumption(proxies, workdir, nginx, pki, version):
    port, admin = free_port(), free_port()
    start(proxies, workdir, tls_listener("web", port, nginx.port, pki.server), admin_port=admin)
    first, second = resume_pair(port, pki, version, workdir / "sess.pem")
    assert handshake_kind(first, version) == "New"
    assert handshake_kind(second, version) == "Reused"
    m = metrics(admin)
    assert metric_value(m, "sidecar_tls_resumed_handshakes_total", {"listener": "web", "version": version}) == 1
    assert metric_value(m, "sidecar_tls_handshakes_total",
                        {"listener": "web", "version": version, "result": "ok"}) == 2


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_session_tickets_disabled(proxies, workdir, nginx, pki, version):
    port, admin = free_port(), free_port()
    start(proxies, workdir, tls_listener("web", port, nginx.port, pki.server,
                                         extra_tls="      session_tickets:\n        enabled: false"),
          admin_port=admin)
    sess = workdir / "sess.pem"
    flag = f"-tls{version.replace('.', '_')}"
    common = [flag, "-CAfile", pki.ca_crt, "-ign_eof"]
    rc, out, err = s_client(port, *common, "-sess_out", sess, data=REQUEST)
    assert "ok" in out.splitlines(), (out, err)
    if version == "1.3":
        assert not sess.exists()  # s_client writes a TLS 1.3 session only when a ticket arrives
        assert "Post-Handshake New Session Ticket arrived" not in out
    elif TLS_BACKEND == "openssl":
        # OpenSSL hands out no session ID it could not resume, so there is nothing to offer
        assert not sess.exists()
    else:
        # a TLS 1.2 session ID is always there to offer; with no ticket and no cache it fails
        rc, out, err = s_client(port, *common, "-sess_in", sess, data=REQUEST)
        assert "ok" in out.splitlines(), (out, err)
        assert handshake_kind(out, version) == "New"
    assert metric_value(metrics(admin), "sidecar_tls_resumed_handshakes_total",
                        {"listener": "web", "version": version}) == 0


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_sighup_reload_invalidates_tickets(proxies, workdir, nginx, pki, version):
    port = free_port()
    p = start(proxies, workdir, tls_listener("web", port, nginx.port, pki.server))
    sess = workdir / "sess.pem"
    first, second = resume_pair(port, pki, version, sess)
    assert handshake_kind(second, version) == "Reused"
    mark = p.log.count()
    p.signal(signal.SIGHUP)
    p.log.wait_for("configuration reloaded", start=mark)
    third = s_client(port, f"-tls{version.replace('.', '_')}", "-CAfile", pki.ca_crt, "-ign_eof",
                     "-sess_in", sess, data=REQUEST)
    assert "ok" in third[1].splitlines(), third
    assert handshake_kind(third[1], version) == "New"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_resumed_mtls_session_keeps_identity(proxies, workdir, nginx, pki, version):
    """A resumption skips the client's Certificate message; the identity comes from the session
    (TLS 1.2) or from the sealed ticket (TLS 1.3), so the app still gets X-Forwarded-Client-Cert."""
    port, admin = free_port(), free_port()
    start(proxies, workdir, mtls_listener("api", port, nginx.port, pki, allow=ALLOW_WEB), admin_port=admin)
    flag = f"-tls{version.replace('.', '_')}"
    req = b"GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    sess = workdir / "sess.pem"
    common = [flag, "-CAfile", pki.ca_crt, "-ign_eof", "-cert", pki.good[0], "-key", pki.good[1]]
    rc, first, err = s_client(port, *common, "-sess_out", sess, data=req)
    assert f"xfcc=Hash={pki.der_sha256(pki.good[0])}" in first, (first, err)
    rc, second, err = s_client(port, *common, "-sess_in", sess, data=req)
    assert handshake_kind(second, version) == "Reused"
    xfcc = headers_of(second.replace("\r", ""))["xfcc"]
    assert xfcc.startswith(f"Hash={pki.der_sha256(pki.good[0])};") and f"URI={SPIFFE_WEB}" in xfcc, second
    assert metric_value(metrics(admin), "sidecar_tls_resumed_handshakes_total",
                        {"listener": "api", "version": version}) == 1


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_resumed_session_proxy_header(proxies, workdir, pki, pp2_server, version):
    """On a resumed session the certificate was sent on an earlier connection: CERT_SESS, not
    CERT_CONN, and still verified, with its CN."""
    port = free_port()
    start(proxies, workdir, mtls_listener("pp2", port, pp2_server.port, pki, protocol="tcp",
                                          upstream_extra="      proxy_protocol: 2"))
    flag = f"-tls{version.replace('.', '_')}"
    sess = workdir / "sess.pem"
    common = [flag, "-CAfile", pki.ca_crt, "-ign_eof", "-cert", pki.good[0], "-key", pki.good[1]]
    rc, out, err = s_client(port, *common, "-sess_out", sess)
    assert "ok" in out.splitlines(), (out, err)
    rc, out, err = s_client(port, *common, "-sess_in", sess)
    assert handshake_kind(out, version) == "Reused"
    h = pp2_server.wait(2)
    assert h["ssl_client"] == 0x05, h  # SSL | CERT_SESS
    assert h["ssl_verify"] == 0
    assert h["ssl"][0x22] == "web"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_ticket_does_not_cross_listeners(proxies, workdir, nginx, pki, version):
    """A ticket from a listener that admits `web` offered to one that admits only `db`: a full
    handshake follows, and the second listener's allow list refuses the client."""
    a, b = free_port(), free_port()
    p = start(proxies, workdir,
              mtls_listener("a", a, nginx.port, pki, allow=ALLOW_WEB) +
              mtls_listener("b", b, nginx.port, pki, allow=f"        san_uri: [\"{SPIFFE_DB}\"]"))
    flag = f"-tls{version.replace('.', '_')}"
    sess = workdir / "sess.pem"
    common = [flag, "-CAfile", pki.ca_crt, "-ign_eof", "-cert", pki.good[0], "-key", pki.good[1]]
    rc, out, err = s_client(a, *common, "-sess_out", sess, data=REQUEST)
    assert "ok" in out.splitlines(), (out, err)
    rc, out, err = s_client(b, *common, "-sess_in", sess, data=REQUEST)
    assert "ok" not in out.splitlines()
    assert "Reused," not in out
    line = p.log.wait_for('"listener":"b","client":"127.0.0.1","error"')
    assert "not allowed" in line
    assert nginx.wait_access("GET /small").count("GET /small") == 1


@pytest.mark.parametrize("max_version", ["1.2", "1.3"])
def test_ambassador_resumes_upstream_sessions(proxies, workdir, pki, max_version):
    """The client context keeps the last session (TLS 1.2 ticket, TLS 1.3 ticket) and offers it on
    the next connection to the remote."""
    n = tls_nginx(workdir, pki.server, protocols=f"TLSv{max_version}")
    try:
        port = free_port()
        start(proxies, workdir, ambassador_listener(
            port, n.port, f"        ca: {pki.ca_crt}\n        server_name: localhost", protocol="http"))
        seen = []
        for _ in range(3):
            r = curl(f"http://127.0.0.1:{port}/whoami")
            assert r.returncode == 0, r.stderr
            h = headers_of(r.stdout)
            assert h["proto"] == f"TLSv{max_version}"
            seen.append(h["reused"])
        assert seen[0] == "." and seen[1:] == ["r", "r"], seen
    finally:
        n.stop()


def test_proxy_protocol_v2_ipv6(proxies, workdir, pki, pp2_server):
    port = free_port(socket.AF_INET6)
    listener = tls_listener("v6", port, pp2_server.port, pki.server, upstream_extra="      proxy_protocol: 2")
    listener = listener.replace(f"listen: 127.0.0.1:{port}", f"listen: \"[::1]:{port}\"")
    start(proxies, workdir, listener)
    r = subprocess.run(["openssl", "s_client", "-connect", f"[::1]:{port}", "-servername", "localhost",
                        "-CAfile", str(pki.ca_crt), "-ign_eof"], input=b"", capture_output=True, timeout=30)
    assert b"ok\n" in r.stdout, r.stderr
    h = pp2_server.wait(1)
    assert h["family"] == 0x21 and h["src"] == "::1" and h["dst"] == "::1" and h["dport"] == port, h

