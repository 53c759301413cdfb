"""TLS policy knobs end to end: cipher suites, groups and max_version against openssl s_client and
curl; a client CRL made with `openssl ca` that a reload picks up; the key log compared with the
client's own; and the errors check-config shows. Runs with the backend SIDECAR_TLS_BACKEND names."""
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, base_config, free_port, run, tls_listener
from test_mtls import Pki, curl, s_client

REQUEST = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("policy-pki"))
    p.ca_crt, _ = p.ca("ca", "policy test CA")
    p.server = p.leaf("server", "ca", "/CN=localhost", san="DNS:localhost,IP:127.0.0.1", eku="serverAuth")
    return p


def start(proxies, workdir, listeners):
    return proxies(base_config(listeners), workdir).start()


def served(result):
    """Whether an s_client run completed a handshake and got nginx's answer."""
    rc, out, err = result
    return "HTTP/1.1 200" in out


def check_config(workdir, text):
    path = Path(workdir) / "check.yaml"
    path.write_text(text)
    r = run([str(BIN), "check-config", "-c", str(path)])
    return r.returncode, r.stderr


# ---- suites, groups, versions ----

def test_tls12_suite_outside_the_policy_is_refused(proxies, workdir, nginx, pki):
    port = free_port()
    extra = "      cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384]\n"
    p = start(proxies, workdir, tls_listener("web", port, nginx.port, pki.server, extra_tls=extra))
    common = ["-tls1_2", "-CAfile", pki.ca_crt, "-ign_eof"]
    refused = s_client(port, *common, "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", data=REQUEST)
    assert not served(refused)
    assert "handshake failure" in refused[2], refused
    p.log.wait_for("no common cipher suite, group or signature algorithm")
    ok = s_client(port, *common, "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
                  data=REQUEST)
    assert served(ok), ok
    assert "Cipher is ECDHE-ECDSA-AES256-GCM-SHA384" in ok[1]


def test_tls13_suite_outside_the_policy_is_refused(proxies, workdir, nginx, pki):
    port = free_port()
    extra = "      tls13_cipher_suites: [TLS_CHACHA20_POLY1305_SHA256]\n"
    start(proxies, workdir, tls_listener("web", port, nginx.port, pki.server, extra_tls=extra))
    common = ["-tls1_3", "-CAfile", pki.ca_crt, "-ign_eof"]
    refused = s_client(port, *common, "-ciphersuites", "TLS_AES_128_GCM_SHA256", data=REQUEST)
    assert not served(refused)
    assert "handshake failure" in refused[2], refused
    ok = s_client(port, *common, "-ciphersuites", "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256",
                  data=REQUEST)
    assert served(ok), ok
    assert "Cipher is TLS_CHACHA20_POLY1305_SHA256" in ok[1]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_group_outside_the_policy_is_refused(proxies, workdir, nginx, pki, version):
    port = free_port()
    extra = "      groups: [secp384r1]\n"
    start(proxies, workdir, tls_listener("web", port, nginx.port, pki.server, extra_tls=extra))
    common = [f"-tls{version.replace('.', '_')}", "-CAfile", pki.ca_crt, "-ign_eof"]
    refused = s_client(port, *common, "-groups", "X25519", data=REQUEST)
    assert not served(refused), refused
    # TLS 1.2 also needs the certificate's curve (P-256) among the client's groups.
    ok = s_client(port, *common, "-curves", "X25519:P-384:P-256", data=REQUEST)
    assert served(ok), ok
    assert re.search(r"(Server Temp Key|Negotiated TLS1.3 group): (ECDH, )?(P-384|secp384r1)", ok[1]), ok[1]


def test_max_version_keeps_clients_on_tls12(proxies, workdir, nginx, pki):
    port = free_port()
    start(proxies, workdir, tls_listener("web", port, nginx.port, pki.server, extra_tls='      max_version: "1.2"\n'))
    assert not served(s_client(port, "-tls1_3", "-CAfile", pki.ca_crt, "-ign_eof", data=REQUEST))
    r = curl("-v", "--cacert", pki.ca_crt, f"https://localhost:{port}/")
    assert r.returncode == 0, r.stderr
    assert "SSL connection using TLSv1.2" in r.stderr


def test_check_config_explains_policy_mistakes(workdir, pki):
    crt, key = pki.server
    text = base_config(f"""
  - name: web
    listen: 127.0.0.1:{free_port()}
    tls:
      certificate: {crt}
      private_key: {key}
      min_version: "1.3"
      max_version: "1.2"
      cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
      groups: [P-256]
    upstream:
      address: 127.0.0.1:1
""")
    rc, err = check_config(workdir, text)
    assert rc == 1
    assert "listeners[0].tls.max_version: max_version 1.2 is below min_version 1.3" in err
    assert ('listeners[0].tls.cipher_suites[0]: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" is not a '
            "supported TLS 1.2 cipher suite (supported: ECDHE-ECDSA-AES128-GCM-SHA256,") in err
    assert "write it as ECDHE-ECDSA-AES128-GCM-SHA256" in err
    assert 'listeners[0].tls.groups[0]: "P-256" is not a supported key exchange group' in err
    assert "write it as secp256r1" in err


# ---- client CRL ----

class CrlAuthority:
    """`openssl ca` with a database, to revoke certificates and issue CRLs."""

    def __init__(self, pki):
        self.pki = pki
        self.dir = pki.root / "crl-ca"
        self.dir.mkdir(exist_ok=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "crlnumber").write_text("1000\n")
        self.conf = self.dir / "ca.cnf"
        self.conf.write_text(f"""
[ ca ]
default_ca = crl
[ crl ]
database = {self.dir}/index.txt
crlnumber = {self.dir}/crlnumber
certificate = {pki.path('ca', 'crt')}
private_key = {pki.path('ca', 'key')}
default_md = sha256
default_crl_days = 7
""")

    def revoke(self, crt):
        r = run(["openssl", "ca", "-batch", "-config", str(self.conf), "-revoke", str(crt)])
        assert r.returncode == 0, r.stderr

    def publish(self, path):
        """Writes a fresh CRL beside `path` and renames it over `path`, as a Secret update does."""
        tmp = Path(str(path) + ".new")
        r = run(["openssl", "ca", "-batch", "-config", str(self.conf), "-gencrl", "-out", str(tmp)])
        assert r.returncode == 0, r.stderr
        tmp.replace(path)


def crl_listener(port, upstream, pki, crl):
    extra = f"      client_auth: required\n      client_ca: {pki.ca_crt}\n      client_crl: {crl}\n"
    return tls_listener("api", port, upstream, pki.server, protocol="http", extra_tls=extra)


def curl_client(port, pki, client):
    return curl("--cacert", pki.ca_crt, "--cert", client[0], "--key", client[1], f"https://localhost:{port}/")


def test_revoked_client_is_refused_after_the_crl_is_reloaded(proxies, workdir, nginx, pki):
    alice = pki.leaf("alice", "ca", "/CN=alice")
    bob = pki.leaf("bob", "ca", "/CN=bob")
    authority = CrlAuthority(pki)
    crl = Path(workdir) / "crl" / "client.crl"
    crl.parent.mkdir()
    authority.publish(crl)
    port = free_port()
    p = start(proxies, workdir, crl_listener(port, nginx.port, pki, crl))
    assert curl_client(port, pki, alice).returncode == 0
    assert curl_client(port, pki, bob).returncode == 0

    authority.revoke(alice[0])
    authority.publish(crl)
    mark = p.log.count()
    p.signal(signal.SIGHUP)
    p.log.wait_for("configuration reloaded", start=mark)
    refused = curl_client(port, pki, alice)
    assert refused.returncode != 0
    assert "revoked" in refused.stderr, refused.stderr
    p.log.wait_for("handshake failed: certificate revoked", start=mark)
    assert curl_client(port, pki, bob).returncode == 0

    # A broken CRL on reload keeps the previous one: alice stays out, bob stays in.
    crl.write_text("not a CRL\n")
    mark = p.log.count()
    p.signal(signal.SIGHUP)
    p.log.wait_for("holds no certificate revocation list", start=mark)
    p.log.wait_for("keeping the previous configuration", start=mark)
    assert curl_client(port, pki, alice).returncode != 0
    assert curl_client(port, pki, bob).returncode == 0


def test_a_changed_crl_file_is_picked_up_by_the_file_watch(proxies, workdir, nginx, pki):
    carol = pki.leaf("carol", "ca", "/CN=carol")
    authority = CrlAuthority(pki)
    crl = Path(workdir) / "watched" / "client.crl"
    crl.parent.mkdir()
    authority.publish(crl)
    port = free_port()
    p = start(proxies, workdir, crl_listener(port, nginx.port, pki, crl))
    assert curl_client(port, pki, carol).returncode == 0
    authority.revoke(carol[0])
    mark = p.log.count()
    authority.publish(crl)
    p.log.wait_for("certificates reloaded", start=mark)
    assert curl_client(port, pki, carol).returncode != 0
    p.log.wait_for("handshake failed: certificate revoked", start=mark)


def test_a_bad_crl_is_a_config_error(workdir, pki):
    other = Pki(pki.root / "other")
    other.ca("other", "unrelated CA")
    foreign = CrlAuthority.__new__(CrlAuthority)
    CrlAuthority.__init__(foreign, other)
    foreign.conf.write_text(foreign.conf.read_text()
                            .replace(str(other.path("ca", "crt")), str(other.path("other", "crt")))
                            .replace(str(other.path("ca", "key")), str(other.path("other", "key"))))
    crl = Path(workdir) / "foreign.crl"
    foreign.publish(crl)
    rc, err = check_config(workdir, base_config(crl_listener(free_port(), 1, pki, crl)))
    assert rc == 1
    assert (f"listeners[0].tls.client_crl: the CRL in {crl} is issued by \"CN=unrelated CA\", which is "
            "not a CA of the client_ca bundle") in err
    missing = Path(workdir) / "missing.crl"
    rc, err = check_config(workdir, base_config(crl_listener(free_port(), 1, pki, missing)))
    assert rc == 1
    assert f"listeners[0].tls.client_crl: cannot read {missing}: No such file or directory" in err


# ---- key log ----

def key_lines(path, comments=False):
    """(label, client random) -> secret; only a client's log may carry '#' comment lines."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if comments and (not line or line.startswith("#")):
            continue
        label, random, secret = line.split(" ")
        assert re.fullmatch(r"[0-9a-f]{64}", random) and re.fullmatch(r"[0-9a-f]{64,}", secret), line
        out[(label, random)] = secret
    return out


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_key_log_matches_the_clients_secrets(proxies, workdir, nginx, pki, version):
    port = free_port()
    server_log = Path(workdir) / "server.keys"
    client_log = Path(workdir) / "client.keys"
    p = start(proxies, workdir, tls_listener("web", port, nginx.port, pki.server,
                                             extra_tls=f"      key_log: {server_log}\n"))
    warning = p.log.wait_for("TLS KEY LOG IS ON")
    assert str(server_log) in warning
    assert (server_log.stat().st_mode & 0o777) == 0o600
    assert not server_log.read_text()  # off until a handshake

    for _ in range(2):
        r = s_client(port, f"-tls{version.replace('.', '_')}", "-CAfile", pki.ca_crt, "-ign_eof",
                     "-keylogfile", client_log, data=REQUEST)
        assert served(r), r
    server, client = key_lines(server_log), key_lines(client_log, comments=True)
    labels = {"CLIENT_RANDOM"} if version == "1.2" else {
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"}
    randoms = {random for (label, random) in client}
    assert len(randoms) == 2  # two connections
    for random in randoms:
        for label in labels:
            # the proxy's secret is the one the client used: it decrypts the captured session
            assert server.get((label, random)) == client[(label, random)], (label, random)
