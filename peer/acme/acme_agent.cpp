#include "acme/acme_agent.h"

#include <glib/gstdio.h>
#include <sys/stat.h>

#include <algorithm>
#include <stdexcept>

#include "acme/acme_crypto.h"
#include "log.h"
#include "state_dir.h"

namespace natfwd::acme {
namespace {

// The timer wakes at least this often, so a suspended laptop or a clock set forward
// renews on time (the schedule is in wall-clock seconds, GLib timers are monotonic).
constexpr std::time_t kMaxSleepSeconds = 3600;
constexpr int64_t kMicrosPerSecond = 1'000'000;
constexpr int kPrivateDirMode = 0700;

std::string read_file(const std::string& path) {
  gchar* data = nullptr;
  gsize size = 0;
  if (!g_file_get_contents(path.c_str(), &data, &size, nullptr)) return {};
  std::string out(data, size);
  g_free(data);
  return out;
}

bool write_private(const std::string& path, const std::string& text) {
  const std::string why = write_private_file(path, text);
  if (why.empty()) return true;
  log::error("acme: cannot write %s: %s", path.c_str(), why.c_str());
  return false;
}

// Why `chain` and `key` cannot be served for `host_name` at `now`; empty: they can.
std::string unusable(const std::string& chain, EVP_PKEY* key, const std::string& host_name,
                     std::time_t now) {
  X509Ptr leaf;
  try {
    leaf = read_pem_certificate(chain);
  } catch (const std::exception& e) {
    return e.what();
  }
  if (!key || X509_check_private_key(leaf.get(), key) != 1) return "its key does not match";
  if (!certificate_covers(leaf.get(), host_name)) return "it does not cover " + host_name;
  const Validity validity = certificate_validity(leaf.get());
  if (now >= validity.not_after) return "it expired on " + utc_date(validity.not_after);
  return {};
}

}  // namespace

AcmeAgent::AcmeAgent(Settings settings, std::string host_name, Events events)
    : AcmeAgent(std::move(settings), std::move(host_name), std::move(events), Io{}) {
  http_ = std::make_unique<AcmeHttp>(settings_.ca_file, settings_.proxy_url);
  io_.wall_now = [] { return std::time(nullptr); };
  io_.monotonic_us = [] { return g_get_monotonic_time(); };
  io_.send = [this](const AcmeOrder::Request& request, AcmeHttp::Done done) {
    http_->send(request, std::move(done));
  };
  io_.set_timer = [this](std::optional<int64_t> wait_us) {
    timer_ = SourceId();
    if (!wait_us) return;
    const auto ms = static_cast<guint>(std::max<int64_t>(*wait_us, 0) / 1000);
    timer_ = SourceId(g_timeout_add(ms, &AcmeAgent::on_glib_timer, this));
  };
}

AcmeAgent::AcmeAgent(Settings settings, std::string host_name, Events events, Io io)
    : settings_(std::move(settings)),
      host_name_(std::move(host_name)),
      events_(std::move(events)),
      dir_(settings_.state_dir + "/acme"),
      io_(std::move(io)) {
  // The name becomes a file name: a DNS name never holds a '/' (RFC 1035 section 2.3.1).
  if (host_name_.empty() || host_name_.find('/') != std::string::npos || host_name_[0] == '.')
    throw std::runtime_error("acme: '" + host_name_ + "' is not a host name");
  if (g_mkdir_with_parents(dir_.c_str(), kPrivateDirMode) != 0 ||
      g_chmod(dir_.c_str(), kPrivateDirMode) != 0)
    throw std::runtime_error("cannot make " + dir_ + ": " + g_strerror(errno));
}

AcmeAgent::~AcmeAgent() = default;

std::string AcmeAgent::path(const std::string& file) const { return dir_ + "/" + file; }

void AcmeAgent::start() {
  load_stored(true);
  run_due();
}

bool AcmeAgent::load_stored(bool from_disk) {
  const std::string cert_file = path(host_name_ + ".crt");
  const std::string key_file = path(host_name_ + ".key");
  const std::string chain = read_file(cert_file);
  if (chain.empty()) return false;
  EvpPkeyPtr key = read_private_key_pem(read_file(key_file));
  const std::string why = unusable(chain, key.get(), host_name_, io_.wall_now());
  if (!why.empty()) {
    log::info("acme %s: not using %s: %s", host_name_.c_str(), cert_file.c_str(), why.c_str());
    return false;
  }
  const Validity validity = certificate_validity(read_pem_certificate(chain).get());
  try {
    events_.certificate({cert_file, key_file, validity, from_disk});
  } catch (const std::exception& e) {
    log::warn("acme %s: cannot serve %s: %s", host_name_.c_str(), cert_file.c_str(), e.what());
    return false;
  }
  schedule_.on_certificate(validity.not_before, validity.not_after);
  return true;
}

gboolean AcmeAgent::on_glib_timer(gpointer data) {
  auto* self = static_cast<AcmeAgent*>(data);
  self->timer_.release();
  guard_callback("acme timer", [self] { self->on_timer(); });
  return G_SOURCE_REMOVE;
}

void AcmeAgent::on_timer() {
  if (order_) {
    order_->on_timer(io_.monotonic_us());
    pump();
  } else {
    run_due();
  }
}

void AcmeAgent::run_due() {
  if (!order_ && io_.wall_now() >= schedule_.next_order_at()) begin_order();
  arm_timer();
}

void AcmeAgent::arm_timer() {
  int64_t wait_us = kMaxSleepSeconds * kMicrosPerSecond;
  if (order_) {
    if (!order_->deadline_us()) {  // a request is out: its answer moves on
      io_.set_timer(std::nullopt);
      return;
    }
    wait_us = *order_->deadline_us() - io_.monotonic_us();
  } else {
    const std::time_t wait = schedule_.next_order_at() - io_.wall_now();
    wait_us = std::min<int64_t>(wait_us, std::max<std::time_t>(wait, 0) * kMicrosPerSecond);
  }
  io_.set_timer(std::max<int64_t>(wait_us, 0));
}

void AcmeAgent::begin_order() {
  if (!account_key_) {
    const std::string account_file = path("account.key");
    account_key_ = read_private_key_pem(read_file(account_file));
    if (!account_key_) {
      account_key_ = make_p256_key();
      if (!write_private(account_file, private_key_pem(account_key_.get()))) {
        account_key_.reset();
        order_failed("cannot store the account key in " + dir_);
        return;
      }
    }
  }
  certificate_key_ = make_p256_key();
  AcmeOrder::Config config;
  config.directory_url = settings_.directory_url;
  config.host_name = host_name_;
  config.email = settings_.email;
  config.account_key = account_key_.get();
  config.certificate_key = certificate_key_.get();
  order_ = std::make_unique<AcmeOrder>(std::move(config));
  last_progress_ = nullptr;
  told_retry_ = false;
  log::info("acme %s: asking %s for a certificate", host_name_.c_str(),
            settings_.directory_url.c_str());
  order_->start(io_.monotonic_us());
  pump();
}

void AcmeAgent::pump() {
  if (!order_) return;
  after_step();
  if (!order_) return;
  if (auto request = order_->take_request()) {
    io_.set_timer(std::nullopt);
    log::debug("acme %s: %s %s", host_name_.c_str(), request->method.c_str(),
               request->url.c_str());
    io_.send(*request, [this](const AcmeOrder::Response& response) { on_response(response); });
    return;
  }
  arm_timer();
}

void AcmeAgent::on_response(const AcmeOrder::Response& response) {
  if (!order_) return;
  order_->on_response(response, io_.monotonic_us());
  pump();
}

void AcmeAgent::after_step() {
  const AcmeOrder::Step step = order_->step();
  if (const char* progress = order_->progress(); progress && progress != last_progress_) {
    last_progress_ = progress;
    log::info("acme %s: %s", host_name_.c_str(), progress);
  }
  if (!order_->retrying().empty() && !told_retry_) {
    // One line per order for a CA that does not answer; the order keeps trying.
    told_retry_ = true;
    log::warn("acme %s: %s; trying again", host_name_.c_str(), order_->retrying().c_str());
  }
  if (step == AcmeOrder::Step::kAnsweringChallenge && !challenge_certificate_) {
    challenge_key_ = make_p256_key();
    challenge_certificate_ = make_challenge_certificate(challenge_key_.get(), host_name_,
                                                        order_->challenge_key_authorization());
    events_.challenge(challenge_certificate_.get(), challenge_key_.get());
  }
  if (step == AcmeOrder::Step::kIssued) order_issued();
  else if (step == AcmeOrder::Step::kFailed) order_failed(order_->error());
}

void AcmeAgent::order_issued() {
  const std::string chain = order_->certificate_pem();
  const std::string why = unusable(chain, certificate_key_.get(), host_name_, io_.wall_now());
  if (!why.empty()) {
    order_failed("the CA's certificate cannot be served: " + why);
    return;
  }
  const bool stored = write_private(path(host_name_ + ".key"),
                                    private_key_pem(certificate_key_.get())) &&
                      write_private(path(host_name_ + ".crt"), chain);
  order_.reset();
  challenge_certificate_.reset();
  challenge_key_.reset();
  events_.challenge(nullptr, nullptr);
  if (!stored || !load_stored(false)) {
    order_failed("the certificate could not be stored and read back from " + dir_);
    return;
  }
  arm_timer();
}

void AcmeAgent::order_failed(std::string why) {
  order_.reset();
  if (challenge_certificate_) {
    challenge_certificate_.reset();
    challenge_key_.reset();
    events_.challenge(nullptr, nullptr);
  }
  const std::time_t now = io_.wall_now();
  schedule_.on_failure(now);
  log::warn("acme %s: no certificate: %s; next try in %lld s", host_name_.c_str(), why.c_str(),
            static_cast<long long>(schedule_.next_order_at() - now));
  arm_timer();
}

}  // namespace natfwd::acme
