// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// Data parallelism on PyTorch's own distributed engine, c10d, as torchrun
// launches it. Nothing here is a transport or a launcher of our own:
//
//   Distributed::from_env  joins the process group that torchrun's variables
//               (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
//               describe, through c10d::TCPStore (or torchrun's own store)
//               and c10d::ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA,
//               with FINETUNE_WITH_NCCL). Without those variables it is a
//               single process: no c10d object exists, every call below is a
//               no-op or returns its input.
//   broadcast_module       rank 0's parameters and buffers on every rank.
//   all_reduce_gradients   the gradients summed over ranks in buckets of
//               flattened tensors (launched together, waited together),
//               then divided: call it after backward, before the optimizer
//               step (at the accumulation boundary with gradient
//               accumulation).
//   GradientReducer        the same sums, overlapped with backward: each
//               bucket is all-reduced as soon as backward has produced its
//               gradients (DDP's Reducer, hand-written on tensor hooks; the
//               reasons are in docs/distributed.md).
//   all_reduce_sum, broadcast_value, any, identical
//               metric sums, one agreed value, one agreed decision, and a
//               checksum comparison of replicas (SWA/EMA averages).
//   shard_range             which rows of a global batch a rank takes.
//
// A collective that fails (a rank was killed, the network broke, a rank hung
// past the timeout) throws DistributedError. Before it throws, the surviving
// ranks check in through the store for a few seconds, so the message names
// the ranks that did not answer: "rank 1 of 2 is lost".
//
// Needs c10d's headers, which both LibTorch builds ship, and gloo's headers,
// which neither ships (Debian: libgloo-dev); it links against LibTorch alone.
// Copy it along with compat.hpp.
#pragma once

#include <finetune/compat.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#ifdef FINETUNE_WITH_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace finetune {

// ===========================================================================
// Declarations
// ===========================================================================

/// Options of Distributed::from_env.
struct DistributedOptions {
  DistributedOptions() = default;
  /// How long joining the group, and each collective, may take before it
  /// fails with DistributedError (c10d's store and process-group timeout).
  /// PyTorch's default is 30 minutes; 5 minutes here, since a fine-tuning
  /// step that takes longer is not one that a survivor should wait for.
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::minutes(5);
  /// The most bytes of gradient flattened into one all-reduce (DDP's
  /// bucket_cap_mb, 25 MiB). At least one tensor goes into each bucket.
  TORCH_ARG(int64_t, bucket_bytes) = int64_t(25) << 20;
  /// How long the survivors of a failed collective wait for each other to
  /// check in before they name the ranks that did not (capped by timeout).
  TORCH_ARG(std::chrono::milliseconds, probe_window) = std::chrono::seconds(3);
  /// The address Gloo listens on (this host's address that the other ranks
  /// reach); empty: MASTER_ADDR when it is a loopback address, else this
  /// host's name, as PyTorch does.
  TORCH_ARG(std::string, gloo_hostname) = "";

 public:
  /// Throws std::invalid_argument naming the first bad option.
  void validate() const;
};

/// A collective or the join failed; what() names the lost ranks if any.
struct DistributedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The rows [first, second) of a global batch of `n` rows that `rank` of
/// `world` takes: contiguous, the first n % world ranks one row more. A last
/// partial batch of 13 rows on 2 ranks splits 7 + 6; a batch of 1 row on 2
/// ranks gives rank 1 none (it still joins the gradient all-reduce).
std::pair<int64_t, int64_t> shard_range(int64_t n, int64_t rank, int64_t world);

/// One process's membership of a data-parallel group (or of none).
class Distributed {
 public:
  /// Single process: rank 0 of 1, inactive.
  Distributed() = default;

  /// Joins the group described by torchrun's environment variables. None of
  /// RANK and WORLD_SIZE set: single process (inactive), `device` kept.
  /// Otherwise all of RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT must be set
  /// (LOCAL_RANK defaults to RANK); a missing or malformed one is a
  /// std::invalid_argument naming it. A CPU device joins through Gloo; a CUDA
  /// device through NCCL (needs FINETUNE_WITH_NCCL), on cuda:LOCAL_RANK for
  /// "cuda" and on the device given for "cuda:N".
  /// Failing to join within options.timeout throws DistributedError.
  static Distributed from_env(torch::Device device, DistributedOptions options = {});

  /// Whether this process is part of a c10d group (launched by torchrun),
  /// even of world size 1.
  bool active() const { return static_cast<bool>(backend_); }
  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_size_; }
  int64_t local_rank() const { return local_rank_; }
  /// The one rank that writes files: rank 0.
  bool is_writer() const { return rank_ == 0; }
  /// The device this rank computes on (cuda:LOCAL_RANK for NCCL).
  torch::Device device() const { return device_; }
  /// "gloo", "nccl" or "none".
  std::string backend_name() const;
  const DistributedOptions& options() const { return options_; }

  /// Copies rank 0's parameters and buffers into every rank's module.
  void broadcast_module(torch::nn::Module& module);
  /// Copies rank 0's values of `tensors` into every rank's, in place.
  void broadcast_(std::vector<torch::Tensor> tensors);

  /// Sums the gradients of `parameters` over the ranks and divides them by
  /// `divisor`. A parameter whose grad is undefined on every rank stays
  /// undefined; one whose grad is defined on some ranks only counts as zero
  /// where it is not. Inactive: only the division (none when divisor is 1).
  void all_reduce_gradients(const std::vector<torch::Tensor>& parameters, double divisor);
  /// The mean over ranks (divisor world_size()): what DDP does.
  void all_reduce_gradients(const std::vector<torch::Tensor>& parameters);
  /// Bytes all-reduced by the last all_reduce_gradients (0 when inactive).
  int64_t last_reduced_bytes() const { return last_reduced_bytes_; }

  /// The elementwise sum of `tensor` over ranks (a new tensor).
  torch::Tensor all_reduce_sum(const torch::Tensor& tensor);
  /// The elementwise sum of `values` over ranks, in float64.
  std::vector<double> all_reduce_sum(const std::vector<double>& values);
  /// Rank 0's `value`, on every rank, bit for bit.
  double broadcast_value(double value);
  /// True on every rank when `flag` is true on any rank.
  bool any(bool flag);
  /// Whether `tensors` hold the same bits on every rank: an integer checksum
  /// of each tensor's bit pattern (order-independent, so thread counts do not
  /// matter), compared with rank 0's. One pass over the tensors.
  bool identical(const std::vector<torch::Tensor>& tensors);
  /// Waits until every rank got here.
  void barrier();

 private:
  friend class GradientReducer;
  template <typename Fn>
  auto guarded(const std::string& what, Fn&& fn) -> decltype(fn());
  bool any(bool flag, const std::string& what);
  [[noreturn]] void fail(const std::string& what, const std::string& cause);
  torch::Tensor comm(torch::Tensor t) const;
  torch::Tensor max_over_ranks(const torch::Tensor& t);

  DistributedOptions options_;
  int64_t rank_ = 0;
  int64_t world_size_ = 1;
  int64_t local_rank_ = 0;
  torch::Device device_ = torch::kCPU;
  torch::Device comm_device_ = torch::kCPU;
  std::string master_;
  bool agent_store_ = false;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<compat::C10dBackend> backend_;
  std::string backend_name_ = "none";
  int64_t sequence_ = 0;
  int64_t last_reduced_bytes_ = 0;
  // NCCL only: the last copy of this membership releases the communicators
  // (PyTorch's destroy_process_group), unless a collective failed.
  struct Closer {
    c10::intrusive_ptr<compat::C10dBackend> backend;
    bool failed = false;
    ~Closer() {
      if (failed) return;
      try {
        compat::shutdown_backend(*backend);
      } catch (...) {  // the process ends anyway; nothing to report to
      }
    }
  };
  std::shared_ptr<Closer> closer_;
};

/// The gradient all-reduce overlapped with backward, as DDP does it: every
/// parameter that requires grad gets a hook; when backward has produced the
/// gradients of a whole bucket (buckets in reverse parameter order, which is
/// roughly the order backward produces them), the bucket is all-reduced while
/// backward goes on. Buckets are launched in the same order on every rank.
///
///   finetune::GradientReducer reducer(dist, model->parameters());
///   for (...) {                       // each optimizer step
///     optimizer.zero_grad();
///     reducer.prepare();              // before the backward that ends the step
///     loss.backward();
///     reducer.finish(/*divisor=*/1);  // instead of all_reduce_gradients
///     optimizer.step();
///   }
///
/// With gradient accumulation, call prepare() before the last micro-batch's
/// backward only: earlier micro-batches accumulate into .grad locally (DDP's
/// no_sync), and the last one's hooks reduce the accumulated sums.
/// The set of parameters that require grad is read at every prepare(); when
/// layers are unfrozen (or frozen), the buckets are rebuilt, identically on
/// every rank. The results equal all_reduce_gradients's: a parameter without
/// a gradient on every rank stays without one. Between prepare() and
/// finish(), call no other collective of `dist`. `dist` must outlive the
/// reducer. Single process (inactive `dist`): no hooks; finish() divides.
class GradientReducer {
 public:
  GradientReducer(Distributed& dist, std::vector<torch::Tensor> parameters);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// Arms the hooks for the next backward (the one that ends the step).
  /// Throws std::logic_error when the previous prepare() was not finished.
  void prepare();
  /// Launches what backward did not (buckets with a parameter that got no
  /// gradient: zeros there, or the gradient accumulated before), waits for
  /// every bucket and writes sum / divisor into .grad. Throws
  /// std::logic_error without prepare(), DistributedError when a collective
  /// fails.
  void finish(double divisor);
  /// finish(world_size): the mean over ranks.
  void finish();

  /// Bytes all-reduced by the last finish() (0 when inactive).
  int64_t last_reduced_bytes() const;
  /// Buckets of the last step and how many of them backward launched (the
  /// rest were launched by finish()).
  int64_t last_buckets() const;
  int64_t last_launched_in_backward() const;

 private:
  struct Bucket {
    std::vector<std::size_t> members;  // indices into parameters
    torch::Tensor flat;                // on the communication device
    int64_t bytes = 0;
    int64_t pending = 0;
    c10::intrusive_ptr<c10d::Work> work;
  };
  struct State {
    Distributed* dist = nullptr;
    std::vector<torch::Tensor> parameters;
    std::vector<bool> layout;  // requires_grad when the buckets were built
    std::vector<int64_t> bucket_of, offset_of;
    std::vector<Bucket> buckets;
    std::vector<char> ready;
    std::size_t next_launch = 0;
    bool armed = false;
    int64_t launched_in_backward = 0, reduced_bytes = 0;
    void rebuild(const std::vector<bool>& wants_grad);
    void arrived(std::size_t i, const torch::Tensor& grad);
    void launch_ready();
  };
  std::shared_ptr<State> state_;
  std::vector<std::pair<std::size_t, unsigned>> hooks_;  // (parameter, hook id)
  std::vector<char> hooked_;
};

// ===========================================================================
// Definitions
// ===========================================================================

namespace detail {

// The value of environment variable `name` as an integer in [min, max];
// nullopt when unset. Anything else: std::invalid_argument naming it.
inline c10::optional<int64_t> env_int(const char* name, int64_t min, int64_t max) {
  const char* text = std::getenv(name);
  if (text == nullptr) return c10::nullopt;
  const std::string s(text);
  std::size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (s.empty() || used != s.size() || value < min || value > max) {
    throw std::invalid_argument("finetune: environment variable " + std::string(name) + "='" + s +
                                "' is not an integer in [" + std::to_string(min) + ", " +
                                std::to_string(max) + "]");
  }
  return static_cast<int64_t>(value);
}

inline std::string env_text(const char* name) {
  const char* text = std::getenv(name);
  return text == nullptr ? std::string() : std::string(text);
}

inline std::string this_host_name() {
  char name[256] = {0};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

inline bool is_loopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

// Whether `next` opens a new bucket after one that holds `filled` bytes and
// starts with `first`: a bucket holds one device and dtype, and at most `cap`
// bytes unless it holds a single tensor. all_reduce_gradients and
// GradientReducer bucket alike.
inline bool starts_bucket(const torch::Tensor& first, int64_t filled, const torch::Tensor& next,
                          int64_t cap) {
  return filled + next.numel() * static_cast<int64_t>(next.element_size()) > cap ||
         first.device() != next.device() || first.scalar_type() != next.scalar_type();
}

// The signed integer dtype with the element size of `dtype` (bit patterns).
inline torch::Dtype same_size_integer(torch::Dtype dtype) {
  switch (c10::elementSize(dtype)) {
    case 1:
      return torch::kInt8;
    case 2:
      return torch::kInt16;
    case 4:
      return torch::kInt32;
    default:
      return torch::kInt64;
  }
}

}  // namespace detail

inline void DistributedOptions::validate() const {
  if (timeout().count() <= 0) {
    throw std::invalid_argument("finetune: DistributedOptions: timeout must be > 0 ms, got " +
                                std::to_string(timeout().count()));
  }
  if (bucket_bytes() < 1) {
    throw std::invalid_argument("finetune: DistributedOptions: bucket_bytes must be >= 1, got " +
                                std::to_string(bucket_bytes()));
  }
  if (probe_window().count() < 0) {
    throw std::invalid_argument("finetune: DistributedOptions: probe_window must be >= 0 ms");
  }
}

inline std::pair<int64_t, int64_t> shard_range(int64_t n, int64_t rank, int64_t world) {
  if (n < 0 || world < 1 || rank < 0 || rank >= world) {
    throw std::invalid_argument(
        "finetune: shard_range: need n >= 0 and 0 <= rank < world, got n=" + std::to_string(n) +
        " rank=" + std::to_string(rank) + " world=" + std::to_string(world));
  }
  const int64_t base = n / world, extra = n % world;
  const int64_t begin = rank * base + std::min(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

inline Distributed Distributed::from_env(torch::Device device, DistributedOptions options) {
  options.validate();
  Distributed d;
  d.options_ = options;
  d.device_ = device;
  const auto world = detail::env_int("WORLD_SIZE", 1, 1 << 20);
  const auto rank = detail::env_int("RANK", 0, (1 << 20) - 1);
  if (!world && !rank) return d;  // not launched by torchrun: one process
  if (!world) throw std::invalid_argument("finetune: RANK is set but WORLD_SIZE is not");
  if (!rank) throw std::invalid_argument("finetune: WORLD_SIZE is set but RANK is not");
  if (*rank >= *world) {
    throw std::invalid_argument("finetune: RANK=" + std::to_string(*rank) +
                                " is not below WORLD_SIZE=" + std::to_string(*world));
  }
  const std::string address = detail::env_text("MASTER_ADDR");
  if (address.empty())
    throw std::invalid_argument("finetune: WORLD_SIZE is set but MASTER_ADDR is not");
  const auto port = detail::env_int("MASTER_PORT", 1, 65535);
  if (!port) throw std::invalid_argument("finetune: WORLD_SIZE is set but MASTER_PORT is not");
  const auto local = detail::env_int("LOCAL_RANK", 0, (1 << 20) - 1);

  d.rank_ = *rank;
  d.world_size_ = *world;
  d.local_rank_ = local ? *local : *rank;
  d.master_ = address + ":" + std::to_string(*port);
  // torchrun's agent already serves a store at MASTER_ADDR:MASTER_PORT; the
  // workers are its clients, under a prefix per restart (as PyTorch's env://).
  d.agent_store_ = detail::env_text("TORCHELASTIC_USE_AGENT_STORE") == "True";

  const std::string joining = "joining the process group as rank " + std::to_string(d.rank_) +
                              " of " + std::to_string(d.world_size_) + " at " + d.master_;
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(*port);
    store_options.isServer = !d.agent_store_ && d.rank_ == 0;
    store_options.numWorkers =
        d.agent_store_ ? c10::nullopt : c10::optional<std::size_t>(d.world_size_);
    store_options.waitWorkers = !d.agent_store_;
    store_options.timeout = options.timeout();
    auto tcp = c10::make_intrusive<c10d::TCPStore>(address, store_options);
    const std::string attempt = detail::env_text("TORCHELASTIC_RESTART_COUNT");
    d.store_ = c10::make_intrusive<c10d::PrefixStore>(
        "finetune/attempt_" + (attempt.empty() ? std::string("0") : attempt), tcp);

    if (device.is_cuda()) {
#ifdef FINETUNE_WITH_NCCL
      // "cuda": one device per local rank, as torchrun users expect; an
      // explicit "cuda:N" is kept (several ranks on one device, if NCCL lets).
      d.device_ = device.has_index()
                      ? device
                      : torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(d.local_rank_));
      d.comm_device_ = d.device_;
      c10::cuda::set_device(d.device_.index());
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = options.timeout();
      d.backend_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          d.store_, static_cast<int>(d.rank_), static_cast<int>(d.world_size_), nccl_options);
      d.backend_name_ = "nccl";
      d.closer_ = std::make_shared<Closer>();
      d.closer_->backend = d.backend_;
#else
      throw std::invalid_argument(
          "finetune: a CUDA device under torchrun needs NCCL: compile with FINETUNE_WITH_NCCL "
          "(and nccl.h on the include path)");
#endif
    } else {
      std::string host = options.gloo_hostname();
      if (host.empty()) host = detail::is_loopback(address) ? address : detail::this_host_name();
      auto gloo_options = c10d::ProcessGroupGloo::Options::create();
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
      gloo_options->timeout = options.timeout();
      d.backend_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
          d.store_, static_cast<int>(d.rank_), static_cast<int>(d.world_size_), gloo_options);
      d.backend_name_ = "gloo";
    }
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::exception& e) {
    throw DistributedError("finetune: " + joining + " failed (timeout " +
                           std::to_string(options.timeout().count()) +
                           " ms): are all WORLD_SIZE ranks started, and is MASTER_ADDR:MASTER_PORT "
                           "reachable? c10d: " +
                           std::string(e.what()).substr(0, 400));
  }
  d.barrier();  // every rank is in: a wrong WORLD_SIZE fails here, not later
  return d;
}

inline std::string Distributed::backend_name() const { return backend_name_; }

inline torch::Tensor Distributed::comm(torch::Tensor t) const {
  return t.device() == comm_device_ ? t : t.to(comm_device_);
}

// The elementwise maximum of `t` over the ranks, on the host. Called inside
// guarded(): agreed flags, and which parameters have a gradient somewhere.
inline torch::Tensor Distributed::max_over_ranks(const torch::Tensor& t) {
  std::vector<at::Tensor> one{comm(t)};
  c10d::AllreduceOptions max;
  max.reduceOp = c10d::ReduceOp::MAX;
  backend_->allreduce(one, max)->wait();
  return one[0].cpu();
}

// Runs one collective; a failure becomes fail(), which names the lost ranks.
template <typename Fn>
auto Distributed::guarded(const std::string& what, Fn&& fn) -> decltype(fn()) {
  ++sequence_;
  try {
    return fn();
  } catch (const std::exception& e) {
    fail(what, e.what());
  }
}

inline void Distributed::fail(const std::string& what, const std::string& cause) {
  // Every survivor checks in under this collective's number, then waits a
  // little for the others: those that never check in are lost. If the store
  // itself is gone, its host is: rank 0, or torchrun's agent.
  if (closer_) closer_->failed = true;
  const std::string prefix = "lost/" + std::to_string(sequence_) + "/";
  std::string verdict;
  try {
    store_->setTimeout(std::chrono::milliseconds(1000));
    store_->set(prefix + std::to_string(rank_), std::vector<uint8_t>{1});
    const auto window = std::min(options_.probe_window(), options_.timeout());
    const auto deadline = std::chrono::steady_clock::now() + window;
    std::vector<int64_t> missing;
    while (true) {
      missing.clear();
      for (int64_t r = 0; r < world_size_; ++r) {
        if (r != rank_ && !store_->check({prefix + std::to_string(r)})) missing.push_back(r);
      }
      if (missing.empty() || std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (missing.empty()) {
      verdict =
          "every rank is still alive (a rank hung past the timeout, or the ranks called "
          "different collectives)";
    } else {
      verdict = missing.size() == 1 ? "rank " : "ranks ";
      for (std::size_t i = 0; i < missing.size(); ++i) {
        verdict += (i ? ", " : "") + std::to_string(missing[i]);
      }
      verdict += " of " + std::to_string(world_size_) + (missing.size() == 1 ? " is" : " are") +
                 " lost (no answer within " + std::to_string(window.count()) + " ms)";
    }
  } catch (const std::exception&) {
    verdict = agent_store_ ? "torchrun's agent (the store at " + master_ + ") is lost"
                           : "rank 0 of " + std::to_string(world_size_) + " (the store host at " +
                                 master_ + ") is lost";
  }
  throw DistributedError("finetune: " + what + " failed on rank " + std::to_string(rank_) + " of " +
                         std::to_string(world_size_) + ": " + verdict +
                         ". c10d: " + cause.substr(0, 300));
}

inline void Distributed::broadcast_(std::vector<torch::Tensor> tensors) {
  if (!active() || tensors.empty()) return;
  torch::NoGradGuard no_grad;
  guarded("broadcast", [&] {
    std::vector<torch::Tensor> staged;
    staged.reserve(tensors.size());
    for (const auto& t : tensors) staged.push_back(comm(t.contiguous()));
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& s : staged) {
      std::vector<at::Tensor> one{s};
      works.push_back(backend_->broadcast(one));
    }
    for (auto& w : works) w->wait();
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      if (!staged[i].is_same(tensors[i])) tensors[i].copy_(staged[i]);
    }
  });
}

inline void Distributed::broadcast_module(torch::nn::Module& module) {
  std::vector<torch::Tensor> all = module.parameters(true);
  for (const auto& b : module.buffers(true)) all.push_back(b);
  broadcast_(std::move(all));
}

inline void Distributed::all_reduce_gradients(const std::vector<torch::Tensor>& parameters,
                                              double divisor) {
  if (!(divisor > 0)) {
    throw std::invalid_argument("finetune: all_reduce_gradients: divisor must be > 0");
  }
  torch::NoGradGuard no_grad;
  last_reduced_bytes_ = 0;
  if (!active()) {
    if (divisor != 1.0) {
      for (const auto& p : parameters) {
        if (p.grad().defined()) p.grad().div_(divisor);
      }
    }
    return;
  }
  guarded("all_reduce_gradients", [&] {
    // Which parameters have a gradient on some rank (one tiny all-reduce), so
    // that a parameter no rank touched stays undefined, as without DDP.
    auto flags = torch::zeros({static_cast<int64_t>(parameters.size())}, torch::kInt32);
    auto* f = flags.data_ptr<int32_t>();
    for (std::size_t i = 0; i < parameters.size(); ++i)
      f[i] = parameters[i].grad().defined() ? 1 : 0;
    flags = max_over_ranks(flags);
    f = flags.data_ptr<int32_t>();
    // Buckets of same-device, same-dtype gradients up to bucket_bytes.
    struct Bucket {
      std::vector<torch::Tensor> grads;
      int64_t bytes = 0;
      torch::Tensor flat;
    };
    std::vector<Bucket> buckets;
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      if (!f[i]) continue;
      const auto& p = parameters[i];
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      auto g = p.grad();
      const int64_t bytes = g.numel() * static_cast<int64_t>(g.element_size());
      if (buckets.empty() ||
          detail::starts_bucket(buckets.back().grads.front(), buckets.back().bytes, g,
                                options_.bucket_bytes())) {
        buckets.emplace_back();
      }
      buckets.back().grads.push_back(g);
      buckets.back().bytes += bytes;
    }
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& b : buckets) {
      std::vector<torch::Tensor> flat_parts;
      for (const auto& g : b.grads) flat_parts.push_back(g.reshape({-1}));
      b.flat = comm(torch::cat(flat_parts));
      std::vector<at::Tensor> one{b.flat};
      works.push_back(backend_->allreduce(one));
      last_reduced_bytes_ += b.bytes;
    }
    for (std::size_t k = 0; k < buckets.size(); ++k) {
      works[k]->wait();
      auto& b = buckets[k];
      if (divisor != 1.0) b.flat.div_(divisor);
      int64_t offset = 0;
      for (auto& g : b.grads) {
        const int64_t n = g.numel();
        g.copy_(b.flat.narrow(0, offset, n).view_as(g));
        offset += n;
      }
    }
  });
}

inline void Distributed::all_reduce_gradients(const std::vector<torch::Tensor>& parameters) {
  all_reduce_gradients(parameters, static_cast<double>(world_size_));
}

inline torch::Tensor Distributed::all_reduce_sum(const torch::Tensor& tensor) {
  if (!active()) return tensor;
  return guarded("all_reduce_sum", [&] {
    std::vector<at::Tensor> one{comm(tensor.detach().clone().contiguous())};
    backend_->allreduce(one)->wait();
    return one[0].to(tensor.device());
  });
}

inline std::vector<double> Distributed::all_reduce_sum(const std::vector<double>& values) {
  if (!active() || values.empty()) return values;
  auto t = torch::tensor(values, torch::TensorOptions().dtype(torch::kFloat64));
  auto sum = all_reduce_sum(t).cpu();
  const double* s = sum.data_ptr<double>();
  return std::vector<double>(s, s + values.size());
}

inline double Distributed::broadcast_value(double value) {
  if (!active()) return value;
  auto t = torch::full({1}, value, torch::TensorOptions().dtype(torch::kFloat64));
  broadcast_({t});
  return t.item<double>();
}

inline bool Distributed::any(bool flag) { return any(flag, "any"); }

inline bool Distributed::any(bool flag, const std::string& what) {
  if (!active()) return flag;
  return guarded(what, [&] {
    return max_over_ranks(torch::full({1}, flag ? 1 : 0, torch::kInt32)).item<int32_t>() != 0;
  });
}

inline bool Distributed::identical(const std::vector<torch::Tensor>& tensors) {
  if (!active()) return true;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> sums;
  sums.reserve(tensors.size());
  for (const auto& t : tensors) {
    auto bits = t.detach().contiguous().view(detail::same_size_integer(t.scalar_type()));
    sums.push_back(bits.sum(torch::kInt64).reshape({1}).to(comm_device_));
  }
  auto mine = sums.empty() ? torch::zeros({1}, torch::kInt64) : torch::cat(sums);
  auto theirs = mine.clone();
  broadcast_({theirs});
  return !any(!torch::equal(mine, theirs));
}

inline void Distributed::barrier() {
  if (!active()) return;
  // An all-reduce rather than c10d's barrier: it fails the same way as every
  // other collective, under the same timeout, on both LibTorch builds.
  any(false, "barrier");
}

inline GradientReducer::GradientReducer(Distributed& dist, std::vector<torch::Tensor> parameters)
    : state_(std::make_shared<State>()) {
  state_->dist = &dist;
  state_->parameters = std::move(parameters);
  const std::size_t n = state_->parameters.size();
  state_->bucket_of.assign(n, -1);
  state_->offset_of.assign(n, 0);
  state_->ready.assign(n, 0);
  hooked_.assign(n, 0);
}

inline GradientReducer::~GradientReducer() {
  for (const auto& [i, id] : hooks_) {
    try {
      state_->parameters[i].remove_hook(id);
    } catch (...) {  // the hook only sees a weak reference to the state anyway
    }
  }
}

inline void GradientReducer::State::rebuild(const std::vector<bool>& wants_grad) {
  layout = wants_grad;
  buckets.clear();
  std::fill(bucket_of.begin(), bucket_of.end(), -1);
  const int64_t cap = dist->options().bucket_bytes();
  // Reverse order: the last layers' gradients come first in backward.
  for (std::size_t k = parameters.size(); k-- > 0;) {
    if (!wants_grad[k]) continue;
    const auto& p = parameters[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    if (buckets.empty() || detail::starts_bucket(parameters[buckets.back().members.front()],
                                                 buckets.back().bytes, p, cap)) {
      buckets.emplace_back();
    }
    auto& b = buckets.back();
    bucket_of[k] = static_cast<int64_t>(buckets.size()) - 1;
    offset_of[k] = b.bytes / static_cast<int64_t>(p.element_size());
    b.members.push_back(k);
    b.bytes += bytes;
  }
  for (auto& b : buckets) {
    const auto& p = parameters[b.members.front()];
    b.flat = torch::empty({b.bytes / static_cast<int64_t>(p.element_size())},
                          p.options().device(dist->comm_device_).requires_grad(false));
  }
}

inline void GradientReducer::State::launch_ready() {
  while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
    auto& b = buckets[next_launch++];
    std::vector<at::Tensor> one{b.flat};
    b.work = dist->backend_->allreduce(one);
    if (armed) ++launched_in_backward;
  }
}

// A hook: parameter i's gradient from this backward (before it is added to
// .grad). What the bucket reduces is .grad + grad: the micro-batches
// accumulated before this one included.
inline void GradientReducer::State::arrived(std::size_t i, const torch::Tensor& grad) {
  if (!armed || bucket_of[i] < 0) return;
  if (ready[i]) {
    throw std::logic_error(
        "finetune: GradientReducer: a gradient arrived twice between prepare() and finish(); "
        "call prepare() before the step's last backward only");
  }
  torch::NoGradGuard no_grad;
  auto& b = buckets[static_cast<std::size_t>(bucket_of[i])];
  const auto& accumulated = parameters[i].grad();
  auto slot = b.flat.narrow(0, offset_of[i], parameters[i].numel());
  if (accumulated.defined()) {
    slot.copy_((accumulated + grad).reshape({-1}));
  } else {
    slot.copy_(grad.reshape({-1}));
  }
  ready[i] = 1;
  if (--b.pending == 0) launch_ready();
}

inline void GradientReducer::prepare() {
  auto& s = *state_;
  if (!s.dist->active()) return;
  if (s.armed) {
    throw std::logic_error("finetune: GradientReducer::prepare() called twice without finish()");
  }
  std::vector<bool> wants_grad(s.parameters.size());
  for (std::size_t i = 0; i < wants_grad.size(); ++i)
    wants_grad[i] = s.parameters[i].requires_grad();
  if (wants_grad != s.layout) s.rebuild(wants_grad);
  for (std::size_t i = 0; i < wants_grad.size(); ++i) {
    if (!wants_grad[i] || hooked_[i]) continue;
    std::weak_ptr<State> weak = state_;
    const unsigned id = s.parameters[i].register_hook([weak, i](torch::Tensor grad) {
      if (auto state = weak.lock()) state->arrived(i, grad);
    });
    hooks_.emplace_back(i, id);
    hooked_[i] = 1;
  }
  std::fill(s.ready.begin(), s.ready.end(), 0);
  for (auto& b : s.buckets) {
    b.pending = static_cast<int64_t>(b.members.size());
    b.work.reset();
  }
  s.next_launch = 0;
  s.launched_in_backward = 0;
  s.armed = true;
}

inline void GradientReducer::finish(double divisor) {
  auto& s = *state_;
  if (!(divisor > 0)) {
    throw std::invalid_argument("finetune: GradientReducer::finish: divisor must be > 0");
  }
  s.reduced_bytes = 0;
  if (!s.dist->active()) {  // one process: only the division
    s.dist->all_reduce_gradients(s.parameters, divisor);
    return;
  }
  torch::NoGradGuard no_grad;
  if (!s.armed) throw std::logic_error("finetune: GradientReducer::finish() without prepare()");
  s.armed = false;
  s.dist->guarded("the gradient all-reduce", [&] {
    // Parameters whose hook did not fire: their accumulated gradient, or zeros.
    auto flags = torch::zeros({static_cast<int64_t>(s.parameters.size())}, torch::kInt32);
    auto* f = flags.data_ptr<int32_t>();
    for (std::size_t k = 0; k < s.buckets.size(); ++k) {
      auto& b = s.buckets[k];
      for (auto i : b.members) {
        const auto& g = s.parameters[i].grad();
        f[i] = s.ready[i] || g.defined() ? 1 : 0;
        if (s.ready[i]) continue;
        auto slot = b.flat.narrow(0, s.offset_of[i], s.parameters[i].numel());
        if (g.defined()) {
          slot.copy_(g.reshape({-1}));
        } else {
          slot.zero_();
        }
        s.ready[i] = 1;
        --b.pending;
      }
      s.reduced_bytes += b.bytes;
    }
    s.launch_ready();
    // Which parameters have a gradient on some rank: the others stay undefined.
    flags = s.dist->max_over_ranks(flags);
    f = flags.data_ptr<int32_t>();
    for (auto& b : s.buckets) {
      b.work->wait();
      b.work.reset();
      if (divisor != 1.0) b.flat.div_(divisor);
      for (auto i : b.members) {
        if (!f[i]) continue;
        const auto& p = s.parameters[i];
        auto reduced = b.flat.narrow(0, s.offset_of[i], p.numel()).view(p.sizes());
        if (p.grad().defined()) {
          p.mutable_grad().copy_(reduced);
        } else {
          p.mutable_grad() = torch::empty_like(p).copy_(reduced);
        }
      }
    }
  });
}

inline void GradientReducer::finish() { finish(static_cast<double>(state_->dist->world_size())); }

inline int64_t GradientReducer::last_reduced_bytes() const { return state_->reduced_bytes; }
inline int64_t GradientReducer::last_buckets() const {
  return static_cast<int64_t>(state_->buckets.size());
}
inline int64_t GradientReducer::last_launched_in_backward() const {
  return state_->launched_in_backward;
}

}  // namespace finetune
