// Shared by the libFuzzer targets (tools/fuzz.sh builds and runs them): each takes
// arbitrary bytes as one outside input and must return an error Status or succeed,
// never crash, hang, leak or trip a sanitizer.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace posttrain::fuzz {

// A file holding `data` (for parsers that read paths), unique per process.
inline std::string WriteTemp(const std::uint8_t* data, std::size_t size, const char* suffix) {
  const std::string path = "/tmp/posttrain_fuzz_" + std::to_string(::getpid()) + suffix;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f != nullptr) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  return path;
}

}  // namespace posttrain::fuzz
