// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// examples/roberta_regression/model/safetensors.hpp against Python's safetensors
// (tests/reference/ref_safetensors.py wrote the golden files with save_file;
// tests/reference/check_safetensors_roundtrip.py loads C++-written files back).
#include "catch.hpp"
#include "golden.hpp"
#include "model/safetensors.hpp"
#include "test_helpers.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

using roberta_regression::NamedTensors;
using roberta_regression::SafetensorsFile;

namespace {

const std::vector<std::string> kCases = {"all_dtypes", "names", "empty", "empty_with_metadata"};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

// A fresh per-process scratch directory (tests may run in parallel).
std::string scratch_dir() {
  static const std::string dir = [] {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "finetune_safetensors_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    return std::string(buf.data());
  }();
  static const struct Cleanup {
    ~Cleanup() {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    }
  } cleanup;
  return dir;
}

torch::ScalarType dtype_of(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> m = {
      {"F64", torch::kDouble},    {"F32", torch::kFloat}, {"F16", torch::kHalf},
      {"BF16", torch::kBFloat16}, {"I64", torch::kLong},  {"I32", torch::kInt},
      {"I16", torch::kShort},     {"I8", torch::kChar},   {"U8", torch::kByte},
      {"BOOL", torch::kBool}};
  return m.at(name);
}

std::vector<int64_t> shape_of(const nlohmann::json& entry) {
  return entry.at("shape").get<std::vector<int64_t>>();
}

// The tensor a golden entry describes, built from its values (no file I/O).
torch::Tensor tensor_of(const nlohmann::json& entry) {
  const torch::ScalarType type = dtype_of(entry.at("dtype").get<std::string>());
  const auto& values = entry.at("values");
  torch::Tensor t;
  if (type == torch::kBool) {
    std::vector<uint8_t> v;
    for (const auto& x : values) v.push_back(x.get<bool>() ? 1 : 0);
    t = torch::tensor(v.empty() ? std::vector<int64_t>{} : std::vector<int64_t>(v.begin(), v.end()),
                      torch::kLong)
            .to(torch::kBool);
  } else if (torch::isFloatingType(type)) {
    t = torch::tensor(values.get<std::vector<double>>(), torch::kDouble).to(type);
  } else {
    t = torch::tensor(values.get<std::vector<int64_t>>(), torch::kLong).to(type);
  }
  return t.reshape(shape_of(entry));
}

NamedTensors tensors_of(const nlohmann::json& golden) {
  NamedTensors out;
  for (const auto& e : golden.at("tensors"))
    out.emplace_back(e.at("name").get<std::string>(), tensor_of(e));
  return out;
}

std::map<std::string, std::string> metadata_of(const nlohmann::json& golden) {
  return golden.at("metadata").get<std::map<std::string, std::string>>();
}

// Exact equality including dtype and shape (torch::equal wants equal dtypes;
// -0.0 vs 0.0 is caught by the byte comparisons elsewhere).
bool same_tensor(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && torch::equal(a, b);
}

// Expects `bytes`, read from a file, to be rejected with std::invalid_argument
// whose message names the file and (when given) the key, and says `reason`
// right after the file's name: "safetensors file '<path><reason>".
void expect_rejected(const std::string& what, const std::string& bytes, const std::string& key,
                     const std::string& reason) {
  INFO("case: " << what);
  const std::string path = scratch_dir() + "/bad_" + what + ".safetensors";
  write_bytes(path, bytes);
  std::string message;
  try {
    roberta_regression::read_safetensors(path);
  } catch (const std::invalid_argument& e) {
    message = e.what();
  }
  INFO("message: " << message);
  REQUIRE(!message.empty());
  CHECK(message.find("safetensors file '" + path + reason) != std::string::npos);
  if (!key.empty()) CHECK(message.find("key '" + key + "'") != std::string::npos);
  // The in-memory entry point (the fuzzer's) agrees.
  CHECK_THROWS_AS(roberta_regression::parse_safetensors(
                      reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "mem"),
                  std::invalid_argument);
  std::remove(path.c_str());
}

// A file from a header text and a data buffer (header length = its size).
std::string make_file(const std::string& header, const std::string& buffer) {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + buffer;
}

std::string with_length(uint64_t n, const std::string& rest) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + rest;
}

const std::string kEntryA = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

}  // namespace

TEST_CASE("read_safetensors reads Python-written files", "[safetensors]") {
  for (const std::string& name : kCases) {
    INFO("case: " << name);
    const nlohmann::json golden = finetune_test::load_golden_json("safetensors/" + name + ".json");
    const SafetensorsFile file = roberta_regression::read_safetensors(
        finetune_test::golden_path("safetensors/" + name + ".safetensors"));
    REQUIRE(file.tensors.size() == golden.at("tensors").size());
    for (size_t i = 0; i < file.tensors.size(); ++i) {
      const auto& entry = golden.at("tensors")[i];
      const auto& [key, t] = file.tensors[i];
      INFO("key: " << key);
      CHECK(key == entry.at("name").get<std::string>());  // header order kept
      CHECK(t.device().is_cpu());
      CHECK(t.is_contiguous());
      CHECK(t.scalar_type() == dtype_of(entry.at("dtype").get<std::string>()));
      CHECK(t.sizes().vec() == shape_of(entry));
      // Values compared in a wide type against the JSON (not via tensor_of).
      const auto flat = t.reshape({-1});
      REQUIRE(flat.numel() == static_cast<int64_t>(entry.at("values").size()));
      for (int64_t j = 0; j < flat.numel(); ++j) {
        const auto& v = entry.at("values")[static_cast<size_t>(j)];
        if (t.scalar_type() == torch::kBool) {
          CHECK(flat[j].item<bool>() == v.get<bool>());
        } else if (torch::isFloatingType(t.scalar_type())) {
          const double got = flat[j].to(torch::kDouble).item<double>();
          CHECK(got == v.get<double>());
          CHECK(std::signbit(got) == std::signbit(v.get<double>()));
        } else {
          CHECK(flat[j].to(torch::kLong).item<int64_t>() == v.get<int64_t>());
        }
      }
    }
    CHECK(file.metadata == metadata_of(golden));
  }
}

TEST_CASE("write_safetensors writes the bytes Python's save_file writes", "[safetensors]") {
  for (const std::string& name : kCases) {
    INFO("case: " << name);
    const nlohmann::json golden = finetune_test::load_golden_json("safetensors/" + name + ".json");
    const std::string expected =
        read_bytes(finetune_test::golden_path("safetensors/" + name + ".safetensors"));
    NamedTensors tensors = tensors_of(golden);
    // save_file takes a dict: the input order must not matter.
    std::reverse(tensors.begin(), tensors.end());
    CHECK(roberta_regression::serialize_safetensors(tensors, metadata_of(golden)) == expected);
    const std::string path = scratch_dir() + "/" + name + ".safetensors";
    roberta_regression::write_safetensors(path, tensors, metadata_of(golden));
    CHECK(read_bytes(path) == expected);
    // Non-contiguous inputs are written as their contiguous copies.
    for (auto& [key, t] : tensors) {
      if (t.dim() == 2) t = t.t().contiguous().t();
    }
    CHECK(roberta_regression::serialize_safetensors(tensors, metadata_of(golden)) == expected);
  }
}

TEST_CASE("write then read round-trips in C++", "[safetensors]") {
  torch::manual_seed(3);
  NamedTensors tensors = {
      {"f64", torch::randn({3, 5}, torch::kDouble)},
      {"f32.t", torch::randn({4, 6}).t()},  // non-contiguous view
      {"f16", torch::randn({7}).to(torch::kHalf)},
      {"bf16", torch::randn({2, 3, 2}).to(torch::kBFloat16)},
      {"i64", torch::randint(-1000000, 1000000, {9}, torch::kLong)},
      {"i32", torch::randint(-1000, 1000, {2, 2}, torch::kInt)},
      {"i16", torch::randint(-1000, 1000, {3}, torch::kShort)},
      {"i8", torch::randint(-128, 127, {3}, torch::kChar)},
      {"u8", torch::randint(0, 255, {3}, torch::kByte)},
      {"bool", torch::randint(0, 2, {5}, torch::kLong).to(torch::kBool)},
      {"scalar", torch::tensor(2.5)},
      {"empty", torch::zeros({0, 4}, torch::kHalf)},
      {"sliced", torch::arange(20, torch::kFloat).slice(0, 3, 17, 2)},  // storage offset + stride
  };
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"b", "2"}, {"a", "\"x\"\n\u00e9"}};
  const std::string path = scratch_dir() + "/roundtrip.safetensors";
  roberta_regression::write_safetensors(path, tensors, metadata);
  const SafetensorsFile file = roberta_regression::read_safetensors(path);
  REQUIRE(file.tensors.size() == tensors.size());
  for (const auto& [key, t] : tensors) {
    INFO("key: " << key);
    auto it = std::find_if(file.tensors.begin(), file.tensors.end(),
                           [&](const auto& p) { return p.first == key; });
    REQUIRE(it != file.tensors.end());
    CHECK(same_tensor(it->second, t));
  }
  CHECK(file.metadata == metadata);
  // The returned tensors own their memory: writable, independent of the file.
  std::remove(path.c_str());
  for (const auto& [key, t] : file.tensors) {
    if (t.numel() > 0 && t.scalar_type() == torch::kFloat) t.add_(1);
  }
  // Overwrite atomically in place; no temporary file is left behind.
  roberta_regression::write_safetensors(path, tensors, metadata);
  roberta_regression::write_safetensors(path, tensors, metadata);
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(scratch_dir())) {
    if (entry.path().filename().string().rfind("roundtrip.safetensors", 0) == 0) ++files;
  }
  CHECK(files == 1);
  std::remove(path.c_str());
}

TEST_CASE("write_safetensors rejects what it cannot write", "[safetensors]") {
  using finetune_test::HasSubstring;
  using finetune_test::invalid_argument_message;
  using roberta_regression::write_safetensors;
  const std::string path = scratch_dir() + "/never.safetensors";
  CHECK_THAT(invalid_argument_message([&] {
               write_safetensors(path, {{"a", torch::zeros(2)}, {"a", torch::zeros(1)}});
             }),
             HasSubstring("write_safetensors: duplicate tensor name 'a'"));
  CHECK_THAT(invalid_argument_message([&] {
               write_safetensors(path, {{"a", torch::Tensor()}});
             }),
             HasSubstring("write_safetensors: tensor 'a' is undefined"));
  CHECK_THAT(invalid_argument_message([&] {
               write_safetensors(path, {{"c", torch::zeros(2, torch::kComplexFloat)}});
             }),
             HasSubstring("write_safetensors: tensor 'c' has unsupported dtype"));
  CHECK_THAT(invalid_argument_message([&] {
               write_safetensors(path, {{"__metadata__", torch::zeros(2)}});
             }),
             HasSubstring("write_safetensors: '__metadata__' is not a tensor name"));
  CHECK_THAT(invalid_argument_message([&] {
               write_safetensors(path, {{std::string("bad\xff"), torch::zeros(2)}});
             }),
             HasSubstring("name or metadata is not valid UTF-8"));
  // An I/O failure: std::runtime_error naming the file.
  const std::string unwritable = scratch_dir() + "/no/such/dir/x.safetensors";
  try {
    write_safetensors(unwritable, {{"a", torch::zeros(2)}});
    FAIL("no std::runtime_error for " << unwritable);
  } catch (const std::invalid_argument& e) {
    FAIL("std::invalid_argument for an I/O failure: " << e.what());
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), HasSubstring(unwritable));
  }
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("read_safetensors rejects malformed files", "[safetensors]") {
  const std::string valid =
      read_bytes(finetune_test::golden_path("safetensors/all_dtypes.safetensors"));
  const std::string buf8(8, '\0');

  SECTION("truncated at every length") {
    // Every proper prefix is invalid: the tensors must cover the buffer exactly.
    for (size_t len = 0; len < valid.size(); ++len) {
      INFO("length " << len);
      CHECK_THROWS_AS(roberta_regression::parse_safetensors(
                          reinterpret_cast<const uint8_t*>(valid.data()), len, "truncated"),
                      std::invalid_argument);
    }
    expect_rejected("empty_file", "", "",
                    "': file has 0 bytes, fewer than the 8-byte header length");
    expect_rejected("short_file", valid.substr(0, 7), "",
                    "': file has 7 bytes, fewer than the 8-byte header length");
    expect_rejected("truncated_header", valid.substr(0, 40), "",
                    "': header length 1088 exceeds the file size 40 minus 8");
    expect_rejected("truncated_data", valid.substr(0, valid.size() - 1), "bool",
                    "', key 'bool': data_offsets end 269 is past the data buffer (268 bytes)");
    expect_rejected("trailing_byte", valid + std::string(1, '\0'), "",
                    "': data buffer has 270 bytes but the tensors cover 269");
  }
  SECTION("header length") {
    expect_rejected("length_max", with_length(~uint64_t{0}, "{}"), "",
                    "': header length 18446744073709551615 exceeds the 100 MB limit");
    expect_rejected("length_over_100MB", with_length(100000001, "{}"), "",
                    "': header length 100000001 exceeds the 100 MB limit");
    expect_rejected("length_past_end", with_length(3, "{}"), "",
                    "': header length 3 exceeds the file size 10 minus 8");
    expect_rejected("length_zero", with_length(0, ""), "", "': header is not valid JSON");
  }
  SECTION("header JSON") {
    expect_rejected("bad_json", make_file("{\"a\":", buf8), "", "': header is not valid JSON");
    expect_rejected("not_object", make_file("[1, 2]", ""), "", "': header is not a JSON object");
    expect_rejected("string_header", make_file("\"hello\"", ""), "",
                    "': header is not a JSON object");
    expect_rejected("trailing_garbage", make_file("{} x", ""), "", "': header is not valid JSON");
    expect_rejected("nul_padding", make_file(std::string("{}\0\0\0\0\0\0", 8), ""), "",
                    "': header contains a NUL byte (not valid JSON)");
    expect_rejected("invalid_utf8", make_file("{\"a\xff\":{}}", ""), "",
                    "': header is not valid JSON");
    expect_rejected("comment", make_file("{/* c */}", ""), "", "': header is not valid JSON");
    expect_rejected("deep_nesting", make_file("{\"a\":{\"shape\":[[[[[[1]]]]]]}}", ""), "",
                    "': header nests deeper than a safetensors header can");
    expect_rejected("very_deep_nesting",
                    make_file(std::string(200000, '[') + std::string(200000, ']'), ""), "",
                    "': header nests deeper than a safetensors header can");
    expect_rejected("duplicate_key", make_file("{" + kEntryA + "," + kEntryA + "}", buf8), "a",
                    "': duplicate key 'a' in the header");
    expect_rejected(
        "duplicate_field",
        make_file(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", buf8),
        "dtype", "': duplicate key 'dtype' in the header");
    expect_rejected("duplicate_metadata", make_file(R"({"__metadata__":{"k":"1","k":"2"}})", ""),
                    "k", "': duplicate key 'k' in the header");
  }
  SECTION("entries") {
    expect_rejected("entry_not_object", make_file(R"({"a":[1]})", ""), "a",
                    "', key 'a': entry is not an object");
    expect_rejected("missing_dtype", make_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", buf8),
                    "a", "', key 'a': missing field 'dtype'");
    expect_rejected("missing_shape",
                    make_file(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", buf8), "a",
                    "', key 'a': missing field 'shape'");
    expect_rejected("missing_offsets", make_file(R"({"a":{"dtype":"F32","shape":[2]}})", buf8), "a",
                    "', key 'a': missing field 'data_offsets'");
    expect_rejected(
        "extra_field",
        make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", buf8), "a",
        "', key 'a': unexpected field 'x'");
    expect_rejected("dtype_not_string",
                    make_file(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", buf8), "a",
                    "', key 'a': dtype is not a string");
    for (const char* dtype :
         {"F8_E4M3", "F8_E5M2", "U16", "U32", "U64", "C64", "f32", "", "F32 "}) {
      const std::string header =
          std::string(R"({"a":{"dtype":")") + dtype + R"(","shape":[8],"data_offsets":[0,8]}})";
      expect_rejected(std::string("dtype_") + dtype, make_file(header, buf8), "a",
                      std::string("', key 'a': unsupported dtype '") + dtype + "'");
      // The message names the dtype.
      try {
        roberta_regression::parse_safetensors_header(
            reinterpret_cast<const uint8_t*>(make_file(header, buf8).data()),
            make_file(header, buf8).size(), "m");
        FAIL("accepted dtype " << dtype);
      } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find(std::string("'") + dtype + "'") != std::string::npos);
      }
    }
    expect_rejected("shape_not_array",
                    make_file(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", buf8), "a",
                    "', key 'a': shape is not an array");
    expect_rejected("shape_negative",
                    make_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", buf8),
                    "a", "', key 'a': shape has an element that is not a non-negative integer");
    expect_rejected("shape_float",
                    make_file(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", buf8),
                    "a", "', key 'a': shape has an element that is not a non-negative integer");
    expect_rejected("shape_string",
                    make_file(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", buf8),
                    "a", "', key 'a': shape has an element that is not a non-negative integer");
    expect_rejected(
        "shape_huge_dim",
        make_file(R"({"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8]}})",
                  buf8),
        "a", "', key 'a': shape dimension 18446744073709551615 is too large");
    expect_rejected(
        "shape_beyond_u64",
        make_file(R"({"a":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,8]}})",
                  buf8),
        "a", "', key 'a': shape has an element that is not a non-negative integer");
    // 2^32 * 2^32 overflows u64; 2^62 * 4 bytes overflows too.
    expect_rejected(
        "shape_overflow",
        make_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,8]}})",
                  buf8),
        "a", "', key 'a': shape's element count overflows");
    expect_rejected(
        "nbytes_overflow",
        make_file(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})",
                  buf8),
        "a", "', key 'a': shape's element count overflows");
    expect_rejected("shape_mismatch",
                    make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", buf8),
                    "a", "', key 'a': data_offsets span 8 bytes but dtype F32 and shape need 12");
    expect_rejected("dtype_mismatch",
                    make_file(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", buf8),
                    "a", "', key 'a': data_offsets span 8 bytes but dtype F64 and shape need 16");
  }
  SECTION("offsets") {
    expect_rejected("offsets_not_array",
                    make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":8}})", buf8), "a",
                    "', key 'a': data_offsets is not an array of 2 non-negative integers");
    expect_rejected("offsets_three",
                    make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", buf8),
                    "a", "', key 'a': data_offsets is not an array of 2 non-negative integers");
    expect_rejected("offsets_one",
                    make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", buf8), "a",
                    "', key 'a': data_offsets is not an array of 2 non-negative integers");
    expect_rejected("offsets_negative",
                    make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", buf8),
                    "a", "', key 'a': data_offsets is not an array of 2 non-negative integers");
    expect_rejected("offsets_reversed",
                    make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", buf8),
                    "a", "', key 'a': data_offsets begin 8 > end 0");
    expect_rejected("offsets_past_end",
                    make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", buf8),
                    "a", "', key 'a': data_offsets end 16 is past the data buffer (8 bytes)");
    expect_rejected(
        "offsets_huge",
        make_file(
            R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]}})",
            buf8),
        "a", "', key 'a': data_offsets end 18446744073709551615 is past the data buffer (8 bytes)");
    expect_rejected("overlap",
                    make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                              buf8),
                    "b", "', key 'b': data_offsets [4, 8) overlap another tensor");
    expect_rejected("same_offsets",
                    make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                              buf8),
                    "", "', key 'b': data_offsets [0, 8) overlap another tensor");
    expect_rejected(
        "hole",
        make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})",
                  buf8),
        "b", "', key 'b': data_offsets begin 6 leaves a hole in the data buffer after byte 4");
    expect_rejected("uncovered_tail",
                    make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", buf8),
                    "", "': data buffer has 8 bytes but the tensors cover 4");
    expect_rejected("no_tensors_but_data", make_file("{}", buf8), "",
                    "': data buffer has 8 bytes but the tensors cover 0");
  }
  SECTION("metadata and values") {
    expect_rejected("metadata_not_object", make_file(R"({"__metadata__":["x"]})", ""),
                    "__metadata__", "', key '__metadata__': __metadata__ is not an object");
    expect_rejected("metadata_number", make_file(R"({"__metadata__":{"k":1}})", ""), "__metadata__",
                    "', key '__metadata__': metadata value of 'k' is not a string");
    expect_rejected("metadata_null", make_file(R"({"__metadata__":{"k":null}})", ""),
                    "__metadata__", "', key '__metadata__': metadata value of 'k' is not a string");
    expect_rejected("metadata_nested", make_file(R"({"__metadata__":{"k":{"x":"y"}}})", ""),
                    "__metadata__", "', key '__metadata__': metadata value of 'k' is not a string");
    expect_rejected(
        "bool_byte",
        make_file(R"({"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", "\x01\x02"), "a",
        "', key 'a': BOOL tensor holds a byte that is neither 0 nor 1");
  }
  SECTION("valid edge cases are accepted") {
    // Leading/trailing JSON whitespace, entries out of offset order, zero-size
    // tensors anywhere: all valid for the Rust crate too.
    const std::string text = make_file(
        R"(  {"b":{"dtype":"U8","shape":[2],"data_offsets":[8,10]},"e":{"dtype":"F16","shape":[0],"data_offsets":[10,10]},)"
        R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   )",
        std::string(8, '\0') + "\x05\x06");
    const SafetensorsFile f = roberta_regression::parse_safetensors(
        reinterpret_cast<const uint8_t*>(text.data()), text.size(), "ok");
    REQUIRE(f.tensors.size() == 3);
    CHECK(f.tensors[0].first == "b");  // header order
    CHECK(f.tensors[1].first == "e");
    CHECK(f.tensors[2].first == "a");
    CHECK(f.tensors[0].second[1].item<int64_t>() == 6);
    CHECK(f.tensors[1].second.numel() == 0);
    CHECK(f.metadata.empty());
    // "__metadata__": null means none (serde's Option), as Python reads it.
    const std::string null_meta = make_file(R"({"__metadata__":null})", "");
    CHECK(roberta_regression::parse_safetensors(reinterpret_cast<const uint8_t*>(null_meta.data()),
                                                null_meta.size(), "ok")
              .metadata.empty());
  }
}

TEST_CASE("Python's safetensors loads C++-written files", "[safetensors][python]") {
  const std::string python = finetune_test::kPython;
  // `make test` always has the venv: without it this check fails, never passes unseen.
  {
    INFO("FINETUNE_PYTHON (the venv's Python with safetensors) is not set: run scripts/setup.sh");
    REQUIRE_FALSE(python.empty());
  }
  const std::string script =
      std::string(finetune_test::kSourceDir) + "/tests/reference/check_safetensors_roundtrip.py";
  auto run = [&](const std::string& file, const std::string& expected) {
    const std::string cmd = "'" + python + "' '" + script + "' '" + file + "' '" + expected + "'";
    const int status = std::system(cmd.c_str());
    INFO("command: " << cmd);
    REQUIRE(status != -1);
    REQUIRE(WIFEXITED(status));
    return WEXITSTATUS(status);
  };
  // The golden cases, written by C++.
  for (const std::string& name : kCases) {
    const nlohmann::json golden = finetune_test::load_golden_json("safetensors/" + name + ".json");
    const std::string file = scratch_dir() + "/py_" + name + ".safetensors";
    roberta_regression::write_safetensors(file, tensors_of(golden), metadata_of(golden));
    CHECK(run(file, finetune_test::golden_path("safetensors/" + name + ".json")) == 0);
  }
  // Random tensors made here; the expected values are what C++ holds.
  torch::manual_seed(11);
  NamedTensors tensors = {{"w", torch::randn({8, 3})},
                          {"h", torch::randn({5}).to(torch::kHalf)},
                          {"b", torch::randn({2, 2}).to(torch::kBFloat16)},
                          {"d", torch::randn({3}, torch::kDouble)},
                          {"ids", torch::randint(-50, 50, {6}, torch::kLong)},
                          {"mask", torch::randint(0, 2, {4}, torch::kLong).to(torch::kBool)}};
  nlohmann::json expected = {{"tensors", nlohmann::json::array()},
                             {"metadata", {{"format", "pt"}}}};
  for (const auto& [key, t] : tensors) {
    nlohmann::json values = nlohmann::json::array();
    const auto flat = t.reshape({-1});
    for (int64_t i = 0; i < flat.numel(); ++i) {
      if (t.scalar_type() == torch::kBool) {
        values.push_back(flat[i].item<bool>());
      } else if (torch::isFloatingType(t.scalar_type())) {
        values.push_back(flat[i].to(torch::kDouble).item<double>());
      } else {
        values.push_back(flat[i].item<int64_t>());
      }
    }
    static const std::map<torch::ScalarType, std::string> names = {
        {torch::kFloat, "F32"},  {torch::kHalf, "F16"}, {torch::kBFloat16, "BF16"},
        {torch::kDouble, "F64"}, {torch::kLong, "I64"}, {torch::kBool, "BOOL"}};
    expected["tensors"].push_back({{"name", key},
                                   {"dtype", names.at(t.scalar_type())},
                                   {"shape", t.sizes().vec()},
                                   {"values", values}});
  }
  const std::string file = scratch_dir() + "/py_random.safetensors";
  const std::string expected_path = scratch_dir() + "/py_random.json";
  write_bytes(expected_path, expected.dump());
  roberta_regression::write_safetensors(file, tensors, {{"format", "pt"}});
  CHECK(run(file, expected_path) == 0);
  // The oracle can fail: a changed value is detected.
  tensors[0].second[0][0] += 1;
  roberta_regression::write_safetensors(file, tensors, {{"format", "pt"}});
  CHECK(run(file, expected_path) == 1);
}
