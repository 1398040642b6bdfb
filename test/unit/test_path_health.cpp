// PathHealth: which connecting tunnels restart their path, as a function of their
// state and a fake clock.
#include <catch2/catch.hpp>

#include "health/path_health.h"

using namespace natfwd;
using namespace std::chrono_literals;

namespace {

// An established current tunnel that has been silent for `silent`.
TunnelHealth current(uint64_t id, Micros silent) {
  TunnelHealth tunnel;
  tunnel.tunnel_id = id;
  tunnel.established = true;
  tunnel.current = true;
  tunnel.silent_for = silent;
  return tunnel;
}

const Micros kStart = 1000s;  // the fake clock's "now" at the start

}  // namespace

TEST_CASE("a current tunnel restarts its path after 3 s of silence, not before") {
  PathHealth health;
  CHECK(health.due_for_restart({current(1, 3000ms)}, kStart).empty());
  CHECK(health.due_for_restart({current(1, 3001ms)}, kStart) == std::vector<uint64_t>{1});
}

TEST_CASE("tunnels not established, closed or already restarting are left alone") {
  PathHealth health;
  TunnelHealth connecting = current(1, 10s);
  connecting.established = false;
  TunnelHealth closed = current(2, 10s);
  closed.closed = true;
  TunnelHealth restarting = current(3, 10s);
  restarting.restarting = true;
  CHECK(health.due_for_restart({connecting, closed, restarting}, kStart).empty());
}

TEST_CASE("a replaced tunnel keeps restarting only while it carries connections") {
  PathHealth health;
  TunnelHealth idle = current(1, 10s);
  idle.current = false;
  idle.retired = true;
  TunnelHealth busy = idle;
  busy.tunnel_id = 2;
  busy.open_streams = 1;
  TunnelHealth neither = busy;
  neither.tunnel_id = 3;
  neither.retired = false;
  CHECK(health.due_for_restart({idle, busy, neither}, kStart) == std::vector<uint64_t>{2});
}

TEST_CASE("after a network change the limit is 1.2 s for 10 s, then 3 s again") {
  PathHealth health;
  health.network_changed(kStart);
  CHECK(health.after_network_change(kStart + 9999ms));
  CHECK(health.silence_limit(kStart + 1s) == 1200ms);
  CHECK(health.due_for_restart({current(1, 1201ms)}, kStart + 1s) == std::vector<uint64_t>{1});
  CHECK(health.due_for_restart({current(1, 1200ms)}, kStart + 1s).empty());
  CHECK_FALSE(health.after_network_change(kStart + 10s));
  CHECK(health.due_for_restart({current(1, 1201ms)}, kStart + 10s).empty());
  CHECK(health.silence_limit(kStart + 10s) == 3s);
}

TEST_CASE("no network change seen: the normal limit") {
  PathHealth health;
  CHECK_FALSE(health.after_network_change(0s));
  CHECK_FALSE(health.after_network_change(kStart));
}

TEST_CASE("failed restarts back off 1, 2, 4, 8 s and stay at 8 s") {
  CHECK(PathHealth::retry_delay(0) == 1s);
  CHECK(PathHealth::retry_delay(1) == 1s);
  CHECK(PathHealth::retry_delay(2) == 2s);
  CHECK(PathHealth::retry_delay(3) == 4s);
  CHECK(PathHealth::retry_delay(4) == 8s);
  CHECK(PathHealth::retry_delay(9) == 8s);

  PathHealth health;
  TunnelHealth tunnel = current(7, 60s);
  tunnel.restart_failed_at = kStart;
  tunnel.restart_failures = 3;  // next try 4 s after the failure
  CHECK(health.due_for_restart({tunnel}, kStart + 3999ms).empty());
  CHECK(health.due_for_restart({tunnel}, kStart + 4s) == std::vector<uint64_t>{7});
}

TEST_CASE("a new connection restarts the path of a tunnel silent for over 1.5 s") {
  TunnelHealth tunnel = current(1, 1500ms);
  CHECK_FALSE(PathHealth::restart_on_accept(tunnel));
  tunnel.silent_for = 1501ms;
  CHECK(PathHealth::restart_on_accept(tunnel));
  tunnel.closed = true;
  CHECK_FALSE(PathHealth::restart_on_accept(tunnel));
}

TEST_CASE("several tunnels due at once come back in the order given") {
  PathHealth health;
  TunnelHealth old = current(5, 20s);
  old.current = false;
  old.retired = true;
  old.open_streams = 2;
  CHECK(health.due_for_restart({current(9, 20s), current(3, 1s), old}, kStart) ==
        std::vector<uint64_t>{9, 5});
}
