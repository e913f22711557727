#!/usr/bin/env bash
# The framework's areas depend one way, so each can be read and changed alone:
#   core  <-  api, model, tokenizer, losses, distributed
#   core, tokenizer  <-  chat  <-  train, generation, run  (chat templates)
#   model  <-  distributed  <-  api, losses  (sharding; trainers reduce batch statistics over ranks)
#   model  <-  api  (adapters wrap the model's linear layers)
#   model, tokenizer, api  <-  generation  <-  train  <-  run
#   api  <-  plugin  <-  recipe  <-  run
# Fails naming every #include that points against these arrows.
set -euo pipefail
cd "$(dirname "$0")/../.."
declare -A allowed=(
  [core]=""
  [api]="core model distributed"
  [model]="core"
  [tokenizer]="core"
  [chat]="core tokenizer"
  [losses]="core distributed"
  [distributed]="core model"
  [generation]="core api model tokenizer chat distributed"
  [train]="core api model tokenizer chat generation losses distributed"
  [plugin]="core api distributed"
  [recipe]="core api plugin distributed"
  [run]="core api model tokenizer chat generation train losses distributed plugin recipe"
)
bad=0
while IFS= read -r file; do
  area=$(echo "$file" | sed -E 's#framework/(include/posttrain|src)/([a-z_]+)/.*#\2#')
  if [[ -z "${allowed[$area]+x}" ]]; then
    echo "layering: $file: area '$area' is not in the table of tests/framework/layering_test.sh"; bad=1; continue
  fi
  while IFS= read -r dep; do
    [[ "$dep" == "$area" ]] && continue
    if [[ " ${allowed[$area]} " != *" $dep "* ]]; then
      echo "layering: $file includes posttrain/$dep/ but '$area' may depend only on: ${allowed[$area]:-(nothing)}"; bad=1
    fi
  done < <(grep -oE '#include "posttrain/[a-z_]+/' "$file" | sed -E 's#.*posttrain/([a-z_]+)/#\1#' | sort -u)
done < <(find framework/include/posttrain framework/src -name '*.h' -o -name '*.cc' | sort)
if ((bad)); then exit 1; fi
echo "layering: every framework include points down the layers"
