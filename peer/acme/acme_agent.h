// The ACME client of one https publish (RFC 8555 with TLS-ALPN-01, RFC 8737): keeps a
// certificate for one host name in STATE_DIR/acme/ and orders a new one when the
// RenewalSchedule says so. The thin glue around the I/O-free parts: AcmeOrder's
// requests go out through AcmeHttp, one GLib timer follows the order's deadline and
// the schedule's next order, and the files hold what must survive a restart. The
// clocks, the requests and the timer go through Io, so a test can run the agent on a
// fake clock against a canned CA.
//
//   STATE_DIR/acme/account.key       the account key (the account itself: newAccount
//                                    with a known key returns its account, RFC 8555
//                                    section 7.3.1), made on first use
//   STATE_DIR/acme/NAME.crt, .key    the certificate chain for NAME and its key
//
// Every file is 0600 in a 0700 directory. A certificate on disk that covers the name,
// matches its key and has not expired is used at start without asking the CA. The
// agent names no host of its own: it orders for whatever name it is given.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "acme/acme_http.h"
#include "acme/acme_order.h"
#include "acme/renewal_schedule.h"
#include "glib_ptr.h"
#include "https/certificate.h"
#include "identity.h"

namespace natfwd::acme {

class AcmeAgent {
 public:
  struct Settings {
    std::string directory_url;  // --acme-directory; required
    std::string email;          // --acme-email; empty: no contact
    std::string ca_file;        // --acme-ca-file; empty: the system's roots
    std::string state_dir;      // --state-dir: the files live in its acme/
    // --proxy (or https_proxy) as http://HOST:PORT: the CA is reached through the same
    // CONNECT proxy as the relay, so a home whose only way out is that proxy gets its
    // certificate too; empty: straight to the CA.
    std::string proxy_url;
  };
  struct Certificate {
    std::string cert_file;  // PEM chain, leaf first
    std::string key_file;
    Validity validity;
    bool from_disk = false;  // read at start rather than just issued
  };
  struct Events {
    // The TLS-ALPN-01 certificate and key for this name's acme-tls/1 handshakes while
    // the CA validates; (nullptr, nullptr) once the order is over.
    std::function<void(X509* certificate, EVP_PKEY* key)> challenge;
    // A certificate to serve from now on.
    std::function<void(const Certificate& certificate)> certificate;
  };

  // What the agent does outside itself; default: the real clocks, AcmeHttp and a GLib
  // timer.
  struct Io {
    std::function<std::time_t()> wall_now;  // seconds since the epoch (the schedule)
    std::function<int64_t()> monotonic_us;  // the order's deadlines
    std::function<void(const AcmeOrder::Request& request, AcmeHttp::Done done)> send;
    // Calls on_timer() after `wait_us`, replacing any earlier one; empty: none.
    std::function<void(std::optional<int64_t> wait_us)> set_timer;
  };

  // Throws when STATE_DIR/acme cannot be made or the CA file read.
  AcmeAgent(Settings settings, std::string host_name, Events events);
  AcmeAgent(Settings settings, std::string host_name, Events events, Io io);
  ~AcmeAgent();
  AcmeAgent(const AcmeAgent&) = delete;
  AcmeAgent& operator=(const AcmeAgent&) = delete;

  // Uses the stored certificate if it is good, then orders when the schedule says.
  void start();
  // The timer Io::set_timer asked for is due.
  void on_timer();

 private:
  static gboolean on_glib_timer(gpointer data);
  void run_due();
  void begin_order();
  void pump();
  void on_response(const AcmeOrder::Response& response);
  void after_step();
  void order_issued();
  void order_failed(std::string why);  // a copy: the order holding it goes first
  void arm_timer();
  bool load_stored(bool from_disk);
  std::string path(const std::string& file) const;

  Settings settings_;
  std::string host_name_;
  Events events_;
  std::string dir_;  // STATE_DIR/acme
  Io io_;
  std::unique_ptr<AcmeHttp> http_;  // the default Io's requests
  RenewalSchedule schedule_;
  EvpPkeyPtr account_key_;
  EvpPkeyPtr certificate_key_;  // the key of the order under way
  EvpPkeyPtr challenge_key_;
  X509Ptr challenge_certificate_;
  std::unique_ptr<AcmeOrder> order_;  // null between orders
  const char* last_progress_ = nullptr;
  bool told_retry_ = false;  // this order's first retry has had its line
  SourceId timer_;           // the default Io's timer; after the state it reaches
};

}  // namespace natfwd::acme
