// The plugin host: finds and loads plugin libraries (Boost.DLL) into a Registry.
//
// Search order: the built-in plugin directory (<exe>/../lib/posttrain/plugins),
// then each directory of POSTTRAIN_PLUGIN_PATH (':'-separated), then a recipe's
// `plugin_dirs`. Every `*.so` in a searched directory must be a posttrain plugin.
// Each library is loaded once (by canonical path) and kept loaded until the process
// exits, so no component built from it can outlive its code.
//
//   PluginHost host;
//   POSTTRAIN_RETURN_IF_ERROR(host.LoadDefaultDirectories());
//   POSTTRAIN_RETURN_IF_ERROR(host.LoadDirectory("/opt/my_plugins"));
//   for (const auto* c : host.registry().All()) ...
//
// Errors (absl::Status, never exceptions):
//   NotFound          a directory or library that does not exist;
//   FailedPrecondition a library that cannot be loaded (dlopen's message), that is
//                     not a plugin (no `posttrain_plugin_entry`), or that was built
//                     for another api_version;
//   AlreadyExists     two plugins registering the same kind and name.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "posttrain/plugin/registry.h"

namespace posttrain {

class PluginHost {
 public:
  PluginHost();
  ~PluginHost();
  PluginHost(const PluginHost&) = delete;
  PluginHost& operator=(const PluginHost&) = delete;

  // The built-in directory and POSTTRAIN_PLUGIN_PATH.
  absl::Status LoadDefaultDirectories();
  // Every *.so in `dir` (sorted by name); a path to a single .so is loaded as such.
  absl::Status LoadDirectory(const std::string& dir);
  // One plugin library.
  absl::Status LoadLibrary(const std::string& path);

  const Registry& registry() const { return registry_; }
  // Libraries loaded so far (canonical paths).
  std::vector<std::string> LibraryPaths() const;

  // <exe>/../lib/posttrain/plugins, where the build and the install put the
  // built-in plugins.
  static std::string BuiltinPluginDirectory();

 private:
  struct Library;
  // The library handles themselves are kept until process exit (see .cc).
  std::vector<std::unique_ptr<Library>> libraries_;
  Registry registry_;
};

}  // namespace posttrain
