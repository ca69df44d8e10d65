#!/usr/bin/python3
"""Strictly parses a Prometheus text exposition (FILE) and prints its samples as JSON.

usage: prom_parse.py FILE   ->   {"name{k=\"v\",...}": value, ...} on stdout, exit 0;
       anything the parser refuses, or a family breaking the naming rules, exits 1 with why.

The parser is the Prometheus client's own (python3-prometheus-client, Debian). On top of it:
every family has a TYPE, a counter's samples end in _total, no sample appears twice, every
name and label name is valid, and no label value looks like an id (sb-..., ex-..., hex runs).
"""
import json
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
ID_LIKE = re.compile(r"^(sb|ex|ct)-|[0-9a-f]{16}")


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    if not text.endswith("\n"):
        fail("the exposition does not end with a newline")
    out = {}
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser's refusal, whatever its class
        fail("parser: %r" % (e,))
    names = set()
    for fam in families:
        if fam.type == "unknown":
            fail("family %s has no TYPE" % fam.name)
        if fam.name in names:
            fail("family %s appears twice" % fam.name)
        names.add(fam.name)
        for s in fam.samples:
            if not NAME.match(s.name):
                fail("bad sample name %r" % s.name)
            if fam.type == "counter" and not s.name.endswith("_total"):
                fail("counter sample %s does not end in _total" % s.name)
            for k, v in s.labels.items():
                if not LABEL.match(k):
                    fail("bad label name %r" % k)
                if ID_LIKE.search(v):
                    fail("label %s=%r looks like an id" % (k, v))
            key = s.name + ("{" + ",".join('%s="%s"' % kv for kv in sorted(s.labels.items())) + "}"
                            if s.labels else "")
            if key in out:
                fail("sample %s appears twice" % key)
            out[key] = s.value
    print(json.dumps(out))


main()
