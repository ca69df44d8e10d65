"""docs/openapi.yaml against what sandboxd serves and what docs/api.md shows.

    python3 -m pytest tests/unit/openapi_test.py      (tests/run-unit runs it)

- every route of sandboxd's table (api/sandboxd/routes.c) is an operation of
  openapi.yaml, with the route's success status, and every operation is a route;
- every schema is valid JSON Schema (2020-12, what OpenAPI 3.1 uses) and every
  $ref resolves;
- every ```json example of docs/api.md is marked <!-- openapi: SCHEMA --> and
  validates against that schema.
Needs python3-yaml and python3-jsonschema (scripts/install-deps.sh); no daemon, no VM."""
import json
import os
import re

import jsonschema
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def spec():
    return yaml.safe_load(read("docs/openapi.yaml"))


def served_routes():
    """(METHOD, path with {} for each * segment) -> success status, from routes.c's table."""
    table = read("api/sandboxd/routes.c")
    table = table[table.index("static const struct route routes[]"):]
    table = table[:table.index("};")]
    routes, fallbacks = {}, []
    for method, path, status in re.findall(r'\{(HTTP_[A-Z]+|ANY_METHOD), "([^"]+)", (\d+),', table):
        norm = re.sub(r"(?<=/)\*(?=/|$)", "{}", path)
        if method == "ANY_METHOD":
            fallbacks.append(norm)
        else:
            routes[(method.removeprefix("HTTP_"), norm)] = int(status)
    assert len(routes) >= 30, f"the route table was not read ({len(routes)} routes)"
    return routes, fallbacks


def documented(spec):
    ops = {}
    for path, item in spec["paths"].items():
        norm = re.sub(r"\{[^}]+\}", "{}", path)
        for m in METHODS:
            if m in item:
                ops[(m.upper(), norm)] = item[m]
    return ops


def test_every_route_is_documented(spec):
    routes, _ = served_routes()
    ops = documented(spec)
    missing = sorted(set(routes) - set(ops))
    stale = sorted(set(ops) - set(routes))
    assert not missing, f"routes sandboxd serves that openapi.yaml lacks: {missing}"
    assert not stale, f"operations in openapi.yaml that sandboxd does not serve: {stale}"
    for key, status in routes.items():
        codes = [c for c in ops[key]["responses"] if str(c).startswith("2")]
        assert codes == [str(status)], f"{key}: sandboxd answers {status}, openapi.yaml says {codes}"


def test_file_calls_document_405(spec):
    _, fallbacks = served_routes()
    assert set(fallbacks) == {"/v1/sandboxes/{}/files", "/v1/sandboxes/{}/files/{}"}, fallbacks
    for (method, path), o in documented(spec).items():
        if "/files" in path:
            assert "405" in o["responses"], f"{method} {path}: no 405"


def test_every_operation_lists_its_errors(spec):
    for (method, path), o in documented(spec).items():
        codes = set(o["responses"])
        common = {"408", "413", "414", "431"} | (set() if path == "/v1/health" else {"401"})
        assert common <= codes, f"{method} {path} lacks {common - codes}"
        if "{}" in path:
            assert "404" in codes, f"{method} {path}: a path with an id can be 404"
        for code, r in o["responses"].items():
            if not code.startswith("2"):
                assert r.get("$ref", "").startswith("#/components/responses/"), (method, path, code)


def resolve(spec, ref):
    node = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def test_schemas_and_refs(spec):
    for r in set(refs(spec)):
        assert r.startswith("#/"), r
        resolve(spec, r)  # KeyError when it names nothing
    for name, schema in spec["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
    for name, resp in spec["components"]["responses"].items():
        assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, name


def validator(spec, name):
    # The schema with the document's components beside it, so that its $refs resolve.
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def api_md_examples():
    text = read("docs/api.md")
    return re.findall(r"(?:<!-- openapi: (\w+) -->\n)?```json\n(.*?)\n```", text, re.S)


def test_api_md_examples_validate(spec):
    examples = api_md_examples()
    assert len(examples) >= 5, examples
    for name, body in examples:
        assert name, f"a ```json example of docs/api.md has no <!-- openapi: SCHEMA --> mark: {body[:80]}"
        assert name in spec["components"]["schemas"], f"docs/api.md names schema {name}, openapi.yaml has none"
        errors = [e.message for e in validator(spec, name).iter_errors(json.loads(body))]
        assert not errors, f"docs/api.md's {name} example: {errors}"


def test_schemas_refuse_what_sandboxd_refuses(spec):
    # The validation is not vacuous: bodies docs/api.md calls bad fail their schema.
    bad = [("SandboxCreate", {"cpu": 0}), ("SandboxCreate", {"bogus": 1}), ("SandboxCreate", {"timeout": "10"}),
           ("SandboxCreate", {"encrypted_ports": [0]}), ("ExecCreate", {"env": {}}), ("Signal", {"signal": 65}),
           ("Sandbox", {"id": "sb-1"}), ("ConnectTokenCreate", {"port": 70000}), ("Tunnels", {"tunnels": {"x": {}}})]
    for name, body in bad:
        assert list(validator(spec, name).iter_errors(body)), f"{name} accepted {body}"
