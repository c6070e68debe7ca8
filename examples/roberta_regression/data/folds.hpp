// The article's cross-validation folds, exactly as its notebook makes them:
//   np.random.seed(seed); df = df.sample(frac=1)              -> numpy_permutation
//   bins = floor(1 + log2(n)); pd.cut(target, bins, labels=False) -> pandas_cut_codes
//   StratifiedKFold(n_splits=k).split(df, bins)              -> stratified_kfold_test_folds
// and a grouped variant that keeps all passages of one group (an address of
// the embedded data) in one fold. Example code; checked against numpy,
// pandas and scikit-learn by tests/reference/ref_folds.py.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace roberta_regression {

/// numpy's legacy `RandomState(seed).permutation(n)` (what pandas'
/// `sample(frac=1)` draws after `np.random.seed(seed)`): MT19937 seeded by
/// init_genrand, Fisher-Yates from the end, each index drawn by masked
/// rejection sampling of 32-bit outputs.
std::vector<int64_t> numpy_permutation(int64_t n, uint32_t seed);

/// pandas' `cut(x, bins, labels=False)` for an integer bin count: equal-width
/// edges from numpy's linspace over [min, max], the lowest edge moved down by
/// 0.1% of the range, right-closed intervals. Returns the bin of each value.
std::vector<int64_t> pandas_cut_codes(const std::vector<double>& x, int64_t bins);

/// scikit-learn's `StratifiedKFold(n_splits)` without shuffling: the test fold
/// of each sample, from its class label (`_make_test_folds`).
std::vector<int64_t> stratified_kfold_test_folds(const std::vector<int64_t>& labels,
                                                 int64_t n_splits);

/// The notebook's folds of `targets` (in file order): the fold of each row.
std::vector<int64_t> article_folds(const std::vector<double>& targets, int64_t n_splits,
                                   uint32_t seed);

/// The same on groups: one row per group (in order of first appearance, the
/// group's target = its first row's target), folded with article_folds; each
/// row gets its group's fold, so no group straddles folds.
std::vector<int64_t> grouped_article_folds(const std::vector<double>& targets,
                                           const std::vector<std::string>& groups, int64_t n_splits,
                                           uint32_t seed);

// --- implementation -----------------------------------------------------------

inline std::vector<int64_t> numpy_permutation(int64_t n, uint32_t seed) {
  if (n < 0) throw std::invalid_argument("numpy_permutation: negative length");
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = i;
  std::mt19937 mt(seed);  // init_genrand, as numpy's legacy seeding of an integer
  for (int64_t i = n - 1; i > 0; --i) {
    uint64_t mask = static_cast<uint64_t>(i);
    for (int shift = 1; shift <= 32; shift <<= 1) mask |= mask >> shift;
    if (static_cast<uint64_t>(i) > 0xffffffffULL)
      throw std::invalid_argument("numpy_permutation: more than 2^32 rows");
    uint64_t j;
    do {
      j = static_cast<uint64_t>(mt()) & mask;
    } while (j > static_cast<uint64_t>(i));
    std::swap(out[static_cast<size_t>(i)], out[static_cast<size_t>(j)]);
  }
  return out;
}

inline std::vector<int64_t> pandas_cut_codes(const std::vector<double>& x, int64_t bins) {
  if (bins < 1) throw std::invalid_argument("pandas_cut_codes: bins must be at least 1");
  if (x.empty()) return {};
  double mn = *std::min_element(x.begin(), x.end()), mx = *std::max_element(x.begin(), x.end());
  const bool constant = mn == mx;
  if (constant) {  // pandas widens a zero range before binning
    mn -= mn != 0 ? 0.001 * std::abs(mn) : 0.001;
    mx += mx != 0 ? 0.001 * std::abs(mx) : 0.001;
  }
  std::vector<double> edges(static_cast<size_t>(bins + 1));
  const double step = (mx - mn) / static_cast<double>(bins);  // numpy.linspace
  for (int64_t i = 0; i <= bins; ++i)
    edges[static_cast<size_t>(i)] = static_cast<double>(i) * step + mn;
  edges.back() = mx;
  if (!constant) edges.front() -= (mx - mn) * 0.001;
  std::vector<int64_t> codes;
  codes.reserve(x.size());
  for (const double v : x) {  // searchsorted(side="left") - 1: intervals (a, b]
    const auto it = std::lower_bound(edges.begin(), edges.end(), v);
    codes.push_back(static_cast<int64_t>(it - edges.begin()) - 1);
  }
  return codes;
}

inline std::vector<int64_t> stratified_kfold_test_folds(const std::vector<int64_t>& labels,
                                                        int64_t n_splits) {
  if (n_splits < 2) throw std::invalid_argument("folds: the number of folds must be at least 2");
  if (static_cast<int64_t>(labels.size()) < n_splits)
    throw std::invalid_argument("folds: " + std::to_string(n_splits) + " folds need at least " +
                                std::to_string(n_splits) + " rows (or groups), got " +
                                std::to_string(labels.size()));
  // Classes numbered in order of first appearance, as scikit-learn encodes them.
  std::map<int64_t, int64_t> code;
  std::vector<int64_t> encoded;
  for (const int64_t label : labels) {
    auto it = code.find(label);
    if (it == code.end()) it = code.emplace(label, static_cast<int64_t>(code.size())).first;
    encoded.push_back(it->second);
  }
  const int64_t classes = static_cast<int64_t>(code.size());
  std::vector<int64_t> sorted = encoded;
  std::sort(sorted.begin(), sorted.end());
  // allocation[f][k]: class k's samples in test fold f (bincount of y_order[f::n_splits]).
  std::vector<std::vector<int64_t>> allocation(
      static_cast<size_t>(n_splits), std::vector<int64_t>(static_cast<size_t>(classes), 0));
  for (size_t i = 0; i < sorted.size(); ++i)
    ++allocation[i % static_cast<size_t>(n_splits)][static_cast<size_t>(sorted[i])];
  std::vector<int64_t> folds(labels.size(), -1);
  for (int64_t k = 0; k < classes; ++k) {
    std::vector<int64_t> folds_for_class;  // arange(n_splits).repeat(allocation[:, k])
    for (int64_t f = 0; f < n_splits; ++f)
      folds_for_class.insert(
          folds_for_class.end(),
          static_cast<size_t>(allocation[static_cast<size_t>(f)][static_cast<size_t>(k)]), f);
    size_t next = 0;
    for (size_t i = 0; i < encoded.size(); ++i)
      if (encoded[i] == k) folds[i] = folds_for_class[next++];
  }
  return folds;
}

inline std::vector<int64_t> article_folds(const std::vector<double>& targets, int64_t n_splits,
                                          uint32_t seed) {
  const int64_t n = static_cast<int64_t>(targets.size());
  if (n == 0) throw std::invalid_argument("folds: no rows");
  const auto order = numpy_permutation(n, seed);  // shuffled row i = original row order[i]
  std::vector<double> shuffled;
  for (const int64_t i : order) shuffled.push_back(targets[static_cast<size_t>(i)]);
  const auto bins = static_cast<int64_t>(std::floor(1.0 + std::log2(static_cast<double>(n))));
  const auto folds_shuffled =
      stratified_kfold_test_folds(pandas_cut_codes(shuffled, bins), n_splits);
  std::vector<int64_t> folds(targets.size());
  for (size_t i = 0; i < order.size(); ++i)
    folds[static_cast<size_t>(order[i])] = folds_shuffled[i];
  return folds;
}

inline std::vector<int64_t> grouped_article_folds(const std::vector<double>& targets,
                                                  const std::vector<std::string>& groups,
                                                  int64_t n_splits, uint32_t seed) {
  if (groups.size() != targets.size())
    throw std::invalid_argument("folds: one group per row is needed");
  std::map<std::string, size_t> group_index;
  std::vector<double> group_targets;
  std::vector<size_t> row_group;
  for (size_t i = 0; i < groups.size(); ++i) {
    auto it = group_index.find(groups[i]);
    if (it == group_index.end()) {
      it = group_index.emplace(groups[i], group_targets.size()).first;
      group_targets.push_back(targets[i]);
    }
    row_group.push_back(it->second);
  }
  const auto group_folds = article_folds(group_targets, n_splits, seed);
  std::vector<int64_t> folds;
  for (const size_t g : row_group) folds.push_back(group_folds[g]);
  return folds;
}

}  // namespace roberta_regression
