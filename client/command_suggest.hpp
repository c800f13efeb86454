// A mistyped command: "opclient describ" is answered with the nearest known command
// instead of CLI11's "A subcommand is required". Found before CLI11 parses, by skipping
// the connection options (and their values) that may come before the command.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace ops::opclient {

// Levenshtein distance (insert, delete, substitute: 1 each).
std::size_t edit_distance(const std::string& a, const std::string& b);

// The first word of argv that is not an option nor an option's value, if it is not one
// of `commands`; nullopt when the command is known or there is none.
std::optional<std::string> unknown_command(int argc, const char* const* argv,
                                           const std::vector<std::string>& commands,
                                           const std::vector<std::string>& options_with_value);

// The message for an unknown command, with the nearest known one when it is close enough
// to be a typo.
std::string unknown_command_message(const std::string& word,
                                    const std::vector<std::string>& commands);

}  // namespace ops::opclient
