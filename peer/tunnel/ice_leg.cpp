#include "tunnel/ice_leg.h"

#include <exception>

#include "log.h"

namespace natfwd {
namespace {

// Our relay candidates are trickled to the other side only this long after ICE
// starts. libnice's regular nomination (needed for ICE-TCP, RFC 6544 section 8)
// nominates as soon as two pairs are valid. The other side's checks towards our relay
// candidate validate relayed pairs fast, so with 20 ms of delay they beat a direct
// ICE-TCP pair that needs a TCP handshake first (measured in the NAT lab: none x
// udpblock went relayed). Our own checks on relayed pairs come last anyway (lowest
// priority). Measured cost: about +300 ms setup for direct pairs with a single valid
// pair, +500 ms for relayed ones.
constexpr guint kRelayCandidateHoldMs = 500;
// Candidates kept while the other side's credentials are not known yet.
constexpr size_t kMaxEarlyCandidates = 64;

bool is_relay_candidate(const std::string& sdp) {
  return sdp.find(" typ relay") != std::string::npos;
}

}  // namespace

IceLeg::IceLeg(uint64_t session_id, const IceSession::Options& options, Callbacks callbacks)
    : session_id_(session_id), callbacks_(std::move(callbacks)) {
  IceSession::Callbacks ice;
  ice.on_local_candidate = [this](const std::string& sdp) { send_candidate(sdp, false); };
  ice.on_gathering_done = [this] { send_candidate("", true); };
  ice.on_datagram = [this](std::span<const std::byte> datagram) {
    callbacks_.on_datagram(datagram);
  };
  ice.on_selected_pair = [this](const SelectedPath& path) {
    path_ = path;
    have_path_ = true;
    callbacks_.on_selected_pair(*this);
  };
  ice.on_writable = [this] { callbacks_.on_writable(*this); };
  ice.on_failed = [this](const std::string& reason) { callbacks_.on_failed(*this, reason); };
  ice_ = std::make_unique<IceSession>(options, std::move(ice));
  relay_hold_timer_.reset(g_timeout_source_new(kRelayCandidateHoldMs));
  g_source_set_callback(relay_hold_timer_.get(), &IceLeg::on_relay_hold_over, this, nullptr);
  g_source_attach(relay_hold_timer_.get(), nullptr);
}

IceLeg::~IceLeg() = default;

wire::IceParams IceLeg::local_params() const {
  const auto [ufrag, pwd] = ice_->local_credentials();
  wire::IceParams params;
  params.set_ufrag(ufrag);
  params.set_pwd(pwd);
  return params;
}

void IceLeg::set_remote_params(const wire::IceParams& params) {
  if (remote_params_set_) return;
  ice_->set_remote_credentials(params.ufrag(), params.pwd());
  remote_params_set_ = true;
  for (const auto& sdp : early_candidates_) apply_remote_candidate(sdp);
  early_candidates_.clear();
}

void IceLeg::on_candidate(const wire::Candidate& candidate) {
  if (candidate.end_of_candidates()) {
    ice_->remote_gathering_done();
  } else {
    apply_remote_candidate(candidate.sdp());
  }
}

void IceLeg::apply_remote_candidate(const std::string& sdp) {
  if (is_relay_candidate(sdp)) remote_relay_candidates_ = true;
  if (!remote_params_set_) {
    if (early_candidates_.size() < kMaxEarlyCandidates) early_candidates_.push_back(sdp);
  } else if (!ice_->add_remote_candidate(sdp)) {
    log::warn_limited("bad candidate", "session %016" G_GINT64_MODIFIER
                      "x: ignoring a candidate libnice cannot parse", session_id_);
  } else if (callbacks_.on_checking) {
    callbacks_.on_checking(*this);
  }
}

gboolean IceLeg::on_relay_hold_over(gpointer self) {
  auto* leg = static_cast<IceLeg*>(self);
  try {
    leg->relay_hold_timer_.reset();  // destroying a source from its own dispatch is allowed
    leg->release_held_candidates();
  } catch (const std::exception& e) {
    log::error("session %016" G_GINT64_MODIFIER "x: %s", leg->session_id_, e.what());
  }
  return G_SOURCE_REMOVE;
}

void IceLeg::release_held_candidates() {
  relay_hold_over_ = true;
  for (const auto& sdp : held_local_) send_candidate(sdp, false);
  held_local_.clear();
  if (held_local_done_) send_candidate("", true);
}

void IceLeg::send_candidate(const std::string& sdp, bool end_of_candidates) {
  if (!end_of_candidates && is_relay_candidate(sdp)) local_relay_candidates_ = true;
  if (!relay_hold_over_) {
    if (end_of_candidates && !held_local_.empty()) {
      held_local_done_ = true;
      return;
    }
    if (!end_of_candidates && is_relay_candidate(sdp)) {
      held_local_.push_back(sdp);
      return;
    }
  }
  wire::Envelope envelope;
  auto* candidate = envelope.mutable_candidate();
  candidate->set_session_id(session_id_);
  candidate->set_sdp(sdp);
  candidate->set_end_of_candidates(end_of_candidates);
  callbacks_.send_to_relay(envelope);
}

}  // namespace natfwd
