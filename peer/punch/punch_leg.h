// The GLib glue of one hard-NAT punch for one tunnel: its UDP sockets, one timer, and
// the two I/O-free cores it drives in turn:
//   1. NatBehaviourProbe (netcheck/nat_behaviour_probe.h), mapping tests only, on a
//      fresh socket against the relay's STUN server and its RFC 5780 alternate
//      address: whether this side's NAT maps each destination to a new port, and the
//      socket's public address (the easy side punches from this very socket, whose
//      mapping the other side is told);
//   2. BirthdayPunch (birthday_punch.h), once the owner has agreed a PunchPlan with
//      the other side, until it wins or gives up.
// Once won, it carries the tunnel's datagrams on the won socket (send(), and
// on_datagram for what arrives there from the other side); the owner (Tunnel) decides
// when QUIC uses it and when it falls back to the ICE leg.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "glib_ptr.h"
#include "net/datagram_batch.h"
#include "netcheck/nat_behaviour_probe.h"
#include "punch/birthday_punch.h"
#include "punch/punch_plan.h"

namespace natfwd::punch {

class PunchLeg {
 public:
  struct Callbacks {
    std::function<void(PunchLeg&)> on_probed;  // endpoint_dependent(), public_address()
    std::function<void(PunchLeg&)> on_won;     // send() works from now on
    // The probe or the search gave up; the leg does nothing more.
    std::function<void(PunchLeg&, const std::string& why)> on_failed;
    // A datagram from the other side that is not a punch packet (QUIC, once won).
    std::function<void(std::span<const std::byte>)> on_datagram;
  };

  // `stun_ip`:`stun_port`: the relay's STUN server (IPv4; the probe needs its RFC 5780
  // alternate address).
  PunchLeg(const std::string& stun_ip, uint16_t stun_port, Limits limits, Callbacks callbacks);
  ~PunchLeg();
  PunchLeg(const PunchLeg&) = delete;
  PunchLeg& operator=(const PunchLeg&) = delete;

  // Starts the probe; false (and nothing runs) when no socket can be set up toward
  // the STUN server. Callbacks come later, from the main loop.
  bool probe();
  bool probed() const { return probed_; }
  bool endpoint_dependent() const { return endpoint_dependent_; }
  const TransportAddress& public_address() const { return public_address_; }

  // After on_probed: search as `plan` says.
  void start(const PunchPlan& plan);
  bool won() const { return won_; }
  // The won path: one datagram to the other side, queued until flush() (or until a
  // batch is full). A full socket buffer drops it (QUIC recovers it), so this never
  // blocks.
  void send(std::span<const std::byte> datagram);
  // Sends what send() queued in as few system calls as it can: sendmmsg, and equal
  // sizes as one UDP GSO message (net::DatagramBatch), as the direct ICE pair does.
  void flush();
  // The won path's ends, "ip:port": this side's socket and the other side's public
  // address.
  std::string local_address() const;
  std::string remote_address() const;
  // When a datagram last came from the other side on the won path (monotonic µs).
  gint64 last_receive_us() const { return last_receive_us_; }
  const BirthdayPunch::Counters* counters() const { return search_ ? &search_->counters() : nullptr; }

 private:
  struct Socket {
    PunchLeg* leg = nullptr;
    int index = 0;
    GObjectPtr<GSocket> socket;
    GSourcePtr watch;  // after socket: removed first
  };

  bool open_socket(int index);
  static gboolean on_readable(GSocket*, GIOCondition, gpointer data);
  void readable(int index);
  void datagram(int index, const TransportAddress& from, std::span<const std::byte> bytes);
  void pump_probe();
  void run(BirthdayPunch::Actions actions);
  void arm(std::optional<gint64> deadline_us);
  static gboolean on_timer(gpointer self);
  void timer();
  void fail(const std::string& why);
  void keep_only(int index);

  std::string stun_ip_;
  uint16_t stun_port_;
  Limits limits_;
  Callbacks callbacks_;
  std::string local_ip_;  // the address the kernel uses toward the relay
  std::vector<std::unique_ptr<Socket>> sockets_;

  std::optional<netcheck::NatBehaviourProbe> probe_;
  bool probed_ = false;
  bool endpoint_dependent_ = false;
  TransportAddress public_address_;

  std::optional<BirthdayPunch> search_;
  std::array<uint8_t, 4> plan_remote_ip_{};  // the only IP whose datagrams count
  bool won_ = false;
  bool failed_ = false;
  int won_socket_ = -1;
  sockaddr_storage won_remote_{};
  socklen_t won_remote_length_ = 0;
  net::DatagramBatch sends_{net::udp_io_mode_from_environment()};
  gint64 last_receive_us_ = 0;
  GSourcePtr timer_;
};

}  // namespace natfwd::punch
