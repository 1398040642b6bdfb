// Configuration files (peer.conf, relay.conf): GKeyFile text whose keys are the long
// flags of the program, turned into command-line arguments that go in front of the
// real ones, so that one option parser checks both and the command line wins.
//
//   [relay]                       [peer]
//   listen = 0.0.0.0:3478         relay = vps.example:3478
//   turn-server = a:3478;b:3478   force-relay = true
//                                 [serve ssh]
//                                 target = buffalo:22
//
// Each program describes its groups and keys (ConfigSchema); parse_config_text checks
// the text against it without any I/O. GKeyFile reports no line numbers for a bad
// value, so the parser finds every group's and key's line itself: each error is one
// line "FILE:LINE: ...", naming the key.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace natfwd::config {

enum class ValueKind {
  kText,    // key = value
  kSwitch,  // key = true|false (a flag without a value: true gives it)
  kList,    // key = a;b;c (a repeatable flag, once per element)
};

struct KeySpec {
  std::string name;  // the long flag's spelling, e.g. "state-dir"
  ValueKind kind = ValueKind::kText;
  // Checks one value (one list element); returns an empty string when it is good,
  // else one sentence saying what is wrong. Null: any value.
  std::function<std::string(const std::string&)> check;
  bool required = false;  // the group is incomplete without it
};

struct GroupSpec {
  std::string name;  // "peer", or "serve" for "[serve LABEL]" groups
  // Labelled groups are written "[serve LABEL]" and may appear many times (GKeyFile
  // cannot repeat a group name); the plain group at most once.
  bool labelled = false;
  std::vector<KeySpec> keys;
};

using ConfigSchema = std::vector<GroupSpec>;

struct Value {
  std::string key;
  std::vector<std::string> values;  // one for text; list elements; "true"/"false" for switches
  int line = 0;
};

struct Section {
  std::string group;  // "serve"
  std::string label;  // "ssh" for [serve ssh]; empty for the plain group
  int line = 0;
  std::vector<Value> values;  // in file order

  const Value* find(std::string_view key) const;
};

struct ConfigFile {
  std::vector<Section> sections;  // in file order
};

// Parses `text` (named `file_name` in errors) against `schema`. The error is one line:
// "FILE:LINE: key 'K': what is wrong" (or the group, or the syntax).
std::variant<ConfigFile, std::string> parse_config_text(const std::string& file_name,
                                                        std::string_view text,
                                                        const ConfigSchema& schema);

// What the command line says, as far as merging with the file needs: which long flags
// it gives, its positional words, --config FILE, and whether it asks for help.
struct FlagSpec {
  std::string long_name;
  char short_name = 0;
  bool takes_value = true;
};

struct CommandLineScan {
  std::set<std::string> flags;           // long names given
  std::vector<std::string> positionals;  // in order
  // Every flag taking a value and every positional word, in command-line order:
  // {long name, value}, or {"", word} for a positional (where an option sits
  // relative to a word, e.g. which peer NAME follows which -L).
  std::vector<std::pair<std::string, std::string>> in_order;
  std::optional<std::string> config_path;
  bool help = false;
};

// Scans argv[1..] as GOption would (--flag VALUE, --flag=VALUE, -f VALUE, -fVALUE,
// "--" ends the options); unknown flags are recorded as given, taking no value.
CommandLineScan scan_command_line(const std::vector<std::string>& args,
                                  const std::vector<FlagSpec>& flags);

// One argument the file contributes, before the command line's own.
struct FileArgument {
  std::string flag;   // long name, or empty for a positional word
  std::string value;  // empty for a switch
  bool repeatable = false;
};

// The arguments a group of flag keys stands for: one per text value or list element
// (lists are repeatable), the bare flag for a true switch, nothing for a false one.
// `take` (if set) picks the keys.
void append_flag_arguments(const Section& section, const GroupSpec& spec,
                           std::vector<FileArgument>& arguments,
                           const std::function<bool(const std::string&)>& take = nullptr);

// The file's arguments as argv words ("--flag=value", "--switch", "word"), leaving out
// the repeatable flags that the command line gives itself (its list replaces the
// file's) and, when `drop_positionals`, the file's positional words.
std::vector<std::string> file_argument_words(const std::vector<FileArgument>& file_arguments,
                                             const CommandLineScan& command_line,
                                             bool drop_positionals);

struct FileText {
  bool found = false;  // false: the file does not exist (text empty, no error)
  std::string text;
  std::string error;  // one line, set when it exists but cannot be read
};

// Reads a config file; a missing file is not an error here (the caller decides).
FileText read_config_file(const std::string& path);

// Reads and parses --config FILE (which must exist) or else `default_path` (which may
// be missing: then the result has no sections). The error is one line naming the file.
std::variant<ConfigFile, std::string> load_config_file(const CommandLineScan& command_line,
                                                       const std::string& default_path,
                                                       const ConfigSchema& schema,
                                                       std::string& path_used);

}  // namespace natfwd::config
