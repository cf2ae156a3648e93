"""Checks of the deployment files, run by tests/deploy/validate.sh in its venv.

    validate.py compose SCHEMA FILE [--project-dir DIR]
        FILE against the compose specification's JSON schema; with --project-dir,
        also that every relative bind-mount source and build context exists there.
    validate.py k8s VERSIONS [LABEL=]FILE...
        every object of the FILEs (multi-document YAML, e.g. a kustomize build)
        against the Kubernetes OpenAPI schemas of each version (comma-separated)
        with kubernetes-validate in strict mode (unknown fields are errors), then
        the rules the bridge's manifests keep (see `policy`).
    validate.py toml FILE...
        the FILEs parse as TOML (the bridge's own `check --offline` validates them
        as configurations).
    validate.py yaml FILE...
        the FILEs parse as YAML (files no schema here covers, e.g. prometheus.yml).
    validate.py context DOCKERFILE DOCKERIGNORE ROOT
        every file the Dockerfile COPYs from the build context exists under ROOT
        and is let through by the .dockerignore (which excludes everything else).

Exit status 0 when everything is valid, 1 otherwise; every problem is printed
with the file and the path inside it.
"""

import argparse
import os
import sys
import tomllib

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import VersionNotSupportedError

# Kinds whose schemas are not Kubernetes' own (CRDs): checked for the fields
# every object has, and reported as such.
CRD_GROUPS = ("monitoring.coreos.com/",)


def load_yaml_documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def json_path(parts):
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def check_compose(args):
    with open(args.schema, encoding="utf-8") as f:
        schema = yaml.safe_load(f)
    docs = load_yaml_documents(args.file)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        print(f"{args.file}: expected one YAML mapping, found {len(docs)} document(s)")
        return 1
    compose = docs[0]
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(map(str, e.absolute_path)))
    for e in errors:
        print(f"{args.file}: {json_path(e.absolute_path)}: {e.message}")
    problems = len(errors)
    if args.project_dir and not errors:
        for name, service in (compose.get("services") or {}).items():
            build = service.get("build")
            context = build.get("context") if isinstance(build, dict) else build
            if context and not os.path.isdir(os.path.join(args.project_dir, context)):
                print(f"{args.file}: services.{name}.build.context: {context} is not a directory")
                problems += 1
            for i, volume in enumerate(service.get("volumes") or []):
                source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
                if source.startswith((".", "/")) and not os.path.exists(os.path.join(args.project_dir, source)):
                    print(f"{args.file}: services.{name}.volumes[{i}]: {source} does not exist")
                    problems += 1
    if problems:
        return 1
    print(f"{args.file}: valid compose file ({len(compose.get('services', {}))} services)")
    return 0


def k8s_name(obj):
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


def check_k8s(args):
    versions = [v for v in args.versions.split(",") if v]
    problems = 0
    objects = []
    for arg in args.files:
        # LABEL=FILE names a generated file (a kustomize build) by what it came from.
        label, _, path = arg.rpartition("=") if "=" in arg and not os.path.exists(arg) else (arg, "", arg)
        for obj in load_yaml_documents(path):
            objects.append((label, obj))
    for path, obj in objects:
        if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
            print(f"{path}: a document without apiVersion and kind")
            problems += 1
            continue
        name = k8s_name(obj)
        if obj["apiVersion"].startswith(CRD_GROUPS):
            if not (obj.get("metadata") or {}).get("name") or not isinstance(obj.get("spec"), dict):
                print(f"{path}: {name}: a custom resource needs metadata.name and a spec")
                problems += 1
            else:
                print(f"{path}: {name}: custom resource ({obj['apiVersion']}): no schema, structure only")
            continue
        ok = True
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                print(f"{path}: {name}: Kubernetes {e.version}: {json_path(e.path)}: {e.message}")
                ok = False
            except (kubernetes_validate.SchemaNotFoundError, VersionNotSupportedError) as e:
                print(f"{path}: {name}: {e.message}")
                ok = False
        for issue in policy(obj):
            print(f"{path}: {name}: {issue}")
            ok = False
        if ok:
            print(f"{path}: {name}: valid (Kubernetes {', '.join(versions)}, strict)")
        else:
            problems += 1
    if not objects:
        print("no Kubernetes objects found")
        return 1
    return 1 if problems else 0


def policy(obj):
    """The rules the bridge's manifests keep beyond the schemas (k8s/README.md)."""
    issues = []
    kind = obj.get("kind")
    if kind == "Secret" and (obj.get("data") or obj.get("stringData")):
        issues.append("a Secret with values: credentials are referenced, never written into manifests")
    if kind != "Deployment":
        return issues
    spec = obj.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if labels.get("app.kubernetes.io/component") == "source":
        if spec.get("replicas") != 1:
            issues.append("the source runs exactly one replica per MySQL server: spec.replicas must be 1")
        if (spec.get("strategy") or {}).get("type") != "Recreate":
            issues.append("the source must never overlap itself: spec.strategy.type must be Recreate")
    pod_sc = pod.get("securityContext") or {}
    if pod_sc.get("runAsNonRoot") is not True:
        issues.append("spec.template.spec.securityContext.runAsNonRoot must be true")
    if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        issues.append("spec.template.spec.securityContext.seccompProfile.type must be RuntimeDefault")
    for c in pod.get("containers") or []:
        where = f"container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            issues.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            issues.append(f"{where}: securityContext.readOnlyRootFilesystem must be true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            issues.append(f"{where}: securityContext.capabilities.drop must include ALL")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
            if got != path:
                issues.append(f"{where}: {probe} must GET {path} (found {got})")
        resources = c.get("resources") or {}
        for key in ("requests.cpu", "requests.memory", "limits.memory"):
            section, name = key.split(".")
            if name not in (resources.get(section) or {}):
                issues.append(f"{where}: resources.{key} is missing")
        for env in c.get("env") or []:
            if "value" in env and any(w in env["name"].upper() for w in ("PASSWORD", "SECRET", "TOKEN")):
                issues.append(f"{where}: env {env['name']} holds a literal value; use valueFrom.secretKeyRef")
    return issues


def check_toml(args):
    problems = 0
    for path in args.files:
        try:
            with open(path, "rb") as f:
                tomllib.load(f)
            print(f"{path}: valid TOML")
        except tomllib.TOMLDecodeError as e:
            print(f"{path}: {e}")
            problems += 1
    return 1 if problems else 0


def check_yaml(args):
    problems = 0
    for path in args.files:
        try:
            docs = load_yaml_documents(path)
            print(f"{path}: valid YAML ({len(docs)} document(s))")
        except yaml.YAMLError as e:
            print(f"{path}: {' '.join(str(e).split())}")
            problems += 1
    return 1 if problems else 0


def dockerfile_instructions(path):
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out, current = [], ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            stripped = line.strip()
            if not current and (not stripped or stripped.startswith("#")):
                continue
            if stripped.startswith("#"):
                continue
            if stripped.endswith("\\"):
                current += stripped[:-1] + " "
                continue
            out.append(current + stripped)
            current = ""
    if current:
        out.append(current)
    return out


def check_context(args):
    with open(args.dockerignore, encoding="utf-8") as f:
        patterns = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("#")]
    if patterns[:1] != ["*"]:
        print(f"{args.dockerignore}: expected to start with `*` (exclude all, then let through what the image needs)")
        return 1
    allowed = [p[1:].strip("/") for p in patterns if p.startswith("!")]
    problems = 0
    copies = 0
    for instruction in dockerfile_instructions(args.dockerfile):
        words = instruction.split()
        if words[0].upper() not in ("COPY", "ADD"):
            continue
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources = [w for w in words[1:-1] if not w.startswith("--")]
        for source in sources:
            copies += 1
            src = source.strip("/").removeprefix("./")
            if not os.path.exists(os.path.join(args.root, src)):
                print(f"{args.dockerfile}: COPY {source}: not in the build context ({args.root})")
                problems += 1
            elif not any(src == a or src.startswith(a + "/") for a in allowed):
                print(f"{args.dockerfile}: COPY {source}: excluded by {args.dockerignore} (add `!{src}`)")
                problems += 1
    if problems:
        return 1
    print(f"{args.dockerfile}: {copies} COPY sources, all in the build context that {args.dockerignore} lets through")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compose")
    p.add_argument("schema")
    p.add_argument("file")
    p.add_argument("--project-dir")
    p.set_defaults(run=check_compose)
    p = sub.add_parser("k8s")
    p.add_argument("versions")
    p.add_argument("files", nargs="+")
    p.set_defaults(run=check_k8s)
    p = sub.add_parser("toml")
    p.add_argument("files", nargs="+")
    p.set_defaults(run=check_toml)
    p = sub.add_parser("context")
    p.add_argument("dockerfile")
    p.add_argument("dockerignore")
    p.add_argument("root")
    p.set_defaults(run=check_context)
    p = sub.add_parser("yaml")
    p.add_argument("files", nargs="+")
    p.set_defaults(run=check_yaml)
    args = parser.parse_args()
    try:
        return args.run(args)
    except (OSError, yaml.YAMLError) as e:
        print(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
