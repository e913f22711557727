#!/usr/bin/env bash
# DPO on the HH-RLHF harmless pairs, full fine-tuning against LoRA (r = 16, all
# linear layers), each in its own process: trainable parameters, the engine's
# memory line (parameters, gradients, optimizer state held) and peak RSS, and the
# last logged training rewards/accuracies. Full fine-tuning keeps its reference as a
# frozen copy (precompute_ref_log_probs = false, TRL's default); LoRA's reference is
# the base weights with the adapter off.
#
#   tools/bench/lora_memory.sh [steps] [model]     (default: 32 steps, stories260K;
#                                                  model "15M": a random model of the
#                                                  stories15M shape, made with posttrain init)
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-32}
model=${2:-build/models/stories260K}
out=$(mktemp -d)
if [ "$model" = "15M" ]; then
  cat > "$out/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 288,
 "intermediate_size": 768, "num_hidden_layers": 6, "num_attention_heads": 6, "num_key_value_heads": 6,
 "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2}
JSON
  build/bin/posttrain init --config "$out/config.json" --tokenizer build/models/stories260K --out "$out/model15M" > /dev/null
  model=$out/model15M
fi
last_accuracy() {  # the last training line's rewards/accuracies
  grep -v '"eval_' "$1" | tail -1 | grep -o '"rewards/accuracies":[0-9.e-]*' | cut -d: -f2 || true
}
run() {  # name, extra overrides
  local name=$1; shift
  build/bin/posttrain run recipes/dpo/stories260K_hh_lora.toml output_dir="$out/$name" model.path="$model" \
    trainer.max_steps="$steps" trainer.eval_on_start=false trainer.eval_steps=0 trainer.logging_steps=8 "$@" > "$out/$name.log" 2>&1
  local trainable accuracy memory
  trainable=$(grep -o 'adapter: [0-9]* trainable' "$out/$name.log" | grep -o '[0-9]*' || true)
  memory=$(grep -o 'parameters [0-9.]* MiB, gradients .*' "$out/$name.log")
  accuracy=$(last_accuracy "$out/$name/metrics.jsonl")
  printf '%-6s trainable %-10s last rewards/accuracies %-6s %s\n' "$name" "${trainable:-all}" "$accuracy" "$memory"
}
echo "DPO, $steps steps, model $model"
run lora
# Full fine-tuning: the same recipe without [peft] (a recipe file without the table).
sed '/^\[peft\]/,/^$/d' recipes/dpo/stories260K_hh_lora.toml > "$out/full.toml"
sed -i "s|^learning_rate = .*|learning_rate = 5e-4|" "$out/full.toml"
cp "$out/full.toml" recipes/dpo/.full_bench.toml
trap 'rm -f recipes/dpo/.full_bench.toml' EXIT
build/bin/posttrain run recipes/dpo/.full_bench.toml output_dir="$out/full" model.path="$model" \
  trainer.max_steps="$steps" trainer.eval_on_start=false trainer.eval_steps=0 trainer.logging_steps=8 \
  trainer.precompute_ref_log_probs=false > "$out/full.log" 2>&1
printf '%-6s trainable %-10s last rewards/accuracies %-6s %s\n' full all \
  "$(last_accuracy "$out/full/metrics.jsonl")" \
  "$(grep -o 'parameters [0-9.]* MiB, gradients .*' "$out/full.log")"
rm -rf "$out"
