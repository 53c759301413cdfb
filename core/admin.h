#pragma once
// The admin endpoint: a small plain-HTTP listener for probes and metrics.
//   GET /healthz   200 while the process runs
//   GET /readyz    200 once every listener is bound with its certificates loaded and every upstream
//                  name resolved; 503 with the reason otherwise (starting, draining, a name)
//   GET /metrics   Prometheus text exposition format
//   POST /shutdown starts a drain; the process exits when it is done
// Each request is answered and the connection closed; requests are small and never forwarded.

#include <uv.h>

#include <functional>
#include <optional>
#include <string>

#include "config/config.h"
#include "core/log.h"

namespace sidecar::core {

class AdminServer {
public:
    struct Hooks {
        std::function<bool()> ready;
        std::function<std::string()> not_ready_reason;  // the 503 body of /readyz
        std::function<std::string()> metrics;
        std::function<void()> shutdown;
    };

    AdminServer(uv_loop_t* loop, Logger& log, Hooks hooks);
    std::optional<std::string> listen(const config::SocketAddress& addr);
    void close();  // stops listening; open admin connections finish on their own

private:
    static void onConnection(uv_stream_t* s, int status) noexcept;
    uv_loop_t* loop_;
    Logger& log_;
    Hooks hooks_;
    uv_tcp_t handle_;
    bool inited_ = false;
    char read_buf_[2048];
    friend struct AdminConnection;
};

}  // namespace sidecar::core
