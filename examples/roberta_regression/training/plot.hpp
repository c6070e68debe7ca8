// Figures with gnuplot (Debian's gnuplot-nox): the per-layer learning rates of
// a run (the article's Figures 1-7) and its train/validation curves. Each
// figure is a CSV and a gnuplot script next to the PNG, so it can be redrawn
// or restyled by hand. Skipped with a note when gnuplot is not installed.
//
// gnuplot runs without a shell (posix_spawnp, the script's path as its one
// argument), and every name in a script is a gnuplot single-quoted string
// (no substitution of any kind; a quote is doubled), so a folder name cannot
// run commands, whatever it contains. Example code.
#pragma once

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "training/trainer.hpp"

extern char** environ;  // NOLINT: POSIX, for posix_spawnp

namespace roberta_regression {

namespace detail {

/// Runs `args` (args[0] looked up on PATH) without a shell and waits for it;
/// stdin from /dev/null, and stdout/stderr too when `quiet`. Returns the exit
/// status, 128 + the signal number when killed, or -1 when it could not be
/// started (not installed).
inline int run_program(const std::vector<std::string>& args, bool quiet) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  if (posix_spawn_file_actions_init(&actions) != 0) return -1;
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (quiet) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  }
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

/// `text` as a gnuplot single-quoted string: no substitution happens inside
/// one, and '' stands for a quote. A line break would end the command, so a
/// control character is refused (`what` names the text in the message).
inline std::string gnuplot_string(const std::string& text, const std::string& what) {
  std::string out = "'";
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      throw std::invalid_argument("--plot: " + what + " '" + text +
                                  "' contains a control character (a line break?); gnuplot "
                                  "scripts cannot name it");
    }
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

/// The title of a figure: control characters become spaces.
inline std::string gnuplot_title(std::string text) {
  for (char& c : text)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return gnuplot_string(text, "title");
}

/// Writes `text` to `path`; std::runtime_error naming it when that fails.
inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("--plot: cannot write " + path);
}

}  // namespace detail

/// Whether `gnuplot` runs (on PATH).
inline bool gnuplot_available() {
  return detail::run_program({"gnuplot", "-e", "exit"}, true) == 0;
}

/// Runs `gnuplot <script>` (no shell) and returns its exit status (-1: not
/// started).
inline int run_gnuplot(const std::string& script) {
  return detail::run_program({"gnuplot", script}, /*quiet=*/false);
}

/// Writes lr_fold{k}.csv/.gp and curves_fold{k}.csv/.gp in `dir` for one
/// fold and, when `draw` (gnuplot_available()), runs gnuplot on them; returns
/// the PNG paths drawn (a failed gnuplot run is reported on stderr). Throws
/// std::invalid_argument for a `dir` with a control character in its name
/// (before writing anything), std::runtime_error when a file cannot be written.
inline std::vector<std::string> plot_fold(const std::string& dir, const std::string& title,
                                          const FoldResult& r, bool draw) {
  namespace fs = std::filesystem;
  const std::string stem_lr = (fs::path(dir) / fmt::format("lr_fold{}", r.fold)).string();
  const std::string stem_curves = (fs::path(dir) / fmt::format("curves_fold{}", r.fold)).string();
  const std::string lr_png = detail::gnuplot_string(stem_lr + ".png", "folder");
  const std::string lr_csv = detail::gnuplot_string(stem_lr + ".csv", "folder");
  const std::string curves_png = detail::gnuplot_string(stem_curves + ".png", "folder");
  const std::string curves_csv = detail::gnuplot_string(stem_curves + ".csv", "folder");
  fs::create_directories(dir);
  {
    std::ostringstream csv;
    write_lr_csv_header(csv, r.lr_columns, /*with_fold=*/false);
    write_lr_csv_rows(csv, r, /*with_fold=*/false);
    detail::write_text(stem_lr + ".csv", csv.str());
    std::ostringstream gp;
    gp << "set terminal pngcairo size 1000,600\n"
       << "set output " << lr_png << "\n"
       << "set datafile separator ','\n"
       << "set key outside right\n"
       << "set xlabel 'training step'\nset ylabel 'learning rate'\n"
       << "set title "
       << detail::gnuplot_title(fmt::format("{}, fold {}: learning rate per layer", title, r.fold))
       << "\n"
       << "plot for [i=2:" << r.lr_columns.size() + 1 << "] " << lr_csv
       << " using 1:i with lines title columnhead(i)\n";
    detail::write_text(stem_lr + ".gp", gp.str());
  }
  {
    std::ostringstream csv;
    csv << "step,train_rmse,val_rmse,swa_val_rmse\n";
    for (const auto& p : r.curve)
      csv << fmt::format("{},{:.6g},{:.6g},{}\n", p.step, p.train_rmse, p.val_rmse,
                         p.swa_val_rmse ? fmt::format("{:.6g}", *p.swa_val_rmse) : "NaN");
    detail::write_text(stem_curves + ".csv", csv.str());
    std::ostringstream gp;
    gp << "set terminal pngcairo size 1000,600\n"
       << "set output " << curves_png << "\n"
       << "set datafile separator ','\n"
       << "set datafile missing 'NaN'\n"
       << "set key top right\n"
       << "set xlabel 'training step'\nset ylabel 'RMSE'\n"
       << "set title "
       << detail::gnuplot_title(
              fmt::format("{}, fold {}: training and validation RMSE", title, r.fold))
       << "\n"
       << "plot " << curves_csv << " using 1:2 with linespoints title 'training', \\\n"
       << "     '' using 1:3 with linespoints title 'validation', \\\n"
       << "     '' using 1:4 with linespoints title 'validation, SWA weights'\n";
    detail::write_text(stem_curves + ".gp", gp.str());
  }
  std::vector<std::string> drawn;
  if (!draw) return drawn;
  for (const auto& stem : {stem_lr, stem_curves}) {
    const int status = run_gnuplot(stem + ".gp");
    if (status == 0 && fs::exists(stem + ".png")) {
      drawn.push_back(stem + ".png");
    } else {
      fmt::print(stderr, "plot: gnuplot {} {} (exit status {}); its data and script stay in {}\n",
                 stem + ".gp", status < 0 ? "could not be started" : "failed", status, dir);
    }
  }
  return drawn;
}

}  // namespace roberta_regression
