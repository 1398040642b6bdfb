// relay --metrics: the exposition text and the HTTP request classifier, without I/O.
#include <catch2/catch.hpp>

#include <cstdint>
#include <thread>
#include <vector>

#include "metrics/relay_stats.h"

using namespace natfwd::relay;

TEST_CASE("every metric has HELP and TYPE, and label values are escaped") {
  RelayStats stats;
  stats.sessions_total = 3;
  stats.relayed_counters().count(/*to_peer=*/true, 1000);
  stats.error("odd \"kind\"\\\n");
  RelayGauges gauges;
  gauges.registered_peers = 2;
  gauges.version = "0.1";
  const std::string text = render_prometheus(stats, gauges);
  CHECK(text.find("# HELP natfwd_relay_sessions_total ") != std::string::npos);
  CHECK(text.find("# TYPE natfwd_relay_sessions_total counter\nnatfwd_relay_sessions_total 3\n") !=
        std::string::npos);
  CHECK(text.find("natfwd_relay_registered_peers 2\n") != std::string::npos);
  CHECK(text.find("natfwd_relay_relayed_bytes_total{direction=\"to_peer\"} 1000\n") !=
        std::string::npos);
  CHECK(text.find("natfwd_relay_errors_total{kind=\"odd \\\"kind\\\"\\\\\\n\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("natfwd_relay_build_info{version=\"0.1\"} 1\n") != std::string::npos);
  CHECK(text.back() == '\n');
}

TEST_CASE("relayed data: a block per core, each on its own cache line, summed by a scrape") {
  RelayStats stats;
  CHECK(render_prometheus(stats, {}).find(
            "natfwd_relay_relayed_packets_total{direction=\"to_peer\"} 0\n") !=
        std::string::npos);
  RelayedCounters& a = stats.relayed_counters();
  RelayedCounters& b = stats.relayed_counters();
  const auto line_of = [](const RelayedCounters& block) {
    return reinterpret_cast<uintptr_t>(&block) / kCacheLineBytes;
  };
  CHECK(reinterpret_cast<uintptr_t>(&a) % kCacheLineBytes == 0);
  CHECK(line_of(a) != line_of(b));
  CHECK(sizeof(RelayedCounters) == kCacheLineBytes);
  a.count(/*to_peer=*/true, 1000);
  a.count(/*to_peer=*/true, 500);
  a.count(/*to_peer=*/false, 20);
  b.count(/*to_peer=*/true, 1);
  b.count(/*to_peer=*/false, 300);
  const RelayedTotals sum = stats.relayed();
  CHECK(sum.bytes_to_peer == 1501);
  CHECK(sum.packets_to_peer == 3);
  CHECK(sum.bytes_to_client == 320);
  CHECK(sum.packets_to_client == 2);
  const std::string text = render_prometheus(stats, {});
  for (const char* line : {
           "natfwd_relay_relayed_bytes_total{direction=\"to_peer\"} 1501\n",
           "natfwd_relay_relayed_bytes_total{direction=\"to_client\"} 320\n",
           "natfwd_relay_relayed_packets_total{direction=\"to_peer\"} 3\n",
           "natfwd_relay_relayed_packets_total{direction=\"to_client\"} 2\n",
       })
    CHECK(text.find(line) != std::string::npos);
  // A block made later starts at 0 and adds to what is there.
  stats.relayed_counters().count(/*to_peer=*/false, 7);
  CHECK(stats.relayed().bytes_to_client == 327);
  CHECK(stats.relayed().packets_to_client == 3);
}

TEST_CASE("relayed data: blocks written from their own threads, scraped meanwhile, sum exactly") {
  constexpr uint64_t kDatagrams = 200000;
  RelayStats stats;
  std::vector<std::thread> shards;
  for (int shard = 0; shard < 2; ++shard)
    shards.emplace_back([&stats] {
      RelayedCounters& mine = stats.relayed_counters();
      for (uint64_t i = 0; i < kDatagrams; ++i) mine.count(/*to_peer=*/i % 2 == 0, 10);
    });
  // Each counter only grows, as a scrape sees it.
  RelayedTotals last;
  for (int scrape = 0; scrape < 1000; ++scrape) {
    const RelayedTotals now = stats.relayed();
    CHECK(now.packets_to_peer >= last.packets_to_peer);
    CHECK(now.bytes_to_client >= last.bytes_to_client);
    last = now;
  }
  for (auto& shard : shards) shard.join();
  const RelayedTotals sum = stats.relayed();
  CHECK(sum.packets_to_peer == kDatagrams);
  CHECK(sum.packets_to_client == kDatagrams);
  CHECK(sum.bytes_to_peer == 10 * kDatagrams);
  CHECK(sum.bytes_to_client == 10 * kDatagrams);
}

TEST_CASE("publishing counters and gauges, by publisher key, only when publishing") {
  RelayStats stats;
  RelayGauges gauges;
  CHECK(render_prometheus(stats, gauges).find("natfwd_relay_publish") == std::string::npos);
  stats.publishers["k1"].accepted = 4;
  stats.publishers["k1"].refused_limit = 7;
  stats.publishers["k1"].refused_allow_from = 2;
  stats.publishers["k1"].bytes_to_home = 10;
  stats.publishers["k1"].bytes_to_visitor = 20;
  gauges.publish_visitors["k1"] = 3;
  const std::string text = render_prometheus(stats, gauges);
  for (const char* line : {
           "natfwd_relay_publish_visitors{publisher=\"k1\"} 3\n",
           "natfwd_relay_publish_visitors_total{publisher=\"k1\",outcome=\"accepted\"} 4\n",
           "natfwd_relay_publish_visitors_total{publisher=\"k1\",outcome=\"limit\"} 7\n",
           "natfwd_relay_publish_visitors_total{publisher=\"k1\",outcome=\"allow_from\"} 2\n",
           "natfwd_relay_publish_bytes_total{publisher=\"k1\",direction=\"to_home\"} 10\n",
           "natfwd_relay_publish_bytes_total{publisher=\"k1\",direction=\"to_visitor\"} 20\n",
           "# TYPE natfwd_relay_publish_visitors gauge\n",
           "# TYPE natfwd_relay_publish_visitors_total counter\n",
       }) {
    INFO(line);
    CHECK(text.find(line) != std::string::npos);
  }
}

TEST_CASE("the metrics endpoint serves GET /metrics, 404s the rest, closes garbage") {
  struct Row {
    const char* request;
    MetricsRequest want;
  };
  const Row rows[] = {
      {"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", MetricsRequest::kMetrics},
      {"GET /metrics?x=1 HTTP/1.0\r\n\r\n", MetricsRequest::kMetrics},
      {"GET / HTTP/1.1\r\n\r\n", MetricsRequest::kNotFound},
      {"POST /metrics HTTP/1.1\r\n\r\n", MetricsRequest::kNotFound},
      {"GET /metrics HTTP/1.1\r\nHost:", MetricsRequest::kNeedMore},
      {"", MetricsRequest::kNeedMore},
      {"GET /metrics\r\n\r\n", MetricsRequest::kMalformed},
      {"GET metrics HTTP/1.1\r\n\r\n", MetricsRequest::kMalformed},
      {"get /metrics HTTP/1.1\r\n\r\n", MetricsRequest::kMalformed},
      {"GET /metrics HTTP/2\r\n\r\n", MetricsRequest::kMalformed},
      {"\x16\x03\x01\x02", MetricsRequest::kMalformed},  // TLS, before any line end
      {"GE", MetricsRequest::kNeedMore},
  };
  for (const Row& row : rows) {
    INFO(row.request);
    CHECK(classify_metrics_request(row.request) == row.want);
  }
  CHECK(classify_metrics_request(std::string(kMaxRequestHead + 1, 'a')) ==
        MetricsRequest::kMalformed);
}
