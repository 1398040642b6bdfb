// relay --metrics: the exposition text and the HTTP request classifier, without I/O.
#include <catch2/catch.hpp>

#include "metrics/relay_stats.h"

using namespace natfwd::relay;

TEST_CASE("every metric has HELP and TYPE, and label values are escaped") {
  RelayStats stats;
  stats.sessions_total = 3;
  stats.relayed_bytes_to_peer = 1000;
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
