#include "netcheck/netcheck_runner.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include <gio/gio.h>

#include "glib_ptr.h"
#include "log.h"
#include "net/socket_address.h"
#include "portmap/port_mapper.h"
#include "signaling/relay_answer.h"
#include "transport/connector.h"

namespace natfwd::netcheck {
namespace {

using net::make_socket_address;
using net::to_transport_address;

constexpr uint16_t kNatPmpPort = 5351;  // RFC 6886 / RFC 6887 (PCP shares it)
constexpr const char* kSsdpGroup = "239.255.255.250";
constexpr uint16_t kSsdpPort = 1900;

GObjectPtr<GSocket> udp_socket(GSocketFamily family, const std::string& bind_ip) {
  GObjectPtr<GSocket> socket(g_socket_new(family, G_SOCKET_TYPE_DATAGRAM, G_SOCKET_PROTOCOL_UDP,
                                   nullptr));
  if (!socket) return socket;
  g_socket_set_blocking(socket.get(), FALSE);
  GObjectPtr<GSocketAddress> local(make_socket_address(bind_ip, 0));
  if (!local || !g_socket_bind(socket.get(), local.get(), FALSE, nullptr)) return nullptr;
  return socket;
}

// The address to probe among a name's addresses: IPv4 first, the NATs worth
// diagnosing are there.
std::string pick_address(GList* addresses);

}  // namespace

class NetcheckRun::Impl {
 public:
  Impl(NetcheckOptions options, NetcheckRun::Done done)
      : options_(std::move(options)), done_(std::move(done)) {}

  void start() {
    start_tcp();
    // The UDP checks need the relay's IP: asked for without blocking the main loop (a
    // serving peer behind a proxy may have no working DNS at all).
    ++pending_;
    GObjectPtr<GResolver> resolver(g_resolver_get_default());
    g_resolver_lookup_by_name_async(resolver.get(), options_.relay.host.c_str(),
                                    resolving_.get(), on_resolved, this);
    overall_.reset(g_timeout_add_seconds(options_.timeout_seconds, [](gpointer self) {
      auto* run = static_cast<Impl*>(self);
      run->overall_.release();
      guard_callback("netcheck: deadline", [run] { run->finish(); });
      return G_SOURCE_REMOVE;
    }, this));
    if (pending_ == 0) schedule_finish();
  }

 private:
  static void on_resolved(GObject* resolver, GAsyncResult* result, gpointer self) {
    GError* raw_error = nullptr;
    GList* addresses = g_resolver_lookup_by_name_finish(G_RESOLVER(resolver), result, &raw_error);
    GErrorPtr error(raw_error);
    if (error) {
      log::debug("netcheck: resolving the relay: %s", error->message);
      if (g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_CANCELLED)) return;  // run gone
    }
    auto* run = static_cast<Impl*>(self);
    run->report_.relay_ip = pick_address(addresses);
    g_resolver_free_addresses(addresses);
    guard_callback("netcheck: resolved", [run] {
      if (!run->report_.relay_ip.empty()) {
        run->start_probe();
        run->start_port_mapping_checks();
      } else {
        run->report_.gateway_skipped = "the relay's name does not resolve";
      }
      run->finished_one();
    });
  }

  void finished_one() {
    if (--pending_ == 0) schedule_finish();
  }
  // `done` may destroy this run: call it from an idle callback, never from inside
  // one of our own handlers.
  void schedule_finish() {
    if (finish_idle_ || finished_) return;
    finish_idle_.reset(g_idle_add([](gpointer self) {
      auto* run = static_cast<Impl*>(self);
      run->finish_idle_.release();
      guard_callback("netcheck: finish", [run] { run->finish(); });
      return G_SOURCE_REMOVE;
    }, this));
  }
  void finish() {
    if (finished_) return;
    finished_ = true;
    if (probe_) report_.nat = probe_->result();
    done_(report_);  // may delete this
  }

  void watch(GSocket* socket, GSourceFunc callback) {
    GSourcePtr source(g_socket_create_source(socket, G_IO_IN, nullptr));
    g_source_set_callback(source.get(), callback, this, nullptr);
    g_source_attach(source.get(), nullptr);
    sources_.push_back(std::move(source));
  }

  // -- RFC 5780 -------------------------------------------------------------------

  void start_probe() {
    GObjectPtr<GSocketAddress> server(make_socket_address(report_.relay_ip, options_.stun_port));
    if (!server) return;
    const GSocketFamily family = g_socket_address_get_family(server.get());
    // The local address the kernel would use towards the relay: connect() a UDP
    // socket (no packet is sent) and read it back.
    GObjectPtr<GSocket> route(
        g_socket_new(family, G_SOCKET_TYPE_DATAGRAM, G_SOCKET_PROTOCOL_UDP, nullptr));
    if (!route || !g_socket_connect(route.get(), server.get(), nullptr, nullptr)) {
      log::debug("netcheck: no route to %s", report_.relay_ip.c_str());
      return;
    }
    GObjectPtr<GSocketAddress> route_local(g_socket_get_local_address(route.get(), nullptr));
    HostPort local_ip = net::to_host_port(route_local.get());
    std::array<stun::TransportAddress, 2> locals;
    for (int i = 0; i < 2; ++i) {
      sockets_[i] = udp_socket(family, local_ip.host);
      if (!sockets_[i]) return;
      GObjectPtr<GSocketAddress> bound(g_socket_get_local_address(sockets_[i].get(), nullptr));
      locals[i] = to_transport_address(bound.get());
    }
    report_.local_address = locals[0].to_string();
    probe_.emplace(to_transport_address(server.get()), locals, g_random_int() |
                   (static_cast<uint64_t>(g_random_int()) << 32));
    ++pending_;
    watch(sockets_[0].get(), G_SOURCE_FUNC(+[](GSocket*, GIOCondition, gpointer self) {
      auto* run = static_cast<Impl*>(self);
      guard_callback("netcheck: probe", [run] { run->on_probe_readable(0); });
      return G_SOURCE_CONTINUE;
    }));
    watch(sockets_[1].get(), G_SOURCE_FUNC(+[](GSocket*, GIOCondition, gpointer self) {
      auto* run = static_cast<Impl*>(self);
      guard_callback("netcheck: probe", [run] { run->on_probe_readable(1); });
      return G_SOURCE_CONTINUE;
    }));
    probe_->start(std::chrono::steady_clock::now());
    pump_probe();
  }

  void on_probe_readable(int index) {
    std::byte buffer[2048];
    for (;;) {
      const gssize n = g_socket_receive(sockets_[index].get(), reinterpret_cast<gchar*>(buffer),
                                        sizeof buffer, nullptr, nullptr);
      if (n < 0) break;
      if (probe_done_) continue;
      probe_->on_datagram(index, std::span(buffer, static_cast<size_t>(n)),
                          std::chrono::steady_clock::now());
    }
    pump_probe();
  }

  void pump_probe() {
    if (probe_done_) return;
    for (auto& send : probe_->take_sends()) {
      GObjectPtr<GSocketAddress> to(make_socket_address(send.to));
      // Send errors (no route, ICMP from an earlier one) read as silence, as they are.
      g_socket_send_to(sockets_[send.socket].get(), to.get(),
                       reinterpret_cast<const gchar*>(send.bytes.data()), send.bytes.size(),
                       nullptr, nullptr);
    }
    probe_timer_.reset();
    if (probe_->done()) {
      probe_done_ = true;
      finished_one();
      return;
    }
    if (auto deadline = probe_->next_deadline()) {
      const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
          *deadline - std::chrono::steady_clock::now());
      probe_timer_.reset(g_timeout_add(
          static_cast<guint>(std::max<long>(0, wait.count()) + 1), [](gpointer self) {
            auto* run = static_cast<Impl*>(self);
            run->probe_timer_.release();
            guard_callback("netcheck: probe timer", [run] {
              run->probe_->on_timer(std::chrono::steady_clock::now());
              run->pump_probe();
            });
            return G_SOURCE_REMOVE;
          }, this));
    }
  }

  // -- TCP to the relay -----------------------------------------------------------

  void start_tcp() {
    if (!options_.check_tcp) return;
    ConnectOptions direct;
    direct.server = options_.relay;
    direct.timeout_seconds = options_.timeout_seconds;
    ++pending_;
    ask_relay(std::chrono::steady_clock::now());
    if (!options_.proxy) return;
    report_.proxy_configured = true;
    ConnectOptions proxied = direct;
    proxied.http_proxy = options_.proxy;
    ++pending_;
    proxied_ = std::make_unique<ConnectAttempt>(proxied, [this](auto stream, const std::string& error) {
      report_.proxy = stream != nullptr;
      report_.proxy_error = error;
      finished_one();
    });
  }

  // Whether it is a natfwd relay that listens there, before anything is concluded
  // from it: sshd or a web server on that port answers a Hello otherwise, and then no
  // other check means anything.
  void ask_relay(std::chrono::steady_clock::time_point started) {
    report_.tcp_error = "no answer from a natfwd relay within the timeout";
    ConnectOptions direct;
    direct.server = options_.relay;
    relay_probe_ = std::make_unique<RelayProbe>(
        direct, options_.timeout_seconds, [this, started](const RelayProbe::Answer& answer) {
          delete_later(std::move(relay_probe_));
          report_.tcp = answer.relay;
          report_.tcp_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - started).count();
          if (!answer.foreign.empty()) {
            report_.not_a_relay = "it answered like " + answer.foreign;
            report_.tcp_error = "this is not a natfwd relay (" + report_.not_a_relay + ")";
          } else if (!answer.relay) {
            report_.tcp_error = answer.error;
          }
          finished_one();
        });
  }

  // -- UPnP IGD and NAT-PMP ---------------------------------------------------------

  void start_port_mapping_checks() {
    // A relay on loopback is a test on this machine: its gateway is none of the
    // test's business (as the peer offers only loopback ICE candidates then).
    GObjectPtr<GInetAddress> relay_ip(g_inet_address_new_from_string(report_.relay_ip.c_str()));
    if (relay_ip && g_inet_address_get_is_loopback(relay_ip.get())) {
      report_.gateway_skipped = "the relay is on loopback";
      return;
    }
    report_.gateway = portmap::default_ipv4_gateway();
    if (report_.gateway.empty()) return;
    // NAT-PMP "external address" request (RFC 6886 section 3.2): version 0, opcode 0.
    // A PCP server (RFC 6887) answers it too, with a version-mismatch error: either
    // way something there maps ports.
    natpmp_ = udp_socket(G_SOCKET_FAMILY_IPV4, "0.0.0.0");
    GObjectPtr<GSocketAddress> gateway(make_socket_address(report_.gateway, kNatPmpPort));
    if (natpmp_ && gateway) {
      const gchar request[2] = {0, 0};
      if (g_socket_send_to(natpmp_.get(), gateway.get(), request, 2, nullptr, nullptr) == 2) {
        ++pending_;
        watch(natpmp_.get(), G_SOURCE_FUNC(+[](GSocket* s, GIOCondition, gpointer self) {
          auto* run = static_cast<Impl*>(self);
          gchar reply[64];
          const gssize n = g_socket_receive(s, reply, sizeof reply, nullptr, nullptr);
          if (n >= 2 && !run->report_.natpmp) {
            run->report_.natpmp = true;
            guard_callback("netcheck: NAT-PMP", [run] { run->finished_one(); });
          }
          return G_SOURCE_CONTINUE;
        }));
      }
    }
    if (options_.try_port_mapping) start_port_mapping();
    // SSDP search for an Internet gateway device (UPnP Device Architecture 1.1, 1.3.2).
    ssdp_ = udp_socket(G_SOCKET_FAMILY_IPV4, "0.0.0.0");
    GObjectPtr<GSocketAddress> group(make_socket_address(kSsdpGroup, kSsdpPort));
    const std::string search =
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
        "MX: 1\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n";
    if (ssdp_ && group &&
        g_socket_send_to(ssdp_.get(), group.get(), search.data(), search.size(), nullptr,
                         nullptr) == static_cast<gssize>(search.size())) {
      ++pending_;
      watch(ssdp_.get(), G_SOURCE_FUNC(+[](GSocket* s, GIOCondition, gpointer self) {
        auto* run = static_cast<Impl*>(self);
        gchar reply[1500];
        const gssize n = g_socket_receive(s, reply, sizeof reply, nullptr, nullptr);
        if (n > 12 && std::string_view(reply, 12) == "HTTP/1.1 200" && !run->report_.upnp) {
          run->report_.upnp = true;
          guard_callback("netcheck: UPnP", [run] { run->finished_one(); });
        }
        return G_SOURCE_CONTINUE;
      }));
    }
  }

  // A mapping of one UDP port of ours, the way the peer's ICE sessions ask for it;
  // deleted when the run goes (the mapper waits for the delete, bounded).
  void start_port_mapping() {
    port_mapper_ = std::make_unique<portmap::PortMapper>(report_.gateway);
    const std::string local = port_mapper_->local_address();
    mapped_socket_ = udp_socket(G_SOCKET_FAMILY_IPV4, local);
    if (local.empty() || !mapped_socket_) return;
    GObjectPtr<GSocketAddress> bound(g_socket_get_local_address(mapped_socket_.get(), nullptr));
    const uint16_t port = bound ? to_transport_address(bound.get()).port : 0;
    if (port == 0) return;
    portmap::PortMapping::Callbacks callbacks;
    callbacks.on_mapped = [this](portmap::MapProtocol protocol, const std::string& ip,
                                 uint16_t external_port) {
      if (!report_.port_mapping.empty()) return;  // a renewal
      report_.port_mapping = std::string(to_string(protocol));
      report_.port_mapped_address = ip + ":" + std::to_string(external_port);
      finished_one();
    };
    callbacks.on_failed = [this](const std::string& why) {
      if (!report_.port_mapping.empty() || !report_.port_mapping_error.empty()) return;
      report_.port_mapping_error = why;
      finished_one();
    };
    ++pending_;
    port_mapping_ = port_mapper_->map(local, port, std::move(callbacks));
    if (!port_mapping_) --pending_;
  }

  NetcheckOptions options_;
  NetcheckRun::Done done_;
  GCancellablePtr resolving_{g_cancellable_new()};  // cancelled when the run goes
  NetcheckReport report_;
  int pending_ = 0;
  SourceId overall_;
  SourceId finish_idle_;
  bool finished_ = false;
  std::vector<GSourcePtr> sources_;
  std::array<GObjectPtr<GSocket>, 2> sockets_;
  std::optional<NatBehaviourProbe> probe_;
  bool probe_done_ = false;
  SourceId probe_timer_;
  std::unique_ptr<RelayProbe> relay_probe_;  // the Hello that tells a relay apart
  std::unique_ptr<ConnectAttempt> proxied_;
  GObjectPtr<GSocket> natpmp_;
  GObjectPtr<GSocket> ssdp_;
  std::unique_ptr<portmap::PortMapper> port_mapper_;
  GObjectPtr<GSocket> mapped_socket_;  // holds the mapped port while the run lasts
  std::unique_ptr<portmap::PortMapping> port_mapping_;  // goes before its mapper
};

namespace {

std::string pick_address(GList* addresses) {
  std::string out;
  for (GList* a = addresses; a; a = a->next) {
    gchar* text = g_inet_address_to_string(G_INET_ADDRESS(a->data));
    const bool v4 = g_inet_address_get_family(G_INET_ADDRESS(a->data)) == G_SOCKET_FAMILY_IPV4;
    if (out.empty() || v4) out = text;
    g_free(text);
    if (v4) break;
  }
  return out;
}

}  // namespace

SideFacts NetcheckReport::facts() const {
  SideFacts f;
  f.udp = nat.udp;
  f.mapping = nat.mapping;
  f.filtering = nat.filtering;
  f.tcp = tcp;
  f.proxy = proxy;
  f.port_mapping = upnp || natpmp;
  f.port_mapped = !port_mapping.empty();
  return f;
}

NetcheckRun::NetcheckRun(NetcheckOptions options, Done done)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(done))) {
  impl_->start();
}

NetcheckRun::~NetcheckRun() = default;

NetcheckReport run_netcheck(const NetcheckOptions& options) {
  GMainLoop* loop = g_main_loop_new(nullptr, FALSE);
  NetcheckReport report;
  {
    NetcheckRun run(options, [&](const NetcheckReport& r) {
      report = r;
      g_main_loop_quit(loop);
    });
    g_main_loop_run(loop);
  }
  g_main_loop_unref(loop);
  return report;
}

NetcheckOptions options_from_welcome(const wire::Welcome& welcome, const HostPort& relay,
                                     const std::string& relay_ip,
                                     const std::optional<HostPort>& proxy) {
  NetcheckOptions options;
  options.relay = relay;
  if (!relay_ip.empty()) options.relay.host = relay_ip;
  options.stun_port = relay.port == 443 ? 3478 : relay.port;
  for (const auto& server : welcome.ice_servers())
    if (server.kind() == wire::IceServer::STUN && server.host().empty() && server.port())
      options.stun_port = static_cast<uint16_t>(server.port());
  options.proxy = proxy;
  return options;
}

// The wire enums are the in-memory ones, value for value.
static_assert(static_cast<int>(Mapping::kAddressAndPortDependent) ==
              wire::NatFacts::MAPPING_ADDRESS_AND_PORT_DEPENDENT);
static_assert(static_cast<int>(Mapping::kNoNat) == wire::NatFacts::NO_NAT);
static_assert(static_cast<int>(Filtering::kAddressAndPortDependent) ==
              wire::NatFacts::FILTERING_ADDRESS_AND_PORT_DEPENDENT);

wire::NatFacts to_wire(const SideFacts& f) {
  wire::NatFacts w;
  w.set_udp(f.udp);
  w.set_mapping(static_cast<wire::NatFacts::Mapping>(f.mapping));
  w.set_filtering(static_cast<wire::NatFacts::Filtering>(f.filtering));
  w.set_tcp(f.tcp);
  w.set_proxy(f.proxy);
  w.set_port_mapping(f.port_mapping);
  return w;
}

SideFacts from_wire(const wire::NatFacts& w) {
  SideFacts f;
  f.udp = w.udp();
  // Values this build does not know (a newer peer) read as unknown.
  f.mapping = w.mapping() <= wire::NatFacts::MAPPING_ADDRESS_AND_PORT_DEPENDENT
                  ? static_cast<Mapping>(w.mapping())
                  : Mapping::kUnknown;
  f.filtering = w.filtering() <= wire::NatFacts::FILTERING_ADDRESS_AND_PORT_DEPENDENT
                    ? static_cast<Filtering>(w.filtering())
                    : Filtering::kUnknown;
  f.tcp = w.tcp();
  f.proxy = w.proxy();
  f.port_mapping = w.port_mapping();
  return f;
}

}  // namespace natfwd::netcheck
