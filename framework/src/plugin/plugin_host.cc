#include "posttrain/plugin/plugin_host.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "absl/strings/str_split.h"
#include "boost/dll/runtime_symbol_info.hpp"
#include "boost/dll/shared_library.hpp"
#include "spdlog/spdlog.h"

namespace posttrain {
namespace fs = std::filesystem;

namespace {

// Libraries stay loaded until the process exits: components built from a plugin,
// and the registrations' code, must never outlive their library.
void KeepAliveUntilExit(boost::dll::shared_library library) {
  static std::mutex mutex;
  static auto* libraries = new std::vector<boost::dll::shared_library>();
  std::lock_guard<std::mutex> lock(mutex);
  libraries->push_back(std::move(library));
}

}  // namespace

struct PluginHost::Library {
  std::string path;
  std::string plugin_name;
};

PluginHost::PluginHost() = default;
PluginHost::~PluginHost() = default;

std::string PluginHost::BuiltinPluginDirectory() {
  boost::dll::fs::error_code ec;
  boost::dll::fs::path exe = boost::dll::program_location(ec);
  if (ec) return "";
  return (fs::path(exe.parent_path().string()) / ".." / "lib" / "posttrain" / "plugins")
      .lexically_normal()
      .string();
}

absl::Status PluginHost::LoadDefaultDirectories() {
  std::string builtin = BuiltinPluginDirectory();
  std::error_code ec;
  if (!builtin.empty() && fs::is_directory(builtin, ec)) {
    POSTTRAIN_RETURN_IF_ERROR(LoadDirectory(builtin));
  } else {
    spdlog::debug("no built-in plugin directory at {}", builtin);
  }
  if (const char* env = std::getenv("POSTTRAIN_PLUGIN_PATH"); env != nullptr) {
    for (absl::string_view dir : absl::StrSplit(env, ':', absl::SkipEmpty())) {
      POSTTRAIN_RETURN_IF_ERROR(
          Annotate(LoadDirectory(std::string(dir)), "POSTTRAIN_PLUGIN_PATH"));
    }
  }
  return absl::OkStatus();
}

absl::Status PluginHost::LoadDirectory(const std::string& dir) {
  std::error_code ec;
  if (fs::is_regular_file(dir, ec)) return LoadLibrary(dir);
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("plugin directory '", dir, "' does not exist"));
  }
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".so") {
      files.push_back(entry.path().string());
    }
  }
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot list plugin directory '", dir, "': ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  for (const std::string& file : files) POSTTRAIN_RETURN_IF_ERROR(LoadLibrary(file));
  return absl::OkStatus();
}

absl::Status PluginHost::LoadLibrary(const std::string& path) {
  std::error_code ec;
  fs::path canonical = fs::canonical(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("plugin library '", path, "' does not exist"));
  const std::string where = canonical.string();
  for (const auto& library : libraries_) {
    if (library->path == where) return absl::OkStatus();  // already loaded
  }

  boost::dll::shared_library library;
  boost::dll::fs::error_code load_error;
  library.load(where, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local,
               load_error);
  if (load_error) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load plugin library '", where, "': ", load_error.message()));
  }
  if (!library.has(kPluginEntrySymbol)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "'", where, "' is not a posttrain plugin: it does not export '", kPluginEntrySymbol,
        "' (a plugin defines it with POSTTRAIN_PLUGIN(\"name\") and is built with "
        "posttrain_add_plugin)"));
  }
  const PluginManifest* manifest = library.get_alias<PluginEntryFn>(kPluginEntrySymbol)();
  if (manifest == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("plugin '", where, "' returned no manifest from ", kPluginEntrySymbol));
  }
  if (manifest->api_version != kApiVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "plugin '", where, "' was built for posttrain plugin api_version ",
        manifest->api_version, " but this host has api_version ", kApiVersion,
        "; rebuild the plugin against this posttrain"));
  }
  std::string plugin_name = manifest->plugin_name != nullptr ? manifest->plugin_name : "";
  // From here on the registry may hold code of this library.
  KeepAliveUntilExit(library);
  auto loaded = std::make_unique<Library>();
  loaded->path = where;
  loaded->plugin_name = plugin_name;
  libraries_.push_back(std::move(loaded));
  if (manifest->registrations == nullptr || manifest->registrations->empty()) {
    spdlog::warn("plugin '{}' ({}) registers no components", plugin_name, where);
  } else {
    for (const Registration& registration : *manifest->registrations) {
      POSTTRAIN_RETURN_IF_ERROR(registry_.Add(registration, plugin_name, where));
    }
  }
  spdlog::debug("loaded plugin '{}' from {}", plugin_name, where);
  return absl::OkStatus();
}

std::vector<std::string> PluginHost::LibraryPaths() const {
  std::vector<std::string> paths;
  for (const auto& library : libraries_) paths.push_back(library->path);
  return paths;
}

}  // namespace posttrain
