#include "portmap/port_mapper.h"

#include <algorithm>

#include "log.h"

namespace natfwd::portmap {
namespace {

// RFC 6887 section 11.1: a nonce per mapping, kept for its renewals and its delete.
PcpNonce random_nonce() {
  PcpNonce nonce;
  for (size_t i = 0; i < nonce.size(); i += 4) {
    const guint32 r = g_random_int();
    for (size_t j = 0; j < 4 && i + j < nonce.size(); ++j)
      nonce[i + j] = std::byte((r >> (8 * j)) & 0xff);
  }
  return nonce;
}

}  // namespace

// -- PortMapping ---------------------------------------------------------------------------

PortMapping::PortMapping(PortMapper& mapper, uint64_t id, MapJob job,
                         std::vector<MapProtocol> order, Callbacks callbacks)
    : mapper_(mapper), id_(id), job_(std::move(job)), life_(std::move(order)),
      callbacks_(std::move(callbacks)) {}

PortMapping::~PortMapping() {
  mapper_.live_.erase(id_);
  timer_.reset();
  // A request still running is deleted by the mapper when it answers (finished()).
  act(life_.release());
}

std::string PortMapping::external() const {
  return life_.external_ip() + ":" + std::to_string(life_.external_port());
}

void PortMapping::act(MappingLifecycle::Step step) {
  using Kind = MappingLifecycle::Step::Kind;
  if (step.kind == Kind::kNone) return;
  MapJob job = job_;
  job.protocol = step.protocol;
  if (step.kind == Kind::kDelete) {
    job.lifetime_seconds = 0;
    job.external_port = life_.external_port();
    mapper_.submit(0, job);
    return;
  }
  // Renewals ask for the port already granted (RFC 6887 section 11.2.1).
  if (life_.state() == MappingLifecycle::State::kMapped) job.external_port = life_.external_port();
  mapper_.submit(id_, job);
}

void PortMapping::on_answer(const MapAnswer& answer) {
  const std::string before = mapped() ? external() : "";
  act(life_.on_answer(answer, g_get_monotonic_time()));
  if (mapped()) {
    mapper_.working_ = life_.protocol();
    arm_timer();
    if (external() != before && callbacks_.on_mapped)
      callbacks_.on_mapped(life_.protocol(), life_.external_ip(), life_.external_port());
    return;
  }
  if (life_.state() == MappingLifecycle::State::kFailed) {
    mapper_.working_.reset();
    mapper_.none_until_us_ = g_get_monotonic_time() + PortMapper::kNoGatewayRetryUs;
    if (callbacks_.on_failed) callbacks_.on_failed(life_.errors());
  }
}

void PortMapping::arm_timer() {
  timer_.reset();
  const auto deadline = life_.next_deadline();
  if (!deadline) return;
  const int64_t wait_ms = std::max<int64_t>(0, (*deadline - g_get_monotonic_time()) / 1000);
  timer_.reset(g_timeout_add(static_cast<guint>(std::min<int64_t>(wait_ms, G_MAXUINT)),
                             &PortMapping::on_timer, this));
}

gboolean PortMapping::on_timer(gpointer self) {
  auto* mapping = static_cast<PortMapping*>(self);
  mapping->timer_.release();
  guard_callback("port mapping: timer", [mapping] {
    mapping->act(mapping->life_.on_timer(g_get_monotonic_time()));
    if (mapping->life_.state() == MappingLifecycle::State::kLost) {
      log::warn("port mapping %s at the gateway expired without renewal",
                mapping->external().c_str());
      if (mapping->callbacks_.on_failed) mapping->callbacks_.on_failed("the mapping expired");
      return;
    }
    mapping->arm_timer();
  });
  return G_SOURCE_REMOVE;
}

// -- PortMapper ----------------------------------------------------------------------------

struct PortMapper::Pending {
  std::weak_ptr<Alive> alive;
  PortMapper* mapper;
  uint64_t owner;  // 0: a delete nobody waits for
  MapJob job;
  MapAnswer answer;
};

PortMapper::PortMapper(std::string gateway, std::vector<MapProtocol> protocols)
    : fixed_gateway_(std::move(gateway)), protocols_(std::move(protocols)) {}

PortMapper::~PortMapper() { drain(kDrainUs); }

std::string PortMapper::gateway() const {
  return fixed_gateway_.empty() ? default_ipv4_gateway() : fixed_gateway_;
}

std::string PortMapper::local_address() const {
  const std::string gw = gateway();
  return gw.empty() ? "" : local_address_toward(gw);
}

std::unique_ptr<PortMapping> PortMapper::map(const std::string& internal_ip,
                                             uint16_t internal_port,
                                             PortMapping::Callbacks callbacks) {
  if (g_get_monotonic_time() < none_until_us_) return nullptr;
  MapJob job;
  job.gateway = gateway();
  if (job.gateway.empty()) return nullptr;
  job.client_ip = internal_ip;
  job.internal_port = internal_port;
  job.external_port = internal_port;
  job.nonce = random_nonce();
  std::vector<MapProtocol> order = protocols_;
  if (working_ && std::find(order.begin(), order.end(), *working_) != order.end()) {
    // The one that answered goes first; the others stay as fallbacks.
    std::erase(order, *working_);
    order.insert(order.begin(), *working_);
  }
  const uint64_t id = next_id_++;
  std::unique_ptr<PortMapping> mapping(
      new PortMapping(*this, id, std::move(job), std::move(order), std::move(callbacks)));
  live_[id] = mapping.get();
  mapping->act(mapping->life_.start());
  return mapping;
}

void PortMapper::prepare() {
  if (prepared_) return;
  prepared_ = true;
  if (std::find(protocols_.begin(), protocols_.end(), MapProtocol::kUpnp) == protocols_.end())
    return;
  MapJob job;
  job.protocol = MapProtocol::kUpnp;
  job.discover_only = true;
  job.gateway = gateway();
  if (job.gateway.empty()) return;
  job.client_ip = local_address();
  submit(0, job);
}

void PortMapper::submit(uint64_t owner, const MapJob& job) {
  auto* pending = new Pending{alive_, this, owner, job, {}};
  GTask* task = g_task_new(nullptr, nullptr, &PortMapper::on_done, nullptr);
  g_task_set_task_data(task, pending, [](gpointer p) { delete static_cast<Pending*>(p); });
  ++running_;
  log::debug("port mapping: %s %s %s:%u at %s", std::string(to_string(job.protocol)).c_str(),
             job.discover_only ? "discovery" : job.lifetime_seconds ? "request" : "delete",
             job.client_ip.c_str(),
             job.internal_port, job.gateway.c_str());
  g_task_run_in_thread(task, &PortMapper::run_in_thread);
  g_object_unref(task);  // the thread and the callback hold their own references
}

void PortMapper::run_in_thread(GTask* task, gpointer, gpointer task_data, GCancellable*) {
  auto* pending = static_cast<Pending*>(task_data);
  try {
    pending->answer = run_map_job(pending->job);
  } catch (const std::exception& e) {
    pending->answer.ok = false;
    pending->answer.error = e.what();
  }
  g_task_return_boolean(task, TRUE);
}

void PortMapper::on_done(GObject*, GAsyncResult* result, gpointer) {
  auto* pending = static_cast<Pending*>(g_task_get_task_data(G_TASK(result)));
  if (!pending->alive.lock()) return;  // the mapper is gone (a drain that timed out)
  guard_callback("port mapping: answer", [pending] { pending->mapper->finished(*pending); });
}

void PortMapper::finished(Pending& pending) {
  --running_;
  const MapJob& job = pending.job;
  const MapAnswer& answer = pending.answer;
  const std::string protocol(to_string(job.protocol));
  if (job.discover_only) {
    if (answer.ok)
      log::info("port mapping: found the UPnP gateway at %s", job.gateway.c_str());
    else
      log::debug("port mapping: no UPnP gateway at %s: %s", job.gateway.c_str(),
                 answer.error.c_str());
    return;
  }
  if (job.lifetime_seconds == 0) {
    if (answer.ok)
      log::info("port mapping: deleted %s:%u -> external port %u (%s)", job.client_ip.c_str(),
                job.internal_port, job.external_port, protocol.c_str());
    else
      log::warn("port mapping: could not delete the %s mapping of %s:%u: %s", protocol.c_str(),
                job.client_ip.c_str(), job.internal_port, answer.error.c_str());
    return;
  }
  if (answer.ok)
    log::debug("port mapping: %s mapped %s:%u to %s:%u for %u s", protocol.c_str(),
               job.client_ip.c_str(), job.internal_port, answer.external_ip.c_str(),
               answer.external_port, answer.lifetime_seconds);
  else
    log::debug("port mapping: %s for %s:%u: %s", protocol.c_str(), job.client_ip.c_str(),
               job.internal_port, answer.error.c_str());
  auto owner = live_.find(pending.owner);
  if (owner != live_.end()) {
    owner->second->on_answer(answer);
  } else if (answer.ok && answer.lifetime_seconds > 0) {
    // Its owner left while the request ran: what it made goes again.
    MapJob gone = job;
    gone.lifetime_seconds = 0;
    gone.external_port = answer.external_port;
    submit(0, gone);
  }
}

void PortMapper::drain(int64_t timeout_us) {
  const int64_t deadline = g_get_monotonic_time() + timeout_us;
  while (running_ > 0) {
    const int64_t left_ms = (deadline - g_get_monotonic_time()) / 1000;
    if (left_ms <= 0) {
      log::warn("port mapping: %zu request(s) to the gateway still running at exit", running_);
      return;
    }
    // Wakes the iteration at the deadline even if no task finishes.
    SourceId wake(g_timeout_add(static_cast<guint>(left_ms), [](gpointer) -> gboolean {
      return G_SOURCE_CONTINUE;
    }, nullptr));
    g_main_context_iteration(nullptr, TRUE);
  }
}

}  // namespace natfwd::portmap
