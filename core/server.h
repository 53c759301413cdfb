#pragma once
// The data plane: one libuv loop, its listeners, the connections they accept, signals and drain.

#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "config/config.h"
#include "core/admin.h"
#include "core/buffer.h"
#include "core/idle_trim.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/ratelimit.h"
#include "core/resolver.h"
#include "tls/backend.h"

namespace sidecar::core {

class Connection;
class Server;

// Everything a connection needs from its listener's configuration, built once per config or
// certificate generation. Connections keep the snapshot they started with, so a reload never
// changes an open connection under its feet.
struct ListenerRuntime {
    config::Listener cfg;
    std::shared_ptr<tls::Context> server_tls;  // null = plain listener
    std::shared_ptr<tls::Context> client_tls;  // null = plain upstream
    std::shared_ptr<UpstreamTarget> upstream;  // its addresses, kept current by the Resolver
    ListenerStats* stats = nullptr;
    ListenerLimiter* limiter = nullptr;  // owned by the Server, kept across reloads
};

// The upstream_concurrency gauges of a listener, from its gate.
inline void showGate(ListenerStats& stats, const ConcurrencyGate& gate) {
    stats.upstream_in_flight = gate.inUse();
    stats.upstream_queued = int64_t(gate.waiting());
}

class Listener {
public:
    Listener(Server& server, std::shared_ptr<const ListenerRuntime> runtime);
    // Binds and listens; on failure returns a message.
    std::optional<std::string> bind();
    void close();  // stop accepting; the object is freed in the close callback

    std::shared_ptr<const ListenerRuntime> runtime;
    Server& server;
    uv_tcp_t handle;
    // Accept pacing: connections accepted in the current loop iteration, and whether the rest
    // wait for the check phase (Server::kAcceptBatch).
    uint64_t batch_iteration = 0;
    uint32_t batch_accepted = 0;
    bool accept_deferred = false;

private:
    bool inited_ = false;
};

class Server {
public:
    Server(uv_loop_t* loop, Logger& log, tls::Backend& backend, Metrics& metrics,
           config::Validators validators = {});
    ~Server();

    // Builds TLS contexts, binds every listener and installs signal handlers. On failure logs
    // why and returns false.
    bool start(const config::Config& cfg);
    // Why start() failed: the first error it logged.
    const std::string& startError() const { return start_error_; }
    // Stops accepting, lets open connections finish up to drain_timeout, then stops the loop.
    void beginDrain(const char* why);
    bool draining() const { return draining_; }
    // Every listener bound with its certificates loaded, every upstream name resolved, and not
    // draining.
    bool ready() const { return ready_ && !draining_ && resolver_.notReadyReason().empty(); }
    // Why ready() is false, for /readyz.
    std::string notReadyReason() const;

    // Builds the runtime of one listener: TLS contexts and the resolved upstream address.
    std::shared_ptr<ListenerRuntime> buildRuntime(const config::Listener& l, std::string* error);

    uv_loop_t* loop() const { return loop_; }
    Logger& log() { return log_; }
    Metrics& metrics() { return metrics_; }
    BufferPool& buffers() { return buffers_; }
    WriteReqPool& writeReqs() { return write_reqs_; }
    // Scratch space used synchronously inside one callback, never held across callbacks.
    uint8_t* readBuffer() { return read_buf_.get(); }
    static constexpr size_t kReadBufferSize = 64 * 1024;
    uint8_t* plainBuffer() { return plain_buf_.get(); }
    static constexpr size_t kPlainBufferSize = 32 * 1024;

    // SIGHUP: re-reads the config file, then reloads certificates. Invalid input keeps the old.
    void reloadConfig();
    // Rebuilds the TLS contexts of listeners whose certificate/key/CA files changed.
    void reloadCertificates(const char* why, bool force);

    void onAccept(Listener& l);
    // Accepts at most kAcceptBatch connections per listener per loop iteration; the rest wait
    // in the kernel's backlog until after the poll phase, so that a flood of new clients cannot
    // keep established connections from being served.
    static constexpr uint32_t kAcceptBatch = 64;
    // While handshakes are queued, a TLS listener accepts only while fewer client handshakes are
    // pending than the loop does in kPendingHandshakesNs (by the recent average loop time per
    // handshake, all its steps; at least kMinPendingHandshakes unless they would take longer
    // than kMaxPendingHandshakesNs, at most kMaxPendingHandshakes). Pending: queued for their
    // turn, or accepted less than kFreshMs ago with no ClientHello yet, and for a listener that
    // originates TLS, its app connections being opened (these count even with nothing queued).
    // The rest of a reconnect storm waits in the kernel's backlog, not in memory and not in the
    // loop's reads. With nothing queued or being opened nothing is paused, so clients that
    // connect and stay silent cannot close the listener.
    static constexpr uint64_t kPendingHandshakesNs = 100'000'000;
    static constexpr uint64_t kMinPendingHandshakes = 64;  // while that is at most:
    static constexpr uint64_t kMaxPendingHandshakesNs = 250'000'000;
    static constexpr uint64_t kMaxPendingHandshakes = 1024;
    static constexpr uint64_t kFreshMs = 500;
    bool handshakesBacklogged(const Listener& l);
    void pruneFresh();
    // A TLS connection was accepted: returns its id among the fresh ones.
    uint64_t enterFresh();
    // It sent its first byte, or closed.
    void leaveFresh(uint64_t id) { fresh_ids_.erase(id); }
    void onListenerReadable(Listener& l);
    void forgetListener(Listener* l);
    void forget(Connection* c);  // called by a connection when it starts closing

    // Fairness between handshakes and established connections. Client handshake steps (the
    // public-key work) never run inside the poll phase: a connection with handshake input is
    // queued, and after the poll phase, when every connection with something to read has been
    // served, the queue is worked off oldest first for a slice of the iteration: as long as the
    // rest of the iteration took, at least kHandshakeSliceNs, and at most
    // kShortHandshakeSliceNs, or kMaxHandshakeSliceNs once the oldest has waited
    // kHandshakeWaitMs; the turnover outside the slice (noteTurnover) counts as the slice's own,
    // not the rest's, and at least one step runs; a step after the first starts only if its
    // kind's recent average fits in what is left. While the queue is not empty the poll does
    // not block. So a reconnect
    // storm is worked off in short slices (one step with mbedTLS) between which established
    // connections are read and written, and the loop's spare time all goes to handshakes; when
    // established connections keep the loop busy and handshakes start to wait, the slices grow
    // to a fair half of the CPU, so that new clients are not starved.
    static constexpr uint64_t kHandshakeSliceNs = 500'000;
    static constexpr uint64_t kShortHandshakeSliceNs = 1'000'000;
    static constexpr uint64_t kMaxHandshakeSliceNs = 8'000'000;
    static constexpr uint64_t kHandshakeWaitMs = 250;
    // A handshake call stops at the first state boundary past this (tls::Session::handshake):
    // with mbedTLS a TLS 1.3 server flight is then two pieces, the key share with the key
    // agreement, and the signature.
    static constexpr uint64_t kHandshakeStepBudgetNs = 250'000;
    static constexpr uint64_t kRefusalSummaryMs = 10'000;
    // `finishing`: the handshake has taken a step already (its next one comes first).
    void deferHandshake(Connection* c, bool finishing);
    size_t handshakesQueued() const { return handshake_queue_.size() + finishing_queue_.size(); }
    void cancelHandshake(Connection* c);
    // A connection began (true) or stopped (false) opening an app connection with TLS
    // origination.
    void countOriginating(bool on) { on ? ++originating_ : --originating_; }
    // Loop time outside the handshake slice spent on turnover: a TLS client joining (its
    // accept, and its reads and app connect until its first response has been relayed), and
    // clients ending (the read that ends one, and a closed connection's teardown). The slice
    // counts it as its own (onLoopCheck).
    void noteTurnover(uint64_t ns) { turnover_ns_ += ns; }

    // limits.upstream_concurrency: `c` gives its slot back (or its granted, untold place); the
    // oldest waiters get the free slots and are told after the poll phase.
    void releaseUpstreamSlot(Connection* c, ListenerLimiter& limiter);
    // A refusal by a limit: counted for the listener's next summary log line (one per interval,
    // whatever the flood).
    void noteRefusal(const std::string& listener, const char* reason);

private:
    static void onSignal(uv_signal_t* h, int signum) noexcept;
    static void onDrainTimer(uv_timer_t* t) noexcept;
    void finishIfDrained();
    void watchCertificateFiles();
    void refreshCertificateGauges();
    std::string materialFingerprint(const config::Listener& l) const;
    static void onFsEvent(uv_fs_event_t* h, const char* file, int events, int status) noexcept;
    static void onReloadTimer(uv_timer_t* t) noexcept;
    static void onLoopIdle(uv_prepare_t* h) noexcept;
    static void onLoopCheck(uv_check_t* h) noexcept;
    void noteStep(uint64_t ns, bool first);
    static void onRefusalSummary(uv_timer_t* t) noexcept;
    void grantWaiters(ListenerLimiter& limiter);
    void updateLoopIdle();
    void closeOwnHandles();
    void closeWatchers();
    void noteCertificatesReloaded(const ListenerRuntime& rt, const char* why);

    uv_loop_t* loop_;
    Logger& log_;
    tls::Backend& backend_;
    Metrics& metrics_;
    config::Config cfg_;
    BufferPool buffers_;
    WriteReqPool write_reqs_;
    std::unique_ptr<uint8_t[]> read_buf_;
    std::unique_ptr<uint8_t[]> plain_buf_;
    std::vector<Listener*> listeners_;  // each freed in its close callback
    std::unordered_set<Connection*> connections_;
    IdleTrim idle_trim_;  // after the last connection closes: empty the pools, trim the heap
    uv_signal_t sig_term_, sig_int_, sig_hup_;
    uv_timer_t drain_timer_;
    std::unique_ptr<AdminServer> admin_;
    Resolver resolver_;
    config::Validators validators_;
    std::map<std::string, std::string> fingerprints_;  // listener name -> TLS material digest
    std::map<std::string, std::unique_ptr<ListenerLimiter>> limiters_;  // by listener name
    std::vector<uv_fs_event_t*> watchers_;              // freed in their close callbacks
    uv_timer_t debounce_timer_;
    uv_timer_t poll_timer_;
    uv_prepare_t log_flush_;  // runs before the loop waits for I/O: writes the access lines
    uv_check_t loop_check_;  // after the poll phase: granted slots, then deferred handshakes
    uv_idle_t loop_idle_;    // active while either waits: the poll does not block
    // Connections with handshake input, and when each was queued (loop ms), oldest first: new
    // clients, and handshakes that have taken a step already (worked off first).
    std::deque<std::pair<Connection*, uint64_t>> handshake_queue_;
    std::deque<std::pair<Connection*, uint64_t>> finishing_queue_;
    size_t originating_ = 0;  // connections opening an app connection with TLS origination
    std::deque<std::pair<uint64_t, uint64_t>> fresh_;  // (accepted at, loop ms; id), oldest first
    std::unordered_set<uint64_t> fresh_ids_;           // fresh ones with no first byte yet
    uint64_t fresh_seq_ = 0;
    std::deque<Connection*> granted_;  // given an upstream slot, not yet told
    uv_timer_t refusal_timer_;         // the refusal summary's interval
    std::map<std::pair<std::string, std::string>, uint64_t> refusals_;  // (listener, reason) -> count
    uint64_t check_done_ns_ = 0;       // when the last check phase ended
    bool handshakes_carried_ = false;  // it left handshakes queued: the next poll did not block
    uint64_t turnover_ns_ = 0;         // turnover time outside the slice since then
    // Recent average loop time per handshake, all its steps. It starts high (an mbedTLS server
    // handshake costs 1-2 ms here, an origination about 5) so a first storm is not over-admitted.
    uint64_t handshake_ns_ = 4'000'000;
    uint64_t steps_ns_ = 0;              // step time since handshake_ns_ was last updated
    uint32_t steps_started_ = 0;         // new handshakes stepped in that time
    uint64_t first_step_ns_ = 1'000'000;  // recent average of a new handshake's first step
    uint64_t next_step_ns_ = 100'000;     // and of a later step
    uint64_t iteration_ = 0;         // loop iterations, counted before each poll
    // Listeners with connections left for the check phase (their accept batch is spent, or
    // handshakes are backlogged).
    std::vector<Listener*> accept_pending_;
    bool ready_ = false;
    bool handles_inited_ = false;
    bool draining_ = false;
    bool finished_ = false;
    std::string start_error_;
};

// Resolves a config address (IP literal or "localhost") into a sockaddr.
bool resolveAddress(const config::SocketAddress& a, sockaddr_storage* out);
// "1.2.3.4" / "::1" and port of a connected socket's peer.
bool peerAddress(const uv_tcp_t* tcp, std::string* ip, uint16_t* port);

}  // namespace sidecar::core
