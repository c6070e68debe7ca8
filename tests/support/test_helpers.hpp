// Small helpers shared by the tests.
#pragma once

#include <stdlib.h>  // mkdtemp
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace finetune_test {

/// The what() of the std::invalid_argument that f() throws, or
/// "<no std::invalid_argument>" when it throws none.
template <typename F>
std::string invalid_argument_message(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "<no std::invalid_argument>";
}

/// Whether `text` contains `part`.
inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// What a shell command gave: its exit status (-1 when killed by a signal)
/// and its stdout and stderr together.
struct CommandResult {
  int status;
  std::string output;
};

/// Runs `command` through the shell, stdout and stderr captured.
inline CommandResult run_command(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed for: " + command);
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

/// `s` quoted for the shell (single quotes).
inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// The whole file as bytes ("" when it cannot be read).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// A command's exit status, its stdout, and its stderr apart.
struct SplitResult {
  int status;
  std::string out, err;
};

/// Runs a shell command with stderr written to `err_file` (kept out of stdout).
inline SplitResult run_split(const std::string& command, const std::string& err_file) {
  const auto r = run_command("{ " + command + " 2>" + quote(err_file) + "; }");
  return {r.status, r.output, read_file(err_file)};
}

/// A fresh folder under the system temp dir, removed (permissions restored
/// first, for tests that make it unwritable) when the object goes.
struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "finetune_test_XXXXXX").string();
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (::mkdtemp(buffer.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = buffer.data();
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const {
    return (std::filesystem::path(path) / name).string();
  }
};

}  // namespace finetune_test
