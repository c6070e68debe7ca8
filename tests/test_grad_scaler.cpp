// GradScaler against torch.amp.GradScaler("cpu") (tests/reference/ref_grad_scaler.py):
// the same gradients with injected inf/NaN/overflow give the same skipped
// steps, scale and growth tracker, bit for bit, and the same weights.
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "finetune/grad_scaler.hpp"
#include "finetune/training_state.hpp"
#include "golden.hpp"
#include "test_helpers.hpp"

namespace {

using nlohmann::json;

float decode(const json& v) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "nan") return std::numeric_limits<float>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<float>::infinity();
    if (s == "-inf") return -std::numeric_limits<float>::infinity();
    throw std::runtime_error("golden: unknown value " + s);
  }
  return static_cast<float>(v.get<double>());
}

torch::Tensor tensor_of(const json& values, const json& shape, const torch::Device& device) {
  std::vector<float> data;
  for (const auto& v : values) data.push_back(decode(v));
  return torch::tensor(data).reshape(shape.get<std::vector<int64_t>>()).to(device);
}

// Bit-for-bit equality of float32 values (NaN equal to NaN).
bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  if (!a.sizes().equals(b.sizes())) return false;
  const auto x = a.detach().to(torch::kCPU).contiguous().view(torch::kInt);
  const auto y = b.detach().to(torch::kCPU).contiguous().view(torch::kInt);
  return torch::equal(x, y);
}

double max_relative(const torch::Tensor& a, const torch::Tensor& b) {
  const auto x = a.detach().to(torch::kCPU, torch::kDouble);
  const auto y = b.detach().to(torch::kCPU, torch::kDouble);
  return ((x - y).abs() / y.abs().clamp_min(1e-30)).max().item<double>();
}

// One scenario's run: parameters, optimizers and the scaler under test.
struct Run {
  std::vector<std::string> names;
  std::map<std::string, torch::Tensor> params;
  std::vector<std::unique_ptr<torch::optim::Optimizer>> optimizers;
  std::vector<std::string> kinds;
  finetune::GradScaler scaler;

  Run(const json& golden, const torch::Device& device) : scaler(options_of(golden)) {
    for (const auto& [name, shape] : golden["shapes"].items()) {
      names.push_back(name);
      params[name] = tensor_of(golden["initial"][name], shape, device).set_requires_grad(true);
    }
    for (const auto& spec : golden["optimizers"]) {
      const std::string kind = spec["kind"];
      kinds.push_back(kind);
      std::vector<torch::optim::OptimizerParamGroup> groups;
      for (const auto& g : spec["groups"]) {
        std::vector<torch::Tensor> ps;
        for (const auto& n : g["names"]) ps.push_back(params.at(n.get<std::string>()));
        const double lr = g["lr"];
        if (kind == "sgd") {
          groups.emplace_back(ps, std::make_unique<torch::optim::SGDOptions>(
                                      torch::optim::SGDOptions(lr)
                                          .momentum(spec["momentum"])
                                          .weight_decay(spec["weight_decay"])));
        } else {
          groups.emplace_back(
              ps, std::make_unique<torch::optim::AdamWOptions>(
                      torch::optim::AdamWOptions(lr).weight_decay(spec["weight_decay"])));
        }
      }
      if (kind == "sgd") {
        optimizers.push_back(
            std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(0.1)));
      } else {
        optimizers.push_back(std::make_unique<torch::optim::AdamW>(groups));
      }
    }
  }

  static finetune::GradScalerOptions options_of(const json& golden) {
    const json& o = golden["options"];
    return finetune::GradScalerOptions()
        .init_scale(o["init_scale"])
        .growth_factor(o["growth_factor"])
        .backoff_factor(o["backoff_factor"])
        .growth_interval(o["growth_interval"]);
  }

  // One iteration of the Python loop; returns each optimizer's verdict.
  std::vector<bool> step(const json& golden, size_t i, const torch::Device& device) {
    const json& s = golden["steps"][i];
    for (auto& o : optimizers) o->zero_grad();
    torch::Tensor loss;
    for (const auto& n : names) {
      const auto x = tensor_of(s["x"][n], golden["shapes"][n], device);
      const auto term = (params[n] * x).sum();
      loss = loss.defined() ? loss + term : term;
    }
    scaler.scale(loss).backward();
    std::vector<bool> taken;
    for (size_t k = 0; k < optimizers.size(); ++k) {
      if (golden["explicit_unscale"].get<bool>() && k == 0 && i % 2 == 1)
        scaler.unscale_(*optimizers[k]);
      taken.push_back(scaler.step(*optimizers[k]));
      CHECK(scaler.last_step_skipped() == !taken.back());
    }
    scaler.update();
    return taken;
  }

  std::string save() const {
    torch::serialize::OutputArchive archive;
    scaler.save(archive);
    for (size_t k = 0; k < optimizers.size(); ++k) {
      torch::serialize::OutputArchive sub;
      optimizers[k]->save(sub);
      archive.write("optimizer_" + std::to_string(k), sub);
    }
    std::ostringstream out;
    archive.save_to(out);
    return out.str();
  }

  void load(const std::string& bytes) {
    std::istringstream in(bytes);
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    scaler.load(archive);
    for (size_t k = 0; k < optimizers.size(); ++k) {
      torch::serialize::InputArchive sub;
      archive.read("optimizer_" + std::to_string(k), sub);
      optimizers[k]->load(sub);
    }
  }
};

// Replays a golden; `resume_at` >= 0: after that step, everything is saved,
// rebuilt fresh (scaler with default options) and loaded before going on.
void replay(const std::string& file, const torch::Device& device, int resume_at = -1) {
  const json golden = finetune_test::load_golden_json(file);
  auto run = std::make_unique<Run>(golden, device);
  const size_t steps = golden["steps"].size();
  int skipped_steps = 0;
  double worst_adamw = 0.0;
  for (size_t i = 0; i < steps; ++i) {
    INFO(file << " step " << i);
    const json& s = golden["steps"][i];
    std::map<std::string, torch::Tensor> before;
    for (const auto& [n, p] : run->params) before[n] = p.detach().clone();
    const std::vector<bool> taken = run->step(golden, i, device);
    for (size_t k = 0; k < taken.size(); ++k) {
      CHECK(taken[k] == !s["skipped"][k].get<bool>());
      if (!taken[k]) ++skipped_steps;
    }
    // Bit for bit: the scale is a float32 value, the golden holds it exactly.
    CHECK(run->scaler.get_scale() == s["scale"].get<double>());
    CHECK(run->scaler.growth_tracker() == s["growth_tracker"].get<int64_t>());
    for (size_t k = 0; k < run->optimizers.size(); ++k) {
      for (const auto& g : golden["optimizers"][k]["groups"]) {
        for (const auto& name : g["names"]) {
          const std::string n = name;
          INFO("parameter " << n << " (" << run->kinds[k] << ")");
          const auto expected = tensor_of(s["weights"][n], golden["shapes"][n], device);
          if (!taken[k]) CHECK(same_bits(run->params[n], before[n]));  // untouched
          if (run->kinds[k] == "sgd") {
            // LibTorch's SGD is Python's formula: the same bits.
            CHECK(same_bits(run->params[n], expected));
          } else {
            // LibTorch's AdamW updates the first moment as mul_ + add_, Python
            // as lerp_: a few float32 ulps apart.
            const double rel = max_relative(run->params[n], expected);
            worst_adamw = std::max(worst_adamw, rel);
            CHECK(rel < 1e-5);
          }
        }
      }
    }
    if (static_cast<int>(i) == resume_at) {
      const std::string bytes = run->save();
      auto fresh = std::make_unique<Run>(golden, device);
      fresh->scaler = finetune::GradScaler();  // the options come from the state
      for (const auto& [n, p] : run->params) {
        torch::NoGradGuard no_grad;
        fresh->params[n].copy_(p);
      }
      fresh->load(bytes);
      CHECK(fresh->scaler.get_scale() == run->scaler.get_scale());
      CHECK(fresh->scaler.growth_tracker() == run->scaler.growth_tracker());
      CHECK(fresh->scaler.options().growth_interval() ==
            golden["options"]["growth_interval"].get<int64_t>());
      run = std::move(fresh);
    }
  }
  CHECK(skipped_steps > 0);  // the goldens inject overflows: the test sees skips
  if (worst_adamw > 0.0) WARN("AdamW weights: worst relative difference " << worst_adamw);
}

}  // namespace

TEST_CASE("GradScaler: SGD with two groups, growth and backoff, equals torch.amp.GradScaler",
          "[grad_scaler][golden]") {
  replay("grad_scaler_sgd.json", torch::kCPU);
}

TEST_CASE("GradScaler: AdamW and SGD sharing a scaler, odd factors, explicit unscale_",
          "[grad_scaler][golden]") {
  replay("grad_scaler_two_optimizers.json", torch::kCPU);
}

TEST_CASE("GradScaler: saved and loaded mid-run continues identically", "[grad_scaler][resume]") {
  SECTION("after a growth") { replay("grad_scaler_sgd.json", torch::kCPU, 7); }
  SECTION("after a backoff, tracker 0") { replay("grad_scaler_sgd.json", torch::kCPU, 3); }
  SECTION("mid-interval, two optimizers") {
    replay("grad_scaler_two_optimizers.json", torch::kCPU, 8);
  }
}

TEST_CASE("GradScaler: bad options are refused", "[grad_scaler][bad_input]") {
  using finetune::GradScaler;
  using finetune::GradScalerOptions;
  using finetune_test::HasSubstring;
  REQUIRE_THROWS_WITH(GradScaler(GradScalerOptions().init_scale(0.0)), HasSubstring("init_scale"));
  REQUIRE_THROWS_WITH(GradScaler(GradScalerOptions().init_scale(-1.0)), HasSubstring("init_scale"));
  REQUIRE_THROWS_WITH(GradScaler(GradScalerOptions().init_scale(std::nan(""))),
                      HasSubstring("init_scale"));
  REQUIRE_THROWS_WITH(GradScaler(GradScalerOptions().growth_factor(1.0)),
                      HasSubstring("growth_factor"));
  REQUIRE_THROWS_WITH(GradScaler(GradScalerOptions().backoff_factor(1.0)),
                      HasSubstring("backoff_factor"));
  REQUIRE_THROWS_WITH(GradScaler(GradScalerOptions().backoff_factor(0.0)),
                      HasSubstring("backoff_factor"));
  REQUIRE_THROWS_WITH(GradScaler(GradScalerOptions().growth_interval(0)),
                      HasSubstring("growth_interval"));
  REQUIRE_THROWS_AS(GradScaler(GradScalerOptions().growth_interval(-3)), std::invalid_argument);
  // Disabled: the options are not used, and not checked.
  REQUIRE_NOTHROW(GradScaler(GradScalerOptions().init_scale(0.0).enabled(false)));
}

TEST_CASE("GradScaler: misuse is refused", "[grad_scaler][bad_input]") {
  auto w = torch::ones({3}).set_requires_grad(true);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.1));
  finetune::GradScaler scaler;
  using finetune_test::HasSubstring;
  REQUIRE_THROWS_WITH(scaler.step(sgd), HasSubstring("before any scale()"));
  REQUIRE_THROWS_AS(scaler.update(), std::logic_error);
  scaler.scale((w * 2).sum()).backward();
  scaler.unscale_(sgd);
  REQUIRE_THROWS_WITH(scaler.unscale_(sgd), HasSubstring("already been called"));
  CHECK(scaler.step(sgd));
  REQUIRE_THROWS_WITH(scaler.step(sgd), HasSubstring("already been called"));
  REQUIRE_THROWS_WITH(scaler.unscale_(sgd), HasSubstring("after step()"));
  torch::serialize::OutputArchive mid;
  REQUIRE_THROWS_AS(scaler.save(mid), std::logic_error);
  scaler.update();
  REQUIRE_THROWS_WITH(scaler.update(), HasSubstring("no unscale_() or step()"));
  REQUIRE_THROWS_AS(scaler.update(0.0), std::invalid_argument);

  // float16 gradients: the master weights must be float32.
  auto h = torch::ones({2}, torch::kHalf).set_requires_grad(true);
  torch::optim::SGD half_sgd({h}, torch::optim::SGDOptions(0.1));
  h.mutable_grad() = torch::ones({2}, torch::kHalf);
  REQUIRE_THROWS_WITH(scaler.unscale_(half_sgd), HasSubstring("float16 gradient"));

  // No gradient at all for this optimizer.
  auto v = torch::ones({2}).set_requires_grad(true);
  torch::optim::SGD idle({v}, torch::optim::SGDOptions(0.1));
  REQUIRE_THROWS_WITH(scaler.step(idle), HasSubstring("no gradients"));
}

TEST_CASE("GradScaler: load refuses a bad state and changes nothing", "[grad_scaler][bad_input]") {
  auto w = torch::ones({3}).set_requires_grad(true);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.1));
  finetune::GradScaler scaler(finetune::GradScalerOptions().init_scale(8.0).growth_interval(5));
  scaler.scale(w.sum()).backward();
  scaler.step(sgd);
  scaler.update();
  auto state_of = [](const finetune::GradScaler& s) {
    torch::serialize::OutputArchive a;
    s.save(a);
    std::ostringstream out;
    a.save_to(out);
    return out.str();
  };
  auto archive_of = [](const std::string& bytes) {
    std::istringstream in(bytes);
    auto a = std::make_unique<torch::serialize::InputArchive>();
    a->load_from(in);
    return a;
  };
  using finetune_test::HasSubstring;
  {  // a state without the scale
    torch::serialize::OutputArchive a;
    a.write("grad_scaler_enabled", torch::full({}, 1, torch::kLong));
    std::ostringstream out;
    a.save_to(out);
    REQUIRE_THROWS_WITH(scaler.load(*archive_of(out.str())), HasSubstring("grad_scaler_"));
  }
  {  // from a disabled scaler
    finetune::GradScaler off(finetune::GradScalerOptions().enabled(false));
    REQUIRE_THROWS_WITH(scaler.load(*archive_of(state_of(off))), HasSubstring("disabled"));
  }
  {  // a tracker beyond the interval
    finetune::GradScaler other(finetune::GradScalerOptions().growth_interval(2));
    torch::serialize::OutputArchive a;
    other.save(a);
    a.write("grad_scaler_growth_tracker", torch::full({}, 7, torch::kLong));
    std::ostringstream out;
    a.save_to(out);
    REQUIRE_THROWS_WITH(scaler.load(*archive_of(out.str())), HasSubstring("growth_tracker"));
  }
  CHECK(scaler.get_scale() == 8.0);
  CHECK(scaler.growth_tracker() == 1);
  CHECK(scaler.options().growth_interval() == 5);
  // torch::save / torch::load work through operator<< / >>.
  std::ostringstream saved;
  torch::save(scaler, saved);
  finetune::GradScaler loaded;
  std::istringstream in(saved.str());
  torch::load(loaded, in);
  CHECK(loaded.get_scale() == 8.0);
  CHECK(loaded.growth_tracker() == 1);
  CHECK(loaded.options().growth_interval() == 5);
}

TEST_CASE("GradScaler: disabled, it is a plain optimizer step", "[grad_scaler]") {
  auto w = torch::ones({3}).set_requires_grad(true);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.5));
  finetune::GradScaler scaler(finetune::GradScalerOptions().enabled(false));
  const auto loss = (w * torch::tensor({1.0f, 2.0f, 3.0f})).sum();
  CHECK(scaler.scale(loss).is_same(loss));
  loss.backward();
  scaler.unscale_(sgd);  // nothing
  CHECK(same_bits(w.grad(), torch::tensor({1.0f, 2.0f, 3.0f})));
  CHECK(scaler.step(sgd));
  scaler.update();
  CHECK(same_bits(w.detach(), torch::tensor({0.5f, 0.0f, -0.5f})));
  CHECK(scaler.get_scale() == 1.0);
}

TEST_CASE("check_autocast_supported: what this LibTorch cannot run is refused up front",
          "[grad_scaler][bad_input]") {
  REQUIRE_NOTHROW(finetune::check_autocast_supported(torch::kCPU, torch::kFloat));
  REQUIRE_THROWS_AS(finetune::check_autocast_supported(torch::kCPU, torch::kDouble),
                    std::invalid_argument);
  // bfloat16 on CPU: LibTorch's CPU autocast, on both builds.
  REQUIRE_NOTHROW(finetune::check_autocast_supported(torch::kCPU, torch::kBFloat16));
  // float16 on CPU: refused exactly when an fp16 matrix product under CPU
  // autocast does not come out in fp16 (LibTorch 1.13: no fp16 CPU kernels).
  bool half_cpu_works = true;
  try {
    finetune::compat::AutocastGuard autocast(torch::kCPU, torch::kHalf);
    half_cpu_works =
        torch::mm(torch::ones({2, 2}), torch::ones({2, 2})).scalar_type() == torch::kHalf;
  } catch (const std::exception&) {
    half_cpu_works = false;
  }
  INFO("LibTorch " << finetune::compat::torch_version() << ", fp16 CPU autocast "
                   << (half_cpu_works ? "works" : "does not work"));
  if (half_cpu_works) {
    CHECK_NOTHROW(finetune::check_autocast_supported(torch::kCPU, torch::kHalf));
  } else {
    CHECK_THROWS_WITH(finetune::check_autocast_supported(torch::kCPU, torch::kHalf),
                      finetune_test::HasSubstring("not supported by this LibTorch"));
  }
  if (!torch::cuda::is_available()) {
    CHECK_THROWS_WITH(finetune::check_autocast_supported(torch::kCUDA, torch::kHalf),
                      finetune_test::HasSubstring("no CUDA device"));
  }
  // The guard puts autocast back as it was.
  CHECK_FALSE(finetune::compat::AutocastGuard::is_enabled(torch::kCPU));
}

TEST_CASE("GradScaler on CUDA: the golden replays bit for bit, fp16 autocast with fp32 weights",
          "[grad_scaler][cuda]") {
  if (!torch::cuda::is_available()) {
    finetune_test::skip("no CUDA device");
    return;
  }
  replay("grad_scaler_sgd.json", torch::kCUDA);
  replay("grad_scaler_two_optimizers.json", torch::kCUDA, 8);
  // fp16 under autocast, fp32 master weights: a loss that overflows fp16 once
  // scaled is skipped and backs the scale off; the weights stay float32.
  auto w = torch::full({4, 4}, 1.0f, torch::kCUDA).set_requires_grad(true);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(1e-3));
  finetune::GradScaler scaler;
  const auto x = torch::full({4, 4}, 1000.0f, torch::kCUDA);
  torch::Tensor loss;
  {
    finetune::compat::AutocastGuard autocast(torch::kCUDA, torch::kHalf);
    const auto y = torch::mm(x, w);
    CHECK(y.scalar_type() == torch::kHalf);
    loss = y.sum().to(torch::kFloat);
  }
  scaler.scale(loss).backward();
  CHECK(w.grad().scalar_type() == torch::kFloat);
  const bool taken = scaler.step(sgd);
  scaler.update();
  // The scaled gradient (65536 and more) is beyond fp16's largest value, 65504.
  CHECK_FALSE(taken);
  CHECK(scaler.get_scale() == 32768.0);
  CHECK(torch::equal(w.detach(), torch::ones({4, 4}, torch::kCUDA)));
}

TEST_CASE("GradScaler: a part of TrainingState, saved and restored with the run",
          "[grad_scaler][resume]") {
  finetune_test::TempDir dir;
  const std::string path = dir.path + "/state.pt";
  auto w = torch::ones({3}).set_requires_grad(true);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.1));
  finetune::GradScaler scaler(finetune::GradScalerOptions().init_scale(1024.0).growth_interval(4));
  finetune::TrainingState state(finetune::TrainingStateOptions().global_generators(false));
  state.add("optimizer", sgd).add("scaler", scaler);
  for (int i = 0; i < 3; ++i) {  // one overflow, then two clean steps
    const float x = i == 0 ? std::numeric_limits<float>::infinity() : 1.0f;
    scaler.scale((w * x).sum()).backward();
    state.optimizer_step(scaler.step(sgd));
    scaler.update();
    sgd.zero_grad();
  }
  REQUIRE(scaler.get_scale() == 512.0);
  REQUIRE(scaler.growth_tracker() == 2);
  state.save(path);

  finetune::GradScaler resumed(finetune::GradScalerOptions().growth_interval(4));
  finetune::TrainingState again(finetune::TrainingStateOptions().global_generators(false));
  again.add("optimizer", sgd).add("scaler", resumed);
  again.load(path);
  CHECK(resumed.get_scale() == 512.0);
  CHECK(resumed.growth_tracker() == 2);
  CHECK(again.position().skipped_steps == 1);
  CHECK(again.position().optimizer_step == 2);
}
