#!/usr/bin/env python3
"""Make tests/specs/github.prism.json: GitHub's REST description as copilot's
tests hold the emulated GitHub to it.

It is ../shared/specs/github-deployments-openapi.json (deployments, their
statuses, environments, issue comments, commit statuses and check runs, from
npm @octokit/openapi@23.0.2 `generated/api.github.com.json`), verbatim, plus
`GET /repos/{owner}/{repo}/pulls/{pull_number}` from the same file with every
component it refers to: `preview gc` asks whether a pull request is open.

    npm pack @octokit/openapi@23.0.2 && tar xzf octokit-openapi-23.0.2.tgz
    python3 tests/specs/github_extract.py package/generated/api.github.com.json
"""

import json
import sys

FULL = sys.argv[1]
SHARED = "../shared/specs/github-deployments-openapi.json"
OUT = "tests/specs/github.prism.json"
EXTRA = {"/repos/{owner}/{repo}/pulls/{pull_number}": ["get"]}

full = json.load(open(FULL))
out = json.load(open(SHARED))


def refs(node, found):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            _, _, kind, name = ref.split("/", 3)
            if (kind, name) not in found:
                found.add((kind, name))
                refs(full["components"][kind][name], found)
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)


for path, methods in EXTRA.items():
    item = {m: full["paths"][path][m] for m in methods}
    out["paths"][path] = item
    found = set()
    refs(item, found)
    for kind, name in sorted(found):
        out["components"].setdefault(kind, {})[name] = full["components"][kind][name]

json.dump(out, open(OUT, "w"), indent=1, sort_keys=False)
print(f"{OUT}: {len(out['paths'])} paths")
