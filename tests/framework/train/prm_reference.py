"""Independent reference for the PRM trainer's inputs: TRL's PRMTrainer.tokenize_row
transcribed (token ids given, since the tokenizer is tested elsewhere). Reads a JSON
list of cases {prompt_ids (no BOS), bos, steps [[ids]], separator_ids, labels [bool],
train_on_last_step_only, max_prompt_length, max_completion_length, max_length}
(None = no limit); prints [{input_ids, labels}]."""
import json, sys
from itertools import chain

out = []
for f in json.load(open(sys.argv[1])):
    prompt_ids = list(f["prompt_ids"])
    completions_ids = [list(s) for s in f["steps"]]
    if f["train_on_last_step_only"]:
        labels = [-100] * (len(f["labels"]) - 1) + [int(f["labels"][-1])]
    else:
        labels = [int(label) for label in f["labels"]]
    separator_ids = f["separator_ids"]
    completions_ids = [completion + separator_ids for completion in completions_ids]
    labels = [[-100] * (len(completion) - 1) + [label] for completion, label in zip(completions_ids, labels)]
    completion_ids = list(chain(*completions_ids))
    labels = list(chain(*labels))
    if f["bos"] is not None:
        prompt_ids = [f["bos"]] + prompt_ids
    if f["max_prompt_length"] is not None:
        prompt_ids = prompt_ids[-f["max_prompt_length"]:]
    if f["max_completion_length"] is not None:
        completion_ids = completion_ids[: f["max_completion_length"]]
        labels = labels[: f["max_completion_length"]]
    input_ids = prompt_ids + completion_ids
    labels = [-100] * len(prompt_ids) + labels
    if f["max_length"] is not None:
        input_ids = input_ids[: f["max_length"]]
        labels = labels[: f["max_length"]]
    out.append({"input_ids": input_ids, "labels": labels})
print(json.dumps(out))
