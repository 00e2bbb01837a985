// Walking a text file's lines with their numbers, for parsers whose errors say "file:line".
#pragma once
#include <cstdint>
#include <string_view>

namespace qpeft {

// for (LineCursor lines(text); lines.next(&line, &line_no);) { ... }
// Lines end at '\n' (a '\r' before it stays in the line); a final '\n' adds no empty line.
class LineCursor {
 public:
  explicit LineCursor(std::string_view text) : text_(text) {}
  // The next line and its 1-based number; false when the text is used up.
  bool next(std::string_view* line, int64_t* number) {
    if (pos_ >= text_.size()) return false;
    size_t end = text_.find('\n', pos_);
    if (end == std::string_view::npos) end = text_.size();
    *line = text_.substr(pos_, end - pos_);
    pos_ = end + 1;
    *number = ++line_no_;
    return true;
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  int64_t line_no_ = 0;
};

}  // namespace qpeft
