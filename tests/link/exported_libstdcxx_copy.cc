// A library that exports its own copy of a libstdc++ function, as PyTorch's wheels
// (2.5 and later) do with the parts of libstdc++ they link statically
// (pytorch/pytorch#133437). Its remove_all removes nothing and says so by its result.
#include <cstdint>
#include <filesystem>

namespace std::filesystem {

__attribute__((visibility("default"))) std::uintmax_t remove_all(const path&) { return 4242; }

}  // namespace std::filesystem

extern "C" __attribute__((visibility("default"))) int posttrain_exported_libstdcxx_copy_linked() { return 1; }
