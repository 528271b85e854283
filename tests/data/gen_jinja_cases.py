#!/usr/bin/env python3
"""Generates tests/data/jinja_cases.json: templates rendered by the real Jinja2
(3.1.x) configured the way transformers renders chat templates
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
tojson = json.dumps(ensure_ascii=False), raise_exception). test_jinja.c renders
the same templates with engine/jinja*.c and compares byte for byte.
Run: python3 tests/data/gen_jinja_cases.py > tests/data/jinja_cases.json"""
import json
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.ext import loopcontrols


def raise_exception(msg):
    raise jinja2.exceptions.TemplateError(msg)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception

V = {
    "messages": [
        {"role": "system", "content": "  Be brief.\n"},
        {"role": "user", "content": "Hi <b>there</b> & 'you'"},
        {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nHello!", "tool_calls": [
            {"type": "function", "function": {"name": "get", "arguments": {"city": "Paris", "n": 2, "x": 1.5, "ok": True, "z": None}}}]},
        {"role": "tool", "content": "{\"t\": 20}"},
        {"role": "user", "content": "Ünïcödé 中文 😀"},
    ],
    "tools": [{"type": "function", "function": {"name": "get", "description": "Get \"weather\"", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "n": 7, "f": 2.5, "s": "a,b,,c", "flag": False, "empty": [], "d": {"b": 2, "a": 1, "C": 3}, "words": "  hello   big world  ",
    "add_generation_prompt": True,
}

T = [
    "plain text\n",
    "{{ 'a' }}{{ \"b\" }}{{ 1 }}{{ 2.5 }}{{ none }}{{ true }}{{ False }}",
    "{{ n + 1 }} {{ n - 10 }} {{ n * 3 }} {{ n / 2 }} {{ n // 2 }} {{ n % 3 }} {{ -n % 3 }} {{ 2 ** 10 }} {{ f * 2 }} {{ 7 // -2 }}",
    "{{ 1 / 3 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-5 }} {{ 123456789.0 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ -0.5 }}",
    "{{ 'x' ~ n ~ none ~ true }} {{ 'ab' * 3 }} {{ [1, 2] + [3] }} {{ 'a' + 'b' }}",
    "{{ n == 7 }} {{ n != 7 }} {{ n < 8 }} {{ n >= 8 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ true == 1 }}",
    "{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'a' in d }} {{ 'z' not in d }} {{ not flag }} {{ flag or 'x' }} {{ n and 'y' }} {{ empty or 'e' }}",
    "{{ 'yes' if n > 3 else 'no' }}|{{ 'only' if flag }}|{{ 1 if flag else 2 if n else 3 }}",
    "{% if n > 10 %}big{% elif n > 5 %}mid{% else %}small{% endif %}",
    "{% for m in messages %}{{ loop.index }}/{{ loop.length }}:{{ m.role }}{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %}{{ loop.revindex0 }} {% endfor %}",
    "{% for m in messages if m.role == 'user' %}{{ loop.index0 }}={{ m.content }};{% else %}none{% endfor %}",
    "{% for x in empty %}x{% else %}empty{% endfor %}",
    "{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}|{% for k in d %}{{ k }}{% endfor %}|{% for k in d.keys() %}{{ k }}{% endfor %}|{% for v in d.values() %}{{ v }}{% endfor %}",
    "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% for i in range(1, 10, 3) %}{{ i }},{% endfor %}{% for i in range(5, 0, -2) %}{{ i }},{% endfor %}",
    "{% for m in messages[::-1] %}{{ m.role[0] }}{% endfor %} {{ messages[1:3]|length }} {{ 'hello'[1:4] }} {{ 'hello'[::-1] }} {{ 'hello'[-2:] }} {{ [1,2,3,4][::2] }} {{ 'héllo'[1] }}",
    "{% set x = 5 %}{% for i in range(3) %}{% set x = i %}{% endfor %}{{ x }}",
    "{% set ns = namespace(c=0, last='') %}{% for m in messages %}{% set ns.c = ns.c + 1 %}{% set ns.last = m.role %}{% endfor %}{{ ns.c }} {{ ns.last }}",
    "{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set t %}block {{ n }}{% endset %}[{{ t }}]",
    "{{ messages[0].content|trim }}|{{ words|trim }}|{{ 'xxaxx'.strip('x') }}|{{ '  a '.lstrip() }}|{{ ' a  '.rstrip() }}|{{ '\\n\\nq\\n'.strip('\\n') }}",
    "{{ s.split(',') }} {{ words.split() }} {{ s.split(',', 1) }} {{ 'a b'.split(' ')|length }}",
    "{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith('lo') }} {{ 'Hello'.startswith(('x', 'H')) }} {{ 'abcabc'.replace('b', 'X') }} {{ 'abcabc'.replace('b', 'X', 1) }}",
    "{{ 'MiXed'.lower() }} {{ 'MiXed'.upper() }} {{ 'hello world'.title() }} {{ 'hello World'.capitalize() }} {{ 'abcb'.find('b') }} {{ 'abcb'.count('b') }} {{ '-'.join(['a', 'b']) }}",
    "{{ 'MiXed'|lower }} {{ 'MiXed'|upper }} {{ 'hello world'|title }} {{ 'hello'|capitalize }} {{ 'aXbX'|replace('X', '-') }} {{ messages|length }} {{ 'héllo'|length }} {{ d|length }}",
    "{{ tools|tojson }}\n{{ messages[2].tool_calls[0].function.arguments|tojson }}\n{{ d|tojson(indent=2) }}\n{{ 'é\"\\n'|tojson }}\n{{ [1, 2.0, none, true]|tojson }}\n{{ d|tojson(sort_keys=true) }}",
    "{{ messages[2] }} {{ [1, 'a', none, true, 2.5] }} {{ d }} {{ \"it's\" }} {{ ['it\\'s'] }}",
    "{{ x is defined }} {{ n is defined }} {{ n is not defined }} {{ none is none }} {{ flag is false }} {{ flag is true }} {{ n is number }} {{ s is string }} {{ d is mapping }} {{ n is odd }} {{ n is even }} {{ n is divisibleby 7 }} {{ empty is iterable }} {{ n is integer }} {{ f is float }}",
    "{{ undefined_var }}|{{ undefined_var|default('dflt') }}|{{ ''|default('e', true) }}|{{ none|default('n') }}|{{ (missing.attr is defined) if missing is defined else 'no' }}",
    "{{ missing.attr is defined if missing is defined else 'no' }}",
    "{% if x %}unclosed",
    "{% include 'other.j2' %}",
    "{{ 'a' * 100 }}{{ n.attr }}|{{ none.attr }}",
    "{{ messages|map(attribute='role')|join(',') }} {{ messages|selectattr('role', 'equalto', 'user')|list|length }} {{ messages|rejectattr('role', 'eq', 'user')|map(attribute='role')|list }} {{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3]|reject('even')|list }}",
    "{{ [3, 1, 2]|sort }} {{ [3, 1, 2]|sort(reverse=true) }} {{ ['b', 'A', 'c']|sort }} {% for k, v in d|dictsort %}{{ k }}{{ v }}{% endfor %} {{ [1, 2, 2, 1]|unique|list }} {{ [1, 2, 3]|sum }} {{ [4, 2, 8]|min }} {{ [4, 2, 8]|max }} {{ [1, 2]|first }} {{ [1, 2]|last }} {{ 'abc'|list }} {{ [1, 2]|reverse|list }}",
    "{{ '3'|int + 1 }} {{ 2.7|int }} {{ 'x'|int }} {{ 3|float }} {{ -3|abs }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 7|string ~ '!' }} {{ 'a<b>&'|e }} {{ 'two words here'|wordcount }}",
    "{{ 'line1\\nline2\\n\\nline4'|indent(2) }}|{{ 'a\\nb'|indent(4, true) }}",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', punct='?') }} {{ greet(name='Cy') }}",
    "  {% if true %}\n    indented\n  {% endif %}\nafter\n{% for i in range(2) %}\n  item {{ i }}\n{% endfor %}\nend",
    "a  {%- if true -%}  b  {%- endif -%}  c\n{{- ' d ' -}}\n e {# comment #}\n{#- c2 -#} f",
    "x\n{%+ if true %}y{% endif +%}\nz\n  {{ 'v' }}\n",
    "{{ messages[0]['role'] }} {{ messages[-1].content }} {{ d['a'] }} {{ d.get('zz', 'def') }} {{ d.get('a') }} {{ {'k': 'v'}.k }} {{ (1, 2)[1] }} {{ [[1, 2], [3]][0][1] }}",
    "{{ 'a' 'b' }} {{ \"tab\\there\" }} {{ 'q\\'s' }} {{ 'uni\\u00e9' }}",
    "{% if messages[0].role == 'system' %}{% set sys = messages[0].content %}{% set rest = messages[1:] %}{% else %}{% set sys = '' %}{% set rest = messages %}{% endif %}[{{ sys }}]{{ rest|length }}",
    "{{ raise_exception('bad role') }}",
    "{{ undefined_var.attr }}",
    "{{ 1 + 'a' }}",
    "{% for i in range(3) %}{% for j in range(2) %}{{ loop.index }}{% endfor %}{{ loop.index }};{% endfor %}",
    "{% for m in messages %}{% if loop.previtem is defined %}{{ loop.previtem.role[0] }}{% endif %}{% if loop.nextitem is defined %}>{{ loop.nextitem.role[0] }}{% endif %} {% endfor %}",
    "{{ 'a\\r\\nb' }}|{{ '%s' }}|{{ '{{ not a tag }}' }}|{{ {'a': {'b': 1}} }}",
    "{%- for message in messages %}{{- '<|' + message.role + '|>' + (message.content if message.content is string else '') + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}",
]

# Larger templates in the style of real chat templates (Mistral instruct,
# Llama 3.1 with tools, ChatML with a system default), written for this test.
T += [
    """{%- if messages[0]['role'] == 'system' %}
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
    """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
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
    """{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}""",
]
V2 = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}],
      "bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": True}


def main():
    out = []
    for t in T:
        try:
            r = env.from_string(t).render(**V, bos_token="<s>", eos_token="</s>")
            out.append({"template": t, "output": r})
        except Exception as e:  # recorded as an expected error
            out.append({"template": t, "error": type(e).__name__ + ": " + str(e)})
    # the Mistral-style template again, with alternating roles (renders)
    for t in T[-3:-2] + T[-1:]:
        out.append({"template": t, "vars": V2, "output": env.from_string(t).render(**V2)})
    print(json.dumps({"jinja2_version": jinja2.__version__, "vars": V, "cases": out}, ensure_ascii=False, indent=1))


main()
