// The management server's protocol core (A1-A5, D1): every control session's state machine,
// authentication decisions, keepalive/offline timers, revocation and abuse limits — with no I/O.
// The host feeds it (now, event) and executes the Actions it returns: send a frame, close a
// session, append an audit event, run an enrollment, save attributes (style.md 1-3).
// Not thread-safe: the host serialises calls (toriid holds one mutex around it).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

#include "core/endpoint.hpp"
#include "core/p2p/method.hpp"
#include "core/server/enrollment.hpp"
#include "core/server/failure_limiter.hpp"
#include "core/server/overlay.hpp"
#include "core/session/limits.hpp"
#include "core/store/store.hpp"
#include "core/stun/nat_probe.hpp"
#include "torii/control.pb.h"

namespace torii::server {

using SessionId = uint64_t;

struct Now {
  Instant mono{};
  UnixMs wall = 0;
};

// What the TLS layer learned of the client certificate. The handshake accepts any certificate
// so that the core can refuse with a clear error and an audit entry naming the claimed ID.
struct ClientCert {
  bool present = false;
  std::string device_id;  // as the certificate claims it (CN)
  std::string group;      // OU
  std::string serial_hex;
  std::string verify_error;  // "" when the chain to the torii CA verified at handshake time
};

enum class CloseKind { close_notify, eof, error };

namespace action {
struct Send {
  SessionId sid;
  std::vector<uint8_t> frame;
};
// Flush what was sent, then TLS close_notify and close the socket (A5).
struct Close {
  SessionId sid;
};
struct Audit {
  store::AuditEvent event;
};
// Run enrollment() outside the core, then call on_enroll_result.
struct Enroll {
  SessionId sid;
  std::string device_id;
  std::string token;
  std::vector<uint8_t> csr_der;
};
struct SaveAttributes {
  std::string device_id;
  store::DeviceAttributes attributes;
};
// The UDP relay may forward this tunnel's packets between the two devices that prove `key`
// (A6 relay); RelayClose withdraws that.
struct RelayOpen {
  uint64_t tunnel_id;
  std::array<uint8_t, 32> key;
};
struct RelayClose {
  uint64_t tunnel_id;
};
}  // namespace action

using Action = std::variant<action::Send, action::Close, action::Audit, action::Enroll,
                            action::SaveAttributes, action::RelayOpen, action::RelayClose>;
using Actions = std::vector<Action>;

struct ServerConfig {
  uint16_t stun_port = 3478;
  Duration first_message_timeout = limits::kFirstMessageTimeout;
  uint32_t missed_echoes = limits::kMissedEchoes;
  Duration offline_grace = limits::kOfflineGrace;
  LimiterConfig per_source{limits::kAuthFailuresPerSource, limits::kAuthFailureWindow,
                           limits::kAuthLockout, limits::kLimiterMaxKeys};
  LimiterConfig per_device{limits::kAuthFailuresPerDevice, limits::kAuthFailureWindow,
                           limits::kAuthLockout, limits::kLimiterMaxKeys};
  OverlayPlan overlay;      // A9 overlay addresses
  uint16_t relay_port = 0;  // UDP relay port (0: relay only inside the TLS session)
};

struct Metrics {
  uint64_t sessions_opened = 0;  // authenticated sessions
  uint64_t sessions_closed = 0;
  uint64_t tls_handshake_failures = 0;
  uint64_t auth_failures = 0;
  uint64_t lockouts = 0;
  uint64_t rejected_locked = 0;  // connections refused because the source is locked out
  uint64_t messages_in = 0;
  uint64_t messages_out = 0;
  uint64_t malformed = 0;
  uint64_t enroll_ok = 0;
  uint64_t enroll_failed = 0;
  uint64_t echoes = 0;
  uint64_t offline_timeouts = 0;
  uint64_t revocations = 0;
  uint64_t peer_requests = 0;
  uint64_t peer_refused = 0;
  uint64_t peer_timeouts = 0;
  uint64_t peer_rate_limited = 0;
  uint64_t tunnels_open = 0;  // brokered tunnels (gauge)
  uint64_t relay_tls_packets = 0;
  uint64_t relay_tls_dropped = 0;
};

struct SessionInfo {
  SessionId sid = 0;
  Endpoint source;
  UnixMs connected_since = 0;
  UnixMs last_seen = 0;
  std::optional<uint32_t> rtt_ms;
};

class ServerCore {
 public:
  ServerCore(ServerConfig cfg, store::Store& store)
      : cfg_(cfg), store_(store), per_source_(cfg.per_source), per_device_(cfg.per_device) {}

  // Before the TLS handshake: false when the source address is locked out (D1).
  bool admit(const Now& now, const Endpoint& source);
  void on_handshake_failed(const Now& now, const Endpoint& source, const std::string& reason,
                           Actions& out);
  SessionId on_open(const Now& now, const Endpoint& source, ClientCert cert, Actions& out);
  void on_frame(const Now& now, SessionId sid, std::string_view payload, Actions& out);
  // The stream announced a frame over the size limit: protocol violation.
  void on_stream_corrupt(const Now& now, SessionId sid, Actions& out);
  void on_enroll_result(const Now& now, SessionId sid, const EnrollResult& r, Actions& out);
  // The connection ended (after our Close action, or on the peer's close_notify / EOF / error).
  void on_closed(const Now& now, SessionId sid, CloseKind kind, Actions& out);

  // A5 and revocation: server-side closes. revoke() also refuses the device from now on (the
  // Store is updated by the caller before).
  void revoke(const Now& now, const std::string& device_id, Actions& out);
  bool disconnect(const Now& now, const std::string& device_id, Actions& out);
  void shutdown(const Now& now, Actions& out);

  // Timeouts; returns the next instant at which tick wants to run.
  std::optional<Instant> tick(const Now& now, Actions& out);

  std::optional<SessionInfo> session_of(const std::string& device_id) const;
  // Brokered tunnels of a device: (tunnel ID, peer ID, method).
  std::vector<std::tuple<uint64_t, std::string, p2p::Method>> tunnels_of(
      const std::string& device_id) const;
  size_t session_count() const { return sessions_.size(); }
  size_t online_count() const { return online_.size(); }
  const Metrics& metrics() const { return metrics_; }
  std::vector<store::Presence> drain_presence();
  const ServerConfig& config() const { return cfg_; }

 private:
  enum class State { awaiting_first, enrolling, established, closing };
  struct Session {
    SessionId id = 0;
    Endpoint source;
    ClientCert cert;
    State state = State::awaiting_first;
    std::string device_id;  // set once authenticated
    Instant deadline{};
    UnixMs opened_wall = 0;
    Duration offline_after{};
    std::optional<uint32_t> rtt_ms;
    UnixMs last_seen = 0;
  };

  Session* find(SessionId sid);
  void set_deadline(Session& s, Instant t);
  void clear_deadline(Session& s);
  void send(Session& s, std::vector<uint8_t> frame, Actions& out);
  void send_error(Session& s, ::torii::control::v1::ErrorCode code, const std::string& msg,
                  Actions& out);
  void send_close(Session& s, ::torii::control::v1::CloseReason reason, const std::string& detail,
                  Actions& out);
  void begin_close(const Now& now, Session& s, Actions& out);
  void audit(const Now& now, std::string kind, const std::string& device_id, const Endpoint& source,
             std::string detail, Actions& out);
  void auth_failure(const Now& now, Session& s, const std::string& device_id,
                    ::torii::control::v1::ErrorCode code, const std::string& kind,
                    const std::string& message, const std::string& detail, Actions& out);
  void on_hello(const Now& now, Session& s, const ::torii::control::v1::Hello& h, Actions& out);
  void on_enroll_request(const Now& now, Session& s, const ::torii::control::v1::EnrollRequest& r,
                         Actions& out);
  void on_established_message(const Now& now, Session& s, const ::torii::control::v1::Envelope& env,
                              Actions& out);
  void touch(const Now& now, Session& s);

  // A6 signaling (signaling.cpp).
  struct Tunnel {
    uint64_t id = 0;
    std::string src, dst;  // requesting device, destination device
    uint64_t request_id = 0;
    bool open = false;   // destination confirmed
    Instant deadline{};  // confirmation deadline while pending
    p2p::Method method = p2p::Method::relay;
    std::array<uint8_t, 32> punch_key{};
    std::array<uint8_t, 32> relay_key{};
    std::vector<std::string> src_candidates;
    uint32_t src_index = 0;
    bool predict_for_src = false, predict_for_dst = false;
  };
  void on_peer_request(const Now& now, Session& s, const ::torii::control::v1::PeerRequest& r,
                       Actions& out);
  void on_peer_confirm(const Now& now, Session& s, const ::torii::control::v1::PeerConfirm& c,
                       Actions& out);
  void on_peer_close(const Now& now, Session& s, const ::torii::control::v1::PeerClose& c,
                     Actions& out);
  void on_relay_data(const Now& now, Session& s, const ::torii::control::v1::RelayData& d,
                     Actions& out);
  void refuse_peer(const Now& now, Session& s, uint64_t request_id,
                   ::torii::control::v1::ErrorCode code, const std::string& message,
                   const std::string& peer, Actions& out);
  void fill_offer(const Tunnel& t, bool for_src, const store::Device& peer,
                  ::torii::control::v1::TunnelOffer& o) const;
  void drop_tunnel(uint64_t tunnel_id, Actions& out);
  // Removes every tunnel of `device_id`, telling each peer that is online why (revocation).
  void drop_tunnels_of(const Now& now, const std::string& device_id, const std::string& reason,
                       Actions& out);
  std::optional<Instant> tick_tunnels(const Now& now, Actions& out);
  Session* online_session(const std::string& device_id);

  ServerConfig cfg_;
  store::Store& store_;
  FailureLimiter per_source_;
  FailureLimiter per_device_;
  Metrics metrics_;
  SessionId next_id_ = 1;
  std::unordered_map<SessionId, Session> sessions_;
  std::unordered_map<std::string, SessionId> online_;
  std::set<std::pair<Instant, SessionId>> deadlines_;
  std::unordered_map<std::string, store::Presence> dirty_presence_;
  uint64_t next_tunnel_ = 1;
  std::unordered_map<uint64_t, Tunnel> tunnels_;
  std::unordered_map<std::string, std::set<uint64_t>> tunnels_by_device_;
  std::set<std::pair<Instant, uint64_t>> tunnel_deadlines_;
  struct RequestBucket {
    uint32_t tokens = limits::kPeerRequestBurst;
    Instant refilled{};
    bool audited = false;  // one audit entry per burst of refusals, not one per request
  };
  std::unordered_map<std::string, RequestBucket> request_buckets_;  // online devices only
  bool take_request_token(const Now& now, const std::string& device_id, bool& first_refusal);
};

// NAT behaviour between the wire enum and the STUN probe's (A3).
stun::NatBehaviour from_wire(::torii::control::v1::NatBehaviour b);
::torii::control::v1::NatBehaviour to_wire(stun::NatBehaviour b);

}  // namespace torii::server
