#!/usr/bin/env python3
"""Renders every chat template (*.jinja) of a directory with Jinja2 (transformers'
environment: tests/framework/chat/jinja_reference.py) and with `posttrain
chat-template`, over the conversations of tests/framework/chat/template_cases.py plus
tool calls, multi-part content, tools with nested schemas and template kwargs, and
reports every rendering that differs (text, or one failing where the other does not).

  python3 tools/chat_template_parity.py DIR [--posttrain build/bin/posttrain]

Use it on the templates of models you are about to train (a tokenizer_config.json's
chat_template saved as a .jinja file). Needs python3-jinja2 (tools/setup.sh installs it).
Exit status 1 if any rendering differs."""
import argparse, glob, json, os, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests/framework/chat"))
import jinja_reference as jr  # noqa: E402
import template_cases as tc  # noqa: E402

NOW = 1721995200
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
           "additional_special_tokens": ["<extra_0>"]}
CONVERSATIONS = list(tc.CONVERSATIONS) + [
    [{"role": "system", "content": "sys"}, {"role": "user", "content": "Weather?"},
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
         {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\": \"CET\"}"}}]},
     {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 21}"},
     {"role": "tool", "tool_call_id": "call_2", "name": "get_time", "content": "12:00"},
     {"role": "assistant", "content": "Warm at noon."}],
    [{"role": "developer", "content": "dev"}, {"role": "user", "content": "u"},
     {"role": "assistant", "content": "", "thinking": "let me think",
      "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": [1, {"b": None}]}}}]},
     {"role": "tool", "content": "ok"}, {"role": "assistant", "content": "done", "thinking": "t2"}],
    [{"role": "user", "content": [{"type": "text", "text": "multi"}, {"type": "text", "text": "part"}]},
     {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}],
]
NESTED_TOOLS = [
    {"type": "function", "function": {"name": "search", "description": "Search the web.\nReturns results.", "parameters": {
        "type": "object", "required": ["query"], "properties": {
            "query": {"type": "string", "description": "What to find", "pattern": "^.+$", "default": "x"},
            "mode": {"type": "string", "enum": ["fast", "deep"], "description": "Mode"},
            "limit": {"type": ["integer", "null"], "minimum": 1, "default": 5, "nullable": True},
            "filters": {"type": "object", "properties": {"lang": {"type": "string"}}, "required": ["lang"],
                        "additionalProperties": {"type": "string"}},
            "tags": {"type": "array", "maxItems": 3, "items": {"type": "object", "required": ["name"],
                                                               "properties": {"name": {"type": "string", "title": "Name"}}}},
            "flag": {"type": "boolean"}}}}},
    {"type": "function", "function": {"name": "noop", "description": "Nothing.", "parameters": {"type": "object", "properties": {}}}}]
KWARGS = [{"enable_thinking": False, "thinking_budget": 0},
          {"tools_in_user_message": False, "use_json_tooldef": True, "enable_citations": True,
           "documents": [{"title": "T", "text": "doc text"}, {"title": "U", "text": "more"}]},
          {"builtin_tools": ["browser", "python"], "reasoning_effort": "high", "model_identity": "I am X."},
          {"thinking": True, "thinking_budget": 1000,
           "custom_tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]}]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--posttrain", default=os.path.join(ROOT, "build/bin/posttrain"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="template_parity_")
    os.makedirs(os.path.join(work, "tok"))
    with open(os.path.join(work, "tok/tokenizer_config.json"), "w") as f:
        json.dump(SPECIAL, f)
    total = differing = 0
    for path in sorted(glob.glob(os.path.join(args.dir, "*.jinja"))):
        source = open(path, encoding="utf-8").read()
        rows, expected = [], []
        for conversation in CONVERSATIONS:
            for generation in (True, False):
                for tools in (None, tc.TOOLS, NESTED_TOOLS):
                    row = {"messages": conversation, "add_generation_prompt": generation}
                    variables = {"messages": conversation, "tools": tools, "documents": None,
                                 "add_generation_prompt": generation, **SPECIAL}
                    if tools:
                        row["tools"] = tools
                    if generation and tools:
                        row["kwargs"] = KWARGS[len(rows) % len(KWARGS)]
                        variables.update(row["kwargs"])
                    rows.append(row)
                    expected.append(jr.render({"template": source, "vars": variables, "now": NOW}))
        with open(os.path.join(work, "rows.jsonl"), "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        run = subprocess.run([args.posttrain, "chat-template", "--tokenizer", os.path.join(work, "tok"), "--chat-template-path",
                              path, "--input", os.path.join(work, "rows.jsonl"), "--now", str(NOW)], capture_output=True, text=True)
        name = os.path.basename(path)
        if run.returncode != 0:
            print(f"FAIL {name}: posttrain exited {run.returncode}: {run.stderr.strip()[:300]}")
            total += 1
            differing += 1
            continue
        got = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
        bad = 0
        for i, (g, e) in enumerate(zip(got, expected)):
            total += 1
            if ("text" in e and g.get("text") == e["text"]) or ("error" in e and "error" in g):
                continue
            bad += 1
            if bad <= 2:
                print(f"DIFF {name} case {i}:\n  jinja2   : {json.dumps(e, ensure_ascii=False)[:400]}\n"
                      f"  posttrain: {json.dumps(g, ensure_ascii=False)[:400]}")
        differing += bad
        print(f"{'ok  ' if bad == 0 else 'BAD '} {name}: {len(rows) - bad}/{len(rows)}")
    print(f"{total} renderings, {differing} differing")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
