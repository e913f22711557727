#!/usr/bin/env bash
# The SDK end to end: install posttrain into a prefix, build an out-of-tree reward
# plugin against the installed package (find_package + posttrain_add_plugin), and
# run it by name from a recipe with the installed CLI.
#   run_sdk_test.sh BUILD_DIR WORK_DIR [PREFIX_PATH CXX_STANDARD CXX_FLAGS POLICY_MINIMUM]
# (run from the repository root). The optional arguments are the posttrain build's
# own settings (PREFIX_PATH's items separated by "|"), so that the plugin's build finds
# the same dependencies: a CUDA libtorch, libraries under a separate root.
set -euo pipefail
build_dir=$1
work=$2
prefix_path=${3:-}
cxx_standard=${4:-}
cxx_flags=${5:-}
policy_minimum=${6:-}
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

cmake --install "$build_dir" --prefix "$prefix" > "$work/install.log"
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
settings=()
[[ -n $cxx_standard ]] && settings+=(-DCMAKE_CXX_STANDARD="$cxx_standard")
[[ -n $cxx_flags ]] && settings+=(-DCMAKE_CXX_FLAGS="$cxx_flags")
[[ -n $policy_minimum ]] && settings+=(-DCMAKE_POLICY_VERSION_MINIMUM="$policy_minimum")
cmake -S tests/sdk/external_reward -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix${prefix_path:+;${prefix_path//|/;}}" \
  -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" "${settings[@]}" > "$work/configure.log"
cmake --build "$work/build" > "$work/build.log"

plugin_dir=$work/build
test -f "$plugin_dir/libshout_reward.so" || { echo "FAIL: plugin was not built"; exit 1; }
nm -D --defined-only "$plugin_dir/libshout_reward.so" | grep -q ' posttrain_plugin_entry$' \
  || { echo "FAIL: plugin does not export posttrain_plugin_entry"; exit 1; }

# A recipe that names the third-party reward; the gold answers of three examples.
cat > "$work/data.jsonl" <<'DATA'
{"prompt": "a", "completion": "ALL CAPS"}
{"prompt": "b", "completion": "no caps"}
{"prompt": "c", "completion": "Half HALF"}
DATA
cat > "$work/recipe.toml" <<RECIPE
output_dir = "$work/run"
plugin_dirs = ["$plugin_dir"]
[data]
type = "jsonl"
path = "$work/data.jsonl"
[sampler]
type = "dataset"
[[rewards]]
type = "shout"
scale = 2.0
[trainer]
type = "reward_eval"
per_device_train_batch_size = 3
max_steps = 1
logging_steps = 1
shuffle = false
RECIPE

"$prefix/bin/posttrain" list --plugin-dir "$plugin_dir" | grep -E '^reward_function +shout ' \
  || { echo "FAIL: installed posttrain does not list the plugin"; exit 1; }
"$prefix/bin/posttrain" list | grep -E '^trainer +reward_eval ' \
  || { echo "FAIL: installed posttrain has no built-in plugins"; exit 1; }
"$prefix/bin/posttrain" run "$work/recipe.toml"

# scores: ALL CAPS → 2·1, no caps → 0, "Half HALF" (5 of 8 upper) → 2·5/8 = 1.25;
# mean = (2 + 0 + 1.25) / 3
python3 - "$work/run/metrics.jsonl" <<'PY'
import json, sys
row = json.loads(open(sys.argv[1]).readline())
want = (2 + 0 + 1.25) / 3
got = row["rewards/shout/mean"]
assert abs(got - want) < 1e-6, (got, want)
print("sdk test: rewards/shout/mean =", got)
PY
echo "PASS: out-of-tree plugin built from the installed package and run by name"
