// Every limit and timer of the control protocol in one place (style.md 2). Timers, with formulas:
//  - hello timeout: a TLS session must send its first message (Hello or EnrollRequest) within
//    kFirstMessageTimeout of the handshake, else the server closes it.
//  - keepalive (A4): the agent sends ECHO when nothing was sent or received for
//    keepalive_interval (default kDefaultKeepaliveInterval); an unanswered ECHO is repeated each
//    interval and after kMissedEchoes unanswered ones the agent declares the server dead.
//  - offline (A4): the server marks a device offline when nothing arrived for
//    keepalive_interval * kMissedEchoes + kOfflineGrace.
//  - reconnect (A5): jittered exponential backoff from kBackoffInitial doubling to kBackoffMax,
//    each delay drawn uniformly in [d/2, d]; reset after a session stayed up kBackoffResetAfter.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/time.hpp"

namespace torii::limits {

using namespace std::chrono_literals;

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kMaxFrameBytes = 64 * 1024;  // any control message
inline constexpr size_t kMaxDeviceIdLength = 64;
inline constexpr size_t kMaxTokenLength = 128;
inline constexpr size_t kMaxCsrBytes = 8 * 1024;
inline constexpr size_t kMaxLocalAddresses = 32;
inline constexpr size_t kMaxVersionStringLength = 128;
inline constexpr size_t kMaxAddressStringLength = 64;

inline constexpr Duration kTlsHandshakeTimeout = 10s;
inline constexpr Duration kFirstMessageTimeout = 10s;
inline constexpr Duration kWriteTimeout = 10s;

inline constexpr Duration kDefaultKeepaliveInterval = 25s;
inline constexpr Duration kMinKeepaliveInterval = 200ms;
inline constexpr Duration kMaxKeepaliveInterval = 600s;
inline constexpr uint32_t kMissedEchoes = 3;
inline constexpr Duration kOfflineGrace = 2s;

inline constexpr Duration kBackoffInitial = 1s;
inline constexpr Duration kBackoffMax = 60s;
inline constexpr Duration kBackoffResetAfter = 30s;

inline constexpr Duration kDefaultTokenTtl = 24h;
inline constexpr Duration kDeviceCertValidity = 365 * 24h;

// D1 abuse limits: failed authentications (bad token, bad certificate, wrong ID...) per source
// address and per device ID within a window; exceeding it locks the key out for a while.
inline constexpr uint32_t kAuthFailuresPerSource = 20;
inline constexpr uint32_t kAuthFailuresPerDevice = 10;
inline constexpr Duration kAuthFailureWindow = 60s;
inline constexpr Duration kAuthLockout = 300s;
inline constexpr size_t kLimiterMaxKeys = 100000;

inline constexpr Duration kPresenceFlushInterval = 10s;

// Peer-to-peer signaling and tunnels (A6-A11).
inline constexpr size_t kMaxCandidates = 16;
inline constexpr size_t kTunnelKeyBytes = 32;          // punch and relay keys
inline constexpr size_t kMaxRelayPacket = 2048;        // a tunnel packet inside RelayData
inline constexpr size_t kMaxPendingPeerRequests = 32;  // per session, awaiting confirmation
// Peer requests per device: a token bucket of kPeerRequestBurst refilled at one token per
// kPeerRequestInterval (D1: a device cannot make the server flood its peers with instructions).
inline constexpr uint32_t kPeerRequestBurst = 20;
inline constexpr Duration kPeerRequestInterval = 500ms;
inline constexpr size_t kMaxTunnelsPerDevice = 1024;  // brokered tunnels the server remembers
inline constexpr Duration kPeerConfirmTimeout = 5s;   // destination must answer the instruction
inline constexpr uint32_t kDefaultPredictPorts = 16;  // PORT_PREDICTION spray width

}  // namespace torii::limits
