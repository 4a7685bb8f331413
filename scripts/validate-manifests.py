"""Validates Kubernetes manifests without a cluster.

    python scripts/validate-manifests.py --kubernetes-version 1.33 FILE...   (- reads stdin)

Every document (and every item of a `List`) must validate: built-in kinds against the Kubernetes OpenAPI schemas
of that version (kubernetes-validate, strict: unknown fields are errors), custom
resources against the openAPIV3Schema of a CustomResourceDefinition among the same
files, with unknown fields refused as the API server's strict field validation
would. A kind with no schema at all is an error, not a warning. Prints one line per
document and exits 1 if any failed.
"""

import argparse
import copy
import sys

import jsonschema
import kubernetes_validate
import yaml


def documents(paths):
    """Every document of the files; the items of a `List` (as `strata render`
    prints) count as documents of their own."""
    for path in paths:
        stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
        with stream:
            for document in yaml.safe_load_all(stream):
                if not document:
                    continue
                if document.get("apiVersion") == "v1" and document.get("kind") == "List":
                    for item in document.get("items") or []:
                        yield path, item
                else:
                    yield path, document


def strict(schema):
    """The schema with `additionalProperties: false` wherever properties are listed and
    nothing says unknown fields are kept, as a structural schema prunes them."""
    schema = copy.deepcopy(schema)

    def visit(node):
        if not isinstance(node, dict):
            return
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                visit(child)
        for key in ("items", "additionalProperties", "not"):
            visit(node.get(key))
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                visit(child)

    visit(schema)
    return schema


def custom_schemas(docs):
    """(group, version, kind) -> schema for every CRD among the documents."""
    schemas = {}
    for _, doc in docs:
        if doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            key = (spec["group"], version["name"], spec["names"]["kind"])
            schemas[key] = strict(schema)
    return schemas


def name(doc):
    return "%s/%s" % (doc.get("kind", "?"), (doc.get("metadata") or {}).get("name", "?"))


def validate(path, doc, custom, version):
    api_version = doc.get("apiVersion", "")
    group, _, api = api_version.rpartition("/")
    key = (group, api, doc.get("kind"))
    if key in custom:
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        validator = jsonschema.Draft7Validator(custom[key])
        problems = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        if problems:
            where = ".".join(str(p) for p in problems[0].path) or "(root)"
            return "%s: %s at %s: %s" % (path, name(doc), where, problems[0].message)
        return None
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(p) for p in error.path) or "(root)"
        return "%s: %s at %s: %s" % (path, name(doc), where, error.message)
    except kubernetes_validate.SchemaNotFoundError as error:
        return "%s: %s: %s" % (path, name(doc), error.message)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", default="1.33")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    docs = list(documents(args.files))
    if not docs:
        print("no documents to validate", file=sys.stderr)
        return 1
    custom = custom_schemas(docs)
    failed = 0
    for path, doc in docs:
        problem = validate(path, doc, custom, args.kubernetes_version)
        if problem:
            failed += 1
            print("FAIL " + problem)
        else:
            print("ok   %s: %s" % (path, name(doc)))
    print("%d documents valid, %d invalid" % (len(docs) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
