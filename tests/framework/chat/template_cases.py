#!/usr/bin/env python3
"""Writes the chat-template test cases (JSONL on stdout): templates in the styles of the
major model families' chat templates (written for these tests), plus one small template
per Jinja2 feature, each rendered with several conversations. jinja_reference.py renders
them with Jinja2; chat_template_test.cc renders them with posttrain and compares."""
import json

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [SYSTEM, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "user", "content": "  Spaces\taround \n"}, {"role": "assistant", "content": "\nOK.  "},
     {"role": "user", "content": "Ünïcödé — 日本語 🚀 \"quotes\" 'single' \\ back"}],
    [SYSTEM, {"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nb"},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}],
    [{"role": "user", "content": "Weather?"},
     {"role": "assistant", "content": "", "tool_calls": [
         {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "x": 1.5}}}]},
     {"role": "tool", "content": "{\"temp\": 21}"}, {"role": "assistant", "content": "Warm."}],
    [{"role": "assistant", "content": "starts with assistant"}, {"role": "user", "content": "u"}],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "q", "extra": None}, {"role": "assistant", "content": "r", "reasoning_content": "why"}],
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather — now",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None}

FAMILIES = {
    "chatml_generation": """{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}{{ message['content'] + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}""",
    "llama3_style": """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions.\\n\\n" }}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
""",
    "mistral_style": """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
""",
    "gemma_style": """{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}""",
    "zephyr_style": """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}""",
    "deepseek_style": """{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' in message %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}{%- if message['content'] is none or message['content'] == '' %}{{'<｜Assistant｜><｜tool▁calls▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments']|tojson + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- else %}{{'<｜Assistant｜>' + message['content'] + '<｜tool▁calls▁begin｜>'}}{%- endif %}{%- set ns.is_first = true -%}{%- else %}{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments']|tojson + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}""",
    "phi_style": """{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'user' %}{{'<|user|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>
' + message['content'] + '<|end|>
'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>
' }}{% else %}{{ eos_token }}{% endif %}""",
    "tool_listing": """{%- macro render_param(name, spec, required) -%}
  - {{ name }} ({{ spec.type | default('any') }}{% if name in required %}, required{% endif %})
{%- endmacro -%}
{%- if tools -%}
# Tools
{% for tool in tools %}
{% set fn = tool.function if tool.function is defined else tool %}
## {{ fn.name }}: {{ fn.description | default('') }}
{% for pname, pspec in fn.parameters.properties | dictsort %}
{{ render_param(pname, pspec, fn.parameters.required | default([])) }}
{% endfor %}
{{ fn | tojson(indent=2) }}
{% endfor %}
{%- endif -%}
{% for m in messages -%}
[{{ m.role | upper }}] {{ m.content | default('', true) | trim }}
{% if m.tool_calls is defined and m.tool_calls %}{% for c in m.tool_calls %}call {{ c.function.name }}({{ c.function.arguments | items | map('join', '=') | join(', ') }})
{% endfor %}{% endif %}
{%- endfor %}""",
}

# One feature per template (each rendered with the first two conversations).
FEATURES = {
    "trim_lstrip": "start\n  {% if true %}\n    yes\n  {% endif %}\n  {%+ if true %}kept indent{% endif %}\n{# comment #}\nend\n",
    "whitespace_control": "a  {{- ' b ' -}}  c\n{%- if true -%}  d  {%- endif -%}\n e {#- x -#} f",
    "trailing_newline": "line\n",
    "loop_vars": "{% for x in ['a','b','c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem | default('-') }}{{ loop.nextitem | default('-') }}{{ loop.cycle('x','y') }};{% endfor %}",
    "loop_else_filter": "{% for x in [] %}no{% else %}empty{% endfor %}|{% for x in range(10) if x is odd %}{{ x }}{% if x > 5 %}{% break %}{% endif %}{% endfor %}|{% for x in range(5) %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% endfor %}",
    "unpack_items": "{% for k, v in {'b': 1, 'a': [1, 2], 'c': {'d': none}}.items() %}{{ k }}={{ v }};{% endfor %}{% for k, v in {'z': 1, 'y': 2} | items %}{{ k }}{{ v }}{% endfor %}{% for k, v in {'z': 1, 'y': 2} | dictsort %}{{ k }}{{ v }}{% endfor %}",
    "scoping": "{% set x = 1 %}{% for i in range(3) %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}{% if true %}{% set y = 5 %}{% endif %}{{ y }}{% set ns = namespace(total=0) %}{% for i in range(4) %}{% set ns.total = ns.total + i %}{% endfor %}{{ ns.total }}",
    "macros": "{% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{{ kwargs }}{{ varargs }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(name='c') }} {{ greet('d', '.', 'e', k=1) }}{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}inside{% endcall %}",
    "set_block_filter_with": "{% set block %}  Some {{ 'text' | upper }}  {% endset %}[{{ block }}][{{ block | trim }}]{% filter upper %}shout {{ 1 + 1 }}{% endfilter %}{% with a = 3, b = 4 %}{{ a * b }}{% endwith %}{{ a | default('gone') }}",
    "strings": "{{ '  x y  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '--a'.lstrip('-') }}|{{ 'b\\n\\n'.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'hello'.startswith('he') }}{{ 'hello'.endswith(('x', 'lo')) }}|{{ 'aXbX'.replace('X', '-') }}|{{ 'Hello World'.upper() }}{{ 'Hello'.lower() }}{{ 'hello world'.title() }}{{ 'hELLO'.capitalize() }}|{{ 'abc'.find('c') }}{{ 'abc'.find('z') }}|{{ '-'.join(['a', 'b']) }}|{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ 'x{}y{}'.format(1, 'z') }}|{{ 'ab'.count('a') }}",
    "slicing": "{{ [1,2,3,4,5][1:] }}{{ [1,2,3,4,5][::-1] }}{{ [1,2,3,4,5][-2:] }}{{ [1,2,3,4,5][:-1] }}{{ [1,2,3,4,5][::2] }}{{ [1,2,3,4,5][3:0:-1] }}{{ 'héllo'[1:3] }}{{ 'héllo'[::-1] }}{{ 'abc'[-1] }}{{ [1,2][5] is defined }}",
    "operators": "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1.5 + 1 }} {{ 'a' ~ 1 ~ none }} {{ 'ab' * 2 }} {{ [1] + [2] }} {{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ 3 > 2 >= 2 }} {{ 'b' in 'abc' }} {{ 2 not in [1, 3] }} {{ 'k' in {'k': 1} }} {{ not true }} {{ -(3) }} {{ true + 1 }} {{ 1 if false }} {{ 'y' if 0 else 'n' }} {{ none or 'default' }} {{ 0 and 1 }} {{ 1e3 }} {{ 0.1 + 0.2 }} {{ 1e-7 }} {{ 10 / 4 }} {{ 2.0 }}",
    "tests": "{{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 'a' is string }}{{ 1 is number }}{{ 1 is integer }}{{ 1.0 is float }}{{ {} is mapping }}{{ [] is iterable }}{{ 'a' is iterable }}{{ [] is sequence }}{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 1 is eq 1 }}{{ true is true }}{{ false is false }}{{ true is boolean }}{{ 1 is in [1] }}{{ range is callable }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ x is not none }}",
    "filters": "{{ [3,1,2] | sort }}{{ [3,1,2] | sort(reverse=true) }}{{ ['b','A','c'] | sort }}{{ [1,2,3] | first }}{{ [1,2,3] | last }}{{ [1,2,3] | length }}{{ 'abc' | length }}{{ [1,2,2,3] | unique | list }}{{ [1,2,3] | sum }}{{ [1,5,3] | max }}{{ [4,2] | min }}{{ [1,2,3] | reverse | list }}{{ 'abc' | reverse }}{{ [1,2,3] | join('-') }}{{ [{'a': 1}, {'a': 2}] | map(attribute='a') | list }}{{ [{'a': 1, 'b': true}, {'a': 2, 'b': false}] | selectattr('b') | map(attribute='a') | list }}{{ [{'a': 1, 'b': true}, {'a': 2}] | rejectattr('b', 'defined') | list }}{{ [1,2,3,4] | select('odd') | list }}{{ [1,2,3,4] | reject('even') | list }}{{ ['a','b'] | map('upper') | list }}{{ '3' | int + 1 }}{{ 'x' | int }}{{ '2.5' | float }}{{ -3 | abs }}{{ 2.567 | round(2) }}{{ 2.5 | round }}{{ 'a b c' | wordcount }}{{ 'hello' | replace('l', 'L') }}{{ 'hi' | center(6) }}|{{ 'line1\\nline2' | indent(2) }}|{{ 'line1\\nline2' | indent(2, true) }}|{{ '<a href=\"x\">' | e }}{{ [1,2,3,4,5] | batch(2) | list }}{{ 'long text here' | truncate(9, leeway=0) }}{{ none | default('d') }}{{ '' | default('d', true) }}{{ undefined_var | default('u') }}{{ 42 | string }}{{ {'a': 1} | list }}{{ 'ab' | list }}",
    "tojson": "{{ {'a': 'é', 'b': [1, 2.5, true, none], 'c': {'d': 'x\"y\\\\z\\n\\t'}} | tojson }}|{{ [] | tojson }}{{ {} | tojson }}|{{ {'a': [1, {'b': 2}], 'e': []} | tojson(indent=2) }}|{{ 'é' | tojson }}|{{ 1e20 | tojson }}|{{ 0.000012 | tojson }}|{{ messages | tojson }}",
    "repr_output": "{{ ['a', \"b'c\", 1, 1.0, none, true, {'k': 'v'}] }}|{{ {'x': [1]} }}|{{ none }}|{{ true }}|{{ (1, 2) | list }}|{{ 'tab\\there' }}",
    "dict_access": "{% set d = {'a': 1, 'items': 2} %}{{ d.a }}{{ d['a'] }}{{ d.get('a') }}{{ d.get('z', 'dflt') }}{{ d.get('z') }}{{ d.missing is defined }}{{ d['items'] }}{{ d.keys() | list }}{{ d.values() | list }}{{ messages[0].role }}{{ messages[0]['content'] | length > 0 }}{{ messages[-1].role }}",
    "undefined_errors": "{{ missing.attr }}",
    "undefined_arith": "{{ missing + 1 }}",
    "negative_widths": "[{{ 'a\\nb' | indent(-2) }}][{{ 'ab' | center(-5) }}][{{ 'a\\nb' | indent(true, true) }}]",
    "int_limits": "{{ 3 ** 39 }} {{ 2 ** 62 }} {{ -9223372036854775807 - 1 }} {{ (-9223372036854775807 - 1) // 2 }} {{ 7 // -1 }} {{ -7 % -1 }} {{ 'abcdef'[1::9223372036854775807] }} {{ 'abcdef'[::-9223372036854775807] }} {{ 'abcdef'[-9223372036854775807:2] }} {{ '%d' % 3.9 }} {{ 0 ** 0 }} {{ (-1) ** 9223372036854775807 }}",
    "raise": "{% if messages | length > 1 %}{{ raise_exception('Too many messages: ' ~ messages | length) }}{% endif %}ok",
    "strftime": "{{ strftime_now('%Y-%m-%d %H:%M %b %A') }}",
    "mutation_refused": "{% set l = [1] %}{{ l.append(2) }}{{ l }}",
    "nested_generation": "{% for m in messages %}{{ m.role }}: {% if m.role == 'assistant' %}{% generation %}{{ m.content }}<end>{% endgeneration %}{% else %}{{ m.content }}{% endif %}\n{% endfor %}",
    "raw_block": "{% raw %}{{ not rendered }} {% if %}{% endraw %} after",
    "in_conditional_chain": "{% if messages[0].role == 'system' %}S{% elif messages[0].role == 'user' %}U{% else %}O{% endif %}{{ 'yes' if messages | selectattr('role', 'equalto', 'assistant') | list | length else 'no' }}",
    "string_concat_types": "{{ 'n=' ~ 3 ~ ', f=' ~ 2.50 ~ ', b=' ~ false }}{{ 'x' + 1 }}",
    "percent_format": "{{ '%02d|%5.2f|%-4s|%s|%r|%x|%%' % (7, 3.14159, 'ab', none, 'q', 255) }}{{ '%s!' % 'one' }}{{ '%d items' | format(3) }}",
    "recursive_macro": "{% macro t(spec) %}{% if spec.type == 'array' %}list[{{ t(spec['items']) }}]{% elif spec.type == 'object' %}dict{% else %}{{ {'string': 'str', 'integer': 'int'}[spec.type] | default('Any') }}{% endif %}{% endmacro %}{{ t({'type': 'array', 'items': {'type': 'array', 'items': {'type': 'integer'}}}) }} {{ t({'type': 'string'}) }} {{ t({'type': 'object'}) }} {{ t({'type': 'null'}) }}",
    "crlf_line_ends": "a\r\n{% if true %}\r\nb\r\n  {% endif %}\r\nc\r{% if 1 %}\rd{% endif %}|{{ 'p\r\nq\rr' }}|{{ \"s\\\r\nt\" }}\r\n{# c #}\r\n  {%- if 1 %}\r\n  x\r\n{%+ endif -%}\r\n w\r\n\r\n",
    "loop_over_dict_and_string": "{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}{% for c in 'héj' %}[{{ c }}]{% endfor %}",
}


def main():
    cases = []
    for name, template in FAMILIES.items():
        for i, conv in enumerate(CONVERSATIONS):
            for gen in (False, True):
                for tools in (None, TOOLS):
                    if tools and name not in ("llama3_style", "tool_listing"):
                        continue
                    v = {"messages": conv, "tools": tools, "documents": None, "add_generation_prompt": gen, **SPECIAL}
                    cases.append({"name": f"{name}/{i}/gen={gen}/tools={tools is not None}", "template": template,
                                  "vars": v, "now": 1721995200})
    for name, template in FEATURES.items():
        for i, conv in enumerate(CONVERSATIONS[:2]):
            v = {"messages": conv, "x": 1, "add_generation_prompt": False, **SPECIAL}
            cases.append({"name": f"{name}/{i}", "template": template, "vars": v, "now": 1721995200})
    for c in cases:
        print(json.dumps(c, ensure_ascii=False))


if __name__ == "__main__":
    main()
