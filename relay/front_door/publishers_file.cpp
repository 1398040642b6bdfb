#include "front_door/publishers_file.h"

#include <stdexcept>

#include "identity.h"
#include "record_file.h"

namespace natfwd::relay::front_door {

Publishers load_publishers(const std::string& path, const std::vector<std::string>& allowed) {
  Publishers publishers;
  for (const std::string& id : allowed) {
    if (id == "any") publishers.any = true;
    else publishers.key_ids.insert(id);
  }
  for_each_record(path, [&](int line, std::istringstream& fields) {
    std::string id, extra;
    if (!(fields >> id) || id[0] == '#') return true;
    if (id == "any") {
      publishers.any = true;
    } else if (is_valid_key_id(id) && !(fields >> extra && extra[0] != '#')) {
      publishers.key_ids.insert(id);
    } else {
      throw std::runtime_error(path + ":" + std::to_string(line) + ": '" + id +
                               "' is not a key id (32 characters as `peer id` prints them) "
                               "or `any`");
    }
    return true;
  });
  return publishers;
}

}  // namespace natfwd::relay::front_door
