"""Extract the part of Kubernetes' official OpenAPI v3 description (release
1.35) that copilot and the emulated API server speak: namespaced pods,
services, secrets and events (core/v1), deployments (with their scale
subresource) and replicasets (apps/v1), a namespace itself (a preview's
own), and every schema they refer to.
Paths, operations and schemas are copied verbatim but for one thing: Prism
reads a request body as JSON only under a JSON media type, so it would take
a server-side apply body (`application/apply-patch+yaml`, which kube-rs and
kubectl send as JSON text) for a string and refuse it against the `Patch`
schema (`type: object`). That one body schema is left open here; the
emulated API server validates every applied object against its own kind's
schema from this description instead (`tests/kube_emulator.rs`).

    python3 tests/specs/kubernetes_extract.py ../shared/specs/kubernetes \
        > tests/specs/kubernetes-1.35.prism.json
"""

import json
import sys

KEEP = [
    "/api/v1/namespaces/{namespace}/pods",
    "/api/v1/namespaces/{namespace}/services",
    "/api/v1/namespaces/{namespace}/secrets",
    "/api/v1/namespaces/{namespace}/events",
    "/apis/apps/v1/namespaces/{namespace}/deployments",
    "/apis/apps/v1/namespaces/{namespace}/replicasets",
]
# Kept as they are, without their sub-paths.
EXACT = ["/api/v1/namespaces/{name}"]


def refs(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "$ref":
                yield v
            else:
                yield from refs(v)
    elif isinstance(o, list):
        for x in o:
            yield from refs(x)


def main(base):
    specs = [
        json.load(open(f"{base}/{f}"))
        for f in ["api__v1_openapi.json", "apis__apps__v1_openapi.json"]
    ]
    out = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (core/v1 and apps/v1, namespaced)", "version": "v1.35"},
        "paths": {},
        "components": {"schemas": {}},
    }
    for d in specs:
        for p, v in d["paths"].items():
            if p in EXACT or any(p in (k, k + "/{name}", k + "/{name}/scale") for k in KEEP):
                out["paths"][p] = v
    schemas = {}
    for d in specs:
        schemas.update(d["components"]["schemas"])
    need, todo = set(), list(refs(out["paths"]))
    while todo:
        name = todo.pop().split("/")[-1]
        if name not in need:
            need.add(name)
            todo.extend(refs(schemas[name]))
    out["components"]["schemas"] = {n: schemas[n] for n in sorted(need)}
    for item in out["paths"].values():
        patch = item.get("patch", {}).get("requestBody", {}).get("content", {})
        if "application/apply-patch+yaml" in patch:
            patch["application/apply-patch+yaml"]["schema"] = {}
    json.dump(out, sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    main(sys.argv[1])
