// Writes seed inputs with the signaling and relay messages (A6) for the control_frame and
// p2p_input fuzz corpora. Disabled: run it by hand after changing the messages:
//   build/release/core/torii_core_test --gtest_also_run_disabled_tests \
//     --gtest_filter='SignalingCorpus.*'   (from the repository root)
#include <gtest/gtest.h>

#include <fstream>

#include "core/control/frame.hpp"

namespace torii::p2p {
namespace {

namespace pb = ::torii::control::v1;

std::vector<uint8_t> frame(const std::function<void(pb::Envelope&)>& f) {
  return control::make_frame(f);
}

void offer(pb::TunnelOffer* o) {
  o->set_tunnel_id(1);
  o->set_method(pb::CONNECT_METHOD_HOLE_PUNCH);
  o->mutable_peer()->set_device_id("cam2");
  o->mutable_peer()->set_overlay_ipv4("100.64.0.2");
  o->mutable_peer()->set_overlay_ipv6("fd00::2");
  o->mutable_peer()->set_cert_serial("02");
  o->add_candidates("203.0.113.5:6000");
  o->set_peer_receiver_index(77);
  o->set_punch_key(std::string(32, 'k'));
  o->set_relay_key(std::string(32, 'r'));
  o->set_relay_port(3480);
  o->set_predict_ports(4);
}

TEST(SignalingCorpus, DISABLED_Write) {
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> msgs = {
      {"peer_request", frame([](pb::Envelope& e) {
         auto* r = e.mutable_peer_request();
         r->set_request_id(1);
         r->set_peer_id("cam2");
         r->add_candidates("192.168.1.2:5000");
         r->set_receiver_index(5);
       })},
      {"peer_request_by_address",
       frame([](pb::Envelope& e) { e.mutable_peer_request()->set_peer_address("100.64.0.2"); })},
      {"connect_instruction",
       frame([](pb::Envelope& e) { offer(e.mutable_connect_instruction()->mutable_offer()); })},
      {"peer_confirm", frame([](pb::Envelope& e) {
         e.mutable_peer_confirm()->set_tunnel_id(1);
         e.mutable_peer_confirm()->set_accept(true);
         e.mutable_peer_confirm()->add_candidates("192.168.2.2:5000");
       })},
      {"peer_response", frame([](pb::Envelope& e) {
         e.mutable_peer_response()->set_request_id(1);
         e.mutable_peer_response()->set_ok(true);
         offer(e.mutable_peer_response()->mutable_offer());
       })},
      {"peer_close", frame([](pb::Envelope& e) {
         e.mutable_peer_close()->set_tunnel_id(1);
         e.mutable_peer_close()->set_reason("bye");
       })},
      {"relay_data", frame([](pb::Envelope& e) {
         e.mutable_relay_data()->set_tunnel_id(1);
         e.mutable_relay_data()->set_packet(std::string(48, '\x06'));
       })},
  };
  for (const auto& [name, f] : msgs) {
    // control_frame: 'H' (establish first) + the frame, and a request+confirm+relay sequence.
    std::ofstream cf("fuzz/corpus/control_frame/signaling_" + name, std::ios::binary);
    ASSERT_TRUE(cf) << "run from the repository root";
    cf << 'H';
    cf.write(reinterpret_cast<const char*>(f.data()), std::streamsize(f.size()));
    // p2p_input: step "control" (op 0) with the envelope (without the length prefix).
    std::vector<uint8_t> body(f.begin() + 4, f.end());
    while (body.size() % 4) body.push_back(0);
    std::ofstream pi("fuzz/corpus/p2p_input/control_" + name, std::ios::binary);
    pi.put(0);
    pi.put(char(body.size() / 4));
    pi.write(reinterpret_cast<const char*>(body.data()), std::streamsize(body.size()));
  }
}

}  // namespace
}  // namespace torii::p2p
