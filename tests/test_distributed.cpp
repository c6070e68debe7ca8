// finetune::Distributed on c10d's Gloo over 127.0.0.1: real processes of
// tests/support/distributed_worker.cpp, started with torchrun's variables as
// torchrun starts them, one intra-op thread each, every wait bounded.
#include <finetune/distributed.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "child_process.hpp"
#include "golden.hpp"
#include "test_config.hpp"

namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Environment variables set for the scope of one launch (spawn() passes the
// parent's environment).
struct ScopedEnv {
  std::map<std::string, std::string> saved;
  std::vector<std::string> unset_after;
  void set(const std::string& name, const std::string& value) {
    if (!saved.count(name) &&
        std::find(unset_after.begin(), unset_after.end(), name) == unset_after.end()) {
      if (const char* old = std::getenv(name.c_str()))
        saved[name] = old;
      else
        unset_after.push_back(name);
    }
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  void unset(const std::string& name) {
    if (const char* old = std::getenv(name.c_str())) saved.emplace(name, old);
    ::unsetenv(name.c_str());
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved) ::setenv(name.c_str(), value.c_str(), 1);
    for (const auto& name : unset_after) ::unsetenv(name.c_str());
  }
};

struct Rank {
  int status = -1;
  std::string log;
};

struct Launch {
  std::vector<Rank> ranks;
  double seconds = 0;
};

// Starts `world` ranks of the worker (or, with world 0, one process without
// torchrun's variables) and waits for all of them, `limit` at most.
Launch launch(int world, const std::vector<std::string>& args, const std::string& tag,
              seconds limit = seconds(60), int declared_world = 0, int timeout_ms = 20000) {
  const fs::path dir =
      fs::temp_directory_path() / ("finetune_test_distributed_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  ScopedEnv env;
  env.set("OMP_NUM_THREADS", "1");
  env.set("TEST_DIST_TIMEOUT_MS", std::to_string(timeout_ms));
  for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                        "TORCHELASTIC_USE_AGENT_STORE"}) {
    env.unset(v);
  }
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
  const auto start = std::chrono::steady_clock::now();
  const int processes = std::max(world, 1);
  const std::string port = std::to_string(finetune_test::free_port());
  for (int r = 0; r < processes; ++r) {
    if (world > 0) {
      env.set("RANK", std::to_string(r));
      env.set("LOCAL_RANK", std::to_string(r));
      env.set("WORLD_SIZE", std::to_string(declared_world ? declared_world : world));
      env.set("MASTER_ADDR", "127.0.0.1");
      env.set("MASTER_PORT", port);
    }
    logs.push_back((dir / (tag + "_rank" + std::to_string(r) + ".log")).string());
    fs::remove(logs.back());
    pids.push_back(finetune_test::spawn(FINETUNE_DIST_WORKER, args, logs.back()));
  }
  Launch result;
  for (int r = 0; r < processes; ++r) {
    Rank rank;
    const auto left =
        limit - std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
    rank.status = finetune_test::wait_for(pids[r], std::max(left, milliseconds(1)));
    if (rank.status == -1) {
      ::kill(pids[r], SIGKILL);
      finetune_test::wait_for(pids[r], seconds(5));
    }
    rank.log = read_text(logs[r]);
    result.ranks.push_back(rank);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

std::string describe(const Launch& l) {
  std::string s;
  for (std::size_t r = 0; r < l.ranks.size(); ++r) {
    s += "rank " + std::to_string(r) + " status " + std::to_string(l.ranks[r].status) + ":\n" +
         l.ranks[r].log + "\n";
  }
  return s;
}

std::vector<torch::Tensor> load_parameters(const std::string& path) {
  std::vector<torch::Tensor> p;
  torch::load(p, path);
  return p;
}

double max_abs_difference(const std::vector<torch::Tensor>& a,
                          const std::vector<torch::Tensor>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  }
  return worst;
}

}  // namespace

TEST_CASE("shard_range splits a global batch as numpy.array_split does", "[distributed]") {
  const auto golden = finetune_test::load_golden_json("distributed_shards.json");
  int checked = 0;
  for (const auto& c : golden["cases"]) {
    const int64_t n = c["n"], world = c["world"];
    for (int64_t r = 0; r < world; ++r) {
      const auto range = finetune::shard_range(n, r, world);
      INFO("n=" << n << " world=" << world << " rank=" << r);
      CHECK(range.first == c["ranges"][r][0].get<int64_t>());
      CHECK(range.second == c["ranges"][r][1].get<int64_t>());
      ++checked;
    }
  }
  CHECK(checked > 100);
  CHECK_THROWS_AS(finetune::shard_range(4, 2, 2), std::invalid_argument);
  CHECK_THROWS_AS(finetune::shard_range(-1, 0, 2), std::invalid_argument);
  CHECK_THROWS_AS(finetune::shard_range(4, 0, 0), std::invalid_argument);
}

TEST_CASE("from_env: one process without torchrun's variables, clear errors with some",
          "[distributed]") {
  ScopedEnv env;
  for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"})
    env.unset(v);
  auto single = finetune::Distributed::from_env(torch::kCPU);
  CHECK_FALSE(single.active());
  CHECK(single.rank() == 0);
  CHECK(single.world_size() == 1);
  CHECK(single.is_writer());
  CHECK(single.backend_name() == "none");
  // Every call is a no-op or returns its input.
  auto p = torch::ones({2}, torch::requires_grad());
  (p * 3).sum().backward();
  single.all_reduce_gradients({p});
  CHECK(p.grad()[0].item<double>() == 3.0);
  single.all_reduce_gradients({p}, 2.0);
  CHECK(p.grad()[0].item<double>() == 1.5);
  CHECK(single.all_reduce_sum(std::vector<double>{1.5, 2.5}) == std::vector<double>{1.5, 2.5});
  CHECK(single.broadcast_value(4.25) == 4.25);
  CHECK(single.any(true));
  CHECK(single.identical({p}));
  CHECK(single.last_reduced_bytes() == 0);

  auto message_of = [] {
    try {
      finetune::Distributed::from_env(torch::kCPU);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  env.set("RANK", "0");
  CHECK_THAT(message_of(), Catch::Matchers::Contains("WORLD_SIZE is not"));
  env.set("WORLD_SIZE", "2");
  CHECK_THAT(message_of(), Catch::Matchers::Contains("MASTER_ADDR"));
  env.set("MASTER_ADDR", "127.0.0.1");
  CHECK_THAT(message_of(), Catch::Matchers::Contains("MASTER_PORT"));
  env.set("MASTER_PORT", "70000");
  CHECK_THAT(message_of(), Catch::Matchers::Contains("MASTER_PORT='70000'"));
  env.set("MASTER_PORT", "29500");
  env.set("RANK", "2");
  CHECK_THAT(message_of(), Catch::Matchers::Contains("RANK=2 is not below WORLD_SIZE=2"));
  env.set("RANK", "one");
  CHECK_THAT(message_of(), Catch::Matchers::Contains("RANK='one'"));
  env.unset("RANK");
  CHECK_THAT(message_of(), Catch::Matchers::Contains("RANK is not"));
  CHECK_THROWS_AS(finetune::DistributedOptions().timeout(milliseconds(0)).validate(),
                  std::invalid_argument);
  CHECK_THROWS_AS(finetune::DistributedOptions().bucket_bytes(0).validate(), std::invalid_argument);
}

// docs/distributed.md's loop (tests/support/distributed_worker.cpp).
TEST_CASE("2 and 3 ranks train, average and evaluate exactly as one process", "[distributed]") {
  const fs::path dir =
      fs::temp_directory_path() / ("finetune_dist_train_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string single = (dir / "single").string();
  fs::create_directories(single);
  // Global batches 16, 16, 13 (7 + 6 rows on 2 ranks), 16, 16, 1 (a rank
  // with none), 16, 16; 37 validation rows (19 + 18).
  const auto one = launch(0, {"train", single}, "single");
  INFO(describe(one));
  REQUIRE(one.ranks[0].status == 0);
  const auto stopped_line = [](const std::string& log) {
    const auto at = log.find("stopped ");
    return at == std::string::npos ? std::string() : log.substr(at, log.find('\n', at) - at);
  };
  const std::string single_stop = stopped_line(one.ranks[0].log);
  REQUIRE(single_stop.rfind("stopped 1 at step", 0) == 0);  // the scenario stops early
  const auto single_history = read_text(single + "/history.csv");
  REQUIRE_FALSE(single_history.empty());
  for (int world : {2, 3}) {
    const std::string out = (dir / ("world" + std::to_string(world))).string();
    fs::create_directories(out);
    const auto run = launch(world, {"train", out}, "train" + std::to_string(world));
    INFO(describe(run));
    std::string first_stop;
    for (const auto& rank : run.ranks) {
      REQUIRE(rank.status == 0);
      // Different seeds until the broadcast; the same weights and SWA
      // averages on every rank afterwards (bit patterns compared).
      CHECK(rank.log.find("identical 0\nidentical 1\naverages identical 1\n") != std::string::npos);
      // The same decisions on every rank, bit for bit.
      const std::string stop = stopped_line(rank.log);
      if (first_stop.empty()) first_stop = stop;
      CHECK(stop == first_stop);
    }
    // Only the writing rank wrote, and only what it should.
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(out)) files.push_back(e.path().filename().string());
    std::sort(files.begin(), files.end());
    CHECK(files == std::vector<std::string>{"averages.pt", "best.pt", "final.pt", "history.csv"});
    // As one process: the stopping step, the number of evaluations, and the
    // weights, averages and every evaluation to 1e-6.
    CHECK(first_stop.substr(0, first_stop.find(", best")) ==
          single_stop.substr(0, single_stop.find(", best")));
    const double worst = max_abs_difference(load_parameters(single + "/final.pt"),
                                            load_parameters(out + "/final.pt"));
    const double worst_avg = max_abs_difference(load_parameters(single + "/averages.pt"),
                                                load_parameters(out + "/averages.pt"));
    INFO("world " << world << ": largest differences from one process " << worst << ", "
                  << worst_avg);
    CHECK(worst < 1e-6);
    CHECK(worst_avg < 1e-6);
    std::istringstream a(single_history), b(read_text(out + "/history.csv"));
    std::string la, lb;
    int rows = 0;
    while (std::getline(a, la)) {
      REQUIRE(std::getline(b, lb));
      if (rows++ == 0) {
        CHECK(la == lb);  // the header
        continue;
      }
      // epoch,batch,step,weights,metric,best,improved
      auto field = [](const std::string& line, int k) {
        std::istringstream in(line);
        std::string f;
        for (int i = 0; i <= k; ++i) std::getline(in, f, ',');
        return f;
      };
      for (int k : {0, 1, 2, 3, 6}) CHECK(field(la, k) == field(lb, k));
      CHECK(std::abs(std::stod(field(la, 4)) - std::stod(field(lb, 4))) < 1e-6);
    }
    CHECK_FALSE(std::getline(b, lb));
    CHECK(rows > 3);
  }
  fs::remove_all(dir);
}

// The all-reduce overlapped with backward (GradientReducer), in docs/distributed.md.
TEST_CASE("GradientReducer: overlapped with backward, 2 and 3 ranks train as one process",
          "[distributed]") {
  const fs::path dir =
      fs::temp_directory_path() / ("finetune_dist_overlap_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  for (const std::string mode : {"plain", "accumulate", "unfreeze"}) {
    const std::string single = (dir / (mode + "_single")).string();
    fs::create_directories(single);
    const auto one = launch(0, {"overlap", single, mode}, mode + "_single");
    INFO(describe(one));
    REQUIRE(one.ranks[0].status == 0);
    for (int world : {2, 3}) {
      const std::string out = (dir / (mode + std::to_string(world))).string();
      fs::create_directories(out);
      const auto run = launch(world, {"overlap", out, mode}, mode + std::to_string(world));
      INFO(describe(run));
      for (const auto& rank : run.ranks) {
        REQUIRE(rank.status == 0);
        CHECK(rank.log.find("identical 1\n") != std::string::npos);
      }
      // bucket_bytes 64: {the head's bias and weight: 4 + 32 bytes}, {the
      // first layer's bias: 32}, {its weight: 192}; with rows in the step's
      // last backward, backward launched all three.
      if (mode == "plain")
        CHECK_THAT(run.ranks[0].log, Catch::Matchers::Contains("launched 3 of 3"));
      const double worst = max_abs_difference(load_parameters(single + "/final.pt"),
                                              load_parameters(out + "/final.pt"));
      INFO(mode << ", world " << world << ": largest difference from one process " << worst);
      // Rounding only: the ranks' partial sums are added in another order,
      // and 40 AdamW steps amplify it (seen: up to 1.1e-6 on LibTorch 1.13).
      // A real mistake is far larger (dropping the accumulated micro-batch:
      // 0.8).
      CHECK(worst < 1e-5);
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("metric sums, rank 0's value and agreed flags", "[distributed]") {
  const auto run = launch(2, {"values"}, "values");
  INFO(describe(run));
  for (const auto& rank : run.ranks) {
    REQUIRE(rank.status == 0);
    std::ostringstream sums;
    sums.precision(17);
    sums << "sums 2 1 " << (0.1 * 1 + 0.1 * 2);
    CHECK(rank.log.find(sums.str()) != std::string::npos);
    CHECK(rank.log.find("broadcast 10\n") != std::string::npos);
    CHECK(rank.log.find("any_last 1 any_none 0") != std::string::npos);
    CHECK(rank.log.find("tensor 3 3") != std::string::npos);
  }
}

TEST_CASE("gradients: untouched parameters stay undefined, one rank's count as zero elsewhere",
          "[distributed]") {
  const auto run = launch(2, {"grads"}, "grads");
  INFO(describe(run));
  for (const auto& rank : run.ranks) {
    REQUIRE(rank.status == 0);
    // used: 1 + 2; rank0_only: 5 + 0; unused: undefined; 5 floats reduced.
    CHECK(rank.log.find("used 3 rank0_only 5 unused_defined 0 bytes 20") != std::string::npos);
    // GradientReducer: the same; a parameter that does not require grad
    // keeps its gradient and is not sent (3 + 2 + 2 floats).
    CHECK(rank.log.find("overlap used 3 rank0_only 5 unused_defined 0 frozen 7 bytes 28") !=
          std::string::npos);
    CHECK_THAT(rank.log, Catch::Matchers::Contains("refused: finetune: GradientReducer::finish() "
                                                   "without prepare()"));
    CHECK_THAT(rank.log, Catch::Matchers::Contains("refused: finetune: GradientReducer::prepare() "
                                                   "called twice without finish()"));
  }
}

TEST_CASE("identical() sees a one-element difference between replicas", "[distributed]") {
  const auto run = launch(2, {"mismatch"}, "mismatch");
  INFO(describe(run));
  for (const auto& rank : run.ranks) {
    REQUIRE(rank.status == 0);
    CHECK(rank.log.find("identical 1\nidentical 0\n") != std::string::npos);
  }
}

TEST_CASE("a killed rank: the survivors fail fast and name it", "[distributed]") {
  for (int victim : {1, 0}) {
    const auto run = launch(2, {"die", std::to_string(victim)}, "die" + std::to_string(victim),
                            seconds(60), 0, 20000);
    INFO(describe(run));
    const auto& victim_rank = run.ranks[victim];
    const auto& survivor = run.ranks[1 - victim];
    CHECK(victim_rank.status == 9);
    CHECK(survivor.status == 3);
    CHECK_THAT(survivor.log, Catch::Matchers::Contains("rank " + std::to_string(victim) + " of 2"));
    CHECK_THAT(survivor.log, Catch::Matchers::Contains("lost"));
    // Well inside the 20 s collective timeout: a dead peer's socket closes.
    CHECK(run.seconds < 15);
  }
}

TEST_CASE("a wrong WORLD_SIZE or an unreachable master fails within the timeout", "[distributed]") {
  // 2 processes told there are 3: the store waits for a third, then gives up.
  const auto wrong = launch(2, {"values"}, "wrong_world", seconds(60), 3, 5000);
  INFO(describe(wrong));
  for (const auto& rank : wrong.ranks) {
    CHECK(rank.status == 4);
    CHECK_THAT(rank.log, Catch::Matchers::Contains("joining the process group"));
    CHECK_THAT(rank.log, Catch::Matchers::Contains("of 3 at 127.0.0.1"));
  }
  // c10d's TCPStore client retries its connect once on LibTorch 2.x: at most
  // twice the timeout (docs/distributed.md).
  CHECK(wrong.seconds < 2 * 5 + 5);

  // Rank 1 alone: nobody serves MASTER_PORT.
  const fs::path dir = fs::temp_directory_path();
  ScopedEnv env;
  env.set("TEST_DIST_TIMEOUT_MS", "4000");
  env.set("RANK", "1");
  env.set("LOCAL_RANK", "1");
  env.set("WORLD_SIZE", "2");
  env.set("MASTER_ADDR", "127.0.0.1");
  env.set("MASTER_PORT", std::to_string(finetune_test::free_port()));
  const std::string log =
      (dir / ("finetune_unreachable_" + std::to_string(::getpid()) + ".log")).string();
  fs::remove(log);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = finetune_test::spawn(FINETUNE_DIST_WORKER, {"values"}, log);
  const int status = finetune_test::wait_for(pid, seconds(30));
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (status == -1) ::kill(pid, SIGKILL);
  const std::string text = read_text(log);
  INFO(text);
  CHECK(status == 4);
  CHECK_THAT(text, Catch::Matchers::Contains("is MASTER_ADDR:MASTER_PORT reachable"));
  CHECK(took < 2 * 4 + 5);
  fs::remove(log);
}

TEST_CASE("docs/distributed.md shows the loop that these tests run", "[distributed]") {
  // The page's C++ block equals the code between the worker's markers
  // (indentation aside).
  auto lines_between = [](const std::string& text, const std::string& begin,
                          const std::string& end) {
    std::vector<std::string> lines;
    const auto from = text.find(begin);
    const auto to = text.find(end, from == std::string::npos ? 0 : from);
    if (from == std::string::npos || to == std::string::npos) return lines;
    std::istringstream in(text.substr(from + begin.size(), to - from - begin.size()));
    for (std::string line; std::getline(in, line);) {
      const auto first = line.find_first_not_of(' ');
      if (first != std::string::npos) lines.push_back(line.substr(first));
    }
    return lines;
  };
  const std::string source = std::string(finetune_test::kSourceDir);
  const std::string worker = read_text(source + "/tests/support/distributed_worker.cpp");
  const std::string docs = read_text(source + "/docs/distributed.md");
  for (const std::string name : {"", " overlap"}) {
    const auto code = lines_between(worker, "// --- docs/distributed.md" + name + ": begin ---",
                                    "// --- docs/distributed.md" + name + ": end ---");
    const std::string loop = name.empty() ? "the loop" : "the overlapped loop";
    const auto page = lines_between(docs, "<!-- " + loop + ": begin -->\n```cpp",
                                    "```\n<!-- " + loop + ": end -->");
    INFO("the page's block \"" << loop << "\"");
    REQUIRE(code.size() > 15);
    CHECK(page == code);
  }
}
