// The example's folds against the article notebook's own code (numpy seed,
// pandas sample and cut, scikit-learn StratifiedKFold; golden:
// tests/reference/ref_folds.py).
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "catch.hpp"
#include "data/data.hpp"
#include "data/folds.hpp"
#include "golden.hpp"
#include "roberta_paths.hpp"
#include "test_helpers.hpp"

using namespace roberta_regression;

TEST_CASE("folds equal the notebook's, step by step", "[roberta][folds]") {
  const auto golden = finetune_test::load_golden_json("folds_cases.json");
  REQUIRE(golden.size() == 5);
  for (const auto& [name, c] : golden.items()) {
    INFO(name);
    const auto targets = c.at("targets").get<std::vector<double>>();
    const auto k = c.at("n_splits").get<int64_t>();
    const auto seed = c.at("seed").get<uint32_t>();
    const auto permutation = numpy_permutation(static_cast<int64_t>(targets.size()), seed);
    CHECK(permutation == c.at("permutation").get<std::vector<int64_t>>());
    std::vector<double> shuffled;
    for (const auto i : permutation) shuffled.push_back(targets[static_cast<size_t>(i)]);
    const auto bins = static_cast<int64_t>(std::floor(1 + std::log2(double(targets.size()))));
    CHECK(pandas_cut_codes(shuffled, bins) == c.at("bin_codes").get<std::vector<int64_t>>());
    CHECK(article_folds(targets, k, seed) == c.at("folds").get<std::vector<int64_t>>());
  }
}

TEST_CASE("grouped folds keep each address in one fold", "[roberta][folds]") {
  const auto data = read_commonlit_csv(std::string(kDataDir) + "/sotu_passages.csv.gz");
  std::vector<double> targets;
  std::vector<std::string> groups;
  for (const auto& row : data.rows) {
    targets.push_back(row.target);
    groups.push_back(row.address);
  }
  const auto golden = finetune_test::load_golden_json("folds_cases.json").at("sotu_addresses_k5");
  const auto address_folds = golden.at("folds").get<std::vector<int64_t>>();
  const auto folds = grouped_article_folds(targets, groups, 5, 3377);
  std::map<std::string, int64_t> fold_of;
  std::vector<std::string> order;  // addresses in order of first appearance
  for (size_t i = 0; i < folds.size(); ++i) {
    if (!fold_of.count(groups[i])) order.push_back(groups[i]);
    const auto [it, inserted] = fold_of.emplace(groups[i], folds[i]);
    CHECK(it->second == folds[i]);  // never straddles
  }
  REQUIRE(order.size() == address_folds.size());
  for (size_t g = 0; g < order.size(); ++g) CHECK(fold_of[order[g]] == address_folds[g]);
}

TEST_CASE("impossible fold settings are errors", "[roberta][folds]") {
  using finetune_test::HasSubstring;
  using finetune_test::invalid_argument_message;
  CHECK_THAT(invalid_argument_message([] {
               article_folds({1.0, 2.0, 3.0}, 1, 0);
             }),
             HasSubstring("folds: the number of folds must be at least 2"));
  CHECK_THAT(invalid_argument_message([] {
               article_folds({1.0, 2.0, 3.0}, 5, 0);
             }),
             HasSubstring("folds: 5 folds need at least 5 rows"));
  CHECK_THAT(invalid_argument_message([] { article_folds({}, 5, 0); }),
             HasSubstring("folds: no rows"));
  CHECK_THAT(invalid_argument_message([] { grouped_article_folds({1.0}, {}, 2, 0); }),
             HasSubstring("folds: one group per row is needed"));
}
