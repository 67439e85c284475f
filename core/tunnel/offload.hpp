// Segmentation and coalescing offloads of the tunnel data plane (A9, issue 4), I/O-free.
//
// With IFF_VNET_HDR and TUNSETOFFLOAD the kernel hands the agent TCP segments of up to 64 KiB
// (TSO/GSO) with a 10-byte virtio_net_hdr in front, and accepts the same from it (GRO). One
// system call then moves dozens of MTU-sized packets. On the wire every tunnel datagram still
// carries exactly one MTU-sized IP packet, so a peer without offloads interoperates:
//   TUN -> Segmenter: a large segment becomes ordinary IP packets with complete headers and
//          checksums, written straight into the send buffer where they are encrypted in place.
//   wire -> Coalescer: decrypted packets of one TCP flow that follow each other are merged back
//          into one large segment (header of the first + payloads), written with one writev.
// Bytes from the peer reach the Coalescer only after AEAD authentication, but they are still
// outside input: every field is checked, anything unusual is passed through unmerged.
//
// Nothing here allocates, throws or blocks.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

namespace torii::tunnel::offload {

// struct virtio_net_hdr (include/uapi/linux/virtio_net.h) in host byte order, as the TUN driver
// reads and writes it (legacy, little-endian on every host torii supports).
struct VnetHdr {
  uint8_t flags = 0;      // kNeedsCsum: the checksum at csum_start + csum_offset is partial
  uint8_t gso_type = 0;   // kGsoNone, kGsoTcpV4, kGsoTcpV6 (| kGsoEcn)
  uint16_t hdr_len = 0;   // IP + TCP header bytes
  uint16_t gso_size = 0;  // payload bytes per segment (MSS)
  uint16_t csum_start = 0;
  uint16_t csum_offset = 0;
  bool operator==(const VnetHdr&) const = default;
};
inline constexpr size_t kVnetHdrSize = 10;
inline constexpr uint8_t kNeedsCsum = 1, kDataValid = 2;
inline constexpr uint8_t kGsoNone = 0, kGsoTcpV4 = 1, kGsoUdp = 3, kGsoTcpV6 = 4, kGsoEcn = 0x80;

VnetHdr load_vnet(const uint8_t* p) noexcept;  // kVnetHdrSize bytes
void store_vnet(const VnetHdr& h, uint8_t* p) noexcept;

// Internet checksum helpers (RFC 1071). `sum` accumulates 16-bit big-endian words.
uint32_t checksum_add(uint32_t sum, const uint8_t* p, size_t n) noexcept;
uint16_t checksum_fold(uint32_t sum) noexcept;  // folded, not complemented

// Splits one packet read from TUN (vnet header already parsed) into IP packets of at most
// hdr_len + gso_size bytes with complete IPv4/TCP headers and checksums. reset() refuses
// (false) anything inconsistent: unknown GSO type, header lengths that do not match the packet,
// a checksum offset outside it, more than kMaxSegments segments. A packet without GSO is one
// segment; a partial checksum (kNeedsCsum) is completed.
class Segmenter {
 public:
  static constexpr size_t kMaxSegments = 128;
  bool reset(const VnetHdr& h, std::span<const uint8_t> packet) noexcept;
  size_t count() const noexcept { return count_; }
  // Size of segment i.
  size_t size(size_t i) const noexcept;
  // Writes segment i to `out` (capacity >= size(i)); returns size(i).
  size_t write(size_t i, uint8_t* out) const noexcept;

 private:
  std::span<const uint8_t> pkt_;
  VnetHdr h_{};
  size_t count_ = 0;
  size_t ip_len_ = 0, hdr_len_ = 0, payload_ = 0;  // payload: bytes after hdr_len_
  bool v6_ = false, gso_ = false;
};

// Merges consecutive TCP packets of a flow. add() either queues the packet into one of
// kFlows pending flows (its bytes must stay valid until the next flush()), or emits it at once;
// when a flow cannot take more, that flow is emitted first, so the order within each flow is
// kept. emit(const Output&) is called with a ready-to-write packet: vnet header + head bytes +
// payload pieces, in that order.
class Coalescer {
 public:
  static constexpr size_t kFlows = 8, kMaxPieces = 64, kMaxHead = 120;
  static constexpr size_t kMaxTotal = 65535;  // IP total length limit
  struct Output {
    VnetHdr vnet;
    std::span<const uint8_t> head;                     // IP + TCP header (or a whole packet)
    std::span<const std::span<const uint8_t>> pieces;  // payloads after head
  };
  template <class Emit>
  void add(std::span<const uint8_t> ip, Emit&& emit) noexcept {
    add_impl(ip, &emit, [](void* e, const Output& o) { (*static_cast<Fn<Emit>*>(e))(o); });
  }
  template <class Emit>
  void flush(Emit&& emit) noexcept {
    flush_impl(&emit, [](void* e, const Output& o) { (*static_cast<Fn<Emit>*>(e))(o); });
  }
  struct Stats {
    uint64_t packets_in = 0, merged = 0, emitted = 0;
  };
  const Stats& stats() const noexcept { return stats_; }

 private:
  template <class E>
  using Fn = std::remove_reference_t<E>;
  using EmitFn = void (*)(void*, const Output&);
  struct Flow {
    bool used = false;
    bool v6 = false;
    uint64_t age = 0;
    size_t ip_len = 0, tcp_len = 0;  // header lengths
    std::array<uint8_t, kMaxHead> head{};
    std::array<std::span<const uint8_t>, kMaxPieces> pieces{};
    size_t n = 0;      // pieces (the first packet's payload is pieces[0])
    size_t mss = 0;    // first payload size
    size_t total = 0;  // IP packet length if emitted now
    uint32_t next_seq = 0;
    bool closed = false;  // a shorter or PSH segment ends the run
  };
  void add_impl(std::span<const uint8_t> ip, void* ctx, EmitFn fn) noexcept;
  void flush_impl(void* ctx, EmitFn fn) noexcept;
  void emit_flow(Flow& f, void* ctx, EmitFn fn) noexcept;

  std::array<Flow, kFlows> flows_{};
  uint64_t clock_ = 0;
  Stats stats_;
};

}  // namespace torii::tunnel::offload
