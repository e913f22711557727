// The registry: every component the loaded plugins provide, by kind and name.
//
//   PluginHost host;                       // owns a Registry
//   POSTTRAIN_RETURN_IF_ERROR(host.LoadDefaultDirectories());
//   const RegisteredComponent* c = host.registry().Find(ComponentKind::kTrainer, "dpo");
//   absl::StatusOr<std::unique_ptr<Trainer>> t = host.registry().Create<Trainer>(config);
//
// Names are unique per kind across all plugins; a second registration of a name is
// refused with a message naming both libraries. Not thread-safe while loading;
// lookups and Create are safe from several threads once loading is done.
#pragma once

#include "absl/strings/string_view.h"
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "posttrain/core/status.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {

struct RegisteredComponent {
  Registration registration;
  std::string plugin_name;
  std::string library_path;
};

class Registry {
 public:
  // Adds one registration from `library_path`. AlreadyExists if the kind+name is
  // taken (the message names both libraries).
  absl::Status Add(Registration registration, std::string plugin_name, std::string library_path);

  const RegisteredComponent* Find(ComponentKind kind, absl::string_view name) const;
  // Registered names of a kind, sorted.
  std::vector<std::string> Names(ComponentKind kind) const;
  // All components, sorted by kind then name.
  std::vector<const RegisteredComponent*> All() const;

  // Builds the component `config.type()` of interface I. NotFound lists the known
  // names of that kind; a factory's exceptions become Internal errors.
  template <typename I>
  absl::StatusOr<std::unique_ptr<I>> Create(const ComponentConfig& config) const {
    constexpr ComponentKind kind = plugin_internal::KindOf<I>::value;
    const RegisteredComponent* component = Find(kind, config.type());
    if (component == nullptr) return UnknownName(kind, config.type(), config.where());
    const auto* factory = std::get_if<Factory<I>>(&component->registration.factory);
    if (factory == nullptr) {
      return absl::InternalError(absl::StrCat("registration of '", config.type(),
                                              "' has a factory of the wrong kind"));
    }
    absl::StatusOr<std::unique_ptr<I>> made = CallNoThrow(
        absl::StrCat(ComponentKindName(kind), " '", config.type(), "' (", component->library_path,
                     ")"),
        [&]() -> absl::StatusOr<std::unique_ptr<I>> { return (*factory)(config); });
    if (made.ok() && *made == nullptr) {
      return absl::InternalError(absl::StrCat(ComponentKindName(kind), " '", config.type(),
                                              "' factory returned null"));
    }
    return made;
  }

  // NotFound "<where>: unknown <kind> 'x' (did you mean 'y'?); known <kind>s: a, b".
  absl::Status UnknownName(ComponentKind kind, absl::string_view name, absl::string_view where) const;

 private:
  std::vector<std::unique_ptr<RegisteredComponent>> components_;
};

}  // namespace posttrain
