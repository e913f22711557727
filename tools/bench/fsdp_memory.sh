#!/usr/bin/env bash
# Per-rank memory of FSDP-style sharding: parameters, gradients and AdamW state
# each rank holds, and its peak RSS, for 1, 2 and 4 ranks with fsdp = "full_shard"
# (and 2 ranks without sharding, for comparison), on a random model with the
# stories15M shape (dim 288, 6 layers, vocab 32000; `posttrain init`) and the
# stories260K tokenizer, SFT on GSM8K for a few steps.
#
#   tools/bench/fsdp_memory.sh [build-dir]        (after tools/setup.sh build)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
BIN=$BUILD/bin/posttrain
WORK=$(mktemp -d /tmp/posttrain_fsdp_memory.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
sed -e 's/"vocab_size": [0-9]*/"vocab_size": 32000/' -e 's/"hidden_size": [0-9]*/"hidden_size": 288/' \
    -e 's/"intermediate_size": [0-9]*/"intermediate_size": 768/' -e 's/"num_hidden_layers": [0-9]*/"num_hidden_layers": 6/' \
    -e 's/"num_attention_heads": [0-9]*/"num_attention_heads": 6/' -e 's/"num_key_value_heads": [0-9]*/"num_key_value_heads": 6/' \
    -e 's/"head_dim": [0-9]*/"head_dim": 48/' -e 's/"max_position_embeddings": [0-9]*/"max_position_embeddings": 256/' \
    "$BUILD/models/stories260K/config.json" > "$WORK/config.json"
"$BIN" init --config "$WORK/config.json" --tokenizer "$BUILD/models/stories260K" --out "$WORK/model" --seed 1 > /dev/null
RUN="recipes/sft/stories260K_gsm8k.toml model.path=$WORK/model trainer.max_steps=3 trainer.per_device_train_batch_size=2
     trainer.max_length=128 trainer.eval_steps=0 trainer.eval_on_start=false data.max_examples=64 eval_data.max_examples=4
     overwrite_output_dir=true"
port=$((29700 + RANDOM % 200))
printf '%-22s %-6s %12s %12s %14s %12s\n' setting rank "params MiB" "grads MiB" "optimizer MiB" "peak RSS MiB"
for setting in "1 full_shard" "2 full_shard" "4 full_shard" "2 no_shard"; do
  set -- $setting
  port=$((port + 1))
  "$BIN" launch --nproc-per-node "$1" --master-port "$port" run $RUN output_dir="$WORK/run$1$2" trainer.fsdp="$2" 2>&1 |
    sed -nE 's/.*memory \(rank ([0-9]+) of [0-9]+[^)]*\): parameters ([0-9.]+) MiB, gradients ([0-9.]+) MiB, optimizer state ([0-9.]+) MiB, peak RSS ([0-9.]+) MiB/\1 \2 \3 \4 \5/p' |
    sort -n | while read -r rank params grads opt rss; do
      printf '%-22s %-6s %12s %12s %14s %12s\n' "$1 rank(s), $2" "$rank" "$params" "$grads" "$opt" "$rss"
    done
done
