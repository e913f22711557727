// Helpers shared by the tests: paths of the build and the data, and building a
// built-in component through the real plugin loader.
#pragma once

#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "posttrain/model/model_config.h"
#include "posttrain/plugin/plugin_host.h"

namespace posttrain::testing {

// Set by CMake.
inline std::string SourceDir() { return POSTTRAIN_TEST_SOURCE_DIR; }
inline std::string BuiltinPluginDir() { return POSTTRAIN_TEST_BUILTIN_PLUGIN_DIR; }
inline std::string FixturePluginDir(const std::string& name) {
  return std::string(POSTTRAIN_TEST_FIXTURE_PLUGIN_DIR) + "/" + name;
}
inline std::string CliPath() { return POSTTRAIN_TEST_CLI; }
// The Python with the independent references (torch, sentencepiece, jinja2, protobuf):
// Debian's /usr/bin/python3, or POSTTRAIN_TEST_PYTHON where they live elsewhere.
inline std::string Python() {
  const char* python = std::getenv("POSTTRAIN_TEST_PYTHON");
  return python != nullptr && *python != '\0' ? python : "/usr/bin/python3";
}
// The few MB of real model and data shipped in the repository (recipes/data).
inline std::string RepoDataPath(const std::string& file) { return SourceDir() + "/recipes/data/" + file; }
// ../shared/data relative to the repository root: the larger sets and fixtures.
inline std::string DataPath(const std::string& file) {
  return SourceDir() + "/../shared/data/" + file;
}
// A fresh directory under the test's temporary directory.
std::string TempDir(const std::string& name);
// Writes `content` to `path`.
void WriteFile(const std::string& path, const std::string& content);
std::string ReadFile(const std::string& path);

// A host with the built-in plugins loaded once per test binary.
PluginHost& BuiltinHost();

// Builds the built-in component `name` of interface I with these options.
template <typename I>
absl::StatusOr<std::unique_ptr<I>> CreateBuiltin(const std::string& name,
                                                 std::map<std::string, OptionValue> values) {
  const Registry& registry = BuiltinHost().registry();
  const RegisteredComponent* c = registry.Find(plugin_internal::KindOf<I>::value, name);
  if (c == nullptr) return absl::NotFoundError("no built-in component " + name);
  return registry.Create<I>(
      ComponentConfig(name, &c->registration.schema, std::move(values), "test [" + name + "]"));
}

// stories260K converted to a Hugging Face directory (once per test binary):
// config.json, model.safetensors, tokenizer.json (from tok512.model), ...
const std::string& Stories260KDir();

// A tiny Llama shape for trainer tests on random weights (vocab 61, hidden 16,
// 2 layers, 4 heads over 2 KV heads of 4 dims).
inline ModelConfig TinyTrainerModelConfig() {
  ModelConfig c;
  c.vocab_size = 61;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.rms_norm_eps = 1e-5;
  return c;
}

// Runs a shell command; returns its exit code and fills `output` with stdout+stderr.
int RunCommand(const std::string& command, std::string* output);

// Every tensor of a safetensors file by name (a test failure if it cannot be read).
std::map<std::string, at::Tensor> LoadTensors(const std::string& file);

// A loopback TCP port nobody listens on now (the kernel's pick).
int FreePort();

}  // namespace posttrain::testing
