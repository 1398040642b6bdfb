// Who may hold a name. A name, once registered, is bound to the key that registered
// it (the registration proves possession of the key: a signature over the relay's
// fresh challenge, checked by RendezvousCore); later registrations of the name with
// another key are refused, whether or not the holder is online.
//
// The core asks the policy and tells it about new bindings and uses; it does no I/O
// itself. MemoryNameBinding keeps bindings for the core's lifetime (tests); the relay
// uses NameStore (server/name_store.h), which keeps them in the state dir and lets
// names unused for a long time expire.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace natfwd::relay {

class NameBindingPolicy {
 public:
  virtual ~NameBindingPolicy() = default;
  // The raw 32-byte public key `name` is bound to; nullopt when the name is free.
  virtual std::optional<std::string> bound_key(std::string_view name) const = 0;
  // Binds the free `name` to `public_key`, registered from `from_address`. False when
  // the binding could not be recorded (then the registration is refused; the policy
  // logs why).
  virtual bool bind(std::string_view name, std::string_view public_key,
                    std::string_view from_address) = 0;
  // The name's holder registered it again or let it go: it is in use, not abandoned.
  virtual void used(std::string_view /*name*/) {}
  // The holder of `name` lets the key with id `to_key_id` register it (which binds it
  // to that key); until then the holder keeps it. False when it could not be recorded.
  virtual bool hand_over(std::string_view name, std::string_view to_key_id) = 0;
  // The key id `name` was handed over to and not yet taken by; nullopt when none.
  virtual std::optional<std::string> handed_over_to(std::string_view name) const = 0;
};

// Bindings held in memory only.
class MemoryNameBinding : public NameBindingPolicy {
 public:
  std::optional<std::string> bound_key(std::string_view name) const override {
    auto it = bindings_.find(name);
    if (it == bindings_.end()) return std::nullopt;
    return it->second;
  }
  bool bind(std::string_view name, std::string_view public_key, std::string_view) override {
    bindings_.insert_or_assign(std::string(name), std::string(public_key));
    heirs_.erase(std::string(name));
    return true;
  }
  bool hand_over(std::string_view name, std::string_view to_key_id) override {
    heirs_.insert_or_assign(std::string(name), std::string(to_key_id));
    return true;
  }
  std::optional<std::string> handed_over_to(std::string_view name) const override {
    auto it = heirs_.find(name);
    if (it == heirs_.end()) return std::nullopt;
    return it->second;
  }
  const std::map<std::string, std::string, std::less<>>& bindings() const { return bindings_; }

 protected:
  std::map<std::string, std::string, std::less<>> bindings_;  // name -> raw public key
  std::map<std::string, std::string, std::less<>> heirs_;     // name -> key id
};

}  // namespace natfwd::relay
