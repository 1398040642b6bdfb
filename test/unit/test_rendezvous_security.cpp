// Registration security of RendezvousCore: signed challenges, names bound to keys
// (in memory and in the state dir's names file), and per-address rate limits, with
// the fake clock of test_rendezvous_harness.h.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "identity.h"
#include "server/name_store.h"
#include "test_rendezvous_harness.h"
#include "turn/credentials.h"

using namespace natfwd;
using namespace natfwd::relay;
using namespace natfwd::relay::testing;
using std::chrono::seconds;

namespace {

std::string id_of(char letter) { return key_id(identity_of(letter).public_key()); }

wire::Envelope register_with(const std::string& name, const std::string& signature) {
  wire::Envelope envelope;
  envelope.mutable_register_()->set_name(name);
  envelope.mutable_register_()->set_signature(signature);
  return envelope;
}

// A fresh directory, removed with everything in it at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "natfwd-names-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()));
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const char* name) const { return (path / name).string(); }
};

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::string names_line(const std::string& name, char letter) {
  const std::string raw = key_of(letter);
  return name + " " + id_of(letter) + " " +
         turn::base64(std::as_bytes(std::span(raw.data(), raw.size()))) + "\n";
}

// The message of read_names_file's exception for `text`, "" when it loads.
std::string load_error(const TempDir& dir, const std::string& text) {
  const std::string path = dir.file("names");
  write_file(path, text);
  try {
    read_names_file(path);
    return "";
  } catch (const std::runtime_error& e) {
    return e.what();
  }
}

// A policy whose storage is broken.
class FailingBinding final : public MemoryNameBinding {
 public:
  bool bind(std::string_view, std::string_view, std::string_view) override { return false; }
};

}  // namespace

TEST_CASE("Welcome carries a fresh 32-byte challenge per connection") {
  Harness h;
  const ConnectionId a = h.hello(key_of('h'));
  const ConnectionId b = h.hello(key_of('h'));
  CHECK(h.challenge(a) != h.challenge(b));

  RendezvousConfig config;
  int made = 0;
  config.make_challenge = [&] { return std::string(32, static_cast<char>('0' + made++)); };
  Harness injected(config);
  CHECK(injected.challenge(injected.hello(key_of('h'))) == std::string(32, '0'));
}

TEST_CASE("a Register whose signature does not verify is BAD_SIGNATURE and closed") {
  Harness h;
  const ConnectionId id = h.hello(key_of('h'));
  const std::string good =
      identity_of('h').sign(registration_message(h.challenge(id), "home"));

  SECTION("no signature") { h.deliver(id, register_with("home", "")); }
  SECTION("a corrupted signature") {
    std::string bad = good;
    bad[10] ^= 0x01;
    h.deliver(id, register_with("home", bad));
  }
  SECTION("a signature by another key than Hello's") {
    h.deliver(id, register_with(
                      "home", identity_of('t').sign(registration_message(h.challenge(id), "home"))));
  }
  SECTION("a signature for another name") {
    h.deliver(id, register_with(
                      "home", identity_of('h').sign(registration_message(h.challenge(id), "work"))));
  }
  SECTION("the bare challenge signed, without the context") {
    h.deliver(id, register_with("home", identity_of('h').sign(h.challenge(id))));
  }
  const auto reply = h.pop(id);
  CHECK(error_code(reply) == wire::Error::BAD_SIGNATURE);
  CHECK(reply.error().detail().find(id_of('h')) != std::string::npos);
  CHECK(h.closed(id));
  CHECK_FALSE(h.core().holder_of("home"));
  // Nothing was bound: another key may still take the name.
  h.registered("home", key_of('t'));
}

TEST_CASE("a signature from an earlier connection (another challenge) is refused") {
  Harness h;
  const ConnectionId first = h.hello(key_of('h'));
  const wire::Envelope recorded = h.make_register(first, "home");
  h.deliver(first, recorded);
  REQUIRE(h.pop(first).has_registered());
  h.transport_closed(first);

  // An eavesdropper (or the peer itself) replays it on a new connection with the
  // same Hello key: the challenge is new, so the signature is not good for it.
  const ConnectionId replay = h.hello(key_of('h'), "203.0.113.9");
  h.deliver(replay, recorded);
  CHECK(error_code(h.pop(replay)) == wire::Error::BAD_SIGNATURE);
  CHECK(h.closed(replay));
  CHECK_FALSE(h.core().holder_of("home"));
}

TEST_CASE("a bound name is refused to another key while its holder is offline") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  h.transport_closed(home);
  REQUIRE_FALSE(h.core().holder_of("home"));

  const ConnectionId thief = h.hello(key_of('t'), "203.0.113.9");
  h.deliver(thief, h.make_register(thief, "home"));
  const auto reply = h.pop(thief);
  CHECK(error_code(reply) == wire::Error::NAME_TAKEN);
  CHECK(reply.error().detail() ==
        "the name 'home' is bound to another key (" + id_of('h') + "); to give it to this key (" +
            id_of('t') + "), its holder runs `peer handover home " + id_of('t') +
            "` with the old state dir, or the relay's operator runs `relay names release "
            "home`; unused, it is free after the relay's --name-expiry");
  CHECK(h.closed(thief));

  // The owner comes back and gets its name; other names are free for anyone.
  const ConnectionId back = h.registered("home", key_of('h'));
  CHECK(h.core().holder_of("home") == back);
  h.registered("work", key_of('t'));
}

TEST_CASE("a bound name is refused to another key while its holder is online") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  const ConnectionId thief = h.hello(key_of('t'));
  h.deliver(thief, h.make_register(thief, "home"));
  CHECK(error_code(h.pop(thief)) == wire::Error::NAME_TAKEN);
  CHECK(h.core().holder_of("home") == home);
  CHECK_FALSE(h.closed(home));
}

namespace {

wire::Envelope hand_over(const std::string& name, const std::string& to_key_id) {
  wire::Envelope envelope;
  envelope.mutable_hand_over()->set_name(name);
  envelope.mutable_hand_over()->set_to_key_id(to_key_id);
  return envelope;
}

}  // namespace

TEST_CASE("the holder hands its name to a new key, which takes it when it registers") {
  Harness h;
  const ConnectionId old_home = h.registered("home", key_of('h'));
  // A stranger cannot hand over what it does not hold, nor a free name.
  const ConnectionId thief = h.hello(key_of('t'));
  h.deliver(thief, hand_over("home", id_of('t')));
  auto refused = h.pop(thief);
  CHECK(error_code(refused) == wire::Error::NOT_HOLDER);
  CHECK(refused.error().detail().find("only its holder can hand it over") != std::string::npos);
  CHECK(h.closed(thief));
  const ConnectionId nobody = h.hello(key_of('t'));
  h.deliver(nobody, hand_over("attic", id_of('t')));
  CHECK(error_code(h.pop(nobody)) == wire::Error::NOT_HOLDER);
  const ConnectionId sloppy = h.registered("work", key_of('w'));
  h.deliver(sloppy, hand_over("work", "not-a-key-id"));
  CHECK(error_code(h.pop(sloppy)) == wire::Error::BAD_MESSAGE);

  // The holder, from another connection of the same key (`peer handover` beside the
  // running peer), hands `home` to the reinstalled machine's key.
  const ConnectionId handing = h.hello(key_of('h'));
  h.deliver(handing, hand_over("home", id_of('n')));
  const auto done = h.pop(handing);
  REQUIRE(done.has_handed_over());
  CHECK(done.handed_over().name() == "home");
  CHECK(done.handed_over().to_key_id() == id_of('n'));
  CHECK(h.core().holder_of("home") == old_home);  // kept until the heir comes

  // Anyone else is still refused; the heir takes the name and the old link goes.
  const ConnectionId other = h.hello(key_of('t'));
  h.deliver(other, h.make_register(other, "home"));
  CHECK(error_code(h.pop(other)) == wire::Error::NAME_TAKEN);
  const ConnectionId heir = h.registered("home", key_of('n'), "198.51.100.40");
  CHECK(h.core().holder_of("home") == heir);
  const auto gone = h.pop(old_home);
  CHECK(error_code(gone) == wire::Error::NAME_TAKEN);
  CHECK(gone.error().detail() == "'home' was handed over to key " + id_of('n') +
                                     ", which registered it");
  CHECK(h.closed(old_home));

  // Now bound to the heir: the old key is the stranger.
  const ConnectionId old_key = h.hello(key_of('h'));
  h.deliver(old_key, h.make_register(old_key, "home"));
  CHECK(error_code(h.pop(old_key)) == wire::Error::NAME_TAKEN);
}

TEST_CASE("a binding the policy cannot record refuses the registration") {
  Harness h({}, std::make_unique<FailingBinding>());
  const ConnectionId id = h.hello(key_of('h'));
  h.deliver(id, h.make_register(id, "home"));
  CHECK(error_code(h.pop(id)) == wire::Error::UNKNOWN);
  CHECK(h.closed(id));
  CHECK_FALSE(h.core().holder_of("home"));
}

// A store in `dir` whose clock the test sets.
std::unique_ptr<NameStore> open_store(const TempDir& dir, const int64_t* unix_now,
                                      std::chrono::seconds expiry = std::chrono::hours(24)) {
  NameStore::Options options;
  options.expiry = expiry;
  options.unix_now = [unix_now] { return *unix_now; };
  return std::make_unique<NameStore>(dir.file("names.db"), dir.file("names"), options);
}

TEST_CASE("bindings persist in the names database across a relay restart") {
  TempDir dir;
  int64_t now = 1'800'000'000;
  {
    Harness before({}, open_store(dir, &now));
    before.registered("home", key_of('h'), "198.51.100.2");
    before.registered("work", key_of('w'));
  }
  struct stat info {};
  REQUIRE(stat(dir.file("names.db").c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0600);

  auto store = open_store(dir, &now);
  const auto listed = store->list();
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].name == "home");
  CHECK(listed[0].public_key == key_of('h'));
  CHECK(listed[0].bound_from == "198.51.100.2");
  CHECK(listed[0].bound_unix == now);
  Harness after({}, std::move(store));
  const ConnectionId thief = after.hello(key_of('t'));
  after.deliver(thief, after.make_register(thief, "home"));
  const auto reply = after.pop(thief);
  CHECK(error_code(reply) == wire::Error::NAME_TAKEN);
  CHECK(reply.error().detail().find(id_of('h')) != std::string::npos);
  after.registered("home", key_of('h'));
  after.registered("work", key_of('w'));
}

TEST_CASE("a name unused for longer than the expiry is free again, one in use is not") {
  TempDir dir;
  int64_t now = 1'800'000'000;
  Harness h({}, open_store(dir, &now, std::chrono::hours(24)));
  const ConnectionId home = h.registered("home", key_of('h'));
  h.transport_closed(h.registered("attic", key_of('a')));
  // Held by a live connection for two days: still home's, whatever the clock says.
  now += 2 * 24 * 3600;
  const ConnectionId thief = h.hello(key_of('t'));
  h.deliver(thief, h.make_register(thief, "home"));
  CHECK(error_code(h.pop(thief)) == wire::Error::NAME_TAKEN);
  // "attic" has had no connection for two days: taken over.
  h.registered("attic", key_of('t'));
  // home leaves; 23 hours later its name is still bound, after 25 it is free.
  h.transport_closed(home);
  now += 23 * 3600;
  const ConnectionId early = h.hello(key_of('u'));
  h.deliver(early, h.make_register(early, "home"));
  CHECK(error_code(h.pop(early)) == wire::Error::NAME_TAKEN);
  now += 2 * 3600;
  h.registered("home", key_of('u'));
}

TEST_CASE("a hand-over is kept in the names database; older databases gain its column") {
  TempDir dir;
  int64_t now = 1'800'000'000;
  {
    // A names.db as the relay made it before `peer handover`.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(dir.file("names.db").c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "CREATE TABLE names (name TEXT PRIMARY KEY, public_key BLOB NOT NULL,"
                         " bound_unix INTEGER NOT NULL, last_seen_unix INTEGER NOT NULL,"
                         " bound_from TEXT NOT NULL DEFAULT '')",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  {
    Harness before({}, open_store(dir, &now));
    const ConnectionId home = before.registered("home", key_of('h'));
    before.deliver(home, hand_over("home", id_of('n')));
    REQUIRE(before.pop(home).has_handed_over());
  }
  auto store = open_store(dir, &now);
  const auto listed = store->list();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].handover_to == id_of('n'));
  CHECK(store->handed_over_to("home") == id_of('n'));
  Harness after({}, std::move(store));
  after.registered("home", key_of('n'));
  auto reread = open_store(dir, &now);
  CHECK(reread->list()[0].public_key == key_of('n'));
  CHECK(reread->list()[0].handover_to.empty());
}

TEST_CASE("relay names: release frees a name at once, even for a running relay") {
  TempDir dir;
  int64_t now = 1'800'000'000;
  auto store = open_store(dir, &now);
  NameStore* running = store.get();
  Harness h({}, std::move(store));
  h.transport_closed(h.registered("home", key_of('h')));
  // `relay names release home` opens the same database beside the running relay.
  {
    auto admin = open_store(dir, &now);
    CHECK(admin->release("home"));
    CHECK_FALSE(admin->release("home"));
  }
  CHECK_FALSE(running->bound_key("home"));
  // The old holder is offline; a reinstalled home with a new key gets the name.
  h.registered("home", key_of('n'), "198.51.100.9");
}

TEST_CASE("the old names file is imported once into the database") {
  TempDir dir;
  int64_t now = 1'800'000'000;
  write_file(dir.file("names"), "# old\n" + names_line("home", 'h') + names_line("work", 'w'));
  {
    auto store = open_store(dir, &now);
    CHECK(store->bound_key("home") == key_of('h'));
    CHECK(store->bound_key("work") == key_of('w'));
  }
  CHECK_FALSE(std::filesystem::exists(dir.file("names")));
  CHECK(std::filesystem::exists(dir.file("names") + std::string(".imported")));
  auto again = open_store(dir, &now);
  CHECK(again->size() == 2);
}

TEST_CASE("the names file: comments and blank lines are fine, malformed lines name file:line") {
  TempDir dir;
  const std::string path = dir.file("names");
  CHECK(load_error(dir, "# bindings\n\n" + names_line("home", 'h')) == "");
  CHECK(read_names_file(path).at("home") == key_of('h'));

  const std::string good = names_line("home", 'h');
  const std::string key_text = good.substr(good.rfind(' ') + 1, 44);
  CHECK(load_error(dir, good + "work " + id_of('w') + "\n") ==
        path + ":2: expected 'NAME KEYID BASE64KEY'");
  CHECK(load_error(dir, good + good.substr(0, good.size() - 1) + " extra\n") ==
        path + ":2: expected 'NAME KEYID BASE64KEY'");
  CHECK(load_error(dir, "# c\nHome " + id_of('h') + " " + key_text + "\n") ==
        path + ":2: 'Home' is not a valid name");
  CHECK(load_error(dir, "home " + id_of('h') + " AAAA\n") ==
        path + ":1: the key is not base64 of 32 bytes");
  CHECK(load_error(dir, "home " + id_of('h') + " " + key_text.substr(0, 42) + "!=\n") ==
        path + ":1: the key is not base64 of 32 bytes");
  CHECK(load_error(dir, "home " + id_of('t') + " " + key_text + "\n") ==
        path + ":1: key id " + id_of('t') + " does not match the key");
  CHECK(load_error(dir, good + "\n" + names_line("home", 't')) ==
        path + ":3: 'home' is bound twice");
  // A malformed old file stops the start before the database is made.
  int64_t now = 1'800'000'000;
  CHECK_THROWS_WITH(open_store(dir, &now), path + ":3: 'home' is bound twice");
  CHECK_FALSE(std::filesystem::exists(dir.file("names.db")));

  // No file at all: no bindings yet (first run).
  std::filesystem::remove(path);
  CHECK(read_names_file(path).empty());
}

TEST_CASE("a registration with 100,000 names bound touches one row") {
  TempDir dir;
  int64_t now = 1'800'000'000;
  auto store = open_store(dir, &now);
  std::map<std::string, std::string> many;
  for (int i = 0; i < 100'000; ++i) many.emplace("n" + std::to_string(i), key_of('m'));
  store->bind_many(many, "test");
  Harness h({}, std::move(store));
  const auto started = std::chrono::steady_clock::now();
  h.registered("home", key_of('h'));
  const auto took = std::chrono::steady_clock::now() - started;
  // Printed, not asserted (timings belong in benchmarks): the names file took ~200 ms.
  const double took_ms = std::chrono::duration<double, std::milli>(took).count();
  WARN("registration with 100,000 names bound: " << took_ms << " ms");
  const ConnectionId thief = h.hello(key_of('t'));
  h.deliver(thief, h.make_register(thief, "n99999"));
  CHECK(error_code(h.pop(thief)) == wire::Error::NAME_TAKEN);
}

TEST_CASE("registrations per source address are rate limited, and recover after a minute") {
  RendezvousConfig config;
  config.max_registrations_per_minute = 3;
  Harness h(config);
  const ConnectionId id = h.hello(key_of('h'));
  for (int i = 0; i < 3; ++i) {
    h.deliver(id, h.make_register(id, "home"));
    REQUIRE(h.pop(id).has_registered());
  }
  // Another address has its own bucket.
  h.registered("work", key_of('w'), "198.51.100.7");

  const ConnectionId flood = h.hello(key_of('f'));
  h.deliver(flood, h.make_register(flood, "flood"));
  CHECK(error_code(h.pop(flood)) == wire::Error::RATE_LIMITED);
  CHECK(h.closed(flood));
  CHECK_FALSE(h.core().holder_of("flood"));

  // 20 s refill one token (3 per minute); a minute refills all of them.
  h.advance(seconds(20));
  h.registered("flood", key_of('f'));
  const ConnectionId again = h.hello(key_of('g'));
  h.deliver(again, h.make_register(again, "again"));
  CHECK(error_code(h.pop(again)) == wire::Error::RATE_LIMITED);

  h.advance(seconds(60));
  for (int i = 0; i < 3; ++i) h.registered("again" + std::to_string(i), key_of('g'));
}

TEST_CASE("session requests per source address are rate limited; the connection stays") {
  RendezvousConfig config;
  config.max_sessions_per_minute = 3;
  Harness h(config);
  const ConnectionId home = h.registered("home", key_of('h'), "192.0.2.10");
  const ConnectionId laptop = h.hello(key_of('l'), "198.51.100.20");
  SessionId next = 1;
  for (int i = 0; i < 3; ++i) {
    h.deliver(laptop, Harness::make_open(next++, "home"));
    REQUIRE(h.pop(home).has_incoming_session());
  }
  h.deliver(laptop, Harness::make_open(next, "home"));
  const auto refused = h.pop(laptop);
  REQUIRE(refused.has_close_session());
  CHECK(refused.close_session().session_id() == next);
  CHECK(refused.close_session().reason() == wire::CloseSession::LIMIT);
  CHECK(refused.close_session().detail() == "rate limited");
  CHECK_FALSE(h.has_message(home));
  CHECK_FALSE(h.closed(laptop));
  CHECK(h.core().session_count() == 3);

  // Other addresses are not affected.
  const ConnectionId phone = h.hello(key_of('p'), "203.0.113.5");
  h.deliver(phone, Harness::make_open(100, "home"));
  CHECK(h.pop(home).has_incoming_session());

  // A minute later the caller may open sessions again (keepalives meanwhile).
  for (int i = 0; i < 4; ++i) {
    h.advance(seconds(15));
    for (ConnectionId id : {home, laptop, phone}) {
      wire::Envelope ping;
      ping.mutable_ping()->set_nonce(1);
      h.deliver(id, ping);
      while (h.has_message(id)) h.pop(id);
    }
  }
  for (int i = 0; i < 3; ++i) {
    h.deliver(laptop, Harness::make_open(200 + i, "home"));
    REQUIRE(h.pop(home).has_incoming_session());
  }
}

TEST_CASE("new names per source address are limited per hour; held names are free") {
  RendezvousConfig config;
  RelayStats stats;
  config.stats = &stats;
  config.max_new_names_per_hour = 3;
  config.max_registrations_per_minute = 1000;
  Harness h(config);
  const std::string squatter = "192.0.2.50";
  for (char letter : {'a', 'b', 'c'})
    h.registered(std::string("name-") + letter, key_of(letter), squatter);
  const ConnectionId fourth = h.hello(key_of('d'), squatter);
  h.deliver(fourth, h.make_register(fourth, "name-d"));
  CHECK(error_code(h.pop(fourth)) == wire::Error::RATE_LIMITED);
  CHECK(h.closed(fourth));
  CHECK_FALSE(h.core().holder_of("name-d"));
  CHECK(stats.rate_limited_new_names == 1);

  // A holder coming back (a restart, a new connection) spends nothing.
  for (int i = 0; i < 5; ++i) h.registered("name-a", key_of('a'), squatter);
  // Another address has its own budget.
  h.registered("name-e", key_of('e'), "198.51.100.9");

  // An IPv6 /64 is one source: its hosts share one budget.
  int host = 1;
  for (char letter : {'f', 'g', 'i'})
    h.registered(std::string("v6-") + letter, key_of(letter),
                 "2001:db8:1:2::" + std::to_string(host++));
  const ConnectionId v6 = h.hello(key_of('j'), "2001:db8:1:2:ffff::99");
  h.deliver(v6, h.make_register(v6, "v6-j"));
  CHECK(error_code(h.pop(v6)) == wire::Error::RATE_LIMITED);
  h.registered("v6-k", key_of('k'), "2001:db8:1:3::1");

  // The bucket refills over the hour: 20 minutes give one new name.
  h.advance(std::chrono::minutes(20));
  h.registered("name-d", key_of('d'), squatter);
  const ConnectionId fifth = h.hello(key_of('m'), squatter);
  h.deliver(fifth, h.make_register(fifth, "name-m"));
  CHECK(error_code(h.pop(fifth)) == wire::Error::RATE_LIMITED);
}

TEST_CASE("the default rate limits are 30 registrations and 120 sessions per minute") {
  const RendezvousConfig config;
  CHECK(config.max_registrations_per_minute == 30);
  CHECK(config.max_sessions_per_minute == 120);
  CHECK(config.max_new_names_per_hour == 20);
}

TEST_CASE("a stranger holding sessions to a peer spends only its own budget") {
  // Issue 13: 64 sessions held open to home by one key used to lock everyone else out.
  RendezvousConfig config;
  config.max_sessions_per_connection = 8;
  config.max_sessions_per_pair = 4;
  config.max_sessions_per_caller_address = 6;
  config.max_sessions_per_callee = 10;
  Harness h(config);
  const ConnectionId home = h.registered("home", key_of('h'), "198.51.100.2");
  SessionId next = 100;
  auto open = [&](ConnectionId caller) {
    const SessionId id = next++;
    h.deliver(caller, Harness::make_open(id, "home"));
    if (h.has_message(home)) {
      const auto incoming = h.pop(home);
      REQUIRE(incoming.has_incoming_session());
      return std::string("routed");
    }
    const auto refusal = h.pop(caller);
    REQUIRE(refusal.has_close_session());
    CHECK(refusal.close_session().reason() == wire::CloseSession::LIMIT);
    return refusal.close_session().detail();
  };

  SECTION("one key, several connections: the pair budget") {
    const ConnectionId s1 = h.hello(key_of('s'), "203.0.113.66");
    const ConnectionId s2 = h.hello(key_of('s'), "203.0.113.67");
    for (int i = 0; i < 2; ++i) CHECK(open(s1) == "routed");
    for (int i = 0; i < 2; ++i) CHECK(open(s2) == "routed");
    CHECK_THAT(open(s2), Catch::Contains("between this key and the peer"));
    const ConnectionId laptop = h.hello(key_of('l'), "192.0.2.50");
    CHECK(open(laptop) == "routed");
    // Closing gives the budget back.
    wire::Envelope close;
    close.mutable_close_session()->set_session_id(100);
    h.deliver(s1, close);
    (void)h.pop(home);
    CHECK(open(s1) == "routed");
  }
  SECTION("many keys from one address: the address budget") {
    for (char key = 'a'; key <= 'f'; ++key)
      CHECK(open(h.hello(key_of(key), "203.0.113.66")) == "routed");
    CHECK_THAT(open(h.hello(key_of('g'), "203.0.113.66")),
               Catch::Contains("from 203.0.113.66 to the peer"));
    CHECK(open(h.hello(key_of('l'), "192.0.2.50")) == "routed");
  }
  SECTION("many keys from many addresses: the peer's total, released when they leave") {
    std::vector<ConnectionId> strangers;
    for (int i = 0; i < 10; ++i) {
      strangers.push_back(
          h.hello(key_of(static_cast<char>('a' + i)), "203.0.113." + std::to_string(10 + i)));
      CHECK(open(strangers.back()) == "routed");
    }
    const ConnectionId laptop = h.hello(key_of('l'), "192.0.2.50");
    CHECK_THAT(open(laptop), Catch::Contains("the peer has too many open sessions"));
    h.transport_closed(strangers.front());
    while (h.has_message(home)) (void)h.pop(home);  // PEER_GONE for the ended session
    CHECK(open(laptop) == "routed");
  }
}

TEST_CASE("a late Candidate for a session that just ended is not counted as misrouted") {
  RelayStats stats;
  RendezvousConfig config;
  config.stats = &stats;
  Harness h(config);
  const ConnectionId home = h.registered("home", key_of('h'));
  const ConnectionId laptop = h.hello(key_of('l'), "192.0.2.50");
  h.deliver(laptop, Harness::make_open(5, "home"));
  (void)h.pop(home);
  wire::Envelope close;
  close.mutable_close_session()->set_session_id(5);
  close.mutable_close_session()->set_reason(wire::CloseSession::ESTABLISHED);
  h.deliver(laptop, close);
  (void)h.pop(home);
  h.deliver(home, Harness::make_candidate(5, "candidate:1 1 udp 1 192.0.2.9 4000 typ host"));
  CHECK_FALSE(h.has_message(laptop));
  CHECK_FALSE(h.closed(home));
  CHECK(h.core().session_count() == 0);
  CHECK(stats.errors["rendezvous_misrouted_candidate"] == 0);
  // One for a session that never was: misrouted, counted.
  h.deliver(home, Harness::make_candidate(77, "candidate:1 1 udp 1 192.0.2.9 4000 typ host"));
  CHECK(stats.errors["rendezvous_misrouted_candidate"] == 1);
}
