#include "config_file.h"

#include "path_safety.h"

#include <glib.h>

#include <cerrno>
#include <memory>

namespace natfwd::config {
namespace {

struct KeyFileFree {
  void operator()(GKeyFile* file) const { g_key_file_free(file); }
};

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\r");
  return text.substr(first, last - first + 1);
}

const GroupSpec* find_group(const ConfigSchema& schema, std::string_view name) {
  for (const GroupSpec& group : schema)
    if (group.name == name) return &group;
  return nullptr;
}

const KeySpec* find_key(const GroupSpec& group, std::string_view name) {
  for (const KeySpec& key : group.keys)
    if (key.name == name) return &key;
  return nullptr;
}

std::string known_groups(const ConfigSchema& schema) {
  std::string text;
  for (const GroupSpec& group : schema) {
    if (!text.empty()) text += ", ";
    text += "[" + group.name + (group.labelled ? " NAME]" : "]");
  }
  return text;
}

// Where a group and its keys are in the file, found by reading it line by line.
struct GroupLines {
  std::string full_name;  // as written between the brackets
  const GroupSpec* spec = nullptr;
  std::string label;
  int line = 0;
  std::vector<std::pair<std::string, int>> keys;  // in file order
};

std::string at(const std::string& file_name, int line) {
  return file_name + ":" + std::to_string(line) + ": ";
}

// The file's structure: groups, keys and their lines, each checked against the schema.
std::variant<std::vector<GroupLines>, std::string> scan_lines(const std::string& file_name,
                                                              std::string_view text,
                                                              const ConfigSchema& schema) {
  std::vector<GroupLines> groups;
  int line_number = 0;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = trim(text.substr(start, end - start));
    start = end + 1;
    ++line_number;
    if (line.empty() || line.front() == '#') continue;
    const std::string where = at(file_name, line_number);
    if (line.front() == '[') {
      if (line.back() != ']' || line.size() < 3)
        return where + "'" + std::string(line) + "' is not a [group] line";
      const std::string full(trim(line.substr(1, line.size() - 2)));
      const auto space = full.find(' ');
      const std::string name = full.substr(0, space);
      const std::string label =
          space == std::string::npos ? "" : std::string(trim(std::string_view(full).substr(space)));
      const GroupSpec* spec = find_group(schema, name);
      if (!spec)
        return where + "unknown group [" + full + "] (known: " + known_groups(schema) + ")";
      if (spec->labelled && label.empty())
        return where + "[" + name + "] needs a name, e.g. [" + name + " ssh]";
      if (!spec->labelled && !label.empty())
        return where + "[" + name + "] takes no name (write [" + name + "])";
      for (const GroupLines& seen : groups)
        if (seen.full_name == full)
          return where + "group [" + full + "] repeated (first on line " +
                 std::to_string(seen.line) + "); give each its own name";
      groups.push_back(GroupLines{full, spec, label, line_number, {}});
      continue;
    }
    const auto equals = line.find('=');
    if (equals == std::string_view::npos)
      return where + "'" + std::string(line) + "' is not 'key = value', a [group] or a # comment";
    const std::string key(trim(line.substr(0, equals)));
    if (groups.empty())
      return where + "key '" + key + "' comes before any group (start with " +
             known_groups(schema) + ")";
    GroupLines& group = groups.back();
    if (!find_key(*group.spec, key)) {
      std::string known;
      for (const KeySpec& k : group.spec->keys) known += (known.empty() ? "" : ", ") + k.name;
      return where + "unknown key '" + key + "' in [" + group.full_name + "] (known: " + known +
             ")";
    }
    for (const auto& [seen, seen_line] : group.keys)
      if (seen == key)
        return where + "key '" + key + "' repeated (first on line " + std::to_string(seen_line) +
               ")";
    group.keys.emplace_back(key, line_number);
  }
  return groups;
}

std::string take_error(GError* error) {
  std::string message = error ? error->message : "unreadable";
  if (error) g_error_free(error);
  return message;
}

}  // namespace

const Value* Section::find(std::string_view key) const {
  for (const Value& value : values)
    if (value.key == key) return &value;
  return nullptr;
}

std::variant<ConfigFile, std::string> parse_config_text(const std::string& file_name,
                                                        std::string_view text,
                                                        const ConfigSchema& schema) {
  auto scanned = scan_lines(file_name, text, schema);
  if (auto* message = std::get_if<std::string>(&scanned)) return *message;
  const auto& groups = std::get<std::vector<GroupLines>>(scanned);

  std::unique_ptr<GKeyFile, KeyFileFree> key_file(g_key_file_new());
  GError* error = nullptr;
  if (!g_key_file_load_from_data(key_file.get(), text.data(), text.size(), G_KEY_FILE_NONE,
                                 &error))
    return file_name + ": " + take_error(error);

  ConfigFile config;
  for (const GroupLines& group : groups) {
    Section section{group.spec->name, group.label, group.line, {}};
    const char* group_name = group.full_name.c_str();
    for (const auto& [key, line] : group.keys) {
      const KeySpec& spec = *find_key(*group.spec, key);
      const std::string where = at(file_name, line) + "key '" + key + "': ";
      Value value{key, {}, line};
      switch (spec.kind) {
        case ValueKind::kText: {
          gchar* raw = g_key_file_get_string(key_file.get(), group_name, key.c_str(), &error);
          if (!raw) return where + take_error(error);
          value.values.emplace_back(trim(raw));
          g_free(raw);
          break;
        }
        case ValueKind::kSwitch: {
          const gboolean on =
              g_key_file_get_boolean(key_file.get(), group_name, key.c_str(), &error);
          if (error) {
            g_error_free(error);
            error = nullptr;
            return where + "give true or false";
          }
          value.values.emplace_back(on ? "true" : "false");
          break;
        }
        case ValueKind::kList: {
          gsize length = 0;
          gchar** raw = g_key_file_get_string_list(key_file.get(), group_name, key.c_str(),
                                                   &length, &error);
          if (!raw) return where + take_error(error);
          for (gsize i = 0; i < length; ++i)
            if (!trim(raw[i]).empty()) value.values.emplace_back(trim(raw[i]));
          g_strfreev(raw);
          break;
        }
      }
      if (value.values.empty() || (spec.kind == ValueKind::kText && value.values[0].empty()))
        return where + "no value";
      if (spec.check) {
        for (const std::string& element : value.values) {
          const std::string problem = spec.check(element);
          if (!problem.empty()) return where + problem;
        }
      }
      section.values.push_back(std::move(value));
    }
    for (const KeySpec& spec : group.spec->keys)
      if (spec.required && !section.find(spec.name))
        return at(file_name, group.line) + "[" + group.full_name + "] needs key '" + spec.name +
               "'";
    config.sections.push_back(std::move(section));
  }
  return config;
}

CommandLineScan scan_command_line(const std::vector<std::string>& args,
                                  const std::vector<FlagSpec>& flags) {
  CommandLineScan scan;
  auto by_long = [&](std::string_view name) -> const FlagSpec* {
    for (const FlagSpec& flag : flags)
      if (flag.long_name == name) return &flag;
    return nullptr;
  };
  auto by_short = [&](char name) -> const FlagSpec* {
    for (const FlagSpec& flag : flags)
      if (flag.short_name == name) return &flag;
    return nullptr;
  };
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    std::string name;
    std::optional<std::string> inline_value;
    const FlagSpec* flag = nullptr;
    if (arg == "--") {
      scan.positionals.insert(scan.positionals.end(), args.begin() + i + 1, args.end());
      for (size_t rest = i + 1; rest < args.size(); ++rest) scan.in_order.push_back({"", args[rest]});
      break;
    }
    if (arg.rfind("--", 0) == 0) {
      const auto equals = arg.find('=');
      name = arg.substr(2, equals == std::string::npos ? std::string::npos : equals - 2);
      if (equals != std::string::npos) inline_value = arg.substr(equals + 1);
      flag = by_long(name);
    } else if (arg.size() >= 2 && arg[0] == '-') {
      // Grouped short flags ("-vL 2222:h:22"): each switch, then at most one taking a
      // value, which is the rest of the word or the next argument.
      size_t at = 1;
      for (; at + 1 < arg.size(); ++at) {
        const FlagSpec* grouped = by_short(arg[at]);
        if (grouped && grouped->takes_value) break;
        scan.flags.insert(grouped ? grouped->long_name : std::string(1, arg[at]));
        if (arg[at] == 'h' || arg[at] == '?') scan.help = true;
      }
      flag = by_short(arg[at]);
      name = flag ? flag->long_name : std::string(1, arg[at]);
      if (arg.size() > at + 1 && flag && flag->takes_value) inline_value = arg.substr(at + 1);
    } else {
      scan.positionals.push_back(arg);
      scan.in_order.push_back({"", arg});
      continue;
    }
    if (name == "help" || name == "h" || name == "?" || name.rfind("help-", 0) == 0)
      scan.help = true;
    scan.flags.insert(name);
    if (!flag || !flag->takes_value) continue;
    std::string value;
    if (inline_value) value = *inline_value;
    else if (i + 1 < args.size()) value = args[++i];
    if (name == "config") scan.config_path = value;
    scan.in_order.push_back({name, value});
  }
  return scan;
}

void append_flag_arguments(const Section& section, const GroupSpec& spec,
                           std::vector<FileArgument>& arguments,
                           const std::function<bool(const std::string&)>& take) {
  for (const Value& value : section.values) {
    if (take && !take(value.key)) continue;
    const KeySpec& key = *find_key(spec, value.key);
    if (key.kind == ValueKind::kSwitch) {
      if (value.values[0] == "true") arguments.push_back({value.key, "", false});
      continue;
    }
    for (const std::string& element : value.values)
      arguments.push_back({value.key, element, key.kind == ValueKind::kList});
  }
}

std::vector<std::string> file_argument_words(const std::vector<FileArgument>& file_arguments,
                                             const CommandLineScan& command_line,
                                             bool drop_positionals) {
  std::vector<std::string> words;
  for (const FileArgument& argument : file_arguments) {
    if (argument.flag.empty()) {
      if (!drop_positionals) words.push_back(argument.value);
      continue;
    }
    if (argument.repeatable && command_line.flags.count(argument.flag)) continue;
    words.push_back("--" + argument.flag + (argument.value.empty() ? "" : "=" + argument.value));
  }
  return words;
}

FileText read_config_file(const std::string& path) {
  FileText result;
  gchar* contents = nullptr;
  gsize length = 0;
  GError* error = nullptr;
  if (g_file_get_contents(path.c_str(), &contents, &length, &error)) {
    result.found = true;
    result.text.assign(contents, length);
    g_free(contents);
    return result;
  }
  if (g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_error_free(error);
    return result;
  }
  result.found = true;
  result.error = take_error(error);
  return result;
}

std::variant<ConfigFile, std::string> load_config_file(const CommandLineScan& command_line,
                                                       const std::string& default_path,
                                                       const ConfigSchema& schema,
                                                       std::string& path_used) {
  path_used = command_line.config_path.value_or(default_path);
  if (command_line.config_path && path_used.empty()) return std::string("--config: empty file name");
  const FileText file = read_config_file(path_used);
  if (!file.error.empty()) return path_used + ": " + file.error;
  if (!file.found) {
    if (command_line.config_path) return "--config: " + path_used + ": no such file";
    return ConfigFile{};
  }
  // A file that says whom to let in must not be one anybody else can change.
  if (std::string unsafe = unsafe_path_reason(path_used, PathKind::kConfigFile, "config file");
      !unsafe.empty())
    return unsafe;
  return parse_config_text(path_used, file.text, schema);
}

}  // namespace natfwd::config
