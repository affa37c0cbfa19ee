#!/usr/bin/env python3
"""Generate profiles/r4/structure.json, Hearth's compact FHIR R4 element table.

Usage:
    python3 scripts/gen_r4_structure.py PATH/TO/package [--out FILE]

PATH/TO/package is the extracted `package/` directory of the npm package
`hl7.fhir.r4.examples@4.0.1` (CC0). See profiles/r4/README.md for how to
fetch it. Only facts are carried over into our own format; none of the
official files are copied.

Stdlib only (Python 3.11+). The output is deterministic for a given input.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

FHIR_VERSION = "4.0.1"
KINDS = ("resource", "complex-type", "primitive-type")
SD_BASE = "http://hl7.org/fhir/StructureDefinition/"
EXT_FHIR_TYPE = SD_BASE + "structuredefinition-fhir-type"
EXT_REGEX = SD_BASE + "regex"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
# Codes whose JSON representation is a number / boolean; all others are strings.
JSON_NUMBER = {"integer", "unsignedInt", "positiveInt", "decimal", "integer64"}
JSON_BOOLEAN = {"boolean"}
# Type codes that may carry a required binding we enumerate.
CODED_TYPES = {"code", "Coding", "CodeableConcept"}
# CodeSystem concept properties that mark a code as not usable in instances.
ABSTRACT_PROPS = {"notSelectable", "abstract"}


def die(msg: str) -> None:
    sys.exit(f"gen_r4_structure: error: {msg}")


def load_dir(pkg: str, prefix: str) -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(pkg, prefix + "-*.json"))):
        with open(path, encoding="utf-8") as fh:
            res = json.load(fh)
        if res.get("resourceType") != prefix:
            continue
        out.append(res)
    return out


def strip_version(url: str) -> str:
    return url.split("|", 1)[0]


# --------------------------------------------------------------------------
# Terminology: enumerate value sets where that is possible from the package.
# --------------------------------------------------------------------------


class Terminology:
    def __init__(self, value_sets: list[dict], code_systems: list[dict]):
        self.vs = {v["url"]: v for v in value_sets}
        self.cs = {c["url"]: c for c in code_systems}
        self._cache: dict[str, list[str] | None] = {}

    def _cs_codes(self, system: str, version: str | None) -> list[str] | None:
        cs = self.cs.get(system)
        if cs is None or cs.get("content") != "complete":
            return None
        if version is not None and cs.get("version") not in (None, version):
            return None
        codes: list[str] = []

        def walk(concepts: list[dict]) -> None:
            for c in concepts:
                abstract = any(
                    p.get("code") in ABSTRACT_PROPS and p.get("valueBoolean") is True
                    for p in c.get("property", [])
                )
                if not abstract:
                    codes.append(c["code"])
                walk(c.get("concept", []))

        walk(cs.get("concept", []))
        return codes

    def _part_codes(self, part: dict) -> list[str] | None:
        """Codes of one compose.include/exclude entry, or None if not enumerable."""
        if part.get("filter") or part.get("valueSet") or "system" not in part:
            return None
        if part.get("concept"):
            return [c["code"] for c in part["concept"]]
        return self._cs_codes(part["system"], part.get("version"))

    def codes(self, vs_url: str) -> list[str] | None:
        if vs_url in self._cache:
            return self._cache[vs_url]
        result: list[str] | None = None
        vs = self.vs.get(vs_url)
        compose = (vs or {}).get("compose")
        if compose and compose.get("include"):
            codes: list[str] = []
            ok = True
            for inc in compose["include"]:
                part = self._part_codes(inc)
                if part is None:
                    ok = False
                    break
                codes.extend(part)
            if ok:
                excluded: set[str] = set()
                for exc in compose.get("exclude", []):
                    part = self._part_codes(exc)
                    if part is None:
                        ok = False
                        break
                    excluded.update(part)
            if ok:
                seen: set[str] = set()
                result = []
                for c in codes:
                    if c not in excluded and c not in seen:
                        seen.add(c)
                        result.append(c)
        self._cache[vs_url] = result
        return result


# --------------------------------------------------------------------------
# StructureDefinitions
# --------------------------------------------------------------------------


def is_base_definition(sd: dict) -> bool:
    if sd.get("kind") not in KINDS:
        return False
    if sd.get("derivation") == "specialization":
        return True
    # Element and Resource are the roots: no baseDefinition and no derivation.
    return sd.get("derivation") is None and "baseDefinition" not in sd


def type_code(sd: dict, el: dict, t: dict, rel: str) -> str:
    code = t["code"]
    if not code.startswith(SYSTEM_PREFIX):
        return code
    # FHIRPath System.* types only occur on primitive `.value` elements (which
    # we do not emit) and on the `id` / `Extension.url` elements. For those the
    # structuredefinition-fhir-type extension names the FHIR primitive.
    fhir_type = None
    for ext in t.get("extension", []):
        if ext.get("url") == EXT_FHIR_TYPE:
            fhir_type = ext.get("valueUrl") or ext.get("valueUri") or ext.get("valueString")
    last = rel.rsplit(".", 1)[-1]
    if last not in ("id", "url"):
        die(f"unexpected System type {code} on {el['path']}")
    if sd["kind"] == "resource" and rel == "id":
        # Resource.id: the R4 snapshot encodes it as System.String with
        # fhir-type 'string', but the spec (and the SD's own narrative table)
        # define Resource.id as type `id` (regex [A-Za-z0-9\-\.]{1,64}).
        return "id"
    if fhir_type:
        return fhir_type
    if code == SYSTEM_PREFIX + "String":
        return "string"
    die(f"cannot map {code} on {el['path']}")
    return ""  # unreachable


def convert_element(sd: dict, el: dict, rel: str, term: Terminology, stats: dict) -> dict:
    out: dict = {"min": int(el["min"])}
    mx = el["max"]
    out["max"] = mx if mx == "*" else int(mx)

    types: list[str] = []
    targets: list[str] = []
    any_target = False
    for t in el.get("type", []):
        code = type_code(sd, el, t, rel)
        if code not in types:
            types.append(code)
        if code in ("Reference", "canonical"):
            tps = t.get("targetProfile", [])
            if not tps:
                any_target = True
            for tp in tps:
                name = tp.rstrip("/").rsplit("/", 1)[-1]
                if name == "Resource":
                    any_target = True
                elif name not in targets:
                    targets.append(name)
    if types:
        out["types"] = types
    if targets and not any_target:
        out["targets"] = targets

    cref = el.get("contentReference")
    if cref:
        if not cref.startswith("#" + sd["type"] + "."):
            die(f"unexpected contentReference {cref} on {el['path']}")
        out["ref"] = cref[len(sd["type"]) + 2 :]

    b = el.get("binding")
    if b and b.get("strength") == "required" and CODED_TYPES.intersection(types):
        vs_url = strip_version(b.get("valueSet", ""))
        if vs_url:
            binding = {"strength": "required", "valueSet": vs_url}
            codes = term.codes(vs_url)
            if codes:
                binding["codes"] = codes
                stats["bindings_enumerated"] += 1
            else:
                stats["bindings_not_enumerated"].add(vs_url)
            out["binding"] = binding
            stats["bindings"] += 1

    if el.get("isSummary"):
        out["summary"] = True
    if el.get("isModifier"):
        out["modifier"] = True
    return out


def convert_sd(sd: dict, term: Terminology, stats: dict, primitives: dict) -> dict:
    tname = sd["type"]
    entry: dict = {"kind": sd["kind"], "abstract": bool(sd.get("abstract", False))}
    snapshot = sd.get("snapshot", {}).get("element")
    if not snapshot:
        die(f"{tname}: no snapshot")
    if snapshot[0]["path"] != tname:
        die(f"{tname}: first snapshot element is {snapshot[0]['path']}")

    if sd["kind"] == "primitive-type":
        regex = None
        for el in snapshot:
            if el["path"] == tname + ".value":
                for t in el.get("type", []):
                    for ext in t.get("extension", []):
                        if ext.get("url") == EXT_REGEX:
                            regex = ext.get("valueString")
        if tname in JSON_BOOLEAN:
            kind = "boolean"
        elif tname in JSON_NUMBER:
            kind = "number"
        else:
            kind = "string"
        prim = {"json": kind}
        if regex is not None:
            prim["regex"] = regex
        else:
            stats["primitives_without_regex"].append(tname)
        primitives[tname] = prim
        entry["elements"] = {}
        return entry

    elements: dict = {}
    for el in snapshot[1:]:
        path = el["path"]
        if not path.startswith(tname + "."):
            die(f"{tname}: foreign path {path}")
        if "sliceName" in el:
            die(f"{tname}: unexpected slice on {path}")
        rel = path[len(tname) + 1 :]
        if rel in elements:
            die(f"{tname}: duplicate path {path}")
        elements[rel] = convert_element(sd, el, rel, term, stats)

    # Resolve contentReferences: target must exist; copy its types.
    for rel, e in elements.items():
        if "ref" in e:
            target = elements.get(e["ref"])
            if target is None:
                die(f"{tname}.{rel}: contentReference target {e['ref']} missing")
            if "types" not in e and "types" in target:
                e["types"] = list(target["types"])
        if "types" not in e:
            die(f"{tname}.{rel}: no types")
    entry["elements"] = elements
    stats["elements"] += len(elements)
    return entry


def render(primitives: dict, types: dict) -> str:
    def dumps(v) -> str:
        return json.dumps(v, separators=(",", ":"), sort_keys=True)

    head = '{"fhirVersion":%s,"primitives":%s,\n"types":{\n' % (
        dumps(FHIR_VERSION),
        dumps(primitives),
    )
    body = ",\n".join(f"{dumps(name)}:{dumps(types[name])}" for name in sorted(types))
    return head + body + "\n}}\n"


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(os.path.dirname(here), "profiles", "r4", "structure.json")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package", help="extracted package/ dir of hl7.fhir.r4.examples@4.0.1")
    ap.add_argument("--out", default=default_out, help=f"output file (default {default_out})")
    args = ap.parse_args()

    pkg = args.package
    try:
        with open(os.path.join(pkg, "package.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)
    except OSError as exc:
        die(f"cannot read {pkg}/package.json: {exc}")
    if manifest.get("name") != "hl7.fhir.r4.examples" or manifest.get("version") != FHIR_VERSION:
        die(f"expected hl7.fhir.r4.examples@{FHIR_VERSION}, got {manifest.get('name')}@{manifest.get('version')}")

    sds = [sd for sd in load_dir(pkg, "StructureDefinition") if is_base_definition(sd)]
    term = Terminology(load_dir(pkg, "ValueSet"), load_dir(pkg, "CodeSystem"))

    stats = {
        "elements": 0,
        "bindings": 0,
        "bindings_enumerated": 0,
        "bindings_not_enumerated": set(),
        "primitives_without_regex": [],
    }
    primitives: dict = {}
    types: dict = {}
    for sd in sds:
        if sd.get("fhirVersion") != FHIR_VERSION:
            die(f"{sd['url']}: fhirVersion {sd.get('fhirVersion')}")
        if sd["type"] in types:
            die(f"duplicate base definition for {sd['type']}")
        types[sd["type"]] = convert_sd(sd, term, stats, primitives)

    # Every referenced type code must be known (a primitive or a listed type).
    for tname, t in types.items():
        for rel, e in t["elements"].items():
            for code in e["types"]:
                if code not in types:
                    die(f"{tname}.{rel}: unknown type {code}")
            for tgt in e.get("targets", []):
                if tgt not in types:
                    die(f"{tname}.{rel}: unknown target {tgt}")

    text = render(primitives, types)
    json.loads(text)  # self-check
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)

    by_kind: dict[str, list[int]] = {}
    for t in types.values():
        k = by_kind.setdefault(t["kind"], [0, 0])
        k[0] += 1
        k[1] += t["abstract"]
    print(f"wrote {args.out}")
    for kind in KINDS:
        n, a = by_kind.get(kind, [0, 0])
        print(f"  {kind:15} {n:4} types ({a} abstract)")
    print(f"  primitives      {len(primitives):4} (without regex: {', '.join(stats['primitives_without_regex']) or 'none'})")
    print(f"  elements        {stats['elements']:5}")
    print(
        f"  required bindings {stats['bindings']} "
        f"({stats['bindings_enumerated']} with codes; value sets not enumerable: "
        f"{', '.join(sorted(stats['bindings_not_enumerated'])) or 'none'})"
    )
    print(f"  size            {len(text.encode('utf-8'))} bytes")


if __name__ == "__main__":
    main()
