// Device-side control session state machine (see agent_session.hpp).
#include "core/session/agent_session.hpp"

#include "core/control/frame.hpp"

namespace torii::session {

namespace pb = ::torii::control::v1;
using control::make_frame;

const char* to_string(AgentState s) {
  switch (s) {
    case AgentState::idle:
      return "idle";
    case AgentState::awaiting_welcome:
      return "authenticating";
    case AgentState::established:
      return "established";
    case AgentState::closing:
      return "closing";
    case AgentState::closed:
      return "closed";
  }
  return "?";
}

const char* to_string(EndReason r) {
  switch (r) {
    case EndReason::none:
      return "none";
    case EndReason::local_close:
      return "closed locally";
    case EndReason::server_close:
      return "closed by server";
    case EndReason::revoked:
      return "revoked";
    case EndReason::refused:
      return "refused by server";
    case EndReason::rate_limited:
      return "rate limited";
    case EndReason::server_dead:
      return "server not answering";
    case EndReason::connection_lost:
      return "connection lost";
    case EndReason::protocol_error:
      return "protocol error";
  }
  return "?";
}

void AgentSession::send(Instant now, std::vector<uint8_t> frame, AgentActions& out) {
  last_tx_ = now;
  out.push_back(agent_action::Send{std::move(frame)});
}

void AgentSession::end(EndReason r, std::string msg, AgentActions* out) {
  if (end_ == EndReason::none) {
    end_ = r;
    end_message_ = std::move(msg);
  }
  if (out && state_ != AgentState::closing && state_ != AgentState::closed) {
    state_ = AgentState::closing;
    out->push_back(agent_action::Close{});
  }
}

void AgentSession::start(Instant now, AgentActions& out) {
  state_ = AgentState::awaiting_welcome;
  hello_sent_ = now;
  last_rx_ = now;
  send(now, make_frame([&](pb::Envelope& e) {
         auto* h = e.mutable_hello();
         h->set_device_id(cfg_.device_id);
         h->mutable_versions()->set_agent(cfg_.agent_version);
         h->mutable_versions()->set_firmware(cfg_.firmware_version);
         h->mutable_versions()->set_os(cfg_.os_version);
         h->set_keepalive_interval_ms(uint32_t(cfg_.keepalive_interval.count()));
         for (const auto& a : cfg_.local_addresses) h->add_local_addresses(a);
       }),
       out);
}

void AgentSession::send_attributes(Instant now, pb::Attributes attrs, AgentActions& out) {
  if (state_ != AgentState::established) return;
  if (rtt_ms_) attrs.set_rtt_ms(*rtt_ms_);
  send(now, make_frame([&](pb::Envelope& e) { *e.mutable_attributes() = std::move(attrs); }), out);
}

void AgentSession::send_echo(Instant now, AgentActions& out) {
  ++echo_seq_;
  echo_sent_ = now;
  if (!echo_outstanding_since_) echo_outstanding_since_ = now;
  send(now, make_frame([&](pb::Envelope& e) {
         e.mutable_echo()->set_seq(echo_seq_);
         if (rtt_ms_) e.mutable_echo()->set_last_rtt_ms(*rtt_ms_);
       }),
       out);
}

void AgentSession::on_frame(Instant now, std::string_view payload, AgentActions& out) {
  if (state_ == AgentState::closed || state_ == AgentState::idle) return;
  last_rx_ = now;
  pb::Envelope env;
  if (control::decode_envelope(reinterpret_cast<const uint8_t*>(payload.data()), payload.size(),
                               env) != control::DecodeError::none)
    return end(EndReason::protocol_error, "malformed message from the server", &out);
  switch (env.body_case()) {
    case pb::Envelope::kWelcome:
      if (state_ != AgentState::awaiting_welcome)
        return end(EndReason::protocol_error, "unexpected Welcome", &out);
      state_ = AgentState::established;
      rtt_ms_ = uint32_t((now - hello_sent_).count());
      group_ = env.welcome().group();
      out.push_back(agent_action::Established{group_, uint16_t(env.welcome().stun_port()),
                                              Duration(env.welcome().offline_after_ms()),
                                              env.welcome()});
      return;
    case pb::Envelope::kEchoReply:
      if (env.echo_reply().seq() == echo_seq_ && echo_outstanding_since_) {
        rtt_ms_ = uint32_t((now - echo_sent_).count());
        echo_outstanding_since_.reset();
        missed_ = 0;
      }
      return;
    case pb::Envelope::kAttributesAck:
      return;
    case pb::Envelope::kClose: {
      const auto& c = env.close();
      const bool revoked = c.reason() == pb::CLOSE_REASON_REVOKED;
      // Wait for the server's close_notify; answer with ours (A5).
      end(revoked ? EndReason::revoked : EndReason::server_close,
          c.detail().empty() ? pb::CloseReason_Name(c.reason()) : c.detail(), nullptr);
      return;
    }
    case pb::Envelope::kError: {
      const auto& er = env.error();
      EndReason r = EndReason::refused;
      if (er.code() == pb::ERROR_CODE_REVOKED) r = EndReason::revoked;
      if (er.code() == pb::ERROR_CODE_RATE_LIMITED || er.code() == pb::ERROR_CODE_INTERNAL)
        r = EndReason::rate_limited;
      if (er.code() == pb::ERROR_CODE_BAD_MESSAGE) r = EndReason::protocol_error;
      return end(r, er.message(), nullptr);
    }
    case pb::Envelope::kConnectInstruction:
    case pb::Envelope::kPeerResponse:
    case pb::Envelope::kPeerClose:
    case pb::Envelope::kRelayData:
      if (state_ != AgentState::established)
        return end(EndReason::protocol_error, "peer message before Welcome", &out);
      out.push_back(agent_action::Tunnel{std::move(env)});
      return;
    default:
      return end(EndReason::protocol_error, "unexpected message from the server", &out);
  }
}

bool AgentSession::send_tunnel_frame(Instant now, std::vector<uint8_t> frame, AgentActions& out) {
  if (state_ != AgentState::established) return false;
  send(now, std::move(frame), out);
  return true;
}

void AgentSession::close(Instant now, AgentActions& out) {
  if (state_ == AgentState::established || state_ == AgentState::awaiting_welcome) {
    send(now, make_frame([](pb::Envelope& e) {
           e.mutable_close()->set_reason(pb::CLOSE_REASON_SHUTDOWN);
           e.mutable_close()->set_detail("agent stopping");
         }),
         out);
  }
  end(EndReason::local_close, "agent stopping", &out);
}

void AgentSession::on_disconnected(Instant, bool clean) {
  if (end_ == EndReason::none)
    end(EndReason::connection_lost,
        clean ? "server closed the session" : "connection to the server lost", nullptr);
  state_ = AgentState::closed;
}

std::optional<Instant> AgentSession::tick(Instant now, AgentActions& out) {
  switch (state_) {
    case AgentState::awaiting_welcome:
      if (now - hello_sent_ >= cfg_.reply_timeout) {
        end(EndReason::server_dead, "no answer to Hello", &out);
        return std::nullopt;
      }
      return hello_sent_ + cfg_.reply_timeout;
    case AgentState::established: {
      const Duration iv = cfg_.keepalive_interval;
      if (echo_outstanding_since_ && now - echo_sent_ >= iv) {
        // A4: an ECHO went unanswered for a whole interval.
        if (++missed_ >= cfg_.missed_echoes) {
          end(EndReason::server_dead,
              "no ECHO reply from the server for " +
                  std::to_string((now - *echo_outstanding_since_).count()) + " ms",
              &out);
          return std::nullopt;
        }
        send_echo(now, out);
      } else if (!echo_outstanding_since_ && now - last_tx_ >= iv) {
        send_echo(now, out);
      }
      return echo_outstanding_since_ ? echo_sent_ + iv : last_tx_ + iv;
    }
    default:
      return std::nullopt;
  }
}

}  // namespace torii::session
