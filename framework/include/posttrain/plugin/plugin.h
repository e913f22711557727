// Writing a plugin: registration macros and the one exported entry symbol.
//
// A plugin is a shared library with hidden visibility that exports exactly one
// symbol, `posttrain_plugin_entry` (made by POSTTRAIN_PLUGIN), returning a
// PluginManifest: {api_version, plugin name, registrations}. The registration macros
// only append to a list inside the plugin; the host is never called during static
// initialisation. Build with posttrain_add_plugin() (CMake), which sets visibility.
//
//   // my_rewards.cc
//   #include "posttrain/plugin/plugin.h"
//   class Shortness final : public posttrain::RewardFunction { ... };   // Schema(), Create()
//   POSTTRAIN_REGISTER_REWARD_FUNCTION("shortness", Shortness);
//   POSTTRAIN_PLUGIN("my_rewards");     // once per plugin, in any one source file
//
// A registered class provides
//   static posttrain::ComponentSchema Schema();
//   static absl::StatusOr<std::unique_ptr<Interface>> Create(const posttrain::ComponentConfig&);
#pragma once

#include "absl/strings/string_view.h"
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "boost/dll/alias.hpp"
#include "posttrain/core/status.h"
#include "posttrain/api/adapter.h"
#include "posttrain/api/data_adapter.h"
#include "posttrain/api/reward_function.h"
#include "posttrain/api/sampler.h"
#include "posttrain/api/trainer.h"
#include "posttrain/core/component_config.h"

namespace posttrain {

// Bumped whenever any type a plugin sees changes layout or meaning. The host loads
// only plugins built with exactly this version.
inline constexpr std::uint32_t kApiVersion = 11;

enum class ComponentKind { kTrainer, kRewardFunction, kSampler, kDataAdapter, kAdapter };

// "trainer", "reward_function", "sampler", "data_adapter", "adapter".
absl::string_view ComponentKindName(ComponentKind kind);

template <typename I>
using Factory = std::function<absl::StatusOr<std::unique_ptr<I>>(const ComponentConfig&)>;

struct Registration {
  ComponentKind kind;
  std::string name;
  ComponentSchema schema;
  std::variant<Factory<Trainer>, Factory<RewardFunction>, Factory<Sampler>, Factory<DataAdapter>, Factory<Adapter>>
      factory;
};

// What the entry symbol returns. Standard layout with api_version first, so a host
// can read the version of a plugin built against any other version before touching
// anything else.
struct PluginManifest {
  std::uint32_t api_version;
  const char* plugin_name;
  const std::vector<Registration>* registrations;
};

using PluginEntryFn = const PluginManifest*();
inline constexpr const char* kPluginEntrySymbol = "posttrain_plugin_entry";

namespace plugin_internal {

// The plugin's own registration list. Declared hidden so every plugin library has
// its own, whatever flags it was built with; defined by POSTTRAIN_PLUGIN.
__attribute__((visibility("hidden"))) std::vector<Registration>& LocalRegistrations();
__attribute__((visibility("hidden"))) const PluginManifest* PluginEntry();

template <typename I> struct KindOf;
template <> struct KindOf<Trainer> { static constexpr ComponentKind value = ComponentKind::kTrainer; };
template <> struct KindOf<RewardFunction> { static constexpr ComponentKind value = ComponentKind::kRewardFunction; };
template <> struct KindOf<Sampler> { static constexpr ComponentKind value = ComponentKind::kSampler; };
template <> struct KindOf<DataAdapter> { static constexpr ComponentKind value = ComponentKind::kDataAdapter; };
template <> struct KindOf<Adapter> { static constexpr ComponentKind value = ComponentKind::kAdapter; };

template <typename I, typename T>
bool Register(const char* name) {
  Factory<I> factory = [](const ComponentConfig& config) -> absl::StatusOr<std::unique_ptr<I>> {
    absl::StatusOr<std::unique_ptr<I>> made = T::Create(config);
    return made;
  };
  LocalRegistrations().push_back(Registration{KindOf<I>::value, name, T::Schema(), std::move(factory)});
  return true;
}

}  // namespace plugin_internal
}  // namespace posttrain

#define POSTTRAIN_PLUGIN_CONCAT_INNER_(a, b) a##b
#define POSTTRAIN_PLUGIN_CONCAT_(a, b) POSTTRAIN_PLUGIN_CONCAT_INNER_(a, b)

#define POSTTRAIN_REGISTER_(Interface, name, Class)                                   \
  namespace {                                                                         \
  [[maybe_unused]] const bool POSTTRAIN_PLUGIN_CONCAT_(posttrain_registered_, __LINE__) = \
      ::posttrain::plugin_internal::Register<::posttrain::Interface, Class>(name);    \
  }

#define POSTTRAIN_REGISTER_TRAINER(name, Class) POSTTRAIN_REGISTER_(Trainer, name, Class)
#define POSTTRAIN_REGISTER_REWARD_FUNCTION(name, Class) \
  POSTTRAIN_REGISTER_(RewardFunction, name, Class)
#define POSTTRAIN_REGISTER_SAMPLER(name, Class) POSTTRAIN_REGISTER_(Sampler, name, Class)
#define POSTTRAIN_REGISTER_DATA_ADAPTER(name, Class) POSTTRAIN_REGISTER_(DataAdapter, name, Class)
#define POSTTRAIN_REGISTER_ADAPTER(name, Class) POSTTRAIN_REGISTER_(Adapter, name, Class)

// Defines the plugin's entry symbol (a Boost.DLL alias). Exactly once per plugin.
#define POSTTRAIN_PLUGIN(plugin_name)                                               \
  namespace posttrain::plugin_internal {                                            \
  std::vector<Registration>& LocalRegistrations() {                                 \
    static std::vector<Registration> registrations;                                 \
    return registrations;                                                           \
  }                                                                                 \
  const ::posttrain::PluginManifest* PluginEntry() {                                \
    static const ::posttrain::PluginManifest manifest{::posttrain::kApiVersion,     \
                                                      plugin_name,                  \
                                                      &LocalRegistrations()};       \
    return &manifest;                                                               \
  }                                                                                 \
  }                                                                                 \
  BOOST_DLL_ALIAS(posttrain::plugin_internal::PluginEntry, posttrain_plugin_entry)
