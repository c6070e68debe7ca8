// A one-line progress bar with ETA for terminals; silent otherwise (the
// evaluation lines are the plain-text progress then). Example code.
#pragma once

#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace roberta_regression {

class ProgressBar {
 public:
  /// Enabled when stdout is a terminal.
  ProgressBar() : enabled_(isatty(fileno(stdout)) != 0) {}

  bool enabled() const { return enabled_; }

  /// Starts a new task: `label` in front of the bar, the clock from now.
  void start(std::string label) {
    label_ = std::move(label);
    started_ = std::chrono::steady_clock::now();
    last_draw_ = {};
  }

  /// Redraws (at most 5 times a second, and always at the end).
  void update(int64_t done, int64_t total) {
    if (!enabled_ || total <= 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_draw_ < std::chrono::milliseconds(200)) return;
    last_draw_ = now;
    const double elapsed = std::chrono::duration<double>(now - started_).count();
    const double fraction =
        std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0);
    const int width = 30;
    const int filled = static_cast<int>(fraction * width);
    const double eta =
        done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total - done) : 0.0;
    fmt::print("\r\033[K{} [{}{}] {}/{} {:.0f}s, ETA {:.0f}s", label_, std::string(filled, '#'),
               std::string(width - filled, '.'), done, total, elapsed, eta);
    std::fflush(stdout);
    drawn_ = true;
  }

  /// Clears the bar so that a normal line can be printed.
  void clear() {
    if (enabled_ && drawn_) {
      fmt::print("\r\033[K");
      std::fflush(stdout);
      drawn_ = false;
    }
  }

 private:
  bool enabled_;
  bool drawn_ = false;
  std::string label_;
  std::chrono::steady_clock::time_point started_, last_draw_;
};

}  // namespace roberta_regression
