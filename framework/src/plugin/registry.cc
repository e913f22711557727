#include "posttrain/plugin/registry.h"

#include <algorithm>

#include "absl/strings/str_join.h"
#include "posttrain/core/did_you_mean.h"
#include "posttrain/api/training_arguments.h"

namespace posttrain {

absl::string_view ComponentKindName(ComponentKind kind) {
  switch (kind) {
    case ComponentKind::kTrainer: return "trainer";
    case ComponentKind::kRewardFunction: return "reward_function";
    case ComponentKind::kSampler: return "sampler";
    case ComponentKind::kDataAdapter: return "data_adapter";
    case ComponentKind::kAdapter: return "adapter";
  }
  return "?";
}

absl::Status Registry::Add(Registration registration, std::string plugin_name,
                           std::string library_path) {
  if (registration.name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(library_path, " registers a ", ComponentKindName(registration.kind),
                     " with an empty name"));
  }
  if (const RegisteredComponent* existing = Find(registration.kind, registration.name)) {
    return absl::AlreadyExistsError(absl::StrCat(
        ComponentKindName(registration.kind), " '", registration.name,
        "' is registered twice: by plugin '", existing->plugin_name, "' (",
        existing->library_path, ") and by plugin '", plugin_name, "' (", library_path,
        "); remove one of the libraries from the plugin directories"));
  }
  // Every trainer accepts the engine's options too.
  if (registration.kind == ComponentKind::kTrainer) registration.schema.Merge(TrainingArgumentsSchema());
  auto component = std::make_unique<RegisteredComponent>();
  component->registration = std::move(registration);
  component->plugin_name = std::move(plugin_name);
  component->library_path = std::move(library_path);
  components_.push_back(std::move(component));
  return absl::OkStatus();
}

const RegisteredComponent* Registry::Find(ComponentKind kind, absl::string_view name) const {
  for (const auto& component : components_) {
    if (component->registration.kind == kind && component->registration.name == name) {
      return component.get();
    }
  }
  return nullptr;
}

std::vector<std::string> Registry::Names(ComponentKind kind) const {
  std::vector<std::string> names;
  for (const auto& component : components_) {
    if (component->registration.kind == kind) names.push_back(component->registration.name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<const RegisteredComponent*> Registry::All() const {
  std::vector<const RegisteredComponent*> all;
  for (const auto& component : components_) all.push_back(component.get());
  std::sort(all.begin(), all.end(), [](const auto* a, const auto* b) {
    return std::make_pair(a->registration.kind, a->registration.name) <
           std::make_pair(b->registration.kind, b->registration.name);
  });
  return all;
}

absl::Status Registry::UnknownName(ComponentKind kind, absl::string_view name,
                                   absl::string_view where) const {
  std::vector<std::string> known = Names(kind);
  std::string known_text = known.empty() ? std::string("none are loaded")
                                         : absl::StrJoin(known, ", ");
  return absl::NotFoundError(absl::StrCat(where, ": unknown ", ComponentKindName(kind), " '", name,
                                          "'", DidYouMeanSuffix(name, known), "; known ",
                                          ComponentKindName(kind), "s: ", known_text));
}

}  // namespace posttrain
