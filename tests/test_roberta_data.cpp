// The example's CSV reading: RFC 4180 quoting, CommonLit's columns, the
// embedded data set, and every bad-input error naming file and line.
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "catch.hpp"
#include "data/data.hpp"
#include "roberta_paths.hpp"
#include "test_helpers.hpp"

namespace {

namespace fs = std::filesystem;
using namespace roberta_regression;
using finetune_test::HasSubstring;
using finetune_test::invalid_argument_message;

std::string write(const finetune_test::TempDir& dir, const std::string& name,
                  const std::string& text) {
  const auto path = (fs::path(dir.path) / name).string();
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

const std::string kHeader = "id,url_legal,license,excerpt,target,standard_error\n";

}  // namespace

TEST_CASE("parse_csv follows RFC 4180", "[roberta][data]") {
  std::vector<int64_t> lines;
  const auto records = parse_csv(
      "\xEF\xBB\xBF"
      "a,b,c\r\n"
      "1,\"x, \"\"quoted\"\"\ny\",3\r\n"
      "\"\",,\"end\"\n"
      "last,row,unterminated-line",
      "t.csv", &lines);
  REQUIRE(records.size() == 4);
  CHECK(records[0] == std::vector<std::string>{"a", "b", "c"});
  CHECK(records[1] == std::vector<std::string>{"1", "x, \"quoted\"\ny", "3"});
  CHECK(records[2] == std::vector<std::string>{"", "", "end"});
  CHECK(records[3] == std::vector<std::string>{"last", "row", "unterminated-line"});
  CHECK(lines == std::vector<int64_t>{1, 2, 4, 5});  // the quoted newline spans lines 2-3

  CHECK_THAT(invalid_argument_message([] { parse_csv("a,b\n1,\"open\n2,3\n", "u.csv"); }),
             HasSubstring("u.csv:2: unterminated quoted field"));
  CHECK_THAT(invalid_argument_message([] { parse_csv("a,b\n\"x\"y,1\n", "v.csv"); }),
             HasSubstring("v.csv:2: text after a closing quote"));
}

TEST_CASE("read_commonlit_csv reads CommonLit's shape", "[roberta][data]") {
  finetune_test::TempDir dir;
  const auto path = write(dir, "train.csv",
                          kHeader +
                              "a1,,,\"Commas, \"\"quotes\"\"\nand newlines.\",-0.34,0.46\n"
                              "ref,,,Reference text.,0,0\n"
                              "\n"
                              "a2,http://x,CC BY,Plain text,1.5e0,0.5\n");
  const auto data = read_commonlit_csv(path);
  REQUIRE(data.rows.size() == 2);
  CHECK(data.dropped == 1);  // target 0 and standard_error 0, as the article
  CHECK_FALSE(data.has_address);
  CHECK(data.rows[0].id == "a1");
  CHECK(data.rows[0].excerpt == "Commas, \"quotes\"\nand newlines.");
  CHECK(data.rows[0].target == -0.34);
  CHECK(data.rows[0].line == 2);
  CHECK(data.rows[1].target == 1.5);
  CHECK(data.rows[1].line == 6);
}

TEST_CASE("the embedded data set: 2,765 passages of 233 addresses", "[roberta][data]") {
  const auto data = read_commonlit_csv(std::string(kDataDir) + "/sotu_passages.csv.gz");
  CHECK(data.rows.size() == 2765);
  CHECK(data.has_address);
  std::set<std::string> addresses;
  for (const auto& row : data.rows) {
    addresses.insert(row.address);
    CHECK(row.target >= 1790);
    CHECK(row.target <= 2021);
  }
  CHECK(addresses.size() == 233);
}

TEST_CASE("bad data files are clear errors naming file and line", "[roberta][data]") {
  finetune_test::TempDir dir;
  auto error = [&](const std::string& name, const std::string& text) {
    const auto path = write(dir, name, text);
    return invalid_argument_message([&] { read_commonlit_csv(path); });
  };
  CHECK_THAT(error("a.csv", "id,excerpt,standard_error\nx,text,0.5\n"),
             HasSubstring("a.csv:1: missing column \"target\""));
  CHECK_THAT(error("b.csv", kHeader + "x,,,text,high,0.5\n"),
             HasSubstring("b.csv:2: target is not a number: \"high\""));
  CHECK_THAT(error("c.csv", kHeader + "x,,,text,1.0,\n"),
             HasSubstring("c.csv:2: standard_error is not a number"));
  CHECK_THAT(error("d.csv", kHeader + "x,,,text,1.0,0.5\ny,,,  ,1.0,0.5\n"),
             HasSubstring("d.csv:3: empty excerpt (id \"y\")"));
  CHECK_THAT(error("e.csv", kHeader + "x,,,text,1.0\n"),
             HasSubstring("e.csv:2: 5 fields, the header has 6"));
  CHECK_THAT(error("f.csv", kHeader + "x,,,\"never closed,1.0,0.5\n"),
             HasSubstring("f.csv:2: unterminated quoted field"));
  CHECK_THAT(error("g.csv", kHeader), HasSubstring("g.csv: no data rows"));
  CHECK_THAT(error("h.csv", ""), HasSubstring("h.csv: empty file"));
  CHECK_THAT(invalid_argument_message(
                 [&] { read_commonlit_csv((fs::path(dir.path) / "none.csv").string()); }),
             HasSubstring("none.csv: cannot open"));
  // A truncated gzip file.
  const auto gz = (fs::path(dir.path) / "t.csv.gz").string();
  {
    gzFile f = gzopen(gz.c_str(), "wb");
    const std::string text = kHeader + std::string(20000, 'x');
    gzwrite(f, text.data(), static_cast<unsigned>(text.size()));
    gzclose(f);
  }
  fs::resize_file(gz, fs::file_size(gz) / 2);
  CHECK_THAT(invalid_argument_message([&] { read_commonlit_csv(gz); }),
             HasSubstring("t.csv.gz: read error"));
}
