// The example's figures (plot.hpp): gnuplot runs without a shell, so a
// hostile --plot folder name runs no command and the figures still land;
// gnuplot's exit status is checked.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.hpp"
#include "test_helpers.hpp"
#include "training/plot.hpp"

using namespace roberta_regression;
namespace fs = std::filesystem;
using finetune_test::contains;
using finetune_test::invalid_argument_message;
using finetune_test::TempDir;

namespace {

// A small fold: 3 lr columns over 4 steps, 2 evaluations (one with SWA).
FoldResult make_fold() {
  FoldResult r;
  r.fold = 1;
  r.lr_columns = {"embeddings", "layer0", "regressor"};
  for (int step = 0; step < 4; ++step) {
    r.lrs.push_back({1e-6 * step, 2e-6 * step, 3e-6 * step});
  }
  r.curve.push_back({0, 2, 2, 0.9, 0.8, std::nullopt});
  r.curve.push_back({1, 2, 4, 0.7, 0.6, 0.55});
  return r;
}

bool is_png(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, sizeof magic);
  return in.gcount() == 8 && std::string(magic + 1, 3) == "PNG";
}

// Every file under `root` whose name starts with "PWNED".
std::vector<std::string> pwned(const fs::path& root) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.path().filename().string().rfind("PWNED", 0) == 0) found.push_back(e.path().string());
  }
  return found;
}

// Runs the test body with the working directory at `dir` (where a command
// injected into a shell would create its files), restored afterwards.
struct InDirectory {
  fs::path old = fs::current_path();
  explicit InDirectory(const std::string& dir) { fs::current_path(dir); }
  ~InDirectory() { fs::current_path(old); }
};

}  // namespace

TEST_CASE("--plot: a hostile folder name runs no command and the figures land", "[plot]") {
  if (!gnuplot_available()) {
    finetune_test::skip("gnuplot is not installed (apt-get install gnuplot-nox): not drawn");
    return;
  }
  TempDir tmp;
  InDirectory cwd(tmp.path);
  const std::string hostile =
      tmp.file("plots '; touch PWNED_quote; ' $(touch PWNED_dollar) `touch PWNED_backtick` @x \\");
  const std::string title = "it's `touch PWNED_title` $(touch PWNED_title2) \\'";
  const auto drawn = plot_fold(hostile, title, make_fold(), /*draw=*/true);

  CHECK(pwned(tmp.path).empty());
  const std::string lr_png = (fs::path(hostile) / "lr_fold1.png").string();
  const std::string curves_png = (fs::path(hostile) / "curves_fold1.png").string();
  CHECK(drawn == std::vector<std::string>{lr_png, curves_png});
  CHECK(is_png(lr_png));
  CHECK(is_png(curves_png));
  for (const char* name : {"lr_fold1.csv", "lr_fold1.gp", "curves_fold1.csv", "curves_fold1.gp"}) {
    CHECK(fs::exists(fs::path(hostile) / name));
  }
  // The scripts redraw by hand too (the path given as gnuplot's one argument).
  fs::remove(lr_png);
  CHECK(run_gnuplot((fs::path(hostile) / "lr_fold1.gp").string()) == 0);
  CHECK(is_png(lr_png));
  CHECK(pwned(tmp.path).empty());
}

TEST_CASE("--plot: gnuplot's exit status is checked", "[plot]") {
  if (!gnuplot_available()) {
    finetune_test::skip("gnuplot is not installed (apt-get install gnuplot-nox): not run");
    return;
  }
  TempDir tmp;
  const std::string bad = tmp.file("bad.gp");
  std::ofstream(bad) << "plot sin(\n";
  CHECK(run_gnuplot(bad) != 0);
  CHECK(run_gnuplot(tmp.file("missing.gp")) != 0);
  CHECK(run_gnuplot(tmp.file("bad.gp")) > 0);  // it ran, and failed
  // A program that is not there: -1, nothing thrown.
  CHECK(roberta_regression::detail::run_program({"finetune-no-such-program"}, /*quiet=*/true) ==
        -1);
  // A fold whose data gnuplot cannot plot (no lr columns): no PNG reported.
  FoldResult empty = make_fold();
  empty.lr_columns.clear();
  for (auto& row : empty.lrs) row.clear();
  const auto drawn = plot_fold(tmp.file("plots"), "empty", empty, /*draw=*/true);
  CHECK(drawn == std::vector<std::string>{tmp.file("plots/curves_fold1.png")});
}

TEST_CASE("--plot: a folder name with a line break is refused before writing", "[plot]") {
  TempDir tmp;
  const std::string dir = tmp.file("plots\nsystem 'touch PWNED'\n");
  const std::string message =
      invalid_argument_message([&] { plot_fold(dir, "train", make_fold(), /*draw=*/false); });
  CHECK(contains(message, "contains a control character"));
  CHECK_FALSE(fs::exists(dir));
  // Without gnuplot (draw = false) the data and scripts are written all the same.
  const auto drawn = plot_fold(tmp.file("plots"), "train", make_fold(), /*draw=*/false);
  CHECK(drawn.empty());
  CHECK(fs::exists(tmp.file("plots/lr_fold1.gp")));
  CHECK(fs::exists(tmp.file("plots/curves_fold1.csv")));
}
