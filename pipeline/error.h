#pragma once
// One error policy for the whole pipeline (DESIGN.md, "Conventions").
//
// Every expected failure (bad input, missing file, mismatched settings) is thrown as
// pipeline::Error whose message names what was wrong, where (file, record, key) and,
// when useful, what to do. Each stage's main() catches it once and exits 1.
// UsageError marks a bad combination of settings found after flag parsing
// (e.g. --precision fp16 on a CPU); main() maps it to exit code 2.

#include <fmt/format.h>
#include <fmt/ranges.h>  // lets messages format vectors (tensor shapes, key lists)

#include <stdexcept>
#include <string>
#include <utility>

namespace pipeline {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class UsageError : public Error {
 public:
  using Error::Error;
};

// Throws pipeline::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Throws pipeline::UsageError with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void usage_fail(fmt::format_string<Args...> format, Args&&... args) {
  throw UsageError(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace pipeline
