// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// PeriodicEvaluator: frequent evaluation within epochs, best checkpoints that
// survive a crash, early stopping ("Advanced Techniques for Fine-tuning
// Transformers", section "Frequent Evaluation"; the schedule is that of the
// article's notebook train-roberta-advanced.ipynb).
//
// Your loop calls step() once per optimizer step taken and end_epoch() when an
// epoch's data runs out; the evaluator decides when to call your evaluate()
// callable, keeps the best metric, writes the best
// checkpoint atomically, appends one history row per evaluation and tells the
// loop when to stop. POSIX only (open/fsync/rename).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/serialize.h>
#include <torch/types.h>

#include "finetune/compat.hpp"

namespace finetune {

// ---------------------------------------------------------------------------
// Declarations
// ---------------------------------------------------------------------------

/// Writes `path` so that, whatever happens (exception, crash, SIGKILL, full
/// disk, power loss after return), `path` holds either its previous contents
/// or the complete new contents, never a torn or short file.
///
/// `writer(tmp)` writes the new contents to `tmp`, a temporary file created
/// empty and exclusively (mkstemp) in the same folder as `<path>.tmp-XXXXXX`,
/// a name no other writer, process, host or container can hold at the same
/// time. That file is fsynced, renamed over `path`, and the folder is fsynced
/// so that the rename itself is durable. The new file gets the permissions a
/// plain open() would give it (0666 less the umask).
///
/// The writer must report its own write errors by throwing: a
/// `std::ofstream` does not throw, so check it after closing it, or write
/// text with atomic_write_text instead, which checks every write. Beware
/// `torch::save(x, path)`: when a write fails (a full disk) LibTorch throws
/// from a destructor and the process ends; serialize into a
/// `std::ostringstream` (`torch::save(x, stream)`) and pass `stream.str()` to
/// atomic_write_text instead (PeriodicEvaluator::module_saver does that).
///
/// @param path   Final file name.
/// @param writer Writes a complete file to the path it is given, e.g.
///               `[&](const std::string& p) { torch::save(model, p); }`.
///               A writer that leaves the temporary file empty is an error.
/// @throws std::invalid_argument if `path` is empty or `writer` is empty.
/// @throws FolderSyncError if everything but the final folder fsync
///         succeeded: `path` already holds the new contents.
/// @throws std::runtime_error naming the file on any other I/O error (the
///         temporary file is removed; `path` is untouched). Exceptions of
///         `writer` propagate after the temporary file is removed.
inline void atomic_write_file(const std::string& path,
                              const std::function<void(const std::string&)>& writer);

/// atomic_write_file for contents already in memory: writes `contents` to the
/// temporary file, checking every write() (a full disk, a quota or a file
/// size limit is a std::runtime_error naming `path`, and `path` keeps its
/// old contents), then fsync, rename and folder fsync as above.
/// @throws std::invalid_argument if `path` is empty.
/// @throws FolderSyncError, std::runtime_error as atomic_write_file.
inline void atomic_write_text(const std::string& path, const std::string& contents);

/// Thrown by atomic_write_file / atomic_write_text when the new file is
/// already in place under its final name but the fsync of its folder failed:
/// readers see the new contents, but after a power loss the folder may still
/// point at the old file. PeriodicEvaluator treats the save as done (its
/// state follows the file on disk) and throws this at the end of step().
struct FolderSyncError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Whether lower (RMSE, loss) or higher (accuracy) metric values are better.
enum class MetricMode { min, max };

/// Format of the history file: CSV with a header line, JSON lines, or none.
enum class HistoryFormat { csv, jsonl, none };

/// Options of PeriodicEvaluator; chained setters, e.g.
/// `PeriodicEvaluatorOptions("ckpt").eval_every(10).patience(50)`.
struct PeriodicEvaluatorOptions {
  PeriodicEvaluatorOptions() = default;
  /// @param checkpoint_dir Folder of the checkpoints and history; must exist.
  explicit PeriodicEvaluatorOptions(std::string checkpoint_dir)
      : checkpoint_dir_(std::move(checkpoint_dir)) {}

  /// Evaluate at every optimizer step i of an epoch (0-based) with
  /// i % eval_every == 0, and at the epoch's end (article: 10, with one
  /// step per batch). Must be >= 1.
  TORCH_ARG(int64_t, eval_every) = 10;
  /// First epoch (as your loop numbers them; the notebook counts from 0) that
  /// is evaluated every eval_every batches; earlier epochs are evaluated once,
  /// at their last batch (article: 2, i.e. the third epoch). Must be >= 0.
  TORCH_ARG(int64_t, eval_every_from_epoch) = 2;
  /// Stop when more than `patience` consecutive evaluations brought no
  /// improvement; the count carries across epochs (article: 50). >= 0.
  TORCH_ARG(int64_t, patience) = 50;
  /// MetricMode::min (default, RMSE) or MetricMode::max.
  TORCH_ARG(MetricMode, mode) = MetricMode::min;
  /// Folder of checkpoints and history (default "."); checked to exist and be
  /// writable when the evaluator is constructed.
  TORCH_ARG(std::string, checkpoint_dir) = ".";
  /// File name of the best checkpoint in checkpoint_dir (default "best.pt").
  TORCH_ARG(std::string, checkpoint_name) = "best.pt";
  /// File name of the best averaged-weights (SWA/EMA) checkpoint
  /// (default "best_swa.pt").
  TORCH_ARG(std::string, averaged_checkpoint_name) = "best_swa.pt";
  /// History format (default csv); HistoryFormat::none writes no history.
  TORCH_ARG(HistoryFormat, history_format) = HistoryFormat::csv;
  /// File name of the history in checkpoint_dir; empty (default) means
  /// "history.csv" or "history.jsonl" after history_format.
  TORCH_ARG(std::string, history_name) = "";
  /// Name of the metric in log lines (default "RMSE").
  TORCH_ARG(std::string, metric_name) = "RMSE";
  /// Text put before every evaluation log line (default none; the notebook
  /// prints "FOLD: 0, ").
  TORCH_ARG(std::string, log_prefix) = "";
  /// true (default): this evaluator writes the checkpoints and the history.
  /// false: it takes the same decisions (best, patience, stop) and keeps the
  /// same state, history counters included, but creates, opens and checks no
  /// file: for every rank but the writing one of a data-parallel run
  /// (docs/distributed.md), which must be fed the same metric values.
  TORCH_ARG(bool, writer) = true;

 public:
  /// Throws std::invalid_argument naming the first bad option.
  void validate() const;
};

/// One evaluation, as written to the history.
struct EvaluationRecord {
  int64_t epoch = 0;  ///< epoch as passed to step()
  int64_t batch = 0;  ///< optimizer step in the epoch (0-based; the batch with one step per batch)
  int64_t step = 0;   ///< global step: optimizer steps so far, this one included
  std::string weights;    ///< "raw" or "averaged"
  double metric = 0.0;    ///< the value evaluate() returned
  double best = 0.0;      ///< best value of these weights so far, this one included
  bool improved = false;  ///< strictly better than the best before (checkpoint saved)
};

/// Frequent evaluation with best checkpoints and early stopping, plugged into
/// your training loop:
///
/// ```
/// finetune::PeriodicEvaluator evaluator(
///     finetune::PeriodicEvaluatorOptions("ckpt").eval_every(10).patience(50), *model);
/// auto rmse = [&] { return validate_rmse(); };
/// for (int64_t epoch = 0; epoch < epochs && !evaluator.should_stop(); ++epoch) {
///   for (auto& batch : loader) {             // any length, known or not
///     ... loss.backward(); optimizer.step(); ...
///     if (evaluator.step(rmse)) break;       // once per optimizer step taken
///   }
///   evaluator.end_epoch(rmse);               // the epoch's data ran out
/// }
/// ```
///
/// The evaluator counts optimizer steps and epochs itself (epochs from 0):
/// with gradient accumulation call step() once per optimizer step, not per
/// batch, and not for a step a loss scaler skipped. The older
/// step(epoch, batch, batches_in_epoch, ...) form, for loops that know the
/// epoch's length, gives the same evaluations.
///
/// Semantics (the notebook's, checked against it): from epoch
/// eval_every_from_epoch on, evaluate at step i of the epoch when
/// i % eval_every == 0, and at the epoch's end unless its last step was
/// evaluated; before it, at the epoch's end only. A value
/// strictly better than the best so far is an improvement (NaN never is): the
/// checkpoint is saved and the no-improvement count resets; otherwise the
/// count grows. When it exceeds `patience`, step() returns true (and keeps
/// returning true without evaluating). The first finite value always
/// improves (the notebook starts from a best of 999).
///
/// With averaged weights (SWA), pass evaluate_averaged and save_averaged to
/// step(): right after the raw evaluation the averaged weights are evaluated
/// too, tracked against their own best and saved to averaged_checkpoint_name
/// on improvement, so the SWA result is measured rather than assumed. Early
/// stopping follows the raw weights, as in the notebook.
class PeriodicEvaluator {
 public:
  using EvaluateFn = std::function<double()>;
  /// Writes a complete checkpoint to the path given (a temporary file that
  /// the evaluator then renames into place).
  using SaveFn = std::function<void(const std::string& path)>;
  /// Receives one line (no trailing newline) per evaluation.
  using LogFn = std::function<void(const std::string& line)>;

  /// @param options Validated here; checkpoint_dir must exist and be
  ///        writable (std::invalid_argument naming the folder otherwise).
  /// @param save    Saves the model on improvement; may be empty (then no
  ///        checkpoint is written, the rest works alike).
  /// @param log     Line sink; default prints to std::cout.
  PeriodicEvaluator(PeriodicEvaluatorOptions options, SaveFn save, LogFn log = stdout_logger());

  /// Same, saving `model` (non-owning: it must outlive the evaluator) with
  /// Module::save into a torch::serialize::OutputArchive, i.e. what
  /// torch::save(model, path) writes and torch::load(model, path) reads.
  PeriodicEvaluator(PeriodicEvaluatorOptions options, const torch::nn::Module& model,
                    LogFn log = stdout_logger());

  /// A SaveFn that writes `module` like torch::save (non-owning reference).
  static SaveFn module_saver(const torch::nn::Module& module);
  /// The default log sink: the line and '\n' to std::cout.
  static LogFn stdout_logger();

  /// Whether step(epoch, batch, batches_in_epoch, ...) evaluates (ignoring
  /// a stop already signalled). Throws std::invalid_argument unless
  /// epoch >= 0, batches_in_epoch >= 1 and 0 <= batch < batches_in_epoch.
  bool is_due(int64_t epoch, int64_t batch, int64_t batches_in_epoch) const;

  /// Call once per optimizer step taken, after it. Evaluates when due (see
  /// the class comment). Returns true when the loop should stop (early
  /// stopping, ensmallen-callback style), then and on every later call.
  bool step(const EvaluateFn& evaluate);
  /// Same, and when due also evaluates the averaged weights (see below).
  bool step(const EvaluateFn& evaluate, const EvaluateFn& evaluate_averaged,
            const SaveFn& save_averaged);
  /// Call once when an epoch's data ran out, after its last step(): evaluates
  /// unless that step did (or the epoch had no step), then counts the epoch.
  /// Returns should_stop().
  bool end_epoch(const EvaluateFn& evaluate);
  bool end_epoch(const EvaluateFn& evaluate, const EvaluateFn& evaluate_averaged,
                 const SaveFn& save_averaged);
  /// The current epoch (end_epoch() calls so far) and the optimizer steps
  /// taken in it.
  int64_t epoch() const { return epoch_; }
  int64_t steps_in_epoch() const { return steps_in_epoch_; }

  /// For loops that know each epoch's length: `batch` is the step's index in
  /// epoch `epoch`, of `batches_in_epoch`; the last one also ends the epoch.
  /// Same evaluations, history and state as step() + end_epoch().
  ///
  /// Each history row is written with one write() and fsynced before step()
  /// returns. A failed save throws at once and changes nothing; a failed
  /// history write throws at once and leaves whole rows only. An fsync that
  /// fails after its write took effect (the folder's after a checkpoint's
  /// rename: FolderSyncError; the history's) does not stop the step: best
  /// values, counters, history and log follow what is on disk, and the first
  /// such error is thrown when the step is done.
  bool step(int64_t epoch, int64_t batch, int64_t batches_in_epoch, const EvaluateFn& evaluate);

  /// Same, and when due also evaluates the averaged weights with
  /// `evaluate_averaged` and, on their improvement, saves them with
  /// `save_averaged` (may be empty) to averaged_checkpoint_name.
  bool step(int64_t epoch, int64_t batch, int64_t batches_in_epoch, const EvaluateFn& evaluate,
            const EvaluateFn& evaluate_averaged, const SaveFn& save_averaged);

  /// Best raw metric so far (+inf for min, -inf for max before any improvement).
  double best() const { return best_; }
  /// Best averaged-weights metric so far (same convention).
  double best_averaged() const { return best_averaged_; }
  /// Consecutive raw evaluations without improvement (the notebook's
  /// early_stopping_counter).
  int64_t evaluations_without_improvement() const { return bad_evaluations_; }
  /// Optimizer steps counted so far.
  int64_t global_step() const { return global_step_; }
  /// Raw evaluations so far.
  int64_t num_evaluations() const { return num_evaluations_; }
  /// Whether early stopping has fired.
  bool should_stop() const { return stopped_; }
  /// Epoch and step in epoch of the last step (-1 before any).
  int64_t last_epoch() const { return last_epoch_; }
  int64_t last_batch() const { return last_batch_; }
  /// Whether the last step() or end_epoch() call evaluated, and what (raw weights).
  bool evaluated_last_step() const { return evaluated_last_step_; }
  const EvaluationRecord& last_evaluation() const { return last_record_; }

  std::string best_checkpoint_path() const;
  std::string best_averaged_checkpoint_path() const;
  /// Empty with HistoryFormat::none.
  std::string history_path() const;
  const PeriodicEvaluatorOptions& options() const { return options_; }

  /// Saves the state (best values, counters, global step, history position)
  /// so that load() into a fresh evaluator with the same options continues
  /// exactly like an uninterrupted run. `torch::save(evaluator, path)` works
  /// too (through operator<<); write the file atomically, e.g.
  /// `std::ostringstream s; torch::save(evaluator, s);
  /// finetune::atomic_write_text(path, s.str());`.
  void save(torch::serialize::OutputArchive& archive) const;
  /// Restores what save() wrote. The history file is cut back to the saved
  /// position (rows written after the state was saved, by a run that then
  /// crashed, are dropped and will be written again, a torn last row
  /// included). Throws std::invalid_argument on a missing key, a different
  /// mode, or a history file shorter than the saved position: every row is
  /// fsynced before step() returns, so that happens only when the file was
  /// cut or replaced after the state was saved, not after a crash or power
  /// loss.
  void load(torch::serialize::InputArchive& archive);

  PeriodicEvaluator(const PeriodicEvaluator&) = delete;
  PeriodicEvaluator& operator=(const PeriodicEvaluator&) = delete;
  PeriodicEvaluator(PeriodicEvaluator&& other) noexcept;
  PeriodicEvaluator& operator=(PeriodicEvaluator&& other) noexcept;
  ~PeriodicEvaluator();

 private:
  bool better(double value, double best) const;
  bool evaluate_now(int64_t batch, bool per_batch, const EvaluateFn& evaluate,
                    const EvaluateFn& evaluate_averaged, const SaveFn& save_averaged);
  void record(const EvaluationRecord& r);
  void log_evaluation(const EvaluationRecord& r, bool per_batch, bool saved);
  void close_history();
  void defer_error(std::exception_ptr error);

  PeriodicEvaluatorOptions options_;
  SaveFn save_;
  LogFn log_;
  double best_;
  double best_averaged_;
  int64_t bad_evaluations_ = 0;
  int64_t global_step_ = 0;
  int64_t num_evaluations_ = 0;
  int64_t history_rows_ = 0;
  int64_t history_bytes_ = 0;
  int64_t last_epoch_ = -1;
  int64_t last_batch_ = -1;
  int64_t epoch_ = 0;
  int64_t steps_in_epoch_ = 0;
  bool step_evaluated_ = false;  // the epoch's last step() evaluated
  bool stopped_ = false;
  bool evaluated_last_step_ = false;
  EvaluationRecord last_record_;
  int history_fd_ = -1;
  // False until the first row: a fresh evaluator then starts a new file, a
  // loaded one appends after the (already cut back) saved position.
  bool history_resumed_ = false;
  // An I/O error that came after the write it concerns had taken effect
  // (folder or history fsync): step() finishes, then throws it.
  std::exception_ptr deferred_error_;
};

/// torch::save(evaluator, path) / torch::load(evaluator, path).
inline torch::serialize::OutputArchive& operator<<(torch::serialize::OutputArchive& archive,
                                                   const PeriodicEvaluator& evaluator) {
  evaluator.save(archive);
  return archive;
}
inline torch::serialize::InputArchive& operator>>(torch::serialize::InputArchive& archive,
                                                  PeriodicEvaluator& evaluator) {
  evaluator.load(archive);
  return archive;
}

/// The notebook's `round(x, 4)` as Python prints it: 0.601, 0.5636, 0.6
/// (exact for |x| < 1e16; Python switches to exponent notation above).
inline std::string format_metric_like_python_round4(double value);

// ---------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------

namespace detail {

inline std::string errno_message(int error) { return std::strerror(error); }

// fsync(fd), retrying on EINTR; EINVAL (the file system cannot sync this,
// e.g. some folders) counts as done. Returns 0 or the errno.
inline int fsync_fd(int fd) {
  int rc;
  do {
    rc = ::fsync(fd);
  } while (rc != 0 && errno == EINTR);
  return rc != 0 && errno != EINVAL ? errno : 0;
}

// fsync of a file or folder by name (fsync works on read-only descriptors).
inline void fsync_path(const std::string& path, int flags) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    throw std::runtime_error("finetune: cannot open '" + path +
                             "' to fsync: " + errno_message(errno));
  }
  const int error = fsync_fd(fd);
  ::close(fd);
  if (error != 0) {
    throw std::runtime_error("finetune: fsync of '" + path + "' failed: " + errno_message(error));
  }
}

inline std::string parent_folder(const std::string& path) {
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? std::string(".") : parent;
}

// Writes all of `text` with as few write() calls as the kernel allows (one for
// short lines), so that a killed process leaves whole history rows. `what`
// names the file in errors (a full disk is ENOSPC, a file size limit EFBIG).
inline void write_all(int fd, const std::string& text, const std::string& what) {
  const char* data = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("finetune: writing " + what + " failed: " + errno_message(errno));
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
}

// Writes `contents` to `path` (created or truncated), every write checked.
inline void write_file(const std::string& path, const std::string& contents) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    throw std::runtime_error("finetune: cannot open '" + path +
                             "' for writing: " + errno_message(errno));
  }
  try {
    write_all(fd, contents, "'" + path + "'");
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) {
    throw std::runtime_error("finetune: closing '" + path + "' failed: " + errno_message(errno));
  }
}

// The permissions open(path, O_CREAT, 0666) would give a new file: 0666 less
// the umask, read from /proc (umask() itself sets it: not thread-safe);
// 0644 where /proc does not tell.
inline mode_t new_file_mode() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Umask:", 0) != 0) continue;
    try {
      return static_cast<mode_t>(0666 & ~std::stoul(line.substr(6), nullptr, 8));
    } catch (const std::exception&) {
      break;
    }
  }
  return 0644;
}

// A new empty file `<path>.tmp-XXXXXX` beside `path`, created exclusively
// (mkstemp: unique across processes, hosts and containers sharing the
// folder), with new_file_mode(). Returns its name; *fd receives the open
// descriptor.
inline std::string create_temp_beside(const std::string& path, int* fd) {
  const std::string pattern = path + ".tmp-XXXXXX";
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  *fd = ::mkstemp(name.data());
  if (*fd < 0) {
    throw std::runtime_error("finetune: cannot create a temporary file '" + pattern + "' for '" +
                             path + "': " + errno_message(errno));
  }
  const std::string tmp = name.data();
  if (::fcntl(*fd, F_SETFD, FD_CLOEXEC) != 0 || ::fchmod(*fd, new_file_mode()) != 0) {
    const int error = errno;
    ::close(*fd);
    ::unlink(tmp.c_str());
    throw std::runtime_error("finetune: cannot set up the temporary file '" + tmp +
                             "': " + errno_message(error));
  }
  return tmp;
}

// Renames the complete, fsynced `tmp` over `path`, then fsyncs the folder.
inline void commit_temp(const std::string& tmp, const std::string& path) {
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("finetune: cannot rename '" + tmp + "' to '" + path +
                             "': " + errno_message(error));
  }
  // The rename is an entry in the folder: sync the folder too.
  try {
    fsync_path(parent_folder(path), O_RDONLY | O_DIRECTORY);
  } catch (const std::runtime_error& e) {
    throw FolderSyncError(std::string(e.what()) + " (after '" + path +
                          "' was replaced: it holds the new contents, which may not survive a "
                          "power loss)");
  }
}

// Fails at construction, not after an hour of training: the folder must
// exist, be a folder, and accept a new file.
inline void require_writable_folder(const std::string& folder, const char* what) {
  std::error_code ec;
  const auto status = std::filesystem::status(folder, ec);
  if (ec || !std::filesystem::exists(status)) {
    throw std::invalid_argument(std::string("finetune: ") + what + " '" + folder +
                                "' does not exist");
  }
  if (!std::filesystem::is_directory(status)) {
    throw std::invalid_argument(std::string("finetune: ") + what + " '" + folder +
                                "' is not a folder");
  }
  // Named with mkstemp, like every temporary file here: ranks on several hosts
  // may probe one shared folder at the same moment (a pid is not unique there).
  const std::string name = (std::filesystem::path(folder) / ".finetune_probe.XXXXXX").string();
  std::vector<char> buffer(name.begin(), name.end());
  buffer.push_back('\0');
  const int fd = ::mkstemp(buffer.data());
  if (fd < 0) {
    throw std::invalid_argument(std::string("finetune: ") + what + " '" + folder +
                                "' is not writable: " + errno_message(errno));
  }
  ::close(fd);
  ::unlink(buffer.data());
}

inline std::string format_double_exact(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.17g", v);
  return buffer;
}

inline std::string json_number(double v) {
  return std::isfinite(v) ? format_double_exact(v) : std::string("null");
}

template <typename T>
torch::Tensor state_tensor(T value, torch::Dtype dtype) {
  return torch::tensor(value, torch::TensorOptions().dtype(dtype));
}

}  // namespace detail

inline void atomic_write_file(const std::string& path,
                              const std::function<void(const std::string&)>& writer) {
  if (path.empty()) throw std::invalid_argument("finetune: atomic_write_file: empty path");
  if (!writer)
    throw std::invalid_argument("finetune: atomic_write_file: empty writer for '" + path + "'");
  int fd = -1;
  const std::string tmp = detail::create_temp_beside(path, &fd);
  ::close(fd);  // the writer opens the file by its name
  try {
    writer(tmp);
    // Data on disk before the rename makes it visible under the final name.
    do {
      fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
      throw std::runtime_error("finetune: cannot open '" + tmp + "' (for '" + path +
                               "') to fsync: " + detail::errno_message(errno));
    }
    struct stat st {};
    const bool empty = ::fstat(fd, &st) == 0 && st.st_size == 0;
    const int error = detail::fsync_fd(fd);
    ::close(fd);
    if (empty) {
      throw std::runtime_error("finetune: atomic_write_file: the writer wrote nothing to '" + tmp +
                               "' (for '" + path + "')");
    }
    if (error != 0) {
      throw std::runtime_error("finetune: fsync of '" + tmp + "' (for '" + path +
                               "') failed: " + detail::errno_message(error));
    }
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  detail::commit_temp(tmp, path);
}

inline void atomic_write_text(const std::string& path, const std::string& contents) {
  if (path.empty()) throw std::invalid_argument("finetune: atomic_write_text: empty path");
  int fd = -1;
  const std::string tmp = detail::create_temp_beside(path, &fd);
  try {
    detail::write_all(fd, contents, "'" + path + "' (through '" + tmp + "')");
    const int error = detail::fsync_fd(fd);
    if (error != 0) {
      throw std::runtime_error("finetune: fsync of '" + tmp + "' (for '" + path +
                               "') failed: " + detail::errno_message(error));
    }
    // close() can report a deferred write error (NFS): the file is not good then.
    const int closed = ::close(fd);
    fd = -1;
    if (closed != 0) {
      throw std::runtime_error("finetune: closing '" + tmp + "' (for '" + path +
                               "') failed: " + detail::errno_message(errno));
    }
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  detail::commit_temp(tmp, path);
}

inline std::string format_metric_like_python_round4(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // %.4f rounds the exact binary value half-to-even, like round(x, 4); the
  // repr of that result is the 4-decimal text without trailing zeros, keeping
  // one digit after the point.
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.4f", value);
  std::string text = buffer;
  while (text.size() > 2 && text.back() == '0' && text[text.size() - 2] != '.') text.pop_back();
  return text;
}

inline void PeriodicEvaluatorOptions::validate() const {
  auto fail = [](const std::string& what) {
    throw std::invalid_argument("finetune: PeriodicEvaluatorOptions: " + what);
  };
  if (eval_every() < 1) fail("eval_every must be >= 1, got " + std::to_string(eval_every()));
  if (eval_every_from_epoch() < 0) {
    fail("eval_every_from_epoch must be >= 0, got " + std::to_string(eval_every_from_epoch()));
  }
  if (patience() < 0) fail("patience must be >= 0, got " + std::to_string(patience()));
  if (mode() != MetricMode::min && mode() != MetricMode::max) fail("mode must be min or max");
  if (history_format() != HistoryFormat::csv && history_format() != HistoryFormat::jsonl &&
      history_format() != HistoryFormat::none) {
    fail("history_format must be csv, jsonl or none");
  }
  if (checkpoint_dir().empty()) fail("checkpoint_dir is empty");
  auto plain_name = [&](const std::string& option, const std::string& name, bool may_be_empty) {
    if (name.empty() && may_be_empty) return;
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
      fail(option + " must be a plain file name inside checkpoint_dir, got '" + name + "'");
    }
  };
  plain_name("checkpoint_name", checkpoint_name(), false);
  plain_name("averaged_checkpoint_name", averaged_checkpoint_name(), false);
  plain_name("history_name", history_name(), true);
  if (checkpoint_name() == averaged_checkpoint_name()) {
    fail("checkpoint_name and averaged_checkpoint_name are both '" + checkpoint_name() + "'");
  }
}

inline PeriodicEvaluator::PeriodicEvaluator(PeriodicEvaluatorOptions options, SaveFn save,
                                            LogFn log)
    : options_(std::move(options)), save_(std::move(save)), log_(std::move(log)) {
  options_.validate();
  if (options_.writer()) {
    detail::require_writable_folder(options_.checkpoint_dir(), "PeriodicEvaluator checkpoint_dir");
  }
  const bool min = options_.mode() == MetricMode::min;
  best_ = min ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
  best_averaged_ = best_;
}

inline PeriodicEvaluator::PeriodicEvaluator(PeriodicEvaluatorOptions options,
                                            const torch::nn::Module& model, LogFn log)
    : PeriodicEvaluator(std::move(options), module_saver(model), std::move(log)) {}

inline PeriodicEvaluator::SaveFn PeriodicEvaluator::module_saver(const torch::nn::Module& module) {
  const torch::nn::Module* target = &module;
  return [target](const std::string& path) {
    torch::serialize::OutputArchive archive;
    target->save(archive);
    // Serialized in memory, written with every write() checked: LibTorch's
    // own file writer throws from a destructor when a write fails (a full
    // disk), which ends the process.
    std::ostringstream bytes;
    archive.save_to(bytes);
    detail::write_file(path, bytes.str());
  };
}

inline PeriodicEvaluator::LogFn PeriodicEvaluator::stdout_logger() {
  return [](const std::string& line) { std::cout << line << '\n' << std::flush; };
}

inline PeriodicEvaluator::PeriodicEvaluator(PeriodicEvaluator&& other) noexcept
    : options_(std::move(other.options_)),
      save_(std::move(other.save_)),
      log_(std::move(other.log_)),
      best_(other.best_),
      best_averaged_(other.best_averaged_),
      bad_evaluations_(other.bad_evaluations_),
      global_step_(other.global_step_),
      num_evaluations_(other.num_evaluations_),
      history_rows_(other.history_rows_),
      history_bytes_(other.history_bytes_),
      last_epoch_(other.last_epoch_),
      last_batch_(other.last_batch_),
      epoch_(other.epoch_),
      steps_in_epoch_(other.steps_in_epoch_),
      step_evaluated_(other.step_evaluated_),
      stopped_(other.stopped_),
      evaluated_last_step_(other.evaluated_last_step_),
      last_record_(std::move(other.last_record_)),
      history_fd_(std::exchange(other.history_fd_, -1)),
      history_resumed_(other.history_resumed_) {}

inline PeriodicEvaluator& PeriodicEvaluator::operator=(PeriodicEvaluator&& other) noexcept {
  if (this != &other) {
    close_history();
    options_ = std::move(other.options_);
    save_ = std::move(other.save_);
    log_ = std::move(other.log_);
    best_ = other.best_;
    best_averaged_ = other.best_averaged_;
    bad_evaluations_ = other.bad_evaluations_;
    global_step_ = other.global_step_;
    num_evaluations_ = other.num_evaluations_;
    history_rows_ = other.history_rows_;
    history_bytes_ = other.history_bytes_;
    last_epoch_ = other.last_epoch_;
    last_batch_ = other.last_batch_;
    epoch_ = other.epoch_;
    steps_in_epoch_ = other.steps_in_epoch_;
    step_evaluated_ = other.step_evaluated_;
    stopped_ = other.stopped_;
    evaluated_last_step_ = other.evaluated_last_step_;
    last_record_ = std::move(other.last_record_);
    history_fd_ = std::exchange(other.history_fd_, -1);
    history_resumed_ = other.history_resumed_;
  }
  return *this;
}

inline PeriodicEvaluator::~PeriodicEvaluator() { close_history(); }

inline void PeriodicEvaluator::close_history() {
  if (history_fd_ >= 0) {
    ::close(history_fd_);
    history_fd_ = -1;
  }
}

inline std::string PeriodicEvaluator::best_checkpoint_path() const {
  return (std::filesystem::path(options_.checkpoint_dir()) / options_.checkpoint_name()).string();
}

inline std::string PeriodicEvaluator::best_averaged_checkpoint_path() const {
  return (std::filesystem::path(options_.checkpoint_dir()) / options_.averaged_checkpoint_name())
      .string();
}

inline std::string PeriodicEvaluator::history_path() const {
  if (options_.history_format() == HistoryFormat::none) return "";
  std::string name = options_.history_name();
  if (name.empty()) {
    name = options_.history_format() == HistoryFormat::csv ? "history.csv" : "history.jsonl";
  }
  return (std::filesystem::path(options_.checkpoint_dir()) / name).string();
}

inline bool PeriodicEvaluator::is_due(int64_t epoch, int64_t batch,
                                      int64_t batches_in_epoch) const {
  if (epoch < 0 || batches_in_epoch < 1 || batch < 0 || batch >= batches_in_epoch) {
    throw std::invalid_argument(
        "finetune: PeriodicEvaluator: need epoch >= 0, batches_in_epoch >= 1 and "
        "0 <= batch < batches_in_epoch; got epoch " +
        std::to_string(epoch) + ", batch " + std::to_string(batch) + ", batches_in_epoch " +
        std::to_string(batches_in_epoch));
  }
  const bool last_batch = batch + 1 == batches_in_epoch;
  if (epoch < options_.eval_every_from_epoch()) return last_batch;
  return batch % options_.eval_every() == 0 || last_batch;
}

inline bool PeriodicEvaluator::better(double value, double best) const {
  // Strict, and false for NaN, as Python's `rmse < best_rmse`.
  return options_.mode() == MetricMode::min ? value < best : value > best;
}

inline bool PeriodicEvaluator::step(int64_t epoch, int64_t batch, int64_t batches_in_epoch,
                                    const EvaluateFn& evaluate) {
  return step(epoch, batch, batches_in_epoch, evaluate, EvaluateFn(), SaveFn());
}

inline bool PeriodicEvaluator::step(int64_t epoch, int64_t batch, int64_t batches_in_epoch,
                                    const EvaluateFn& evaluate, const EvaluateFn& evaluate_averaged,
                                    const SaveFn& save_averaged) {
  const bool due = is_due(epoch, batch, batches_in_epoch);  // validates the arguments
  if (!evaluate) throw std::invalid_argument("finetune: PeriodicEvaluator::step: empty evaluate");
  evaluated_last_step_ = false;
  if (stopped_) return true;
  ++global_step_;
  last_epoch_ = epoch;
  last_batch_ = batch;
  const bool last = batch + 1 == batches_in_epoch;
  epoch_ = last ? epoch + 1 : epoch;
  steps_in_epoch_ = last ? 0 : batch + 1;
  step_evaluated_ = false;
  if (!due) return false;
  const bool per_batch = epoch >= options_.eval_every_from_epoch();
  if (!last) step_evaluated_ = true;
  return evaluate_now(batch, per_batch, evaluate, evaluate_averaged, save_averaged);
}

inline bool PeriodicEvaluator::step(const EvaluateFn& evaluate) {
  return step(evaluate, EvaluateFn(), SaveFn());
}

inline bool PeriodicEvaluator::step(const EvaluateFn& evaluate, const EvaluateFn& evaluate_averaged,
                                    const SaveFn& save_averaged) {
  if (!evaluate) throw std::invalid_argument("finetune: PeriodicEvaluator::step: empty evaluate");
  evaluated_last_step_ = false;
  if (stopped_) return true;
  const int64_t batch = steps_in_epoch_;
  ++global_step_;
  ++steps_in_epoch_;
  last_epoch_ = epoch_;
  last_batch_ = batch;
  const bool per_batch = epoch_ >= options_.eval_every_from_epoch();
  step_evaluated_ = per_batch && batch % options_.eval_every() == 0;
  if (!step_evaluated_) return false;
  return evaluate_now(batch, per_batch, evaluate, evaluate_averaged, save_averaged);
}

inline bool PeriodicEvaluator::end_epoch(const EvaluateFn& evaluate) {
  return end_epoch(evaluate, EvaluateFn(), SaveFn());
}

inline bool PeriodicEvaluator::end_epoch(const EvaluateFn& evaluate,
                                         const EvaluateFn& evaluate_averaged,
                                         const SaveFn& save_averaged) {
  if (!evaluate) {
    throw std::invalid_argument("finetune: PeriodicEvaluator::end_epoch: empty evaluate");
  }
  evaluated_last_step_ = false;
  if (stopped_) return true;
  const bool due = steps_in_epoch_ > 0 && !step_evaluated_;
  const int64_t batch = steps_in_epoch_ - 1;
  const bool per_batch = epoch_ >= options_.eval_every_from_epoch();
  // Count the epoch first: an evaluation that throws has still ended it.
  ++epoch_;
  steps_in_epoch_ = 0;
  step_evaluated_ = false;
  if (!due) return false;
  return evaluate_now(batch, per_batch, evaluate, evaluate_averaged, save_averaged);
}

inline bool PeriodicEvaluator::evaluate_now(int64_t batch, bool per_batch,
                                            const EvaluateFn& evaluate,
                                            const EvaluateFn& evaluate_averaged,
                                            const SaveFn& save_averaged) {
  const int64_t epoch = last_epoch_;
  deferred_error_ = nullptr;

  auto evaluate_weights = [&](const EvaluateFn& fn, const SaveFn& save, double& best,
                              const std::string& path, const char* weights) {
    EvaluationRecord r;
    r.epoch = epoch;
    r.batch = batch;
    r.step = global_step_;
    r.weights = weights;
    r.metric = fn();
    r.improved = better(r.metric, best);
    // Save before updating the state: a failed save leaves the best unchanged.
    // A failed folder fsync comes after the rename: the new checkpoint is in
    // place, so the state follows it and the error is thrown after the step.
    const bool saving = r.improved && save && options_.writer();
    if (saving) {
      try {
        atomic_write_file(path, save);
      } catch (const FolderSyncError&) {
        defer_error(std::current_exception());
      }
    }
    if (r.improved) best = r.metric;
    r.best = best;
    record(r);
    log_evaluation(r, per_batch, saving);
    return r;
  };

  last_record_ = evaluate_weights(evaluate, save_, best_, best_checkpoint_path(), "raw");
  ++num_evaluations_;
  bad_evaluations_ = last_record_.improved ? 0 : bad_evaluations_ + 1;
  evaluated_last_step_ = true;
  if (evaluate_averaged) {
    evaluate_weights(evaluate_averaged, save_averaged, best_averaged_,
                     best_averaged_checkpoint_path(), "averaged");
  }
  if (bad_evaluations_ > options_.patience()) {
    stopped_ = true;
    if (log_) log_("Early stopping triggered!");
  }
  if (deferred_error_) std::rethrow_exception(std::exchange(deferred_error_, nullptr));
  return stopped_;
}

inline void PeriodicEvaluator::defer_error(std::exception_ptr error) {
  if (!deferred_error_) deferred_error_ = std::move(error);  // the first one is reported
}

inline void PeriodicEvaluator::log_evaluation(const EvaluationRecord& r, bool per_batch,
                                              bool saved) {
  if (!log_) return;
  // The notebook's lines: "Epoch: 2, Batch 30, RMSE = 0.5636, checkpoint saved."
  std::string line = options_.log_prefix() + "Epoch: " + std::to_string(r.epoch) + ", ";
  if (per_batch) line += "Batch " + std::to_string(r.batch) + ", ";
  line += options_.metric_name();
  if (r.weights == "averaged") line += " (averaged)";
  line += " = " + format_metric_like_python_round4(r.metric);
  if (saved) line += ", checkpoint saved.";
  log_(line);
}

inline void PeriodicEvaluator::record(const EvaluationRecord& r) {
  const std::string path = history_path();
  if (path.empty()) return;
  if (history_fd_ < 0 && options_.writer()) {
    // A fresh run replaces an old history; a loaded one appends (load() has
    // already cut the file back to the saved position).
    const int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (history_resumed_ ? 0 : O_TRUNC);
    history_fd_ = ::open(path.c_str(), flags, 0644);
    if (history_fd_ < 0) {
      throw std::runtime_error("finetune: cannot open history '" + path +
                               "': " + detail::errno_message(errno));
    }
    history_resumed_ = true;
    // The file may be new: its folder entry must be durable like its rows.
    try {
      detail::fsync_path(detail::parent_folder(path), O_RDONLY | O_DIRECTORY);
    } catch (const std::runtime_error& e) {
      defer_error(std::make_exception_ptr(FolderSyncError(e.what())));
    }
  }
  std::string text;
  const bool csv = options_.history_format() == HistoryFormat::csv;
  if (csv && history_bytes_ == 0) text += "epoch,batch,step,weights,metric,best,improved\n";
  if (csv) {
    text += std::to_string(r.epoch) + "," + std::to_string(r.batch) + "," + std::to_string(r.step) +
            "," + r.weights + "," + detail::format_double_exact(r.metric) + "," +
            detail::format_double_exact(r.best) + "," + (r.improved ? "1" : "0") + "\n";
  } else {
    text += "{\"epoch\":" + std::to_string(r.epoch) + ",\"batch\":" + std::to_string(r.batch) +
            ",\"step\":" + std::to_string(r.step) + ",\"weights\":\"" + r.weights +
            "\",\"metric\":" + detail::json_number(r.metric) +
            ",\"best\":" + detail::json_number(r.best) +
            ",\"improved\":" + (r.improved ? "true" : "false") + "}\n";
  }
  if (!options_.writer()) {  // the writing rank's counters, without its file
    history_bytes_ += static_cast<int64_t>(text.size());
    ++history_rows_;
    return;
  }
  try {
    detail::write_all(history_fd_, text, "history '" + path + "'");
  } catch (...) {
    // No part of a row stays behind (a full disk can take half a row): the
    // file keeps whole rows only, ending at history_bytes_.
    if (::ftruncate(history_fd_, static_cast<off_t>(history_bytes_)) != 0) {
      // Left as it is: load() of a state saved before cuts it away anyway.
    }
    throw;
  }
  history_bytes_ += static_cast<int64_t>(text.size());
  ++history_rows_;
  // Durable before step() returns: a state saved after it never expects rows
  // that a power loss took away (see load()).
  const int error = detail::fsync_fd(history_fd_);
  if (error != 0) {
    defer_error(std::make_exception_ptr(std::runtime_error(
        "finetune: fsync of history '" + path + "' failed: " + detail::errno_message(error))));
  }
}

inline void PeriodicEvaluator::save(torch::serialize::OutputArchive& archive) const {
  // Flat keys with a prefix (archive keys may not contain dots), so the state
  // can share an archive with the model's or optimizer's.
  archive.write(
      "periodic_evaluator_mode",
      detail::state_tensor<int64_t>(options_.mode() == MetricMode::min ? 0 : 1, torch::kLong));
  archive.write("periodic_evaluator_best", detail::state_tensor<double>(best_, torch::kDouble));
  archive.write("periodic_evaluator_best_averaged",
                detail::state_tensor<double>(best_averaged_, torch::kDouble));
  archive.write("periodic_evaluator_bad_evaluations",
                detail::state_tensor<int64_t>(bad_evaluations_, torch::kLong));
  archive.write("periodic_evaluator_global_step",
                detail::state_tensor<int64_t>(global_step_, torch::kLong));
  archive.write("periodic_evaluator_num_evaluations",
                detail::state_tensor<int64_t>(num_evaluations_, torch::kLong));
  archive.write("periodic_evaluator_history_rows",
                detail::state_tensor<int64_t>(history_rows_, torch::kLong));
  archive.write("periodic_evaluator_history_bytes",
                detail::state_tensor<int64_t>(history_bytes_, torch::kLong));
  archive.write("periodic_evaluator_last_epoch",
                detail::state_tensor<int64_t>(last_epoch_, torch::kLong));
  archive.write("periodic_evaluator_last_batch",
                detail::state_tensor<int64_t>(last_batch_, torch::kLong));
  archive.write("periodic_evaluator_stopped",
                detail::state_tensor<int64_t>(stopped_ ? 1 : 0, torch::kLong));
  archive.write("periodic_evaluator_epoch", detail::state_tensor<int64_t>(epoch_, torch::kLong));
  archive.write("periodic_evaluator_steps_in_epoch",
                detail::state_tensor<int64_t>(steps_in_epoch_, torch::kLong));
  archive.write("periodic_evaluator_step_evaluated",
                detail::state_tensor<int64_t>(step_evaluated_ ? 1 : 0, torch::kLong));
}

inline void PeriodicEvaluator::load(torch::serialize::InputArchive& archive) {
  // Every key is one element of the dtype save() wrote, checked before use,
  // so that a malformed state is std::invalid_argument naming the key (and
  // never a c10::Error or a conversion error), and nothing changes.
  auto fail = [](const std::string& key, const std::string& what) {
    return std::invalid_argument("finetune: PeriodicEvaluator::load: key 'periodic_evaluator_" +
                                 key + "' " + what);
  };
  auto read = [&](const std::string& key, bool integral) {
    torch::Tensor t;
    if (!archive.try_read("periodic_evaluator_" + key, t))
      throw fail(key, "missing from the archive");
    if (t.numel() != 1) throw fail(key, "holds " + std::to_string(t.numel()) + " elements, not 1");
    if (integral ? t.scalar_type() != torch::kLong : !t.is_floating_point()) {
      throw fail(key,
                 std::string("is not ") + (integral ? "an int64" : "a floating-point") + " tensor");
    }
    return t.to(torch::kCPU);
  };
  auto read_int = [&](const std::string& key, int64_t min, int64_t max) {
    const int64_t v = read(key, true).item<int64_t>();
    if (v < min || v > max) {
      throw fail(key, "is " + std::to_string(v) + ", outside [" + std::to_string(min) + ", " +
                          std::to_string(max) + "]");
    }
    return v;
  };
  auto read_double = [&](const std::string& key) {
    const double v = read(key, false).item<double>();
    if (std::isnan(v)) throw fail(key, "is NaN");
    return v;
  };
  // Counts up to 2^62: far beyond any run, and a loaded count plus the steps
  // after it cannot overflow.
  constexpr int64_t kMax = int64_t{1} << 62;
  const int64_t mode = read_int("mode", 0, 1);
  if (mode != (options_.mode() == MetricMode::min ? 0 : 1)) {
    throw std::invalid_argument(
        "finetune: PeriodicEvaluator::load: the state was saved with mode " +
        std::string(mode == 0 ? "min" : "max") + ", this evaluator has the other mode");
  }
  const double best = read_double("best");
  const double best_averaged = read_double("best_averaged");
  const int64_t bad = read_int("bad_evaluations", 0, kMax);
  const int64_t global_step = read_int("global_step", 0, kMax);
  const int64_t evaluations = read_int("num_evaluations", 0, kMax);
  const int64_t rows = read_int("history_rows", 0, kMax);
  const int64_t bytes = read_int("history_bytes", 0, kMax);
  const int64_t last_epoch = read_int("last_epoch", -1, kMax);
  const int64_t last_batch = read_int("last_batch", -1, kMax);
  const bool stopped = read_int("stopped", 0, 1) != 0;
  // Counting-API keys; a state from before they existed resumes where its
  // last step left off.
  auto optional_int = [&](const std::string& key, int64_t max, int64_t fallback) {
    torch::Tensor probe;
    return archive.try_read("periodic_evaluator_" + key, probe) ? read_int(key, 0, max) : fallback;
  };
  const int64_t epoch = optional_int("epoch", kMax, std::max<int64_t>(last_epoch, 0));
  const int64_t steps_in_epoch = optional_int("steps_in_epoch", kMax, last_batch + 1);
  const bool step_evaluated = optional_int("step_evaluated", 1, 0) != 0;
  if (step_evaluated && steps_in_epoch == 0)
    throw fail("step_evaluated", "is 1 at an epoch's start");

  const std::string path = options_.writer() ? history_path() : std::string();
  if (!path.empty()) {
    std::error_code ec;
    const bool exists = std::filesystem::exists(path, ec);
    const int64_t size = exists ? static_cast<int64_t>(std::filesystem::file_size(path, ec)) : 0;
    if (ec || size < bytes) {
      // Rows are fsynced before step() returns, so a state saved after them
      // never outlives them: a shorter file was cut or replaced since.
      throw std::invalid_argument(
          "finetune: PeriodicEvaluator::load: history '" + path + "' has " + std::to_string(size) +
          " bytes, the state expects " + std::to_string(bytes) +
          " (rows the state counts are missing: the file was cut or replaced after the state "
          "was saved, or belongs to another run)");
    }
    close_history();
    // Rows written after the state was saved belong to the interrupted run.
    if (exists && size > bytes) {
      std::filesystem::resize_file(path, static_cast<uintmax_t>(bytes), ec);
      if (ec) {
        throw std::runtime_error("finetune: PeriodicEvaluator::load: cannot cut history '" + path +
                                 "' back to " + std::to_string(bytes) + " bytes: " + ec.message());
      }
    }
  }
  best_ = best;
  best_averaged_ = best_averaged;
  bad_evaluations_ = bad;
  global_step_ = global_step;
  num_evaluations_ = evaluations;
  history_rows_ = rows;
  history_bytes_ = bytes;
  last_epoch_ = last_epoch;
  last_batch_ = last_batch;
  epoch_ = epoch;
  steps_in_epoch_ = steps_in_epoch;
  step_evaluated_ = step_evaluated;
  stopped_ = stopped;
  evaluated_last_step_ = false;
  history_resumed_ = true;
}

}  // namespace finetune
