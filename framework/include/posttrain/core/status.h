// Status helpers shared by the framework and every plugin.
//
// Abseil 20220623 ships no status macros, so posttrain defines the two it needs:
//
//   absl::StatusOr<Dataset> Load(const std::string& path) {
//     POSTTRAIN_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
//     POSTTRAIN_RETURN_IF_ERROR(CheckHeader(text));
//     ...
//   }
//
// Errors at API, plugin and I/O boundaries are absl::Status with canonical codes;
// exceptions never cross a plugin boundary (see CallNoThrow).
#pragma once

#include "absl/strings/string_view.h"
#include <exception>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define POSTTRAIN_STATUS_CONCAT_INNER_(a, b) a##b
#define POSTTRAIN_STATUS_CONCAT_(a, b) POSTTRAIN_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define POSTTRAIN_RETURN_IF_ERROR(expr)                  \
  do {                                                   \
    ::absl::Status posttrain_status_ = (expr);           \
    if (!posttrain_status_.ok()) return posttrain_status_; \
  } while (0)

// `lhs` = value of `rexpr` (an absl::StatusOr<T>), or returns its status.
#define POSTTRAIN_ASSIGN_OR_RETURN(lhs, rexpr)                                        \
  POSTTRAIN_ASSIGN_OR_RETURN_IMPL_(POSTTRAIN_STATUS_CONCAT_(posttrain_or_, __LINE__), \
                                   lhs, rexpr)
#define POSTTRAIN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                     \
  if (!tmp.ok()) return std::move(tmp).status();          \
  lhs = std::move(tmp).value()

namespace posttrain {

// Prefixes a non-OK status's message with `context` ("reading data.jsonl: ...").
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

// Runs `fn` and turns any exception (std::exception, c10::Error, anything) into an
// absl::Status, so that no exception crosses a plugin boundary. `what` names the
// operation for the message ("reward 'keyword'").
template <typename Fn>
auto CallNoThrow(absl::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, " threw: ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, " threw a non-standard exception"));
  }
}

}  // namespace posttrain
