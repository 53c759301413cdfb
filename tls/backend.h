#pragma once
// The TLS seam. A Backend makes Contexts; a Context makes Sessions. A Session is a byte
// transformer with no socket: ciphertext in/out on one side, plaintext in/out on the other.
// Nothing here includes libuv or touches a socket; core/ moves the bytes.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sidecar::tls {

enum class Result {
    Ok,         // progress was made (handshake complete, bytes read/written)
    WantRead,   // needs more ciphertext from the peer (feedCiphertext)
    WantWrite,  // ciphertext is waiting in takeCiphertext(); send it, then call again
    Eof,        // peer sent close_notify: no more plaintext will arrive
    Error,      // fatal; error() says why; an alert may be waiting in takeCiphertext()
};

// The contract every backend keeps, and every caller relies on no more than this:
// - Any call may leave ciphertext to send, not only writePlain(): handshake() its flights,
//   readPlain() a TLS 1.3 KeyUpdate reply or a server's late alert, shutdown() close_notify,
//   a failed call its alert. After every call, send what hasCiphertext() reports.
// - The session owns its buffers. feedCiphertext() copies; takeCiphertext() swaps a vector
//   out. Output is never refused: it grows until taken, so a caller bounds memory by taking it
//   and applying its own watermarks before producing more plaintext.
// - writePlain(data, len, &n): `n` bytes (0 <= n <= len) were consumed, whatever the result.
//   On Ok, n == len. On WantRead (handshake still waiting for the peer) or WantWrite (output
//   must be sent first), the caller keeps data[n..len) and offers exactly those bytes again, in
//   order, once it has fed more ciphertext or sent takeCiphertext(); the buffer holding them may
//   move between calls. On Error, n says how much was encrypted before the failure, and nothing
//   more will be. Both current backends consume everything or fail (mbedTLS loops over records,
//   OpenSSL runs without partial writes), but a caller must not assume it.
// - readPlain() returns Ok with *n > 0, or WantRead/WantWrite/Eof/Error with *n == 0. Eof and
//   Error are final: every later call returns the same.

enum class ClientAuth { None, Optional, Required };

struct AllowList {
    std::vector<std::string> san_uri;
    std::vector<std::string> san_dns;
    std::vector<std::string> cn;
    bool empty() const { return san_uri.empty() && san_dns.empty() && cn.empty(); }
};

// A certificate and key, either from files or in-memory PEM (PEM wins when set).
struct KeyPairSource {
    std::string certificate_path;
    std::string private_key_path;
    std::string certificate_pem;
    std::string private_key_pem;
};

struct SniCertificate {
    std::vector<std::string> server_names;  // exact, or "*.example.com" (one label)
    KeyPairSource pair;
};

// Cipher suites, groups and the key log, read the same way by every backend (tls/policy.h has the
// names). An empty list means the default list; a list narrows or reorders it.
struct Policy {
    std::vector<std::string> cipher_suites;        // TLS 1.2, e.g. ECDHE-ECDSA-AES128-GCM-SHA256
    std::vector<std::string> tls13_cipher_suites;  // e.g. TLS_AES_128_GCM_SHA256
    std::vector<std::string> groups;               // key exchange groups, e.g. x25519, secp256r1
    std::string key_log_path;  // NSS key log (SSLKEYLOGFILE format), appended to; empty = off
};

struct ServerOptions {
    KeyPairSource pair;  // served when no SNI entry matches
    std::vector<SniCertificate> sni;
    std::string min_version = "1.2";  // "1.2" | "1.3"
    std::string max_version = "1.3";
    Policy policy;
    std::vector<std::string> alpn;    // offered protocols, in preference order
    ClientAuth client_auth = ClientAuth::None;
    std::string client_ca_path;
    std::string client_crl_path;  // CRLs (PEM or DER) of client_ca's CAs; empty = none
    AllowList allow;
    bool session_tickets = true;
    uint32_t ticket_lifetime_seconds = 3600;  // ticket key rotation period
};

struct ClientOptions {
    std::string ca_path;      // empty = system bundle (/etc/ssl/certs/ca-certificates.crt)
    std::string server_name;  // SNI and the name the certificate must match
    KeyPairSource pair;       // optional client certificate
    std::string min_version = "1.2";
    std::string max_version = "1.3";  // "1.2" | "1.3"; for servers that mishandle TLS 1.3
    std::vector<std::string> alpn;
    Policy policy;
};

// What a verified (or presented) peer certificate says.
struct PeerIdentity {
    bool presented = false;
    bool verified = false;
    std::string subject;   // RFC 4514-ish one-line subject, e.g. "CN=web,O=acme"
    std::string cn;
    std::vector<std::string> san_uri;
    std::vector<std::string> san_dns;
    std::string sha256_hex;  // of the DER certificate, lower-case hex
};

struct SessionInfo {
    std::string version;  // "TLSv1.2" | "TLSv1.3"
    std::string cipher;   // IANA suite name
    std::string alpn;     // negotiated protocol, empty if none
    std::string sni;      // server name sent by the client (server side)
    bool resumed = false;
    PeerIdentity peer;
};

// Facts about a loaded certificate, for logs and metrics.
struct CertificateInfo {
    std::string source;  // file path or "<memory>"
    std::string subject;
    std::string serial_hex;
    int64_t not_before = 0;  // unix seconds
    int64_t not_after = 0;
};

// What Backend::issueCertificate makes. Every profile: X.509 v3, ECDSA P-256 with SHA-256, a
// random 128-bit serial, valid from an hour ago (clock skew) until `days` from now, subject and
// authority key identifiers.
enum class CertificateProfile {
    Server,     // CA:false, digitalSignature, extKeyUsage serverAuth, SANs from `names`
    Client,     // the same with extKeyUsage clientAuth
    Authority,  // CA:true with path length 0, keyCertSign and cRLSign, no SAN
};

struct CertificateRequest {
    CertificateProfile profile = CertificateProfile::Server;
    // Subject alternative names: an IP literal becomes an IP address entry, a name with a ':'
    // (spiffe://trust.example/web) a URI, anything else a DNS name. Ignored for an Authority.
    std::vector<std::string> names;
    std::string common_name;  // the subject's CN; empty = names[0]
    int days = 365;           // 1 to 36500
    // The issuing CA (made with profile Authority, or any CA whose key matches); both empty =
    // self-signed.
    std::string issuer_certificate_pem;
    std::string issuer_private_key_pem;
};

class Session {
public:
    virtual ~Session() = default;

    // Ciphertext received from the peer. The session keeps what it is given until consumed.
    virtual void feedCiphertext(const uint8_t* data, size_t len) = 0;
    // Ciphertext to send. Swaps the pending output into `out` (which should be empty; its
    // capacity is kept by the session for reuse, so steady state allocates nothing).
    virtual bool hasCiphertext() const = 0;
    virtual void takeCiphertext(std::vector<uint8_t>& out) = 0;

    // Drives the handshake. Ok once complete.
    virtual Result handshake() = 0;
    // The same, in pieces: once a step has ended with at least `budget_ns` spent in this call
    // and the handshake is not complete, returns WantWrite (send takeCiphertext(), then call
    // again; that call returns WantRead if the next step needs input). So the public-key work of a flight (key share, key agreement, signature)
    // can be spread over several calls. A backend whose library writes a flight in one call
    // (OpenSSL) runs it whole.
    virtual Result handshake(uint64_t budget_ns) {
        (void)budget_ns;
        return handshake();
    }
    virtual bool handshakeComplete() const = 0;

    // Decrypts into `out`. Ok with *n > 0; WantRead when nothing is buffered; Eof on close_notify.
    virtual Result readPlain(uint8_t* out, size_t cap, size_t* n) = 0;
    // Encrypts up to len bytes; *n tells how many were consumed (see the contract above for
    // what the caller does with the rest). Output in takeCiphertext().
    virtual Result writePlain(const uint8_t* data, size_t len, size_t* n) = 0;
    // True when received ciphertext or decrypted plaintext is still inside the session, so
    // readPlain() may return data without new input (drain after a read pause).
    virtual bool hasBufferedInput() const = 0;
    // Queues close_notify.
    virtual void shutdown() = 0;

    virtual const SessionInfo& info() const = 0;  // valid after the handshake
    virtual const char* error() const = 0;        // reason of the last Error, static storage
};

class Context {
public:
    virtual ~Context() = default;
    virtual std::unique_ptr<Session> newSession() = 0;
    // Loaded certificates (server: default then SNI entries; client: its client certificate).
    virtual std::vector<CertificateInfo> certificates() const = 0;
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual const char* name() const = 0;
    virtual std::shared_ptr<Context> serverContext(const ServerOptions& options, std::string* error) = 0;
    virtual std::shared_ptr<Context> clientContext(const ClientOptions& options, std::string* error) = 0;

    // Config validation helpers: nullopt when fine, else a message.
    virtual std::optional<std::string> checkKeyPair(const std::string& certificate_path,
                                                    const std::string& private_key_path) = 0;
    virtual std::optional<std::string> checkCaBundle(const std::string& ca_path) = 0;
    // A CRL file must parse, be signed by a CA of the bundle, and not have expired.
    virtual std::optional<std::string> checkCrl(const std::string& crl_path,
                                                const std::string& ca_path) = 0;

    // A new ECDSA P-256 key and a certificate for it, as `request` describes. PEM out. Both
    // backends make the same profile, so either one's CA can sign for the other.
    virtual bool issueCertificate(const CertificateRequest& request, std::string* certificate_pem,
                                  std::string* private_key_pem, std::string* error) = 0;

    // A self-signed server certificate for the given names (the first is the CN), valid from
    // now for `days`.
    bool selfSigned(const std::vector<std::string>& hosts, int days, std::string* certificate_pem,
                    std::string* private_key_pem, std::string* error) {
        CertificateRequest request;
        request.names = hosts;
        request.days = days;
        return issueCertificate(request, certificate_pem, private_key_pem, error);
    }
};

// Backends are made by name through tls/factory.h.

}  // namespace sidecar::tls
