// The ACME order core (peer/acme/acme_order.h) against canned CA answers with a fake
// clock, its cryptography (peer/acme/acme_crypto.h: RFC 7638 thumbprint, ES256 JWS
// that OpenSSL verifies, the RFC 8737 challenge certificate), the renewal schedule, and
// the agent (peer/acme/acme_agent.h) on fake clocks and a fake timer against a canned
// CA that signs the agent's CSRs: no network, no real time (its files go to a
// temporary state dir).
#include <catch2/catch.hpp>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <openssl/pem.h>

#include "acme/acme_agent.h"
#include "acme/acme_crypto.h"
#include "acme/acme_order.h"
#include "acme/renewal_schedule.h"

using namespace natfwd;
using namespace natfwd::acme;

namespace {

constexpr const char* kDir = "https://ca.test/dir";
constexpr const char* kDirectoryBody =
    R"({"newNonce":"https://ca.test/nonce","newAccount":"https://ca.test/acct",)"
    R"("newOrder":"https://ca.test/order"})";
constexpr const char* kOrderPending =
    R"({"status":"pending","authorizations":["https://ca.test/authz/1"],)"
    R"("finalize":"https://ca.test/fin/1"})";
constexpr const char* kAuthzPending =
    R"({"status":"pending","identifier":{"type":"dns","value":"home.share.test"},)"
    R"("challenges":[{"type":"http-01","url":"https://ca.test/ch/h","token":"th"},)"
    R"({"type":"tls-alpn-01","url":"https://ca.test/ch/t","token":"tok123"}]})";

int nonce_counter = 0;

std::string member(const std::string& jws, const std::string& name) {
  const size_t at = jws.find("\"" + name + "\":\"") + name.size() + 4;
  return jws.substr(at, jws.find('"', at) - at);
}

std::string unbase64url(std::string b64) {
  for (char& c : b64) c = c == '-' ? '+' : c == '_' ? '/' : c;
  while (b64.size() % 4) b64 += '=';
  std::string out(b64.size(), '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(b64.data()),
                                static_cast<int>(b64.size()));
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  // EVP_DecodeBlock counts the padding's zero bytes.
  for (size_t pad = b64.size() - b64.find_last_not_of('=') - 1; pad > 0; --pad) out.pop_back();
  return out;
}

// The decoded "protected" member of a flattened JWS.
std::string protected_header(const std::string& jws) {
  return unbase64url(member(jws, "protected"));
}

// ES256 (RFC 7518 section 3.4): R || S over "protected.payload", checked by OpenSSL.
bool verifies(EVP_PKEY* key, const std::string& jws) {
  const std::string input = member(jws, "protected") + "." + member(jws, "payload");
  const std::string rs = unbase64url(member(jws, "signature"));
  if (rs.size() != 64) return false;
  ECDSA_SIG* sig = ECDSA_SIG_new();
  ECDSA_SIG_set0(sig, BN_bin2bn(reinterpret_cast<const unsigned char*>(rs.data()), 32, nullptr),
                 BN_bin2bn(reinterpret_cast<const unsigned char*>(rs.data()) + 32, 32, nullptr));
  unsigned char* der = nullptr;
  const int der_size = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const bool ok = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
                  EVP_DigestVerify(ctx, der, static_cast<size_t>(der_size),
                                   reinterpret_cast<const unsigned char*>(input.data()),
                                   input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  OPENSSL_free(der);
  return ok;
}

// The directory answer carries no nonce, so the order has to ask newNonce.
AcmeOrder::Response directory() {
  AcmeOrder::Response r;
  r.status = 200;
  r.body = kDirectoryBody;
  return r;
}

AcmeOrder::Response answer(int status, std::string body, std::string location = {}) {
  AcmeOrder::Response r;
  r.status = status;
  r.body = std::move(body);
  r.location = std::move(location);
  r.replay_nonce = "n" + std::to_string(++nonce_counter);
  return r;
}

struct Fixture {
  EvpPkeyPtr account = make_p256_key();
  EvpPkeyPtr cert_key = make_p256_key();
  AcmeOrder order{AcmeOrder::Config{kDir, "home.share.test", "me@example.org", account.get(),
                                    "", cert_key.get()}};
  int64_t now = 1'000'000;

  AcmeOrder::Request expect(const std::string& method, const std::string& url) {
    auto request = order.take_request();
    REQUIRE(request);
    CHECK(request->method == method);
    CHECK(request->url == url);
    CHECK_FALSE(order.take_request());  // one at a time
    return *request;
  }
  void wait_out() {
    REQUIRE(order.deadline_us());
    CHECK_FALSE(order.take_request());
    now = *order.deadline_us();
    order.on_timer(now);
  }
  // Directory, newNonce and newAccount answered; returns the newAccount request.
  AcmeOrder::Request through_account() {
    order.start(now);
    expect("GET", kDir);
    order.on_response(directory(), now);
    expect("HEAD", "https://ca.test/nonce");
    order.on_response(answer(200, ""), now);
    auto account = expect("POST", "https://ca.test/acct");
    order.on_response(answer(201, "{}", "https://ca.test/acct/7"), now);
    return account;
  }
};

}  // namespace

TEST_CASE("an order goes directory, nonce, account, order, challenge, finalize, certificate") {
  Fixture f;
  auto account = f.through_account();
  CHECK(protected_header(account.body).find("\"jwk\"") != std::string::npos);
  CHECK(f.order.account_url() == "https://ca.test/acct/7");
  f.expect("POST", "https://ca.test/order");
  f.order.on_response(answer(201, kOrderPending, "https://ca.test/order/1"), f.now);
  CHECK(f.order.step() == AcmeOrder::Step::kOrdering);
  f.expect("POST", "https://ca.test/authz/1");
  f.order.on_response(answer(200, kAuthzPending), f.now);
  CHECK(f.order.step() == AcmeOrder::Step::kAnsweringChallenge);
  CHECK(f.order.challenge_key_authorization() == "tok123." + jwk_thumbprint(f.account.get()));
  f.expect("POST", "https://ca.test/ch/t");
  f.order.on_response(answer(200, R"({"status":"processing"})"), f.now);
  f.wait_out();  // the CA validates meanwhile; poll the authorization
  f.expect("POST", "https://ca.test/authz/1");
  f.order.on_response(answer(200, R"({"status":"pending","challenges":[]})"), f.now);
  f.wait_out();
  f.expect("POST", "https://ca.test/authz/1");
  f.order.on_response(answer(200, R"({"status":"valid","challenges":[]})"), f.now);
  CHECK(f.order.step() == AcmeOrder::Step::kFinalizing);
  auto finalize = f.expect("POST", "https://ca.test/fin/1");
  f.order.on_response(answer(200, R"({"status":"processing"})"), f.now);
  f.wait_out();
  f.expect("POST", "https://ca.test/order/1");
  f.order.on_response(
      answer(200, R"({"status":"valid","certificate":"https://ca.test/cert/1"})"), f.now);
  f.expect("POST", "https://ca.test/cert/1");
  f.order.on_response(answer(200, "-----BEGIN CERTIFICATE-----\nMII...\n"), f.now);
  CHECK(f.order.step() == AcmeOrder::Step::kIssued);
  CHECK(f.order.certificate_pem().starts_with("-----BEGIN CERTIFICATE-----"));
  CHECK_FALSE(f.order.take_request());
  CHECK_FALSE(f.order.deadline_us());
}

TEST_CASE("badNonce is retried at once with the nonce it carried; 5xx after a doubling pause") {
  Fixture f;
  f.order.start(f.now);
  f.expect("GET", kDir);
  f.order.on_response(answer(503, ""), f.now);
  REQUIRE(f.order.deadline_us());
  const int64_t first = *f.order.deadline_us() - f.now;
  f.wait_out();
  f.expect("GET", kDir);
  f.order.on_response(answer(0, ""), f.now);
  REQUIRE(f.order.deadline_us());
  CHECK(*f.order.deadline_us() - f.now == 2 * first);
  f.wait_out();
  f.expect("GET", kDir);
  f.order.on_response(directory(), f.now);
  // The 503 carried a nonce (RFC 8555 section 6.5: every response does): no newNonce.
  f.expect("POST", "https://ca.test/acct");
  auto bad = answer(400, R"({"type":"urn:ietf:params:acme:error:badNonce","detail":"stale"})");
  const std::string fresh = bad.replay_nonce;
  f.order.on_response(bad, f.now);
  auto again = f.expect("POST", "https://ca.test/acct");
  CHECK(protected_header(again.body).find("\"nonce\":\"" + fresh + "\"") != std::string::npos);
  CHECK(f.order.step() == AcmeOrder::Step::kOrdering);
}

TEST_CASE("a refusal or an invalid authorization fails the order with the CA's detail") {
  Fixture f;
  f.through_account();
  f.expect("POST", "https://ca.test/order");
  f.order.on_response(answer(201, kOrderPending, "https://ca.test/order/1"), f.now);
  f.expect("POST", "https://ca.test/authz/1");
  f.order.on_response(answer(200, kAuthzPending), f.now);
  f.expect("POST", "https://ca.test/ch/t");
  f.order.on_response(answer(200, "{}"), f.now);
  f.wait_out();
  f.expect("POST", "https://ca.test/authz/1");
  f.order.on_response(
      answer(200, R"({"status":"invalid","challenges":[{"type":"tls-alpn-01","url":"u",)"
                  R"("token":"t","error":{"type":"urn:ietf:params:acme:error:connection",)"
                  R"("detail":"no route"}}]})"),
      f.now);
  CHECK(f.order.step() == AcmeOrder::Step::kFailed);
  CHECK(f.order.error().find("no route (connection)") != std::string::npos);
  CHECK_FALSE(f.order.take_request());

  Fixture g;
  g.order.start(g.now);
  g.expect("GET", kDir);
  g.order.on_response(answer(200, "not json"), g.now);
  CHECK(g.order.step() == AcmeOrder::Step::kFailed);
  CHECK(g.order.error().find("lacks newNonce") != std::string::npos);
}

TEST_CASE("JWS requests verify with the account key; the thumbprint follows RFC 7638") {
  EvpPkeyPtr key = make_p256_key();
  const std::string jws = sign_jws(key.get(), "", "abc", "https://ca.test/acct", "{}");
  CHECK(member(jws, "payload") == base64url("{}"));
  CHECK(member(jws, "signature").size() == 86);  // 64 bytes R || S
  CHECK(verifies(key.get(), jws));
  CHECK_FALSE(verifies(make_p256_key().get(), jws));
  const std::string header = protected_header(jws);
  CHECK(header.find("\"jwk\":{\"crv\":\"P-256\"") != std::string::npos);
  CHECK(header.find("\"url\":\"https://ca.test/acct\"") != std::string::npos);
  CHECK(protected_header(sign_jws(key.get(), "https://ca.test/acct/7", "n", "u", ""))
            .find("\"kid\":\"https://ca.test/acct/7\"") != std::string::npos);
  CHECK(jwk(key.get()).starts_with(R"({"crv":"P-256","kty":"EC","x":")"));
  CHECK(jwk_thumbprint(key.get()).size() == 43);
  CHECK(base64url("\xfb\xff") == "-_8");
  CHECK(read_private_key_pem(private_key_pem(key.get())) != nullptr);
}

TEST_CASE("the TLS-ALPN-01 certificate carries the critical acmeIdentifier digest") {
  EvpPkeyPtr key = make_p256_key();
  X509Ptr cert = make_challenge_certificate(key.get(), "home.share.test", "tok.thumb");
  const int at = X509_get_ext_by_OBJ(cert.get(), OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1), -1);
  REQUIRE(at >= 0);
  X509_EXTENSION* extension = X509_get_ext(cert.get(), at);
  CHECK(X509_EXTENSION_get_critical(extension) == 1);
  ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(extension);
  const std::string der(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                        static_cast<size_t>(ASN1_STRING_length(value)));
  CHECK(der == std::string("\x04\x20", 2) + sha256("tok.thumb"));
  CHECK(X509_check_host(cert.get(), "home.share.test", 0, 0, nullptr) == 1);
}

TEST_CASE("renewal at two thirds of the lifetime, with a doubling pause after failures") {
  RenewalSchedule schedule;
  CHECK(schedule.next_order_at() == 0);  // no certificate: at once
  const std::time_t start = 1'700'000'000;
  const std::time_t day = 86400;
  schedule.on_certificate(start, start + 90 * day);
  CHECK(schedule.next_order_at() == start + 60 * day);
  std::time_t now = start + 60 * day;
  schedule.on_failure(now);
  CHECK(schedule.next_order_at() == now + 60);
  now += 60;
  schedule.on_failure(now);
  CHECK(schedule.next_order_at() == now + 120);
  for (int i = 0; i < 20; ++i) schedule.on_failure(now);
  CHECK(schedule.next_order_at() == now + RenewalSchedule::kMaxRetrySeconds);
  schedule.on_certificate(now, now + 6 * 3600);  // a short-lived one, as pebble gives
  CHECK(schedule.failures() == 0);
  CHECK(schedule.next_order_at() == now + 4 * 3600);
}

namespace {

constexpr const char* kHost = "home.share.test";
constexpr std::time_t kDay = 86400;
constexpr int64_t kUs = 1'000'000;
// The agent's own waits (a renewal, a retry after a failed order) are a minute or more;
// an order's polls and retries are seconds.
constexpr int64_t kOrderWaitUs = 30 * kUs;

// A certificate for the key of a CSR (or `instead`), as a CA issues it.
std::string issue(const std::string& csr_der, EVP_PKEY* instead, EVP_PKEY* ca_key,
                  std::time_t not_before, std::time_t not_after) {
  const auto* p = reinterpret_cast<const unsigned char*>(csr_der.data());
  X509_REQ* request = d2i_X509_REQ(nullptr, &p, static_cast<long>(csr_der.size()));
  REQUIRE(request);
  EVP_PKEY* requested = X509_REQ_get_pubkey(request);
  X509_REQ_free(request);
  X509* x = X509_new();
  static long serial = 1;
  ASN1_INTEGER_set(X509_get_serialNumber(x), ++serial);
  X509_set_version(x, 2);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(kHost), -1, -1, 0);
  X509_set_issuer_name(x, name);
  ASN1_TIME_set(X509_getm_notBefore(x), not_before);
  ASN1_TIME_set(X509_getm_notAfter(x), not_after);
  X509_set_pubkey(x, instead ? instead : requested);
  EVP_PKEY_free(requested);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name,
                                            (std::string("DNS:") + kHost).c_str());
  X509_add_ext(x, san, -1);
  X509_EXTENSION_free(san);
  X509_sign(x, ca_key, EVP_sha256());
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, x);
  X509_free(x);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(size));
  BIO_free(bio);
  return pem;
}

// The agent with its clocks, requests and timer in the test's hands, and a canned CA.
struct AgentRig {
  enum class Ca { kIssues, kInvalidAuthorization, kWrongKey };

  std::string state_dir;
  std::time_t wall = 1'700'000'000;
  int64_t mono_us = 10 * kUs;
  std::optional<AcmeOrder::Request> request;
  AcmeHttp::Done done;
  std::optional<int64_t> timer_us;  // armed, from the moment it was set
  std::vector<AcmeAgent::Certificate> served;
  int challenges = 0;
  Ca ca = Ca::kIssues;
  std::time_t lifetime = 90 * kDay;
  bool challenged = false;
  std::string csr;
  EvpPkeyPtr ca_key = make_p256_key();
  EvpPkeyPtr stranger = make_p256_key();
  std::unique_ptr<AcmeAgent> agent;

  explicit AgentRig(std::string dir = {}) : state_dir(std::move(dir)) {
    if (state_dir.empty()) {
      gchar* made = g_dir_make_tmp("natfwd-acme-XXXXXX", nullptr);
      REQUIRE(made);
      state_dir = made;
      g_free(made);
    }
    make_agent();
  }

  void make_agent() {
    AcmeAgent::Events events;
    events.challenge = [this](X509* certificate, EVP_PKEY*) { challenges += certificate != nullptr; };
    events.certificate = [this](const AcmeAgent::Certificate& c) { served.push_back(c); };
    AcmeAgent::Io io;
    io.wall_now = [this] { return wall; };
    io.monotonic_us = [this] { return mono_us; };
    io.send = [this](const AcmeOrder::Request& r, AcmeHttp::Done d) {
      CHECK_FALSE(request);  // one at a time
      request = r;
      done = std::move(d);
    };
    io.set_timer = [this](std::optional<int64_t> wait_us) { timer_us = wait_us; };
    agent = std::make_unique<AcmeAgent>(AcmeAgent::Settings{kDir, "", "", state_dir, ""},
                                        kHost, std::move(events), std::move(io));
  }

  void remove_state() {
    agent.reset();
    for (const char* name : {"account.key", "home.share.test.crt", "home.share.test.key"})
      g_remove((state_dir + "/acme/" + name).c_str());
    g_rmdir((state_dir + "/acme").c_str());
    g_rmdir(state_dir.c_str());
  }

  // Both clocks move on by `us` and the timer fires.
  void fire() {
    REQUIRE(timer_us);
    const int64_t us = *timer_us;
    timer_us.reset();
    mono_us += us;
    wall += static_cast<std::time_t>(us / kUs);
    agent->on_timer();
  }

  AcmeOrder::Response respond(const AcmeOrder::Request& r) {
    const std::string order = "https://ca.test/order/1";
    if (r.url == kDir) return directory();
    if (r.method == "HEAD") return answer(200, "");
    if (r.url == "https://ca.test/acct") return answer(201, "{}", "https://ca.test/acct/7");
    if (r.url == "https://ca.test/order") {
      challenged = false;
      return answer(201, kOrderPending, order);
    }
    if (r.url == "https://ca.test/authz/1") {
      if (!challenged) return answer(200, kAuthzPending);
      if (ca == Ca::kInvalidAuthorization)
        return answer(200, R"({"status":"invalid","challenges":[{"type":"tls-alpn-01",)"
                           R"("url":"u","token":"t","error":{"type":)"
                           R"("urn:ietf:params:acme:error:connection",)"
                           R"("detail":"connection refused"}}]})");
      return answer(200, R"({"status":"valid","challenges":[]})");
    }
    if (r.url == "https://ca.test/ch/t") {
      challenged = true;
      return answer(200, R"({"status":"processing"})");
    }
    if (r.url == "https://ca.test/fin/1") {
      const std::string payload = unbase64url(member(r.body, "payload"));
      csr = unbase64url(member(payload, "csr"));
      return answer(200, R"({"status":"processing"})");
    }
    if (r.url == order)
      return answer(200, R"({"status":"valid","certificate":"https://ca.test/cert/1"})");
    if (r.url == "https://ca.test/cert/1")
      return answer(200, issue(csr, ca == Ca::kWrongKey ? stranger.get() : nullptr,
                               ca_key.get(), wall, wall + lifetime));
    FAIL("unexpected request " << r.method << " " << r.url);
    return {};
  }

  // Answers requests and lets the order's own short waits pass until the order is
  // over: the timer left is the agent's (a renewal or a retry) and nothing is out.
  void run_order() {
    for (int i = 0; i < 200; ++i) {
      if (request) {
        const AcmeOrder::Request r = *request;
        request.reset();
        AcmeHttp::Done d = std::move(done);
        d(respond(r));
      } else if (timer_us && *timer_us < kOrderWaitUs) {
        fire();
      } else {
        return;
      }
    }
    FAIL("the order did not end");
  }

  // Lets the agent's timer run, without a request, until it sends one; returns how
  // often it woke.
  int wake_until_request(int limit) {
    int wakes = 0;
    while (!request) {
      REQUIRE(wakes < limit);
      REQUIRE(timer_us);
      CHECK(*timer_us <= 3600 * kUs);  // at least hourly: a clock set forward renews on time
      fire();
      ++wakes;
    }
    return wakes;
  }
};

}  // namespace

TEST_CASE("the agent renews at two thirds on its timer, backs off on failure, swaps only on success") {
  AgentRig rig;
  rig.agent->start();
  REQUIRE(rig.request);  // no certificate: an order at once
  CHECK(rig.request->url == kDir);
  rig.run_order();
  REQUIRE(rig.served.size() == 1);
  CHECK(rig.challenges == 1);
  CHECK_FALSE(rig.served[0].from_disk);
  const std::time_t issued_at = rig.served[0].validity.not_before;
  CHECK(rig.served[0].validity.not_after == issued_at + 90 * kDay);

  // Nothing is asked of the CA until two thirds of the lifetime.
  rig.wake_until_request(61 * 24);
  CHECK(rig.wall == issued_at + 60 * kDay);
  CHECK(rig.request->url == kDir);

  // A renewal the CA refuses: the served certificate stays, the next try after 60 s,
  // then after 120 s.
  rig.ca = AgentRig::Ca::kInvalidAuthorization;
  rig.run_order();
  CHECK(rig.served.size() == 1);
  REQUIRE(rig.timer_us);
  CHECK(*rig.timer_us == RenewalSchedule::kFirstRetrySeconds * kUs);
  CHECK(rig.wake_until_request(1) == 1);
  rig.run_order();
  CHECK(rig.served.size() == 1);
  REQUIRE(rig.timer_us);
  CHECK(*rig.timer_us == 2 * RenewalSchedule::kFirstRetrySeconds * kUs);

  // A certificate that does not match the key the agent asked for is not served.
  rig.ca = AgentRig::Ca::kWrongKey;
  rig.wake_until_request(1);
  rig.run_order();
  CHECK(rig.served.size() == 1);
  REQUIRE(rig.timer_us);
  CHECK(*rig.timer_us == 4 * RenewalSchedule::kFirstRetrySeconds * kUs);

  // The CA issues again: the renewed certificate is served, failures are forgotten.
  rig.ca = AgentRig::Ca::kIssues;
  rig.wake_until_request(1);
  rig.run_order();
  REQUIRE(rig.served.size() == 2);
  CHECK(rig.served[1].validity.not_before == rig.wall);
  CHECK(rig.served[1].validity.not_after == rig.wall + 90 * kDay);
  CHECK(rig.challenges == 5);
  const std::time_t renewed_at = rig.wall;
  rig.wake_until_request(61 * 24);
  CHECK(rig.wall == renewed_at + 60 * kDay);
  rig.remove_state();
}

TEST_CASE("the agent serves a stored certificate without asking the CA, and not an expired one") {
  std::string dir;
  std::time_t not_after = 0;
  {
    AgentRig first;
    first.lifetime = 6 * 3600;  // short-lived, as pebble gives
    first.agent->start();
    first.run_order();
    REQUIRE(first.served.size() == 1);
    not_after = first.served[0].validity.not_after;
    dir = first.state_dir;
    first.agent.reset();
  }
  AgentRig again(dir);
  again.wall = not_after - 3600;  // past two thirds, not expired
  again.agent->start();
  REQUIRE(again.served.size() == 1);
  CHECK(again.served[0].from_disk);
  CHECK(again.served[0].validity.not_after == not_after);
  // It is due for renewal: an order starts, while the stored one is served.
  REQUIRE(again.request);
  again.agent.reset();

  AgentRig expired(dir);
  expired.wall = not_after;
  expired.agent->start();
  CHECK(expired.served.empty());
  CHECK(expired.request);
  expired.remove_state();
}
