#include "portmap/gateway_requests.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

#include <glib.h>

#include <miniupnpc/miniupnpc.h>
#include <miniupnpc/upnpcommands.h>
#include <miniupnpc/upnperrors.h>
#include <natpmp.h>

#include "glib_ptr.h"

namespace natfwd::portmap {
namespace {

constexpr int64_t kNatPmpGiveUpUs = 2'000'000;
constexpr const char* kDescription = "natfwd";

int64_t now_us() { return g_get_monotonic_time(); }

MapAnswer failure(std::string error) {
  MapAnswer answer;
  answer.error = std::move(error);
  return answer;
}

bool parse_ipv4(const std::string& text, in_addr* out) {
  return inet_pton(AF_INET, text.c_str(), out) == 1;
}

// -- PCP -----------------------------------------------------------------------------

MapAnswer pcp_request(const MapJob& job) {
  PcpMapRequest request;
  in_addr client{}, gateway{};
  if (!parse_ipv4(job.client_ip, &client) || !parse_ipv4(job.gateway, &gateway))
    return failure("not an IPv4 gateway");
  std::memcpy(request.client_ip.data(), &client, 4);
  request.internal_port = job.internal_port;
  request.suggested_external_port = job.external_port;
  request.lifetime_seconds = job.lifetime_seconds;
  request.nonce = job.nonce;
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return failure(std::string("socket: ") + std::strerror(errno));
  // The request's client address must be its source address (RFC 6887 section 8.1),
  // so bind to it.
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr = client;
  sockaddr_in server{};
  server.sin_family = AF_INET;
  server.sin_addr = gateway;
  server.sin_port = htons(kPcpServerPort);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      connect(fd.get(), reinterpret_cast<sockaddr*>(&server), sizeof server) != 0)
    return failure(std::string("socket: ") + std::strerror(errno));
  PcpExchange exchange(request, now_us());
  for (;;) {
    const int64_t now = now_us();
    if (auto bytes = exchange.due(now)) send(fd.get(), bytes->data(), bytes->size(), 0);
    if (exchange.check(now) == PcpExchange::Outcome::kGaveUp) return failure("no answer");
    pollfd p{fd.get(), POLLIN, 0};
    const int64_t wait_us = exchange.next_deadline_us() - now;
    if (poll(&p, 1, static_cast<int>((wait_us + 999) / 1000)) <= 0) continue;
    std::byte buffer[kMaxPcpMessageSize];
    const ssize_t n = recv(fd.get(), buffer, sizeof buffer, 0);
    if (n < 0) {
      // Port unreachable: nothing listens on the gateway's 5351.
      if (errno == ECONNREFUSED) return failure("refused");
      continue;
    }
    switch (exchange.on_datagram(std::span(buffer, static_cast<size_t>(n)))) {
      case PcpExchange::Outcome::kNotPcp:
        return failure("the gateway speaks NAT-PMP only");
      case PcpExchange::Outcome::kAnswered: {
        const PcpMapResponse& r = exchange.response();
        if (r.result != PcpResult::kSuccess) return failure("PCP " + to_string(r.result));
        MapAnswer answer;
        answer.ok = true;
        answer.external_ip = r.external_ip;
        answer.external_port = r.external_port;
        answer.lifetime_seconds = r.lifetime_seconds;
        return answer;
      }
      default:
        break;
    }
  }
}

// -- NAT-PMP (libnatpmp) ---------------------------------------------------------------

std::string natpmp_error(int code) {
  switch (code) {
    case NATPMP_ERR_RECVFROM: return "refused";
    case NATPMP_ERR_NOGATEWAYSUPPORT: return "the gateway does not support NAT-PMP";
    case NATPMP_ERR_UNSUPPORTEDVERSION: return "unsupported version";
    case NATPMP_ERR_NOTAUTHORIZED: return "not authorized";
    case NATPMP_ERR_NETWORKFAILURE: return "network failure";
    case NATPMP_ERR_OUTOFRESOURCES: return "out of resources";
    case NATPMP_TRYAGAIN: return "no answer";
    default: return "libnatpmp error " + std::to_string(code);
  }
}

// libnatpmp retransmits on its own schedule (RFC 6886 section 3.1, up to 9 tries over
// a minute); this waits for its answer at most kNatPmpGiveUpUs.
int natpmp_wait(natpmp_t* n, natpmpresp_t* response) {
  const int64_t give_up = now_us() + kNatPmpGiveUpUs;
  int r;
  do {
    fd_set fds;
    FD_ZERO(&fds);
    FD_SET(n->s, &fds);
    timeval timeout{};
    getnatpmprequesttimeout(n, &timeout);
    const int64_t left = give_up - now_us();
    if (left <= 0) return NATPMP_TRYAGAIN;
    if (timeout.tv_sec * 1'000'000 + timeout.tv_usec > left) {
      timeout.tv_sec = left / 1'000'000;
      timeout.tv_usec = left % 1'000'000;
    }
    select(n->s + 1, &fds, nullptr, nullptr, &timeout);
    r = readnatpmpresponseorretry(n, response);
  } while (r == NATPMP_TRYAGAIN);
  return r;
}

MapAnswer natpmp_request(const MapJob& job) {
  in_addr gateway{};
  if (!parse_ipv4(job.gateway, &gateway)) return failure("not an IPv4 gateway");
  natpmp_t n;
  if (int r = initnatpmp(&n, 1, gateway.s_addr); r < 0) return failure(natpmp_error(r));
  MapAnswer answer;
  natpmpresp_t response{};
  int r = 0;
  if (job.lifetime_seconds > 0) {
    // The external address comes from its own request (RFC 6886 section 3.2).
    r = sendpublicaddressrequest(&n);
    if (r >= 0) r = natpmp_wait(&n, &response);
    if (r < 0) {
      closenatpmp(&n);
      return failure(natpmp_error(r));
    }
    char text[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &response.pnu.publicaddress.addr, text, sizeof text);
    answer.external_ip = text;
  }
  // A delete is a mapping request with lifetime 0 and external port 0 (section 3.4).
  r = sendnewportmappingrequest(&n, NATPMP_PROTOCOL_UDP, job.internal_port,
                                job.lifetime_seconds ? job.external_port : 0,
                                job.lifetime_seconds);
  if (r >= 0) r = natpmp_wait(&n, &response);
  closenatpmp(&n);
  if (r < 0) return failure(natpmp_error(r));
  answer.ok = true;
  answer.external_port = response.pnu.newportmapping.mappedpublicport;
  answer.lifetime_seconds = response.pnu.newportmapping.lifetime;
  return answer;
}

// -- UPnP IGD (miniupnpc) --------------------------------------------------------------

// The gateway's control URL, found once by SSDP and kept: renewals and deletes need
// no new discovery.
struct UpnpGateway {
  std::string control_url, service_type;
};
std::mutex upnp_mutex;
UpnpGateway upnp_cache;

bool upnp_discover(UpnpGateway* out, std::string* error) {
  {
    std::lock_guard lock(upnp_mutex);
    if (!upnp_cache.control_url.empty()) {
      *out = upnp_cache;
      return true;
    }
  }
  int status = 0;
  UPNPDev* devices = upnpDiscover(kUpnpDiscoverMs, nullptr, nullptr, UPNP_LOCAL_PORT_ANY, 0, 2,
                                  &status);
  if (!devices) {
    *error = "no UPnP gateway answered";
    return false;
  }
  UPNPUrls urls{};
  IGDdatas data{};
  char lan[64] = "";
  const int found = UPNP_GetValidIGD(devices, &urls, &data, lan, sizeof lan);
  freeUPNPDevlist(devices);
  if (found != 1 && found != 2) {
    if (found) FreeUPNPUrls(&urls);
    *error = "no Internet gateway device";
    return false;
  }
  out->control_url = urls.controlURL ? urls.controlURL : "";
  out->service_type = data.first.servicetype;
  FreeUPNPUrls(&urls);
  std::lock_guard lock(upnp_mutex);
  upnp_cache = *out;
  return true;
}

MapAnswer upnp_request(const MapJob& job) {
  UpnpGateway gateway;
  std::string error;
  if (!upnp_discover(&gateway, &error)) return failure(error);
  const char* url = gateway.control_url.c_str();
  const char* service = gateway.service_type.c_str();
  const std::string internal = std::to_string(job.internal_port);
  const std::string external = std::to_string(job.external_port ? job.external_port
                                                                : job.internal_port);
  if (job.lifetime_seconds == 0) {
    const int r = UPNP_DeletePortMapping(url, service, external.c_str(), "UDP", nullptr);
    if (r != UPNPCOMMAND_SUCCESS) return failure(std::string("UPnP ") + strupnperror(r));
    MapAnswer answer;
    answer.ok = true;
    return answer;
  }
  char external_ip[40] = "";
  if (int r = UPNP_GetExternalIPAddress(url, service, external_ip); r != UPNPCOMMAND_SUCCESS)
    return failure(std::string("UPnP ") + strupnperror(r));
  std::string lease = std::to_string(job.lifetime_seconds);
  int r = UPNP_AddPortMapping(url, service, external.c_str(), internal.c_str(),
                              job.client_ip.c_str(), kDescription, "UDP", nullptr, lease.c_str());
  if (r == 725) {  // OnlyPermanentLeasesSupported (IGD 1): renewals keep it fresh anyway
    lease = "0";
    r = UPNP_AddPortMapping(url, service, external.c_str(), internal.c_str(),
                            job.client_ip.c_str(), kDescription, "UDP", nullptr, lease.c_str());
  }
  std::string granted = external;
  if (r == 718) {  // ConflictInMappingEntry: let an IGD 2 gateway pick a free port
    char reserved[6] = "";
    r = UPNP_AddAnyPortMapping(url, service, external.c_str(), internal.c_str(),
                               job.client_ip.c_str(), kDescription, "UDP", nullptr,
                               lease.c_str(), reserved);
    granted = reserved;
  }
  if (r != UPNPCOMMAND_SUCCESS) return failure(std::string("UPnP ") + strupnperror(r));
  MapAnswer answer;
  answer.ok = true;
  answer.external_ip = external_ip;
  answer.external_port = static_cast<uint16_t>(std::atoi(granted.c_str()));
  // A permanent lease is renewed as often as a two-hour one would be.
  answer.lifetime_seconds = job.lifetime_seconds;
  if (answer.external_port == 0 || answer.external_ip.empty())
    return failure("UPnP: the gateway reported no external address");
  return answer;
}

}  // namespace

MapAnswer run_map_job(const MapJob& job) {
  if (job.discover_only) {
    if (job.protocol != MapProtocol::kUpnp) return failure("nothing to discover");
    UpnpGateway gateway;
    std::string error;
    if (!upnp_discover(&gateway, &error)) return failure(error);
    MapAnswer answer;
    answer.ok = true;
    return answer;
  }
  switch (job.protocol) {
    case MapProtocol::kPcp: return pcp_request(job);
    case MapProtocol::kNatPmp: return natpmp_request(job);
    case MapProtocol::kUpnp: return upnp_request(job);
  }
  return failure("unknown protocol");
}

std::string default_ipv4_gateway() {
  std::ifstream routes("/proc/net/route");
  std::string line;
  std::getline(routes, line);  // header
  while (std::getline(routes, line)) {
    std::istringstream fields(line);
    std::string iface, destination, gateway;
    fields >> iface >> destination >> gateway;
    if (destination != "00000000" || gateway == "00000000") continue;
    const unsigned long g = std::stoul(gateway, nullptr, 16);  // little-endian in the file
    return std::to_string(g & 0xff) + "." + std::to_string((g >> 8) & 0xff) + "." +
           std::to_string((g >> 16) & 0xff) + "." + std::to_string((g >> 24) & 0xff);
  }
  return "";
}

std::string local_address_toward(const std::string& gateway) {
  sockaddr_in server{};
  server.sin_family = AF_INET;
  server.sin_port = htons(kPcpServerPort);
  if (!parse_ipv4(gateway, &server.sin_addr)) return "";
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0 || connect(fd.get(), reinterpret_cast<sockaddr*>(&server), sizeof server) != 0)
    return "";
  sockaddr_in local{};
  socklen_t length = sizeof local;
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &length) != 0) return "";
  char text[INET_ADDRSTRLEN] = "";
  inet_ntop(AF_INET, &local.sin_addr, text, sizeof text);
  return text;
}

}  // namespace natfwd::portmap
