// The example's write paths (issue #16): results.json, the table's JSON and
// Markdown, recipe.json, config.json and safetensors checkpoints all go
// through finetune::atomic_write_text. A full disk (for real: a file size
// limit in a forked child) throws an error naming the file and leaves the old
// file whole; SIGKILL at random moments while writing leaves every file old
// or new, never torn. A control writer that writes in place is caught torn by
// the same check, so the check can fail.
#include <torch/torch.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "child_process.hpp"
#include "commands/cmd_train.hpp"
#include "model/roberta_config.hpp"
#include "model/safetensors.hpp"
#include "test_helpers.hpp"

using namespace roberta_regression;
namespace fs = std::filesystem;
using finetune_test::contains;
using finetune_test::kill_while_writing;
using finetune_test::KillReport;
using finetune_test::TempDir;
using finetune_test::what_under_file_size_limit;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> temporaries_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.find(".tmp") != std::string::npos) names.push_back(name);
  }
  return names;
}

// results.json of version k: about 40 KB (the time goes to fsync, inside the
// write, more than to making the text, outside it).
nlohmann::json results_of(int64_t k) {
  nlohmann::json folds = nlohmann::json::array();
  for (int64_t i = 0; i < 500; ++i) folds.push_back({{"fold", i}, {"best_rmse", k + i * 1e-3}});
  return {{"version", k}, {"mean", 0.5}, {"folds", folds}};
}

// The version whose exact text `path` holds, or -1.
int64_t results_version(const std::string& path) {
  const std::string text = read_text(path);
  try {
    const int64_t k = nlohmann::json::parse(text).at("version").get<int64_t>();
    return text == results_of(k).dump(2) + "\n" ? k : -1;
  } catch (const std::exception&) {
    return -1;
  }
}

TrainSettings table_settings() {
  TrainSettings s;
  s.data = "data.csv";
  s.model_dir = "model";
  return s;
}

// A table of version k: its header names k, 30 rows of 5 folds.
TableResult table_of(int64_t k) {
  TableResult t;
  t.header = "version " + std::to_string(k);
  for (int64_t r = 0; r < 30; ++r) {
    TableRowResult row;
    row.number = r + 1;
    row.technique = "technique " + std::to_string(r) + " of version " + std::to_string(k);
    row.rates = "rates";
    for (int64_t f = 0; f < 5; ++f) {
      FoldResult fold;
      fold.fold = f;
      fold.best_rmse = 0.5 + 1e-4 * static_cast<double>(k % 1000 + f);
      row.folds.push_back(fold);
    }
    t.rows.push_back(row);
  }
  return t;
}

int64_t version_in_first_line(const std::string& text, const std::string& before) {
  const size_t at = text.find(before);
  if (at == std::string::npos) return -1;
  try {
    return std::stoll(text.substr(at + before.size(), 20));
  } catch (const std::exception&) {
    return -1;
  }
}

int64_t table_json_version(const std::string& path) {
  const std::string text = read_text(path);
  const int64_t k = version_in_first_line(text, "\"header\": \"version ");
  if (k < 0) return -1;
  return text == table_json(table_of(k), table_settings()).dump(2) + "\n" ? k : -1;
}

int64_t table_md_version(const std::string& path) {
  const std::string text = read_text(path);
  const int64_t k = text.rfind("version ", 0) == 0 ? version_in_first_line(text, "version ") : -1;
  if (k < 0) return -1;
  return text == markdown_table(table_of(k)) ? k : -1;
}

// Checkpoints: 1 MiB of floats, one of two sets (made once, in the parent: no
// LibTorch work after fork()), version k holds set k % 2 and k in its metadata.
const std::vector<NamedTensors>& checkpoint_sets() {
  static const std::vector<NamedTensors> sets = {
      {{"weight", torch::full({512, 512}, 1.0f)}, {"bias", torch::arange(1024, torch::kFloat)}},
      {{"weight", torch::full({512, 512}, 2.0f)}, {"bias", -torch::arange(1024, torch::kFloat)}}};
  return sets;
}

void write_checkpoint(const std::string& path, int64_t k) {
  write_safetensors(path, checkpoint_sets()[static_cast<size_t>(k % 2)],
                    {{"format", "pt"}, {"version", std::to_string(k)}});
}

int64_t safetensors_version(const std::string& path) {
  try {
    const SafetensorsFile file = read_safetensors(path);
    const int64_t k = std::stoll(file.metadata.at("version"));
    return read_text(path) ==
                   serialize_safetensors(checkpoint_sets()[static_cast<size_t>(k % 2)],
                                         {{"format", "pt"}, {"version", std::to_string(k)}})
               ? k
               : -1;
  } catch (const std::exception&) {
    return -1;
  }
}

void require_clean(const KillReport& report, int min_mid_write) {
  INFO(report.kills << " kills, " << report.mid_write << " inside a write, " << report.acknowledged
                    << " complete writes acknowledged");
  for (const auto& failure : report.failures) FAIL_CHECK(failure);
  REQUIRE(report.failures.empty());
  // The kills did land inside writes: the check above was exercised.
  REQUIRE(report.mid_write >= min_mid_write);
}

constexpr double kSecondsPerWriter = 2.5;
constexpr int kMinKills = 20;
constexpr int kMaxDelayUs = 30000;

}  // namespace

TEST_CASE("a full disk leaves each of the example's files whole and names it",
          "[roberta][writes]") {
  TempDir dir;
  const rlim_t limit = 4096;  // smaller than every new file below
  auto expect_intact = [&](const std::string& path, const std::string& what) {
    INFO(path << ": " << what);
    CHECK(contains(what, path));
    CHECK(contains(what, std::strerror(EFBIG)));
    CHECK(temporaries_in(dir.path).empty());
  };

  SECTION("results.json") {
    const std::string path = dir.file("results.json");
    write_results_json(path, {{"version", 1}});
    const std::string before = read_text(path);
    const std::string what =
        what_under_file_size_limit(limit, [&] { write_results_json(path, results_of(2)); });
    expect_intact(path, what);
    CHECK(read_text(path) == before);
    CHECK(results_version(path) == -1);  // still the small version 1
    CHECK(nlohmann::json::parse(before).at("version") == 1);
  }
  SECTION("table.json and table.md") {
    const std::string json = dir.file("table.json");
    const std::string md = dir.file("table.md");
    TableResult small;
    small.header = "version 1";
    write_table_files(json, small, table_settings());
    const std::string json_before = read_text(json), md_before = read_text(md);
    const std::string what = what_under_file_size_limit(
        limit, [&] { write_table_files(json, table_of(2), table_settings()); });
    expect_intact(json, what);
    CHECK(read_text(json) == json_before);
    CHECK(read_text(md) == md_before);
  }
  SECTION("config.json (save_pretrained, recipe.json: the same writer)") {
    const std::string path = dir.file("config.json");
    RobertaConfig small;
    small.save(path);
    const std::string before = read_text(path);
    RobertaConfig big;
    big.hidden_act = std::string(8192, 'x');
    const std::string what = what_under_file_size_limit(limit, [&] { big.save(path); });
    expect_intact(path, what);
    CHECK(read_text(path) == before);
  }
  SECTION("safetensors checkpoint") {
    const std::string path = dir.file("best.safetensors");
    write_safetensors(path, {{"w", torch::zeros({2})}}, {{"format", "pt"}});
    const std::string before = read_text(path);
    checkpoint_sets();  // made before fork()
    const std::string what = what_under_file_size_limit(limit, [&] { write_checkpoint(path, 3); });
    expect_intact(path, what);
    CHECK(read_text(path) == before);
  }
}

TEST_CASE("SIGKILL while writing leaves results.json old or new, never torn",
          "[roberta][writes][kill]") {
  TempDir dir;
  const std::string path = dir.file("results.json");
  const auto report = kill_while_writing(
      dir.path, {path}, [&](int64_t k) { write_results_json(path, results_of(k)); },
      results_version, kSecondsPerWriter, kMinKills, kMaxDelayUs, 16001);
  require_clean(report, 3);
}

TEST_CASE("SIGKILL while writing leaves table.json and table.md old or new, never torn",
          "[roberta][writes][kill]") {
  TempDir dir;
  const std::string json = dir.file("table.json");
  const std::string md = dir.file("table.md");
  const TrainSettings base = table_settings();
  const auto report = kill_while_writing(
      dir.path, {json, md}, [&](int64_t k) { write_table_files(json, table_of(k), base); },
      [&](const std::string& file) {
        return file == json ? table_json_version(file) : table_md_version(file);
      },
      kSecondsPerWriter, kMinKills, kMaxDelayUs, 16002);
  require_clean(report, 3);
}

TEST_CASE("SIGKILL while writing leaves a safetensors checkpoint old or new, never torn",
          "[roberta][writes][kill]") {
  TempDir dir;
  const std::string path = dir.file("best.safetensors");
  checkpoint_sets();  // made before fork()
  const auto report = kill_while_writing(
      dir.path, {path}, [&](int64_t k) { write_checkpoint(path, k); }, safetensors_version,
      kSecondsPerWriter, kMinKills, kMaxDelayUs, 16003);
  require_clean(report, 3);
}

TEST_CASE("the kill check catches a writer that writes in place", "[roberta][writes][kill]") {
  TempDir dir;
  const std::string path = dir.file("results.json");
  const auto report = kill_while_writing(
      dir.path, {path},
      [&](int64_t k) {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << results_of(k).dump(2) << '\n';
      },
      results_version, 1.0, 10, kMaxDelayUs, 16004);
  INFO(report.kills << " kills");
  CHECK_FALSE(report.failures.empty());
}
