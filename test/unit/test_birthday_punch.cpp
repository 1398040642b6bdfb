// BirthdayPunch: the punch packet codec, and the search between a hard and an easy side
// joined through two simulated NATs (an endpoint-dependent one that picks a random port
// per socket, and an endpoint-independent one that filters by address and port), with
// a fake clock: rate, bounds, give-up, win, and forged or reflected packets ignored.
#include <catch2/catch.hpp>

#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <set>

#include "punch/birthday_punch.h"

using namespace natfwd;
using namespace natfwd::punch;
using namespace std::chrono_literals;

namespace {

const PunchKey kKey = [] {
  PunchKey key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i * 7 + 1);
  return key;
}();
constexpr uint64_t kSession = 0x1122334455667788;
const Micros kStart = 1000s;

// The easy side's srflx address, and the hard side's public IP (its port is whatever
// its NAT picks per destination).
const TransportAddress kEasyPublic = TransportAddress::ipv4({198, 51, 100, 7}, 50123);
const TransportAddress kHardPublic = TransportAddress::ipv4({203, 0, 113, 5}, 40000);

std::span<const std::byte> bytes_of(const std::array<std::byte, kPacketSize>& packet) {
  return std::span<const std::byte>(packet.data(), packet.size());
}

std::array<std::byte, kPacketSize> packet(PacketKind kind, Role sender, uint32_t seq = 0,
                                          const PunchKey& key = kKey,
                                          uint64_t session = kSession) {
  return encode_packet(PunchPacket{kind, sender, session, seq}, key);
}

size_t count(const BirthdayPunch::Actions& actions, BirthdayPunch::Action::Kind kind) {
  return static_cast<size_t>(std::count_if(actions.begin(), actions.end(),
                                           [&](const auto& a) { return a.kind == kind; }));
}

// Two cores between two NATs, packets delayed `one_way` each way.
struct World {
  BirthdayPunch hard;
  BirthdayPunch easy;
  Micros one_way;
  std::mt19937_64 nat_rng{42};
  std::map<int, uint16_t> hard_ports;     // hard socket -> its NAT's public port
  std::set<std::pair<std::array<uint8_t, 16>, uint16_t>> easy_sent_to;  // easy NAT filter
  struct InFlight {
    Micros at;
    bool to_hard;
    int socket;
    TransportAddress from;
    std::array<std::byte, kPacketSize> bytes;
  };
  std::deque<InFlight> flight;
  int delivered_to_hard = 0, delivered_to_easy = 0;
  Micros now = kStart;
  // Drops the next `drop_confirms` confirms on their way.
  int drop_confirms = 0;

  World(uint64_t seed, Micros one_way, Limits limits = Limits())
      : hard(Role::kHard, kSession, kKey, kEasyPublic, seed, limits),
        easy(Role::kEasy, kSession, kKey, kHardPublic, seed + 1, limits),
        one_way(one_way),
        nat_rng(seed * 31 + 7) {}

  void from_hard(const BirthdayPunch::Actions& actions) {
    for (const auto& a : actions) {
      if (a.kind == BirthdayPunch::Action::Kind::kOpenSocket) {
        // --random-fully: a random free port for every new socket's mapping.
        std::uniform_int_distribution<int> pick(1024, 65535);
        uint16_t port;
        do port = static_cast<uint16_t>(pick(nat_rng));
        while (std::any_of(hard_ports.begin(), hard_ports.end(),
                           [&](const auto& kv) { return kv.second == port; }));
        hard_ports[a.socket] = port;
        continue;
      }
      REQUIRE(a.to == kEasyPublic);  // the hard side only ever talks to the easy one
      TransportAddress from = kHardPublic;
      from.port = hard_ports.at(a.socket);
      // The easy NAT filters by address and port: only what it sent to gets in.
      if (!easy_sent_to.count({from.ip, from.port})) continue;
      flight.push_back({now + one_way, false, 0, from, a.bytes});
    }
  }
  void from_easy(const BirthdayPunch::Actions& actions) {
    for (const auto& a : actions) {
      REQUIRE(a.kind == BirthdayPunch::Action::Kind::kSend);
      REQUIRE(a.socket == 0);
      REQUIRE(a.to.ip == kHardPublic.ip);  // only the hard side's public IP
      easy_sent_to.insert({a.to.ip, a.to.port});
      auto parse = parse_packet(bytes_of(a.bytes), kKey, kSession);
      if (parse.packet.kind == PacketKind::kConfirm && drop_confirms > 0) {
        --drop_confirms;
        continue;
      }
      // The hard NAT lets in only what comes from the easy address to a mapping made
      // toward it.
      for (const auto& [socket, port] : hard_ports)
        if (port == a.to.port) flight.push_back({now + one_way, true, socket, kEasyPublic, a.bytes});
    }
  }
  // Runs until both sides are done or `limit` has passed.
  void run(Micros limit) {
    from_hard(hard.start(now));
    from_easy(easy.start(now));
    while (now < kStart + limit) {
      std::optional<Micros> next;
      for (auto d : {hard.next_deadline(), easy.next_deadline()})
        if (d && (!next || *d < *next)) next = d;
      for (const auto& f : flight)
        if (!next || f.at < *next) next = f.at;
      if (!next) return;
      now = std::max(now, *next);
      while (!flight.empty()) {
        auto it = std::min_element(flight.begin(), flight.end(),
                                   [](const auto& a, const auto& b) { return a.at < b.at; });
        if (it->at > now) break;
        InFlight f = *it;
        flight.erase(it);
        if (f.to_hard) {
          ++delivered_to_hard;
          from_hard(hard.on_datagram(f.socket, f.from, bytes_of(f.bytes), now));
        } else {
          ++delivered_to_easy;
          from_easy(easy.on_datagram(0, f.from, bytes_of(f.bytes), now));
        }
      }
      if (hard.next_deadline() && *hard.next_deadline() <= now) from_hard(hard.on_timer(now));
      if (easy.next_deadline() && *easy.next_deadline() <= now) from_easy(easy.on_timer(now));
    }
  }
};

}  // namespace

TEST_CASE("punch packets: round trip, and every field is checked") {
  const auto good = packet(PacketKind::kAck, Role::kHard, 77);
  auto parse = parse_packet(bytes_of(good), kKey, kSession);
  REQUIRE(parse.status == PacketParse::Status::kOk);
  CHECK(parse.packet.kind == PacketKind::kAck);
  CHECK(parse.packet.sender == Role::kHard);
  CHECK(parse.packet.session_id == kSession);
  CHECK(parse.packet.seq == 77);
  CHECK(std::to_integer<uint8_t>(good[0]) == 0);  // QUIC's fixed bit clear

  // Every prefix (and one byte more) is someone else's datagram, not an error.
  for (size_t n = 0; n < good.size(); ++n)
    CHECK(parse_packet(bytes_of(good).first(n), kKey, kSession).status ==
          PacketParse::Status::kNotPunch);
  std::vector<std::byte> longer(good.begin(), good.end());
  longer.push_back(std::byte{0});
  CHECK(parse_packet(longer, kKey, kSession).status == PacketParse::Status::kNotPunch);

  // Any flipped bit after the magic makes it invalid (the tag covers all of it).
  for (size_t i = kPacketMagic.size(); i < good.size(); ++i) {
    auto bad = good;
    bad[i] ^= std::byte{0x10};
    CHECK(parse_packet(bytes_of(bad), kKey, kSession).status == PacketParse::Status::kInvalid);
  }
  PunchKey other = kKey;
  other[0] ^= 1;
  CHECK(parse_packet(bytes_of(good), other, kSession).status == PacketParse::Status::kInvalid);
  CHECK(parse_packet(bytes_of(good), kKey, kSession + 1).status ==
        PacketParse::Status::kInvalid);
}

TEST_CASE("the role: punching only when exactly one side maps per destination") {
  CHECK(choose_role(true, false) == Role::kHard);
  CHECK(choose_role(false, true) == Role::kEasy);
  CHECK_FALSE(choose_role(true, true));
  CHECK_FALSE(choose_role(false, false));
}

TEST_CASE("the easy side probes distinct random ports at the rate, up to the bound") {
  BirthdayPunch easy(Role::kEasy, kSession, kKey, kHardPublic, 1);
  auto actions = easy.start(kStart);
  REQUIRE(actions.size() == 1);
  CHECK(easy.next_deadline() == kStart + 4ms);
  // Nothing before the deadline; a timer 40 ms late catches up with ten probes, no more.
  CHECK(easy.on_timer(kStart + 3ms).empty());
  CHECK(easy.on_timer(kStart + 44ms).size() == 11);
  std::set<uint16_t> ports;
  Micros now = kStart + 44ms;
  while (easy.counters().probes_sent < 1024) {
    now = *easy.next_deadline();
    for (const auto& a : easy.on_timer(now)) {
      CHECK(a.to.ip == kHardPublic.ip);
      CHECK(a.to.port >= 1024);
      ports.insert(a.to.port);
    }
  }
  CHECK(easy.counters().probes_sent == 1024);
  CHECK(now == kStart + 1023 * 4ms);  // 250 a second
  CHECK(ports.size() == 1024 - 12);   // the first 12 were counted above; all distinct
  // Then only the give-up deadline is left, and nothing more is sent.
  CHECK(easy.next_deadline() == kStart + 10s);
  CHECK(easy.on_timer(kStart + 9s).empty());
  CHECK(easy.state() == BirthdayPunch::State::kSearching);
  CHECK(easy.on_timer(kStart + 10s).empty());
  CHECK(easy.state() == BirthdayPunch::State::kGaveUp);
  CHECK_FALSE(easy.next_deadline());
}

TEST_CASE("the hard side opens a socket and sends an opener every 2 ms, at most 256") {
  BirthdayPunch hard(Role::kHard, kSession, kKey, kEasyPublic, 1);
  auto actions = hard.start(kStart);
  REQUIRE(actions.size() == 2);
  CHECK(actions[0].kind == BirthdayPunch::Action::Kind::kOpenSocket);
  CHECK(actions[0].socket == 0);
  CHECK(actions[1].kind == BirthdayPunch::Action::Kind::kSend);
  CHECK(actions[1].socket == 0);
  CHECK(actions[1].to == kEasyPublic);
  CHECK(parse_packet(bytes_of(actions[1].bytes), kKey, kSession).packet.kind ==
        PacketKind::kOpener);
  Micros now = kStart;
  size_t opened = 1;
  while (auto next = hard.next_deadline()) {
    if (*next >= kStart + 10s) break;
    now = *next;
    opened += count(hard.on_timer(now), BirthdayPunch::Action::Kind::kOpenSocket);
  }
  CHECK(opened == 256);
  CHECK(hard.counters().sockets_opened == 256);
  CHECK(now == kStart + 255 * 2ms);
  CHECK(hard.on_timer(kStart + 10s).empty());
  CHECK(hard.state() == BirthdayPunch::State::kGaveUp);
}

TEST_CASE("a socket that cannot be opened ends the opening, not the search") {
  BirthdayPunch hard(Role::kHard, kSession, kKey, kEasyPublic, 1);
  (void)hard.start(kStart);
  (void)hard.on_timer(kStart + 2ms);
  hard.socket_failed(1);
  CHECK(hard.next_deadline() == kStart + 10s);
  CHECK(hard.state() == BirthdayPunch::State::kSearching);
  // Socket 0 still takes part.
  auto acks = hard.on_datagram(0, kEasyPublic, bytes_of(packet(PacketKind::kProbe, Role::kEasy, 3)),
                               kStart + 3ms);
  CHECK(acks.size() == 1);
}

TEST_CASE("hard meets easy through the simulated NATs: both win on the same pair") {
  int wins = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    World world(seed, 10ms);
    world.run(12s);
    CHECK(world.hard.state() == world.easy.state());
    if (world.easy.state() != BirthdayPunch::State::kWon) continue;
    ++wins;
    const auto& hard_win = world.hard.win();
    const auto& easy_win = world.easy.win();
    CHECK(hard_win.remote == kEasyPublic);
    CHECK(easy_win.remote.ip == kHardPublic.ip);
    CHECK(easy_win.remote.port == world.hard_ports.at(hard_win.socket));
    // Bounds held on the way.
    CHECK(world.hard.counters().sockets_opened <= 256);
    CHECK(world.easy.counters().probes_sent <= 1024);
    // Nothing more is scheduled once won.
    CHECK_FALSE(world.hard.next_deadline());
    CHECK_FALSE(world.easy.next_deadline());
    // At 20 ms RTT both sides hold the path within 5 s (issue 16's target): the last
    // probe leaves at 4.1 s. `now` stopped at the last event, the confirm's arrival.
    CHECK(world.now - kStart < 5s);
  }
  // 1 - (1 - 256/64512)^1024 is about 98 %; the hard side stops opening at the first
  // hit, so a little less. Seeds are fixed: this is exact for this build.
  CHECK(wins >= 17);
}

TEST_CASE("the pair is found with bounds the caller sets, and give-up follows them") {
  Limits small;
  small.sockets = 4;
  small.probes = 8;
  small.give_up_after = 2s;
  World world(3, 10ms, small);
  world.run(5s);
  CHECK(world.hard.counters().sockets_opened == 4);
  CHECK(world.easy.counters().probes_sent == 8);
  // 8 probes among 64k ports for 4 mappings: no hit for this seed.
  CHECK(world.easy.state() == BirthdayPunch::State::kGaveUp);
  CHECK(world.hard.state() == BirthdayPunch::State::kGaveUp);
  CHECK(world.delivered_to_hard == 0);
}

TEST_CASE("a lost confirm is repaired by the repeated ack") {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    World world(seed, 10ms);
    world.drop_confirms = 2;
    world.run(12s);
    if (world.easy.state() != BirthdayPunch::State::kWon) continue;
    CHECK(world.hard.state() == BirthdayPunch::State::kWon);
    CHECK(world.hard.counters().acks_sent >= 3);  // the first two confirms were lost
    return;
  }
  FAIL("no seed won");
}

TEST_CASE("a pair whose acks are never confirmed is dropped and the search goes on") {
  BirthdayPunch hard(Role::kHard, kSession, kKey, kEasyPublic, 1);
  (void)hard.start(kStart);
  (void)hard.on_timer(kStart + 2ms);  // sockets 0 and 1
  auto ack = hard.on_datagram(1, kEasyPublic, bytes_of(packet(PacketKind::kProbe, Role::kEasy, 9)),
                              kStart + 3ms);
  REQUIRE(ack.size() == 1);
  CHECK(ack[0].socket == 1);
  // No sockets are opened while the pair waits for its confirm; the ack repeats.
  Micros now = kStart + 3ms;
  int acks = 1;
  while (acks < 10) {
    now = *hard.next_deadline();
    REQUIRE(now < kStart + 10s);
    for (const auto& a : hard.on_timer(now)) {
      REQUIRE(a.kind == BirthdayPunch::Action::Kind::kSend);
      CHECK(parse_packet(bytes_of(a.bytes), kKey, kSession).packet.kind == PacketKind::kAck);
      ++acks;
    }
  }
  CHECK(hard.counters().sockets_opened == 2);
  CHECK(hard.counters().acks_sent == 10);
  // One interval after the tenth ack the pair is dropped and opening resumes.
  now = *hard.next_deadline();
  CHECK(now == kStart + 3ms + 10 * 100ms);
  CHECK(count(hard.on_timer(now), BirthdayPunch::Action::Kind::kOpenSocket) == 1);
  CHECK(hard.counters().sockets_opened == 3);
  // A confirm for the dropped pair no longer wins it.
  (void)hard.on_datagram(1, kEasyPublic, bytes_of(packet(PacketKind::kConfirm, Role::kEasy, 9)),
                         now);
  CHECK(hard.state() == BirthdayPunch::State::kSearching);
}

TEST_CASE("forged, foreign and reflected packets are ignored") {
  BirthdayPunch hard(Role::kHard, kSession, kKey, kEasyPublic, 1);
  (void)hard.start(kStart);
  PunchKey wrong = kKey;
  wrong[5] ^= 0x80;
  const auto now = kStart + 1ms;
  // A probe under another key, from the right address.
  CHECK(hard.on_datagram(0, kEasyPublic,
                         bytes_of(packet(PacketKind::kProbe, Role::kEasy, 1, wrong)), now)
            .empty());
  // The right probe from another address.
  const auto stranger = TransportAddress::ipv4({192, 0, 2, 66}, 50123);
  CHECK(hard.on_datagram(0, stranger, bytes_of(packet(PacketKind::kProbe, Role::kEasy, 1)), now)
            .empty());
  // Our own opener reflected back at us, and a probe of another session.
  CHECK(hard.on_datagram(0, kEasyPublic, bytes_of(packet(PacketKind::kOpener, Role::kHard)), now)
            .empty());
  CHECK(hard.on_datagram(0, kEasyPublic,
                         bytes_of(packet(PacketKind::kProbe, Role::kEasy, 1, kKey, 9)), now)
            .empty());
  // A confirm before any probe picked a pair.
  CHECK(hard.on_datagram(0, kEasyPublic, bytes_of(packet(PacketKind::kConfirm, Role::kEasy)), now)
            .empty());
  // A socket that was never opened.
  CHECK(hard.on_datagram(7, kEasyPublic, bytes_of(packet(PacketKind::kProbe, Role::kEasy, 1)), now)
            .empty());
  CHECK(hard.state() == BirthdayPunch::State::kSearching);
  CHECK(hard.counters().dropped == 6);
  // Someone else's datagram (a QUIC packet, say) is not a drop.
  const std::array<std::byte, 3> quic{std::byte{0x40}, std::byte{1}, std::byte{2}};
  CHECK(hard.on_datagram(0, kEasyPublic, quic, now).empty());
  CHECK(hard.counters().dropped == 6);

  BirthdayPunch easy(Role::kEasy, kSession, kKey, kHardPublic, 1);
  (void)easy.start(kStart);
  TransportAddress hard_mapping = kHardPublic;
  hard_mapping.port = 41234;
  // An ack for a probe never sent, a forged ack, an ack from elsewhere.
  CHECK(easy.on_datagram(0, hard_mapping, bytes_of(packet(PacketKind::kAck, Role::kHard, 5)), now)
            .empty());
  CHECK(easy.on_datagram(0, hard_mapping,
                         bytes_of(packet(PacketKind::kAck, Role::kHard, 0, wrong)), now)
            .empty());
  CHECK(easy.on_datagram(0, stranger, bytes_of(packet(PacketKind::kAck, Role::kHard, 0)), now)
            .empty());
  CHECK(easy.state() == BirthdayPunch::State::kSearching);
  // The real ack wins, and is confirmed.
  auto confirm =
      easy.on_datagram(0, hard_mapping, bytes_of(packet(PacketKind::kAck, Role::kHard, 0)), now);
  REQUIRE(confirm.size() == 1);
  CHECK(confirm[0].to == hard_mapping);
  CHECK(parse_packet(bytes_of(confirm[0].bytes), kKey, kSession).packet.kind ==
        PacketKind::kConfirm);
  CHECK(easy.state() == BirthdayPunch::State::kWon);
  CHECK(easy.win().remote == hard_mapping);
}

TEST_CASE("an opener that gets through the easy NAT is answered by a probe to its source") {
  BirthdayPunch easy(Role::kEasy, kSession, kKey, kHardPublic, 1);
  (void)easy.start(kStart);
  TransportAddress hard_mapping = kHardPublic;
  hard_mapping.port = 61000;
  auto probe = easy.on_datagram(0, hard_mapping,
                                bytes_of(packet(PacketKind::kOpener, Role::kHard, 17)),
                                kStart + 1ms);
  REQUIRE(probe.size() == 1);
  CHECK(probe[0].to == hard_mapping);
  CHECK(parse_packet(bytes_of(probe[0].bytes), kKey, kSession).packet.kind == PacketKind::kProbe);
  CHECK(easy.counters().probes_sent == 2);  // within the same budget
  // Even on a port the random search tried before (the mapping may be younger).
  TransportAddress tried = kHardPublic;
  tried.port = BirthdayPunch(Role::kEasy, kSession, kKey, kHardPublic, 1).start(kStart)[0].to.port;
  auto again = easy.on_datagram(0, tried, bytes_of(packet(PacketKind::kOpener, Role::kHard, 3)),
                                kStart + 1ms);
  REQUIRE(again.size() == 1);
  CHECK(again[0].to == tried);
  CHECK(easy.counters().probes_sent == 3);
  // The same opener again costs nothing more.
  CHECK(easy.on_datagram(0, hard_mapping, bytes_of(packet(PacketKind::kOpener, Role::kHard, 17)),
                         kStart + 2ms)
            .empty());
}

TEST_CASE("limits that make no sense are refused") {
  Limits none;
  none.sockets = 0;
  CHECK_THROWS(BirthdayPunch(Role::kHard, kSession, kKey, kEasyPublic, 1, none));
  Limits too_many;
  too_many.lowest_port = 65000;
  CHECK_THROWS(BirthdayPunch(Role::kEasy, kSession, kKey, kHardPublic, 1, too_many));
}
