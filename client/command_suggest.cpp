#include "command_suggest.hpp"

#include <algorithm>
#include <numeric>

namespace ops::opclient {

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), std::size_t{0});
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::optional<std::string> unknown_command(int argc, const char* const* argv,
                                           const std::vector<std::string>& commands,
                                           const std::vector<std::string>& options_with_value) {
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word == "--") return std::nullopt;  // CLI11 has the last word
    if (word.starts_with("-")) {
      // "--server x" takes the next word; "--server=x" and "-sx" do not.
      if (std::find(options_with_value.begin(), options_with_value.end(), word) !=
          options_with_value.end()) {
        ++i;
      }
      continue;
    }
    if (std::find(commands.begin(), commands.end(), word) != commands.end()) return std::nullopt;
    return word;
  }
  return std::nullopt;
}

std::string unknown_command_message(const std::string& word,
                                    const std::vector<std::string>& commands) {
  std::string best;
  std::size_t best_distance = std::string::npos;
  for (const auto& command : commands) {
    std::size_t d = edit_distance(word, command);
    if (d < best_distance) {
      best_distance = d;
      best = command;
    }
  }
  std::string message = "unknown command '" + word + "'";
  // A typo is a few letters off; beyond that a suggestion would only puzzle.
  const std::size_t close_enough = std::max<std::size_t>(2, word.size() / 3);
  if (!best.empty() && best_distance <= close_enough) {
    message += "; did you mean '" + best + "'?";
  } else {
    message += "; see opclient --help";
  }
  return message;
}

}  // namespace ops::opclient
