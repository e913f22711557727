"""Makes recipes/data/gsm8k_prm_*.jsonl, the stepwise-supervision data of the PRM
recipe, from the shipped GSM8K slices (deterministic: seed 0).

Each GSM8K answer becomes steps: its reasoning lines, then "The answer is N." Half of
the records (chosen at random) are corrupted: a random step k has its result (the
number after a calculator annotation <<a op b = r>>, or the final N) replaced by a
wrong one, and the final answer is made wrong too; its labels are true before k and
false from k on (the final number's accuracy is false). The other half keep the
reference solution, every step true.

usage: python3 tools/make_prm_data.py  (from the repository root)"""
import json, random, re

CALC = re.compile(r"<<([^>]*)=([^>]*)>>(\$?)(-?[0-9][0-9,]*\.?[0-9]*)")


def wrong(number, rng):
    value = float(number.replace(",", ""))
    delta = rng.choice([1, 2, 3, 5, 10, -1, -2, -3])
    out = value + delta if value + delta >= 0 else value + abs(delta) + 1
    return str(int(out)) if out == int(out) else f"{out:g}"


def convert(record, rng):
    reasoning, final = record["answer"].split("####")
    final = final.strip()
    steps = [line.strip() for line in reasoning.strip().split("\n") if line.strip()]
    steps.append(f"The answer is {final}.")
    labels = [True] * len(steps)
    if rng.random() < 0.5:
        calc = [i for i, s in enumerate(steps[:-1]) if CALC.search(s)]
        k = rng.choice(calc + [len(steps) - 1])
        if k < len(steps) - 1:
            m = list(CALC.finditer(steps[k]))[-1]
            steps[k] = steps[k][: m.start(4)] + wrong(m.group(4), rng) + steps[k][m.end(4):]
        steps[-1] = f"The answer is {wrong(final, rng)}."
        labels = [i < k for i in range(len(steps))]
    return {"prompt": record["question"], "completions": steps, "labels": labels}


for source, target in [("gsm8k_train_head1024.jsonl", "gsm8k_prm_train.jsonl"), ("gsm8k_test_head128.jsonl", "gsm8k_prm_test.jsonl")]:
    rng = random.Random(0)
    with open("recipes/data/" + source) as f, open("recipes/data/" + target, "w") as out:
        for line in f:
            out.write(json.dumps(convert(json.loads(line), rng)) + "\n")
