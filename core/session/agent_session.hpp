// The device side of one control session (A3-A5), as a state machine fed (now, input) with no
// I/O: Hello and Welcome, attributes, ECHO keepalive after an idle interval, dead-server
// detection, and the decision whether to reconnect after it ends. The agent's host loop owns the
// TLS connection, the timers and the reconnect backoff.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/session/limits.hpp"
#include "torii/control.pb.h"

namespace torii::session {

struct AgentConfig {
  std::string device_id;
  std::string agent_version;
  std::string firmware_version;
  std::string os_version;
  std::vector<std::string> local_addresses;
  Duration keepalive_interval = limits::kDefaultKeepaliveInterval;
  uint32_t missed_echoes = limits::kMissedEchoes;
  Duration reply_timeout = limits::kFirstMessageTimeout;  // Hello -> Welcome
};

namespace agent_action {
struct Send {
  std::vector<uint8_t> frame;
};
struct Close {};  // TLS close_notify, then close the socket
struct Established {
  std::string group;
  uint16_t stun_port = 0;
  Duration offline_after{};
  ::torii::control::v1::Welcome welcome;  // overlay addresses, relay port (A9)
};
// A peer-to-peer message for the tunnel layer (core/p2p/peer_manager): ConnectInstruction,
// PeerResponse, PeerClose, RelayData (A6).
struct Tunnel {
  ::torii::control::v1::Envelope envelope;
};
}  // namespace agent_action
using AgentAction = std::variant<agent_action::Send, agent_action::Close, agent_action::Established,
                                 agent_action::Tunnel>;
using AgentActions = std::vector<AgentAction>;

enum class AgentState { idle, awaiting_welcome, established, closing, closed };
const char* to_string(AgentState s);

// Why the session ended, which decides whether and how to reconnect.
enum class EndReason {
  none,
  local_close,      // we closed (shutdown)
  server_close,     // the server sent Close (admin, shutdown, timeout, replaced)
  revoked,          // Close{REVOKED} or Error{REVOKED}: never reconnect
  refused,          // Error: not authenticated, wrong ID, unknown device: reconnecting won't help
  rate_limited,     // Error{RATE_LIMITED}: reconnect, with backoff
  server_dead,      // missed ECHO replies / no Welcome
  connection_lost,  // EOF or error without a Close
  protocol_error,   // malformed frame from the server
};
const char* to_string(EndReason r);

class AgentSession {
 public:
  explicit AgentSession(AgentConfig cfg) : cfg_(std::move(cfg)) {}

  void start(Instant now, AgentActions& out);  // TLS is up: send Hello
  void on_frame(Instant now, std::string_view payload, AgentActions& out);
  void send_attributes(Instant now, ::torii::control::v1::Attributes attrs, AgentActions& out);
  void close(Instant now, AgentActions& out);  // graceful local close (A5)
  // A frame of the tunnel layer (peer request, confirmation, close, relay data); only while
  // established, else dropped (returns false).
  bool send_tunnel_frame(Instant now, std::vector<uint8_t> frame, AgentActions& out);
  // The connection ended underneath us (close_notify from the server, EOF, error).
  void on_disconnected(Instant now, bool clean);
  std::optional<Instant> tick(Instant now, AgentActions& out);

  AgentState state() const { return state_; }
  EndReason end_reason() const { return end_; }
  const std::string& end_message() const { return end_message_; }
  bool should_reconnect() const { return end_ != EndReason::revoked && end_ != EndReason::refused; }
  std::optional<uint32_t> rtt_ms() const { return rtt_ms_; }
  uint64_t echoes_sent() const { return echo_seq_; }
  const std::string& group() const { return group_; }

 private:
  void send(Instant now, std::vector<uint8_t> frame, AgentActions& out);
  void end(EndReason r, std::string msg, AgentActions* out);
  void send_echo(Instant now, AgentActions& out);

  AgentConfig cfg_;
  AgentState state_ = AgentState::idle;
  EndReason end_ = EndReason::none;
  std::string end_message_;
  std::string group_;
  Instant hello_sent_{};
  Instant last_tx_{};
  Instant last_rx_{};
  uint64_t echo_seq_ = 0;
  std::optional<Instant> echo_outstanding_since_;
  Instant echo_sent_{};
  uint32_t missed_ = 0;
  std::optional<uint32_t> rtt_ms_;
};

}  // namespace torii::session
