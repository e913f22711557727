#!/usr/bin/env python3
"""Independent reference for posttrain's chat-template engine: Debian's python3-jinja2
with the environment transformers builds in `apply_chat_template`
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its
`tojson`, `raise_exception`, `strftime_now`, and the `{% generation %}` tag).

Usage: jinja_reference.py CASES.jsonl > EXPECTED.jsonl
Each case: {"template": str, "vars": {...}, "now": epoch seconds}. Each output line:
{"case": the case, "expected": E} where E is {"text": str, "spans": [[begin, end], ...]}
(UTF-8 byte offsets of generation blocks) or {"error": str, "raised": bool}.
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

OPEN, CLOSE = "\x01", "\x02"  # markers around generation blocks, removed below


class Generation(Extension):
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

    def _mark(self, caller):
        return OPEN + caller() + CLOSE


class RaisedError(jinja2.exceptions.TemplateError):
    pass


def raise_exception(message):
    raise RaisedError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def render(case):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    now = case.get("now", 0)
    env.globals["strftime_now"] = lambda fmt: datetime.fromtimestamp(now).strftime(fmt)
    try:
        text = env.from_string(case["template"]).render(**case["vars"])
    except RaisedError as e:
        return {"error": str(e), "raised": True}
    except Exception as e:  # noqa: BLE001 - any template failure is an expected outcome
        return {"error": f"{type(e).__name__}: {e}", "raised": False}
    spans, out, pos = [], bytearray(), 0
    stack = []
    for ch in text:
        if ch == OPEN:
            stack.append(len(out))
        elif ch == CLOSE:
            spans.append([stack.pop(), len(out)])
        else:
            out += ch.encode()
    spans.sort()
    return {"text": out.decode(), "spans": spans}


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            if line.strip():
                case = json.loads(line)
                print(json.dumps({"case": case, "expected": render(case)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
