#include "config/schema.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <set>

#include "config/values.h"

namespace sidecar::config::detail {
namespace {

constexpr uint64_t kMaxUint32 = std::numeric_limits<uint32_t>::max();

// Names appear in metrics labels, logs and iptables rule comments.
bool isListenerName(const std::string& name) {
    if (name.empty() || name.size() > 63) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    });
}

std::string lowercase(std::string text) {
    for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
}

// min_version and max_version; the range must hold at least one version.
void readVersions(Reader& reader, const MapReader& map, std::string& min, std::string& max) {
    if (auto field = map.get("min_version")) {
        if (auto value = reader.choice<std::string>(*field, {{"1.2", "1.2"}, {"1.3", "1.3"}})) {
            min = *value;
        }
    }
    if (auto field = map.get("max_version")) {
        if (auto value = reader.choice<std::string>(*field, {{"1.2", "1.2"}, {"1.3", "1.3"}})) {
            max = *value;
            if (max < min) {
                reader.error(field->valueMark(), field->path,
                             "max_version " + max + " is below min_version " + min +
                                 "; no TLS version would be left");
            }
        }
    }
}

// The names the TLS policy accepts, the same for every backend (the TLS library checks them
// again, with the same wording, when it builds a context). Each list is the default set in its
// default order: a policy narrows or reorders it.
const std::vector<std::string_view> kTls12Suites = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
};
const std::vector<std::string_view> kTls13Suites = {
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"};
const std::vector<std::string_view> kGroups = {"x25519", "secp256r1", "secp384r1", "secp521r1"};

bool listed(const std::vector<std::string_view>& names, const std::string& name) {
    return std::find(names.begin(), names.end(), name) != names.end();
}

std::string joined(const std::vector<std::string_view>& names) {
    std::string out;
    for (std::string_view n : names) out += (out.empty() ? "" : ", ") + std::string(n);
    return out;
}

// Why `name` is not accepted in `key`, with a hint for a near miss: a suite of the other TLS
// version, the IANA spelling of a TLS 1.2 suite, another spelling of a group.
std::string unknownPolicyName(const std::string& key, const std::string& name) {
    const bool groups = key == "groups";
    const bool tls13 = key == "tls13_cipher_suites";
    const auto& names = groups ? kGroups : tls13 ? kTls13Suites : kTls12Suites;
    const char* kind = groups  ? "key exchange group"
                       : tls13 ? "TLS 1.3 cipher suite"
                               : "TLS 1.2 cipher suite";
    std::string hint;
    if (!groups && !tls13 && listed(kTls13Suites, name)) {
        hint = "; TLS 1.3 suites go in tls13_cipher_suites";
    } else if (tls13 && listed(kTls12Suites, name)) {
        hint = "; TLS 1.2 suites go in cipher_suites";
    } else if (!groups && !tls13) {
        static const std::pair<std::string_view, std::string_view> iana[] = {
            {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"},
            {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"},
            {"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"},
            {"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"},
            {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"},
            {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"},
        };
        for (const auto& [long_name, short_name] : iana)
            if (name == long_name) hint = "; write it as " + std::string(short_name);
    } else if (groups) {
        const std::string lower = lowercase(name);
        if (listed(kGroups, lower)) hint = "; write it as " + lower;
        if (lower == "p-256" || lower == "prime256v1") hint = "; write it as secp256r1";
        if (lower == "p-384") hint = "; write it as secp384r1";
        if (lower == "p-521") hint = "; write it as secp521r1";
    }
    return quote(name) + " is not a supported " + kind + " (supported: " + joined(names) + ")" +
           hint;
}

void readPolicyList(Reader& reader, const MapReader& map, const char* key,
                    std::vector<std::string>& out) {
    auto field = map.get(key);
    if (!field) return;
    std::vector<Field> items;
    auto values = reader.textList(*field, &items);
    if (!values) return;
    const auto& names = std::string_view(key) == "groups"                ? kGroups
                        : std::string_view(key) == "tls13_cipher_suites" ? kTls13Suites
                                                                         : kTls12Suites;
    bool ok = true;
    for (size_t i = 0; i < values->size(); ++i) {
        if (!listed(names, (*values)[i])) {
            reader.error(items[i].valueMark(), items[i].path, unknownPolicyName(key, (*values)[i]));
            ok = false;
        }
    }
    if (ok && values->empty()) {
        reader.error(field->valueMark(), field->path,
                     "list at least one name, or leave the setting out for the defaults (" +
                         joined(names) + ")");
        ok = false;
    }
    if (ok) out = std::move(*values);
}

// cipher_suites, tls13_cipher_suites, groups and key_log; a suite list for a TLS version that the
// version range leaves out would silently do nothing, so it is an error.
void readPolicy(Reader& reader, const MapReader& map, const std::string& min,
                const std::string& max, TlsPolicy& policy) {
    readPolicyList(reader, map, "cipher_suites", policy.cipher_suites);
    readPolicyList(reader, map, "tls13_cipher_suites", policy.tls13_cipher_suites);
    readPolicyList(reader, map, "groups", policy.groups);
    if (auto field = map.get("cipher_suites"); field && min == "1.3") {
        reader.error(field->keyMark, field->path,
                     "cipher_suites are TLS 1.2 suites, and min_version 1.3 turns TLS 1.2 off");
    }
    if (auto field = map.get("tls13_cipher_suites"); field && max == "1.2") {
        reader.error(field->keyMark, field->path,
                     "tls13_cipher_suites has no effect with max_version 1.2 (TLS 1.3 is off)");
    }
    if (auto field = map.get("key_log")) {
        if (auto value = reader.text(*field)) policy.key_log = *value;
    }
}

void readAlpn(Reader& reader, const MapReader& map, std::vector<std::string>& out) {
    auto field = map.get("alpn");
    if (!field) return;
    std::vector<Field> items;
    auto values = reader.textList(*field, &items);
    if (!values) return;
    bool ok = true;
    for (size_t i = 0; i < values->size(); ++i) {
        if ((*values)[i].size() > 255) {
            reader.error(items[i].valueMark(), items[i].path,
                         "an ALPN protocol name is at most 255 bytes long");
            ok = false;
        }
    }
    if (ok) out = std::move(*values);
}

// certificate + private_key, both required, in a listener's tls section or an SNI entry.
void readPair(Reader& reader, const MapReader& map, CertKeyPair& pair, Positions& positions) {
    auto certificateField = map.require("certificate");
    auto keyField = map.require("private_key");
    pair.mark = certificateField ? certificateField->keyMark : map.mark();
    std::optional<std::string> certificate;
    std::optional<std::string> key;
    if (certificateField) certificate = reader.text(*certificateField);
    if (keyField) key = reader.text(*keyField);
    if (certificate) pair.certificate = *certificate;
    if (key) pair.private_key = *key;
    if (certificate && key) {
        positions.certificates.push_back({true, certificateField->path, *certificate, *key,
                                          certificateField->keyMark, keyField->path, keyField->keyMark});
    }
}

// A CA bundle path; queued for the CA validator.
std::optional<std::string> readCa(Reader& reader, const Field& field, Positions& positions) {
    auto value = reader.text(field);
    if (value) positions.certificates.push_back({false, field.path, *value, "", field.keyMark});
    return value;
}

void readSni(Reader& reader, const Field& field, ServerTls& tls, Positions& positions) {
    auto items = reader.list(field);
    if (!items) return;
    // Server names are case-insensitive; each may select only one certificate.
    std::set<std::string> seen;
    for (const auto& item : *items) {
        MapReader map(reader, item, {"server_names", "certificate", "private_key"});
        if (!map.isMap()) continue;
        SniEntry entry;
        if (auto namesField = map.require("server_names")) {
            std::vector<Field> listed;
            if (auto names = reader.textList(*namesField, &listed)) {
                if (names->empty()) {
                    reader.error(namesField->valueMark(), namesField->path,
                                 "list at least one server name");
                }
                for (size_t i = 0; i < names->size(); ++i) {
                    const std::string& name = (*names)[i];
                    const Field& at = listed[i];
                    if (!isDnsName(name, true)) {
                        reader.error(at.valueMark(), at.path,
                                     quote(name) +
                                         " is not a DNS name or a wildcard such as "
                                         "\"*.example.com\"");
                    } else if (!seen.insert(lowercase(name)).second) {
                        reader.error(at.valueMark(), at.path,
                                     quote(name) + " is already listed in another sni entry");
                    }
                }
                entry.server_names = std::move(*names);
            }
        }
        readPair(reader, map, entry.pair, positions);
        tls.sni.push_back(std::move(entry));
    }
}

void readAllow(Reader& reader, const Field& field, AllowList& allow) {
    MapReader map(reader, field, {"san_uri", "san_dns", "cn"});
    if (auto list = map.get("san_uri")) {
        if (auto values = reader.textList(*list)) allow.san_uri = std::move(*values);
    }
    if (auto list = map.get("san_dns")) {
        if (auto values = reader.textList(*list)) allow.san_dns = std::move(*values);
    }
    if (auto list = map.get("cn")) {
        if (auto values = reader.textList(*list)) allow.cn = std::move(*values);
    }
}

std::optional<ServerTls> readServerTls(Reader& reader, const Field& field, Positions& positions) {
    MapReader map(reader, field,
                  {"certificate", "private_key", "min_version", "max_version", "alpn", "sni",
                   "client_auth", "client_ca", "client_crl", "allow", "session_tickets",
                   "cipher_suites", "tls13_cipher_suites", "groups", "key_log"});
    if (!map.isMap()) return std::nullopt;
    ServerTls tls;
    readPair(reader, map, tls.pair, positions);
    readVersions(reader, map, tls.min_version, tls.max_version);
    readPolicy(reader, map, tls.min_version, tls.max_version, tls.policy);
    readAlpn(reader, map, tls.alpn);
    if (auto sni = map.get("sni")) readSni(reader, *sni, tls, positions);

    auto clientAuthField = map.get("client_auth");
    std::optional<ClientAuth> clientAuth;
    if (clientAuthField) {
        clientAuth =
            reader.choice<ClientAuth>(*clientAuthField, {{"none", ClientAuth::None},
                                                         {"optional", ClientAuth::Optional},
                                                         {"required", ClientAuth::Required}});
        if (clientAuth) tls.client_auth = *clientAuth;
    }
    auto clientCaField = map.get("client_ca");
    if (clientCaField) {
        if (auto ca = readCa(reader, *clientCaField, positions)) tls.client_ca = *ca;
    }
    if (clientAuth && *clientAuth != ClientAuth::None && !clientCaField) {
        reader.error(clientAuthField->valueMark(), clientAuthField->path,
                     "client_auth " + clientAuthField->value.Scalar() +
                         " needs client_ca, the CA bundle that client certificates are verified "
                         "against");
    }
    if (auto crlField = map.get("client_crl")) {
        if (auto crl = reader.text(*crlField)) {
            if (tls.client_auth == ClientAuth::None || tls.client_ca.empty()) {
                // An unreadable client_auth or client_ca has been reported already.
                if ((clientAuth || !clientAuthField) && (!clientCaField || !tls.client_ca.empty()))
                    reader.error(crlField->keyMark, crlField->path,
                                 "client_crl needs client_auth optional or required and client_ca: "
                                 "without client certificates nothing is checked against it");
            } else {
                tls.client_crl = *crl;
                positions.crls.push_back(
                    {crlField->path, *crl, tls.client_ca, crlField->keyMark});
            }
        }
    }
    if (auto allowField = map.get("allow")) {
        readAllow(reader, *allowField, tls.allow);
        // An unreadable client_auth has been reported already.
        if (!tls.allow.empty() && tls.client_auth == ClientAuth::None &&
            (clientAuth || !clientAuthField)) {
            reader.error(allowField->keyMark, allowField->path,
                         "an allow list needs client_auth optional or required: without client "
                         "certificates there is nothing to match");
        }
    }
    if (auto ticketsField = map.get("session_tickets")) {
        MapReader tickets(reader, *ticketsField, {"enabled", "rotate"});
        if (auto enabled = tickets.get("enabled")) {
            if (auto value = reader.boolean(*enabled)) tls.session_tickets.enabled = *value;
        }
        if (auto rotate = tickets.get("rotate")) {
            if (auto value = reader.duration(*rotate, false)) tls.session_tickets.rotate = *value;
        }
    }
    return tls;
}

std::optional<UpstreamTls> readUpstreamTls(Reader& reader, const Field& field,
                                           Positions& positions) {
    MapReader map(reader, field,
                  {"ca", "server_name", "certificate", "private_key", "min_version",
                   "max_version", "alpn", "cipher_suites", "tls13_cipher_suites", "groups",
                   "key_log"});
    if (!map.isMap()) return std::nullopt;
    UpstreamTls tls;
    if (auto ca = map.get("ca")) {
        if (auto value = readCa(reader, *ca, positions)) tls.ca = *value;
    }
    if (auto serverName = map.get("server_name")) {
        if (auto value = reader.text(*serverName)) {
            if (isDnsName(*value, false) || parseIp(*value)) {
                tls.server_name = *value;
            } else {
                reader.error(serverName->valueMark(), serverName->path,
                             quote(*value) + " is not a DNS name or an IP address");
            }
        }
    }
    auto certificateField = map.get("certificate");
    auto keyField = map.get("private_key");
    std::optional<std::string> certificate;
    std::optional<std::string> key;
    if (certificateField) certificate = reader.text(*certificateField);
    if (keyField) key = reader.text(*keyField);
    if (certificateField && !keyField) {
        reader.error(certificateField->keyMark, certificateField->path,
                     "a client certificate needs its private_key too");
    } else if (keyField && !certificateField) {
        reader.error(keyField->keyMark, keyField->path,
                     "a private_key needs its client certificate too");
    }
    if (certificate) tls.certificate = *certificate;
    if (key) tls.private_key = *key;
    if (certificate && key) {
        positions.certificates.push_back({true, certificateField->path, *certificate, *key,
                                          certificateField->keyMark, keyField->path, keyField->keyMark});
    }
    readVersions(reader, map, tls.min_version, tls.max_version);
    readPolicy(reader, map, tls.min_version, tls.max_version, tls.policy);
    readAlpn(reader, map, tls.alpn);
    return tls;
}

void readUpstream(Reader& reader, const Field& field, Protocol protocol, Upstream& upstream,
                  Mark& addressMark, Positions& positions) {
    MapReader map(reader, field, {"address", "connect_timeout", "http2", "proxy_protocol", "tls"});
    if (auto address = map.require("address")) {
        if (auto value = reader.address(*address, true)) {
            upstream.address = *value;
            addressMark = address->valueMark();
        }
    }
    if (auto timeout = map.get("connect_timeout")) {
        if (auto value = reader.duration(*timeout, false)) upstream.connect_timeout = *value;
    }
    if (auto http2 = map.get("http2")) {
        if (auto value = reader.boolean(*http2)) upstream.http2 = *value;
    }
    if (auto proxyProtocol = map.get("proxy_protocol")) {
        if (auto value = reader.integer(*proxyProtocol, 0, 2)) {
            if (*value != 0 && protocol != Protocol::Tcp) {
                reader.error(proxyProtocol->valueMark(), proxyProtocol->path,
                             "the PROXY protocol header is only sent with protocol tcp; an http "
                             "listener passes the client address in forwarding headers");
            } else {
                upstream.proxy_protocol = static_cast<int>(*value);
            }
        }
    }
    if (auto tls = map.get("tls")) upstream.tls = readUpstreamTls(reader, *tls, positions);
}

void readTimeouts(Reader& reader, const Field& field, Timeouts& timeouts) {
    MapReader map(reader, field, {"handshake", "idle", "header", "upstream_response"});
    const std::pair<const char*, Duration*> entries[] = {
        {"handshake", &timeouts.handshake},
        {"idle", &timeouts.idle},
        {"header", &timeouts.header},
        {"upstream_response", &timeouts.upstream_response},
    };
    for (const auto& [key, target] : entries) {
        if (auto entry = map.get(key)) {
            if (auto value = reader.duration(*entry, false)) *target = *value;
        }
    }
}

constexpr uint64_t kMaxRateCount = 1000000;
constexpr uint64_t kMaxBurst = 1000000;
constexpr uint64_t kMaxTableSize = 10000000;

// "100/s", "600/m", "10/h": a whole number of tokens per second, minute or hour.
std::optional<std::pair<uint32_t, uint32_t>> readRateValue(Reader& reader, const Field& field) {
    auto value = reader.string(field);
    if (!value) return std::nullopt;
    const std::string& text = *value;
    const size_t slash = text.find('/');
    const std::string count = text.substr(0, slash);
    const std::string unit = slash == std::string::npos ? "" : text.substr(slash + 1);
    uint32_t period = 0;
    if (unit == "s") period = 1000;
    if (unit == "m") period = 60 * 1000;
    if (unit == "h") period = 60 * 60 * 1000;
    const bool digits = !count.empty() && count.size() <= 7 &&
                        std::all_of(count.begin(), count.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || period == 0) {
        reader.error(field.valueMark(), field.path,
                     "invalid rate " + quote(text) + ": expected a count per s, m or h, such as \"100/s\"");
        return std::nullopt;
    }
    const uint64_t n = std::stoull(count);
    if (n == 0 || n > kMaxRateCount) {
        reader.error(field.valueMark(), field.path,
                     "rate " + quote(text) + " is out of range: the count must be from 1 to " +
                         std::to_string(kMaxRateCount) +
                         (n == 0 ? " (a rate of 0 admits nothing; remove the limit to turn it off)" : ""));
        return std::nullopt;
    }
    return std::make_pair(uint32_t(n), period);
}

// The rate and burst keys of a bucket's map; burst defaults to one period's count.
void readBucket(Reader& reader, const MapReader& map, RateLimit& out) {
    if (!map.isMap()) return;
    RateLimit limit;
    if (auto rate = map.require("rate")) {
        auto value = readRateValue(reader, *rate);
        if (!value) return;
        limit.count = value->first;
        limit.period_ms = value->second;
    } else {
        return;
    }
    limit.burst = limit.count;
    if (auto burst = map.get("burst")) {
        auto value = reader.integer(*burst, 1, kMaxBurst);
        if (!value) return;
        limit.burst = uint32_t(*value);
    }
    out = limit;
}

void readClientLimits(Reader& reader, const Field& field, ClientLimits& out) {
    MapReader map(reader, field, {"max_connections", "connection_rate", "table_size"});
    if (auto max = map.get("max_connections")) {
        if (auto value = reader.integer(*max, 1, kMaxUint32)) out.max_connections = uint32_t(*value);
    }
    if (auto rate = map.get("connection_rate")) {
        MapReader bucket(reader, *rate, {"rate", "burst"});
        readBucket(reader, bucket, out.connection_rate);
    }
    if (auto size = map.get("table_size")) {
        if (auto value = reader.integer(*size, 1, kMaxTableSize)) out.table_size = uint32_t(*value);
    }
    if (map.isMap() && !out.enabled()) {
        reader.error(map.mark(), map.path(),
                     "sets no limit: add max_connections or connection_rate, or remove it");
    }
}

void readRequestRate(Reader& reader, const Field& field, RequestRate& out) {
    MapReader map(reader, field, {"rate", "burst", "key", "header", "table_size", "path_prefix"});
    if (auto prefix = map.get("path_prefix")) {
        if (auto value = reader.text(*prefix)) {
            if ((*value)[0] == '/' && std::none_of(value->begin(), value->end(), [](char c) {
                    return c <= ' ' || c == 0x7f || c == '?' || c == '#';
                })) {
                out.path_prefix = *value;
            } else {
                reader.error(prefix->valueMark(), prefix->path,
                             quote(*value) + " is not a path prefix: it starts with / and has no "
                                             "spaces, control characters, ? or #");
            }
        }
    }
    readBucket(reader, map, out.rate);
    if (auto key = map.get("key")) {
        if (auto value = reader.choice<RequestKey>(*key, {{"listener", RequestKey::Listener},
                                                         {"client", RequestKey::Client},
                                                         {"header", RequestKey::Header}})) {
            out.key = *value;
        }
    }
    const auto header = map.get("header");
    if (header) {
        if (auto value = reader.text(*header)) {
            if (std::all_of(value->begin(), value->end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
                })) {
                out.header = lowercase(*value);
            } else {
                reader.error(header->valueMark(), header->path,
                             quote(*value) + " is not a header name");
            }
        }
    }
    if (out.key == RequestKey::Header && !header) {
        reader.error(map.mark(), map.path() + ".header",
                     "key: header needs the header's name, such as header: X-API-Key");
    } else if (out.key != RequestKey::Header && header) {
        reader.error(header->keyMark, header->path, "only used with key: header");
    }
    if (auto size = map.get("table_size")) {
        if (auto value = reader.integer(*size, 1, kMaxTableSize)) out.table_size = uint32_t(*value);
    }
}

void readConcurrency(Reader& reader, const Field& field, UpstreamConcurrency& out) {
    MapReader map(reader, field, {"max", "queue", "queue_timeout"});
    if (auto max = map.require("max")) {
        if (auto value = reader.integer(*max, 1, kMaxUint32)) out.max = uint32_t(*value);
    }
    if (auto queue = map.get("queue")) {
        if (auto value = reader.integer(*queue, 0, kMaxUint32)) out.queue = uint32_t(*value);
    }
    if (auto timeout = map.get("queue_timeout")) {
        if (auto value = reader.duration(*timeout, false)) out.queue_timeout = *value;
    }
}

void readLimits(Reader& reader, const Field& field, Limits& limits) {
    MapReader map(reader, field,
                  {"max_connections", "max_header_bytes", "max_headers", "connection_rate",
                   "per_client", "request_rate", "upstream_concurrency"});
    const std::pair<const char*, uint32_t*> entries[] = {
        {"max_connections", &limits.max_connections},
        {"max_header_bytes", &limits.max_header_bytes},
        {"max_headers", &limits.max_headers},
    };
    for (const auto& [key, target] : entries) {
        if (auto entry = map.get(key)) {
            if (auto value = reader.integer(*entry, 1, kMaxUint32)) {
                *target = static_cast<uint32_t>(*value);
            }
        }
    }
    if (auto rate = map.get("connection_rate")) {
        MapReader bucket(reader, *rate, {"rate", "burst"});
        readBucket(reader, bucket, limits.connection_rate);
    }
    if (auto client = map.get("per_client")) readClientLimits(reader, *client, limits.per_client);
    if (auto rate = map.get("request_rate")) {
        std::vector<Field> rules;
        if (!rate->value.IsSequence()) {
            rules.push_back(*rate);
        } else if (auto items = reader.list(*rate)) {
            rules = std::move(*items);
        }
        std::string header;  // one admission header per listener: the codec looks up one name
        for (const Field& f : rules) {
            RequestRate rule;
            readRequestRate(reader, f, rule);
            if (!rule.header.empty()) {
                if (!header.empty() && rule.header != header) {
                    reader.error(f.keyMark, f.path + ".header",
                                 "every rule of a listener keys by the same header (" + header + ")");
                }
                header = rule.header;
            }
            limits.request_rate.push_back(std::move(rule));
        }
    }
    if (auto cap = map.get("upstream_concurrency")) {
        readConcurrency(reader, *cap, limits.upstream_concurrency);
    }
}

void readHttp2(Reader& reader, const Field& field, Http2& h2) {
    if (field.value.IsScalar()) {
        if (auto value = reader.boolean(field)) h2.enabled = *value;
        return;
    }
    MapReader map(reader, field, {"enabled", "max_concurrent_streams", "initial_window", "upstream_pool"});
    h2.enabled = true;
    if (auto enabled = map.get("enabled")) {
        if (auto value = reader.boolean(*enabled)) h2.enabled = *value;
    }
    if (auto streams = map.get("max_concurrent_streams")) {
        if (auto value = reader.integer(*streams, 1, 1000)) h2.max_concurrent_streams = uint32_t(*value);
    }
    if (auto window = map.get("initial_window")) {
        // RFC 9113 6.9.2: at most 2^31-1; below 1 KiB a stream would crawl.
        if (auto value = reader.integer(*window, 1024, 16 * 1024 * 1024)) h2.initial_window = uint32_t(*value);
    }
    if (auto pool = map.get("upstream_pool")) {
        if (auto value = reader.integer(*pool, 0, 1000)) h2.upstream_pool = uint32_t(*value);
    }
}

void readHttp(Reader& reader, const Field& field, HttpOptions& http) {
    MapReader map(reader, field, {"forwarded", "access_log", "client_cert_header", "request_id", "http2"});
    if (auto h2 = map.get("http2")) readHttp2(reader, *h2, http.http2);
    if (auto id = map.get("request_id")) {
        if (auto value = reader.boolean(*id)) http.request_id = *value;
    }
    if (auto forwarded = map.get("forwarded")) {
        if (auto value = reader.choice<ForwardedMode>(*forwarded,
                                                      {{"x-forwarded", ForwardedMode::XForwarded},
                                                       {"forwarded", ForwardedMode::Forwarded},
                                                       {"none", ForwardedMode::None}})) {
            http.forwarded = *value;
        }
    }
    if (auto accessLog = map.get("access_log")) {
        if (auto value = reader.boolean(*accessLog)) http.access_log = *value;
    }
    if (auto header = map.get("client_cert_header")) {
        if (auto value = reader.boolean(*header)) http.client_cert_header = *value;
    }
}

// h2 terminated here (http.http2) is parsed stream by stream and gets the listener's header
// edits. Without it, h2 negotiated by ALPN is tunneled to an h2c app unparsed: none of the
// listener's header edits apply to it, so the forwarding and client-certificate headers that
// the app trusts would be whatever the client sent. That tunnel is offered only where the
// listener sets none of them. A tcp listener edits no headers (its PROXY protocol header carries
// the client's address apart from the stream), so any ALPN is fine there.
void checkH2(Reader& reader, const Listener& listener, const std::optional<Field>& tls,
             const std::optional<Field>& upstream, const std::optional<Field>& http,
             const std::optional<Field>& limits) {
    if (listener.protocol != Protocol::Http) {
        if (listener.http.http2.enabled && http) {
            reader.error(toMark(http->value["http2"].Mark()), http->path + ".http2",
                         "http2 needs protocol: http (a tcp listener relays bytes, whatever the protocol)");
        }
        return;
    }
    if (listener.http.http2.enabled && http) {
        const YAML::Node& node = http->value["http2"];
        const std::string path = http->path + ".http2";
        if (!listener.tls) {
            reader.error(toMark(node.Mark()), path,
                         "http2 needs a TLS listener: clients choose h2 by ALPN in the TLS handshake");
        }
        if (listener.upstream.tls || listener.upstream.proxy_protocol != 0) {
            reader.error(toMark(node.Mark()), path,
                         "http2 termination reaches the app over plain TCP only: upstream.tls and "
                         "upstream.proxy_protocol are not supported with it");
        }
        if (listener.limits.upstream_concurrency.enabled() && limits) {
            reader.error(toMark(limits->value["upstream_concurrency"].Mark()),
                         limits->path + ".upstream_concurrency",
                         "upstream_concurrency does not apply to HTTP/2 streams; it cannot be combined "
                         "with http.http2");
        }
        return;
    }
    std::string needed;
    if (listener.http.forwarded != ForwardedMode::None) needed = "http.forwarded: none";
    if (listener.http.client_cert_header) {
        needed += needed.empty() ? "" : " and ";
        needed += "http.client_cert_header: false";
    }
    if (needed.empty()) return;
    const std::string why =
        "h2 is tunneled to the app unparsed, so this listener's header rewriting does not apply "
        "to it and a client's forged X-Forwarded-For, Forwarded or X-Forwarded-Client-Cert would "
        "reach the app; set " +
        needed;
    if (listener.upstream.http2 && upstream) {
        const YAML::Node& node = upstream->value;
        reader.error(toMark(node["http2"].Mark()), upstream->path + ".http2",
                     why + ", or leave http2 off");
    }
    if (!listener.tls || !tls) return;
    const auto& alpn = listener.tls->alpn;
    const auto h2 = std::find(alpn.begin(), alpn.end(), "h2");
    if (h2 == alpn.end()) return;
    const YAML::Node& node = tls->value;
    const size_t index = size_t(h2 - alpn.begin());
    reader.error(toMark(node["alpn"][index].Mark()),
                 tls->path + ".alpn[" + std::to_string(index) + "]",
                 why + ", set http.http2: true to terminate h2 here, or remove h2 from the list");
}

void readListener(Reader& reader, const Field& field, Config& config, Positions& positions) {
    MapReader map(reader, field,
                  {"name", "listen", "protocol", "tls", "upstream", "timeouts", "limits", "http"});
    if (!map.isMap()) return;
    Listener listener;
    Positions::ListenerPositions at;
    listener.mark = map.mark();
    if (auto name = map.require("name")) {
        if (auto value = reader.text(*name)) {
            if (isListenerName(*value)) {
                listener.name = *value;
                at.name = name->valueMark();
            } else {
                reader.error(name->valueMark(), name->path,
                             quote(*value) +
                                 " is not a valid name: use up to 63 letters, "
                                 "digits, '.', '_' or '-'");
            }
        }
    }
    if (auto listen = map.require("listen")) {
        if (auto value = reader.address(*listen)) {
            listener.listen = *value;
            at.listen = listen->valueMark();
        }
    }
    if (auto protocol = map.get("protocol")) {
        if (auto value = reader.choice<Protocol>(
                *protocol, {{"http", Protocol::Http}, {"tcp", Protocol::Tcp}})) {
            listener.protocol = *value;
        }
    }
    const auto tls = map.get("tls");
    if (tls) listener.tls = readServerTls(reader, *tls, positions);
    const auto upstream = map.require("upstream");
    if (upstream) {
        readUpstream(reader, *upstream, listener.protocol, listener.upstream, at.upstream,
                     positions);
    }
    if (auto timeouts = map.get("timeouts")) readTimeouts(reader, *timeouts, listener.timeouts);
    const std::optional<Field> limits = map.get("limits");
    if (limits) {
        readLimits(reader, *limits, listener.limits);
        if (listener.protocol != Protocol::Http && !listener.limits.request_rate.empty()) {
            reader.error(toMark(limits->value["request_rate"].Mark()), limits->path + ".request_rate",
                         "request limits need protocol: http (a tcp listener sees no requests)");
        }
        if (listener.protocol != Protocol::Http && listener.limits.upstream_concurrency.enabled()) {
            reader.error(toMark(limits->value["upstream_concurrency"].Mark()),
                         limits->path + ".upstream_concurrency",
                         "upstream_concurrency needs protocol: http (a tcp listener sees no requests)");
        }
    }
    const std::optional<Field> http = map.get("http");
    if (http) readHttp(reader, *http, listener.http);
    checkH2(reader, listener, tls, upstream, http, limits);
    config.listeners.push_back(std::move(listener));
    positions.listeners.push_back(at);
}

void readAdmin(Reader& reader, const Field& field, Admin& admin, Positions& positions) {
    MapReader map(reader, field, {"listen", "enabled"});
    if (auto listen = map.get("listen")) {
        auto value = reader.address(*listen);
        if (value) {
            admin.listen = *value;
            positions.adminListen = listen->valueMark();
        } else {
            positions.adminListenValid = false;
        }
    }
    if (auto enabled = map.get("enabled")) {
        if (auto value = reader.boolean(*enabled)) admin.enabled = *value;
    }
}

void readRedirect(Reader& reader, const Field& field, Redirect& redirect, Positions& positions) {
    MapReader map(reader, field,
                  {"inbound", "exclude_ports", "exclude_cidrs", "interfaces", "ipv6"});
    if (auto inbound = map.get("inbound")) {
        if (auto items = reader.list(*inbound)) {
            for (const auto& item : *items) {
                MapReader entry(reader, item, {"port", "listener"});
                if (!entry.isMap()) continue;
                InboundRedirect rule;
                Positions::InboundPositions at;
                rule.mark = entry.mark();
                if (auto port = entry.require("port")) {
                    if (auto value = reader.port(*port)) {
                        rule.port = *value;
                        at.port = port->valueMark();
                    }
                }
                if (auto listener = entry.require("listener")) {
                    if (auto value = reader.text(*listener)) {
                        rule.listener = *value;
                        at.listener = listener->valueMark();
                    }
                }
                redirect.inbound.push_back(std::move(rule));
                positions.inbound.push_back(at);
            }
        }
    }
    if (auto ports = map.get("exclude_ports")) {
        if (auto items = reader.list(*ports)) {
            for (const auto& item : *items) {
                if (auto value = reader.port(item)) {
                    redirect.exclude_ports.push_back(*value);
                    positions.excludePorts.push_back(item.valueMark());
                }
            }
        }
    }
    if (auto cidrs = map.get("exclude_cidrs")) {
        if (auto items = reader.list(*cidrs)) {
            std::set<std::string> seen;
            for (const auto& item : *items) {
                auto value = reader.text(item);
                if (!value) continue;
                std::string reason;
                if (!checkCidr(*value, reason)) {
                    reader.error(item.valueMark(), item.path,
                                 "invalid CIDR " + quote(*value) + ": " + reason);
                } else if (!seen.insert(*value).second) {
                    reader.error(item.valueMark(), item.path, quote(*value) + " is listed twice");
                } else {
                    redirect.exclude_cidrs.push_back(*value);
                }
            }
        }
    }
    if (auto interfaces = map.get("interfaces")) {
        std::vector<Field> items;
        if (auto names = reader.textList(*interfaces, &items)) {
            for (size_t i = 0; i < names->size(); ++i) {
                if (!isInterfaceName((*names)[i])) {
                    reader.error(items[i].valueMark(), items[i].path,
                                 quote((*names)[i]) +
                                     " is not an interface name (up to 15 letters, digits, "
                                     "'.', '_' or '-', optionally ending in '+')");
                } else {
                    redirect.interfaces.push_back((*names)[i]);
                }
            }
        }
    }
    if (auto ipv6 = map.get("ipv6")) {
        if (auto value = reader.boolean(*ipv6)) redirect.ipv6 = *value;
    }
}

void readLog(Reader& reader, const Field& field, Log& log) {
    MapReader map(reader, field, {"level", "format", "queue_bytes"});
    if (auto level = map.get("level")) {
        if (auto value = reader.choice<LogLevel>(*level, {{"debug", LogLevel::Debug},
                                                          {"info", LogLevel::Info},
                                                          {"warn", LogLevel::Warn},
                                                          {"error", LogLevel::Error}})) {
            log.level = *value;
        }
    }
    if (auto format = map.get("format")) {
        if (auto value = reader.choice<LogFormat>(
                *format, {{"text", LogFormat::Text}, {"json", LogFormat::Json}})) {
            log.format = *value;
        }
    }
    // Below 64 KiB, ordinary long lines (a request target may be 32 KiB) would not fit.
    if (auto queue = map.get("queue_bytes")) {
        if (auto value = reader.integer(*queue, 64 * 1024, 1024 * 1024 * 1024)) {
            log.queue_bytes = *value;
        }
    }
}

// Bounds that keep a resolver from querying in a tight loop or holding a record for days.
constexpr Duration kMinTtlFloor{100};
constexpr Duration kMaxTtlCeiling = std::chrono::hours(24);

void readDns(Reader& reader, const Field& field, Dns& dns) {
    MapReader map(reader, field, {"resolv_conf", "hosts", "min_ttl", "max_ttl", "failure_backoff"});
    if (auto path = map.get("resolv_conf")) {
        if (auto value = reader.text(*path)) dns.resolv_conf = *value;
    }
    if (auto path = map.get("hosts")) {
        if (auto value = reader.text(*path)) dns.hosts = *value;
    }
    auto bounded = [&](const char* key, Duration low, Duration high, Duration& out) {
        auto entry = map.get(key);
        if (!entry) return std::optional<Field>();
        auto value = reader.duration(*entry, false);
        if (!value) return std::optional<Field>();
        if (*value < low || *value > high) {
            reader.error(entry->valueMark(), entry->path,
                         "must be from " + std::to_string(low.count()) + "ms to " +
                             std::to_string(std::chrono::duration_cast<std::chrono::hours>(high)
                                                .count()) +
                             "h");
            return std::optional<Field>();
        }
        out = *value;
        return entry;
    };
    bounded("min_ttl", kMinTtlFloor, kMaxTtlCeiling, dns.min_ttl);
    auto max = bounded("max_ttl", kMinTtlFloor, kMaxTtlCeiling, dns.max_ttl);
    bounded("failure_backoff", kMinTtlFloor, kMaxTtlCeiling, dns.failure_backoff);
    if (dns.min_ttl > dns.max_ttl) {
        const Field& at = max ? *max : field;
        reader.error(max ? at.valueMark() : map.mark(), max ? at.path : map.path(),
                     "max_ttl is below min_ttl");
    }
}

}  // namespace

void readConfig(Reader& reader, const YAML::Node& root, Config& config, Positions& positions) {
    if (root.IsNull()) {
        reader.error(Mark{}, "",
                     "the file has no settings; it needs at least a \"listeners\" list");
        return;
    }
    Mark rootMark = toMark(root.Mark());
    if (rootMark.line == 0) rootMark = {1, 1};
    if (!root.IsMap()) {
        reader.error(rootMark, "",
                     "the top level must be a map of settings (listeners, admin, redirect, log, "
                     "...), not " +
                         std::string(root.IsSequence() ? "a list" : "a single value"));
        return;
    }
    MapReader top(reader, Field{root, "", rootMark},
                  {"listeners", "admin", "redirect", "log", "drain_timeout", "cert_poll_interval",
                   "tls_backend", "dns"});
    if (auto listeners = top.require("listeners")) {
        if (auto items = reader.list(*listeners)) {
            if (items->empty()) {
                reader.error(listeners->valueMark(), listeners->path,
                             "at least one listener is required");
            }
            for (const auto& item : *items) readListener(reader, item, config, positions);
        }
    }
    if (auto admin = top.get("admin")) readAdmin(reader, *admin, config.admin, positions);
    if (auto redirect = top.get("redirect")) {
        readRedirect(reader, *redirect, config.redirect, positions);
    }
    if (auto log = top.get("log")) readLog(reader, *log, config.log);
    if (auto drain = top.get("drain_timeout")) {
        if (auto value = reader.duration(*drain, true)) config.drain_timeout = *value;
    }
    if (auto poll = top.get("cert_poll_interval")) {
        if (auto value = reader.duration(*poll, true)) config.cert_poll_interval = *value;
    }
    if (auto dns = top.get("dns")) readDns(reader, *dns, config.dns);
    if (auto backend = top.get("tls_backend")) {
        if (auto value = reader.choice<std::string>(
                *backend, {{"mbedtls", "mbedtls"}, {"openssl", "openssl"}})) {
            config.tls_backend = *value;
            positions.tlsBackend = backend->valueMark();
        }
    }
}

}  // namespace sidecar::config::detail
