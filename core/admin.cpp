#include "core/admin.h"

#include <cstring>
#include <string_view>

#include "core/server.h"

namespace sidecar::core {

struct AdminConnection {
    static constexpr size_t kMaxRequest = 8192;

    explicit AdminConnection(AdminServer& s) : server(s) {
        tcp.data = this;
        timer.data = this;
        write_req.data = this;
    }

    AdminServer& server;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write_req;
    std::string request;
    std::string response;
    int closes = 0;
    bool done = false;

    void close() {
        if (done) return;
        done = true;
        uv_close(reinterpret_cast<uv_handle_t*>(&tcp), onClose);
        uv_close(reinterpret_cast<uv_handle_t*>(&timer), onClose);
    }
    static void onClose(uv_handle_t* h) noexcept {
        auto* c = static_cast<AdminConnection*>(h->data);
        if (++c->closes == 2) delete c;
    }

    void respond(int status, const char* reason, const std::string& content_type, const std::string& body) {
        uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
        response = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: " + content_type +
                   "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
        uv_buf_t b = uv_buf_init(response.data(), unsigned(response.size()));
        if (uv_write(&write_req, reinterpret_cast<uv_stream_t*>(&tcp), &b, 1, [](uv_write_t* w, int) noexcept {
                static_cast<AdminConnection*>(w->data)->close();
            }) != 0) {
            close();
        }
    }

    void handle() {
        size_t line_end = request.find("\r\n");
        std::string_view line(request.data(), line_end);
        size_t sp1 = line.find(' ');
        size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
        if (sp2 == std::string_view::npos || line.substr(sp2 + 1).rfind("HTTP/1.", 0) != 0) {
            respond(400, "Bad Request", "text/plain", "bad request\n");
            return;
        }
        std::string_view method = line.substr(0, sp1);
        std::string_view path = line.substr(sp1 + 1, sp2 - sp1 - 1);
        if (size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
        const AdminServer::Hooks& h = server.hooks_;
        bool get = method == "GET" || method == "HEAD";
        if (path == "/healthz") {
            if (!get) return respond(405, "Method Not Allowed", "text/plain", "use GET\n");
            return respond(200, "OK", "text/plain", "ok\n");
        }
        if (path == "/readyz") {
            if (!get) return respond(405, "Method Not Allowed", "text/plain", "use GET\n");
            if (h.ready && h.ready()) return respond(200, "OK", "text/plain", "ready\n");
            std::string why = h.not_ready_reason ? h.not_ready_reason() : "";
            return respond(503, "Service Unavailable", "text/plain",
                           "not ready" + (why.empty() ? "" : ": " + why) + "\n");
        }
        if (path == "/metrics") {
            if (!get) return respond(405, "Method Not Allowed", "text/plain", "use GET\n");
            return respond(200, "OK", "text/plain; version=0.0.4; charset=utf-8", h.metrics ? h.metrics() : "");
        }
        if (path == "/shutdown") {
            if (method != "POST") return respond(405, "Method Not Allowed", "text/plain", "use POST\n");
            // The admin port is reachable by kubelet from outside the Pod; stopping the proxy is
            // for processes inside it only.
            std::string ip;
            uint16_t port = 0;
            if (!peerAddress(&tcp, &ip, &port) || !(ip.rfind("127.", 0) == 0 || ip == "::1"))
                return respond(403, "Forbidden", "text/plain", "shutdown is accepted from loopback only\n");
            respond(200, "OK", "text/plain", "draining\n");
            if (h.shutdown) h.shutdown();
            return;
        }
        respond(404, "Not Found", "text/plain", "not found\n");
    }
};

AdminServer::AdminServer(uv_loop_t* loop, Logger& log, Hooks hooks)
    : loop_(loop), log_(log), hooks_(std::move(hooks)) {
    handle_.data = this;
}

std::optional<std::string> AdminServer::listen(const config::SocketAddress& addr) {
    sockaddr_storage ss;
    if (!resolveAddress(addr, &ss)) return "bad admin address " + addr.toString();
    int r = uv_tcp_init(loop_, &handle_);
    if (r != 0) return std::string("admin socket: ") + uv_strerror(r);
    inited_ = true;
    r = uv_tcp_bind(&handle_, reinterpret_cast<const sockaddr*>(&ss), 0);
    if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&handle_), 128, onConnection);
    if (r != 0) return "cannot listen on " + addr.toString() + ": " + uv_strerror(r);
    return std::nullopt;
}

void AdminServer::close() {
    if (!inited_) return;
    inited_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&handle_), nullptr);
}

void AdminServer::onConnection(uv_stream_t* s, int status) noexcept {
    auto* self = static_cast<AdminServer*>(s->data);
    if (status != 0) return;
    auto* c = new AdminConnection(*self);
    uv_tcp_init(self->loop_, &c->tcp);
    uv_timer_init(self->loop_, &c->timer);
    if (uv_accept(s, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
        c->close();
        return;
    }
    // A probe that never finishes its request is dropped.
    uv_timer_start(&c->timer, [](uv_timer_t* t) noexcept { static_cast<AdminConnection*>(t->data)->close(); },
                   5000, 0);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
            // Reads are consumed inside the read callback, so one buffer serves every connection.
            AdminServer& server = static_cast<AdminConnection*>(h->data)->server;
            buf->base = server.read_buf_;
            buf->len = sizeof server.read_buf_;
        },
        [](uv_stream_t* st, ssize_t n, const uv_buf_t* buf) noexcept {
            auto* c = static_cast<AdminConnection*>(st->data);
            if (c->done) return;
            if (n < 0) {
                c->close();
                return;
            }
            c->request.append(buf->base, size_t(n));
            if (c->request.find("\r\n\r\n") != std::string::npos) {
                c->handle();
            } else if (c->request.size() > AdminConnection::kMaxRequest) {
                c->respond(431, "Request Header Fields Too Large", "text/plain", "too large\n");
            }
        });
}

}  // namespace sidecar::core
