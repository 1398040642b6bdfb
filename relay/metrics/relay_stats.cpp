#include "metrics/relay_stats.h"

#include <cstdio>
#include <initializer_list>
#include <utility>

namespace natfwd::relay {
namespace {

// Label values escape backslash, double quote and newline (exposition format 0.0.4).
std::string label_value(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

class Writer {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void sample(const char* name, uint64_t value, const std::string& labels = "") {
    out_ += std::string(name) + (labels.empty() ? "" : "{" + labels + "}") + " " +
            std::to_string(value) + "\n";
  }
  void sample(const char* name, double value) {
    char text[64];
    snprintf(text, sizeof text, "%.3f", value);
    out_ += std::string(name) + " " + text + "\n";
  }
  // One sample per (value of `label`, count), each after the same leading `labels`.
  void samples(const char* name, const std::string& labels, const char* label,
               std::initializer_list<std::pair<const char*, uint64_t>> counts) {
    for (const auto& [value, count] : counts)
      sample(name, count, labels + "," + label + "=\"" + value + "\"");
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace

RelayedCounters& RelayStats::relayed_counters() {
  std::lock_guard lock(relayed_mutex_);
  return *relayed_blocks_.emplace_back(std::make_unique<RelayedCounters>());
}

RelayedTotals RelayStats::relayed() const {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  RelayedTotals sum;
  std::lock_guard lock(relayed_mutex_);
  for (const auto& block : relayed_blocks_) {
    sum.bytes_to_peer += block->bytes_to_peer.load(kRelaxed);
    sum.packets_to_peer += block->packets_to_peer.load(kRelaxed);
    sum.bytes_to_client += block->bytes_to_client.load(kRelaxed);
    sum.packets_to_client += block->packets_to_client.load(kRelaxed);
    sum.packets_handed_over += block->packets_handed_over.load(kRelaxed);
  }
  return sum;
}

std::string render_prometheus(const RelayStats& s, const RelayGauges& g) {
  Writer w;
  w.family("natfwd_relay_build_info", "gauge", "Always 1; the version is a label.");
  w.sample("natfwd_relay_build_info", 1, "version=\"" + label_value(g.version) + "\"");
  w.family("natfwd_relay_uptime_seconds", "gauge", "Seconds since the relay started.");
  w.sample("natfwd_relay_uptime_seconds", g.uptime_seconds);
  w.family("natfwd_relay_registered_peers", "gauge", "Peers holding a name now.");
  w.sample("natfwd_relay_registered_peers", g.registered_peers);
  w.family("natfwd_relay_rendezvous_connections", "gauge",
           "Open rendezvous connections (TCP or TLS).");
  w.sample("natfwd_relay_rendezvous_connections", g.rendezvous_connections);
  w.family("natfwd_relay_open_sessions", "gauge", "Sessions being brokered now.");
  w.sample("natfwd_relay_open_sessions", g.open_sessions);
  w.family("natfwd_relay_registrations_total", "counter", "Names registered.");
  w.sample("natfwd_relay_registrations_total", s.registrations_total);
  w.family("natfwd_relay_sessions_total", "counter", "Sessions routed to a registered peer.");
  w.sample("natfwd_relay_sessions_total", s.sessions_total);
  w.family("natfwd_relay_rate_limited_total", "counter", "Requests refused by a rate limit.");
  w.sample("natfwd_relay_rate_limited_total", s.rate_limited_registrations,
           "kind=\"registration\"");
  w.sample("natfwd_relay_rate_limited_total", s.rate_limited_sessions, "kind=\"session\"");
  w.sample("natfwd_relay_rate_limited_total", s.rate_limited_new_names, "kind=\"new_name\"");
  w.family("natfwd_relay_stun_binding_requests_total", "counter",
           "STUN Binding requests answered over UDP.");
  w.sample("natfwd_relay_stun_binding_requests_total", s.stun_binding_requests);
  w.family("natfwd_relay_turn_allocations", "gauge", "TURN allocations now.");
  w.sample("natfwd_relay_turn_allocations", g.turn_allocations);
  w.family("natfwd_relay_turn_allocations_total", "counter", "TURN allocations made.");
  w.sample("natfwd_relay_turn_allocations_total", s.turn_allocations_total);
  w.family("natfwd_relay_turn_reservations_total", "counter",
           "TURN relayed ports reserved for a RESERVATION-TOKEN (EVEN-PORT R=1).");
  w.sample("natfwd_relay_turn_reservations_total", s.turn_reservations_total);
  w.family("natfwd_relay_turn_reservations_redeemed_total", "counter",
           "Reserved TURN ports taken by a RESERVATION-TOKEN, by the data-plane thread that "
           "took it: the one that reserved it, or another.");
  w.sample("natfwd_relay_turn_reservations_redeemed_total",
           s.turn_reservations_redeemed_same_shard, "shard=\"same\"");
  w.sample("natfwd_relay_turn_reservations_redeemed_total",
           s.turn_reservations_redeemed_other_shard, "shard=\"other\"");
  w.family("natfwd_relay_turn_permissions", "gauge", "TURN permissions installed now.");
  w.sample("natfwd_relay_turn_permissions", g.turn_permissions);
  w.family("natfwd_relay_turn_channels", "gauge", "TURN channels bound now.");
  w.sample("natfwd_relay_turn_channels", g.turn_channels);
  const RelayedTotals relayed = s.relayed();
  w.family("natfwd_relay_relayed_bytes_total", "counter",
           "Payload bytes relayed by TURN, by direction.");
  w.sample("natfwd_relay_relayed_bytes_total", relayed.bytes_to_peer, "direction=\"to_peer\"");
  w.sample("natfwd_relay_relayed_bytes_total", relayed.bytes_to_client,
           "direction=\"to_client\"");
  w.family("natfwd_relay_relayed_packets_total", "counter",
           "Packets relayed by TURN, by direction.");
  w.sample("natfwd_relay_relayed_packets_total", relayed.packets_to_peer,
           "direction=\"to_peer\"");
  w.sample("natfwd_relay_relayed_packets_total", relayed.packets_to_client,
           "direction=\"to_client\"");
  w.family("natfwd_relay_handed_over_packets_total", "counter",
           "Packets relayed from one allocation to another of the same thread without "
           "leaving the relay (both peers relayed by it).");
  w.sample("natfwd_relay_handed_over_packets_total", relayed.packets_handed_over);
  w.family("natfwd_relay_errors_total", "counter",
           "Errors answered or dropped, by kind (protocol errors, TURN error codes, "
           "malformed datagrams).");
  {
    std::lock_guard lock(s.errors_mutex);
    for (const auto& [kind, count] : s.errors)
      w.sample("natfwd_relay_errors_total", count, "kind=\"" + label_value(kind) + "\"");
  }
  if (s.publishers.empty() && g.publish_visitors.empty()) return w.take();
  auto publisher_label = [](const std::string& key) {
    return "publisher=\"" + label_value(key) + "\"";
  };
  w.family("natfwd_relay_publish_visitors", "gauge",
           "Visitor connections the publishing front door carries now, by publisher key.");
  for (const auto& [publisher, open] : g.publish_visitors)
    w.sample("natfwd_relay_publish_visitors", open, publisher_label(publisher));
  w.family("natfwd_relay_publish_visitors_total", "counter",
           "Visitor connections by publisher key and outcome (accepted, refused by a "
           "limit, refused by the publisher's allow-from).");
  for (const auto& [publisher, p] : s.publishers)
    w.samples("natfwd_relay_publish_visitors_total", publisher_label(publisher), "outcome",
              {{"accepted", p.accepted},
               {"limit", p.refused_limit},
               {"allow_from", p.refused_allow_from}});
  w.family("natfwd_relay_publish_bytes_total", "counter",
           "Visitor bytes carried by the publishing front door, by publisher key and "
           "direction.");
  for (const auto& [publisher, p] : s.publishers)
    w.samples("natfwd_relay_publish_bytes_total", publisher_label(publisher), "direction",
              {{"to_home", p.bytes_to_home}, {"to_visitor", p.bytes_to_visitor}});
  return w.take();
}

MetricsRequest classify_metrics_request(std::string_view received) {
  // The method is upper-case letters (RFC 9110 section 9: tokens, and every method
  // registered is so): anything else at the start is not HTTP, closed at once.
  for (char c : received.substr(0, received.find(' ')))
    if (c < 'A' || c > 'Z') return MetricsRequest::kMalformed;
  const size_t end = received.find("\r\n\r\n");
  if (end == std::string_view::npos)
    return received.size() > kMaxRequestHead ? MetricsRequest::kMalformed
                                             : MetricsRequest::kNeedMore;
  if (end > kMaxRequestHead) return MetricsRequest::kMalformed;
  // request-line = method SP request-target SP HTTP-version (RFC 9112 section 3)
  const std::string_view line = received.substr(0, received.find("\r\n"));
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return MetricsRequest::kMalformed;
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (method.empty() || target.empty() || target[0] != '/' ||
      (version != "HTTP/1.1" && version != "HTTP/1.0"))
    return MetricsRequest::kMalformed;
  for (char c : method)
    if (c < 'A' || c > 'Z') return MetricsRequest::kMalformed;
  const std::string_view path = target.substr(0, target.find('?'));
  return method == "GET" && path == "/metrics" ? MetricsRequest::kMetrics
                                               : MetricsRequest::kNotFound;
}

}  // namespace natfwd::relay
