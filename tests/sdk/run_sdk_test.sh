#!/usr/bin/env bash
# The SDK end to end: install posttrain into a prefix, build an out-of-tree reward
# plugin against the installed package (find_package + posttrain_add_plugin), and
# run it by name from a recipe with the installed CLI.
#   run_sdk_test.sh BUILD_DIR WORK_DIR      (run from the repository root)
set -euo pipefail
build_dir=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

cmake --install "$build_dir" --prefix "$prefix" > "$work/install.log"
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S tests/sdk/external_reward -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" > "$work/configure.log"
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
