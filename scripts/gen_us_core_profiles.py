#!/usr/bin/env python3
"""Generate profiles/us-core/profiles.json, Hearth's US Core 6.1.0 profile rule table.

Usage:
    python3 scripts/gen_us_core_profiles.py US_CORE_RESOURCES R4_PACKAGE [--out FILE]

US_CORE_RESOURCES is the `resources/` directory of the US Core 6.1.0 definitions
(StructureDefinitions with differentials, ValueSets, CodeSystems). R4_PACKAGE is the
extracted `package/` directory of the npm package `hl7.fhir.r4.examples@4.0.1`, which
gives the base R4 snapshots (to resolve paths and compare cardinalities), the base
profiles US Core builds on (`vitalsigns`), and the base ValueSets/CodeSystems. See
profiles/us-core/README.md. Only facts are carried over into our own format; none of
the official files are copied.

Stdlib only (Python 3.11+). The output is deterministic for a given input.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

FHIR_VERSION = "4.0.1"
US_CORE_VERSION = "6.1.0"
US_CORE_SD = "http://hl7.org/fhir/us/core/StructureDefinition/"
CORE_SD = "http://hl7.org/fhir/StructureDefinition/"
CODED_TYPES = {"code", "Coding", "CodeableConcept"}
ABSTRACT_PROPS = {"notSelectable", "abstract"}
# Backbone-ish types whose children are defined inline in the owning definition.
INLINE_TYPES = {"BackboneElement", "Element"}

# US Core imports a few VSAC value sets the sources do not carry. For the four small ones
# the race, ethnicity and birth-sex checks need, these are the expansions published with
# US Core 6.1.0 (the value set pages of the IG). Everything else from VSAC stays "not
# enumerable" (codes null).
CDCREC = "urn:oid:2.16.840.1.113883.6.238"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
V3_GENDER = "http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender"
VSAC = "http://cts.nlm.nih.gov/fhir/ValueSet/"
PUBLISHED_EXPANSIONS: dict[str, list[tuple[str, str]]] = {
    # Race (CDC race categories, including 'Other Race').
    VSAC + "2.16.840.1.114222.4.11.836": [
        (CDCREC, c) for c in ("1002-5", "2028-9", "2054-5", "2076-8", "2106-3", "2131-1")
    ],
    # Ethnicity (OMB categories).
    VSAC + "2.16.840.1.114222.4.11.837": [(CDCREC, c) for c in ("2135-2", "2186-5")],
    # Unknown or refused to answer.
    VSAC + "2.16.840.1.113762.1.4.1021.102": [(NULL_FLAVOR, "UNK"), (NULL_FLAVOR, "ASKU")],
    # ONC administrative sex.
    VSAC + "2.16.840.1.113762.1.4.1": [(V3_GENDER, "F"), (V3_GENDER, "M")],
    # Null flavors of the birth-sex value set.
    VSAC + "2.16.840.1.113762.1.4.1021.103": [
        (NULL_FLAVOR, "ASKU"),
        (NULL_FLAVOR, "OTH"),
        (NULL_FLAVOR, "UNK"),
    ],
}


def die(msg: str) -> None:
    sys.exit(f"gen_us_core_profiles: error: {msg}")


def warn(msg: str) -> None:
    print(f"gen_us_core_profiles: note: {msg}", file=sys.stderr)


def load_json_files(directory: str, resource_type: str) -> list[dict]:
    """Every file of `directory` whose resourceType is `resource_type` (any file name case)."""
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        base = os.path.basename(path).lower()
        if not base.startswith(resource_type.lower() + "-"):
            continue
        with open(path, encoding="utf-8") as fh:
            res = json.load(fh)
        if res.get("resourceType") == resource_type:
            out.append(res)
    return out


def strip_version(url: str) -> str:
    return url.split("|", 1)[0]


def upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


# --------------------------------------------------------------------------
# Terminology
# --------------------------------------------------------------------------


class Terminology:
    """Expands value sets where that is possible from the sources.

    Enumerable: every include/exclude lists concepts, takes a whole complete CodeSystem,
    or imports an enumerable value set. Filters (SNOMED/LOINC intensional sets) and
    unknown systems or value sets make the whole value set not enumerable (None).
    """

    def __init__(self, value_sets: list[dict], code_systems: list[dict]):
        self.vs: dict[str, dict] = {}
        for v in value_sets:
            self.vs.setdefault(v["url"], v)
        self.cs: dict[str, dict] = {}
        for c in code_systems:
            self.cs.setdefault(c["url"], c)
        self._cache: dict[str, list[tuple[str, str]] | None] = {}
        self._busy: set[str] = set()

    def _cs_codes(self, system: str) -> list[str] | None:
        cs = self.cs.get(system)
        if cs is None or cs.get("content") != "complete":
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

    def _part(self, part: dict) -> list[tuple[str, str]] | None:
        if part.get("filter"):
            return None
        imported: list[tuple[str, str]] | None = None
        if part.get("valueSet"):
            imported = []
            for url in part["valueSet"]:
                sub = self.expand(strip_version(url))
                if sub is None:
                    return None
                imported.extend(sub)
        if "system" not in part:
            return imported
        system = part["system"]
        if part.get("concept"):
            own = [(system, c["code"]) for c in part["concept"]]
        else:
            codes = self._cs_codes(system)
            if codes is None:
                return None
            own = [(system, c) for c in codes]
        if imported is not None:
            # system + valueSet in one include is an intersection.
            keep = set(imported)
            own = [sc for sc in own if sc in keep]
        return own

    def expand(self, url: str) -> list[tuple[str, str]] | None:
        url = strip_version(url)
        if url in PUBLISHED_EXPANSIONS:
            return list(PUBLISHED_EXPANSIONS[url])
        if url in self._cache:
            return self._cache[url]
        if url in self._busy:
            return None
        self._busy.add(url)
        result: list[tuple[str, str]] | None = None
        compose = (self.vs.get(url) or {}).get("compose")
        if compose and compose.get("include"):
            codes: list[tuple[str, str]] = []
            ok = True
            for inc in compose["include"]:
                part = self._part(inc)
                if part is None:
                    ok = False
                    break
                codes.extend(part)
            excluded: set[tuple[str, str]] = set()
            if ok:
                for exc in compose.get("exclude", []):
                    part = self._part(exc)
                    if part is None:
                        ok = False
                        break
                    excluded.update(part)
            if ok:
                seen: set[tuple[str, str]] = set()
                result = []
                for sc in codes:
                    if sc not in excluded and sc not in seen:
                        seen.add(sc)
                        result.append(sc)
        self._busy.discard(url)
        self._cache[url] = result
        return result

    def codes_by_system(self, url: str) -> dict[str, list[str]] | None:
        expansion = self.expand(url)
        if expansion is None:
            return None
        grouped: dict[str, list[str]] = {}
        for system, code in expansion:
            grouped.setdefault(system, []).append(code)
        return grouped


# --------------------------------------------------------------------------
# Base R4 definitions: resolve a profile path to its base element
# --------------------------------------------------------------------------


class Base:
    def __init__(self, sds: list[dict]):
        self.types: dict[str, dict[str, dict]] = {}
        self.kind: dict[str, str] = {}
        self.by_url: dict[str, dict] = {}
        for sd in sds:
            self.by_url[sd["url"]] = sd
            if sd.get("derivation") == "constraint":
                continue
            if sd.get("kind") not in ("resource", "complex-type", "primitive-type"):
                continue
            snap = sd.get("snapshot", {}).get("element", [])
            self.types[sd["type"]] = {e["path"]: e for e in snap}
            self.kind[sd["type"]] = sd["kind"]

    def is_primitive(self, t: str | None) -> bool:
        return t is not None and self.kind.get(t) == "primitive-type"

    def resolve(self, path: str) -> list[dict]:
        """Walk `path` (e.g. Observation.component.valueQuantity.code) through the base
        definitions. One entry per segment after the resource type:
        {el, json, choice, node_type}: the base ElementDefinition, the JSON key to use,
        whether the segment is a whole choice element (`value[x]`), and the one type of
        the node (None for a whole choice element)."""
        segs = path.split(".")
        owner = segs[0]
        if owner not in self.types:
            die(f"{path}: unknown base type {owner}")
        cur = owner
        out: list[dict] = []
        prev_type: str | None = owner
        for seg in segs[1:]:
            elems = self.types[owner]
            cand = f"{cur}.{seg}"
            el = elems.get(cand)
            node_type: str | None = None
            choice = False
            if el is not None:
                codes = [t["code"] for t in el.get("type", [])]
                if seg.endswith("[x]"):
                    choice = True
                elif len(codes) == 1:
                    node_type = codes[0]
                elif el.get("contentReference"):
                    node_type = "BackboneElement"
                    ref = el["contentReference"].lstrip("#")
                    # Children of a contentReference are those of the referenced element.
                    ref_el = elems.get(ref)
                    if ref_el is None:
                        die(f"{path}: contentReference {ref} missing")
                    el = dict(el, type=ref_el.get("type", []))
                    cand = ref
            else:
                # A choice element renamed to one of its types (valueQuantity).
                found = None
                for p, e in elems.items():
                    if not p.endswith("[x]") or p.rsplit(".", 1)[0] != cur:
                        continue
                    stem = p.rsplit(".", 1)[1][:-3]
                    if not seg.startswith(stem):
                        continue
                    for t in e.get("type", []):
                        if stem + upper_first(t["code"]) == seg:
                            found = (p, e, t["code"])
                if found is None:
                    die(f"{path}: cannot resolve segment {seg}")
                cand, el, node_type = found
            json_key = seg
            out.append(
                {
                    "el": el,
                    "json": json_key,
                    "choice": choice,
                    "node_type": node_type,
                    "prev_primitive": self.is_primitive(prev_type),
                }
            )
            # Where do this node's children live?
            if node_type is None:
                owner, cur = owner, cand
            elif node_type in INLINE_TYPES:
                owner, cur = owner, cand
            else:
                if node_type not in self.types:
                    die(f"{path}: no base definition for type {node_type}")
                owner, cur = node_type, node_type
            prev_type = node_type
        return out


# --------------------------------------------------------------------------
# Differentials: element keys with slice names, merged along the profile chain
# --------------------------------------------------------------------------


def keyed_differential(sd: dict) -> list[tuple[str, dict]]:
    """Differential elements with our own key: the path with `:slice` after each sliced
    segment, from the order of the differential (not the `id`, which is wrong in at least
    one published definition: us-core-tribal-affiliation's `tribeName`)."""
    active: dict[str, str | None] = {}
    out: list[tuple[str, dict]] = []
    for el in sd["differential"]["element"]:
        path = el["path"]
        # Leaving a subtree ends its slice context.
        for p in list(active):
            if not (path == p or path.startswith(p + ".")):
                del active[p]
        if "sliceName" in el:
            active[path] = el["sliceName"]
        elif path in active:
            active[path] = None
        segs = path.split(".")
        key_segs = []
        for i in range(len(segs)):
            prefix = ".".join(segs[: i + 1])
            s = segs[i]
            if active.get(prefix):
                s += ":" + active[prefix]
            key_segs.append(s)
        key = ".".join(key_segs)
        if el.get("id") and el["id"] != key:
            warn(f"{sd['url']}: element id {el['id']} read as {key}")
        out.append((key, el))
    return out


MERGE_SCALARS = (
    "min",
    "max",
    "type",
    "binding",
    "slicing",
    "sliceName",
    "mustSupport",
)


def merge_chain(chain: list[dict]) -> tuple[dict[str, dict], list[str]]:
    """Merge the differentials of `chain` (root ancestor first): a later definition
    overrides an earlier one element by element; constraints accumulate by key."""
    merged: dict[str, dict] = {}
    order: list[str] = []
    for sd in chain:
        source = sd["url"].rsplit("/", 1)[1]
        for key, el in keyed_differential(sd):
            cur = merged.get(key)
            if cur is None:
                cur = {"constraints": {}}
                merged[key] = cur
                order.append(key)
            for k in MERGE_SCALARS:
                if k in el:
                    cur[k] = el[k]
            for k, v in el.items():
                if k.startswith("fixed") or k.startswith("pattern"):
                    for old in [o for o in cur if o.startswith(("fixed", "pattern"))]:
                        del cur[old]
                    cur[k] = v
            for c in el.get("constraint", []):
                cur["constraints"][c["key"]] = {
                    "key": c["key"],
                    "severity": c.get("severity", "error"),
                    "human": c.get("human", ""),
                    "expression": c.get("expression", ""),
                    "source": source,
                }
    return merged, order


def split_key(key: str) -> list[tuple[str, str | None]]:
    out = []
    for seg in key.split("."):
        name, _, slice_name = seg.partition(":")
        out.append((name, slice_name or None))
    return out


def plain_path(key: str) -> str:
    return ".".join(n for n, _ in split_key(key))


def fixed_or_pattern(el: dict) -> tuple[str | None, object]:
    for k, v in el.items():
        if k.startswith("fixed"):
            return "fixed", v
        if k.startswith("pattern"):
            return "pattern", v
    return None, None


def max_value(m: str) -> int | str:
    return m if m == "*" else int(m)


def narrower_max(mx: str, base_max: str) -> bool:
    if mx == "*":
        return False
    return base_max == "*" or int(mx) < int(base_max)


# --------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------


class Generator:
    def __init__(self, uscore_sds: list[dict], base: Base, term: Terminology):
        self.base = base
        self.term = term
        self.uscore = {sd["url"]: sd for sd in uscore_sds}
        self.stats = {
            "rules": 0,
            "constraints": 0,
            "not_enumerable": set(),
            "unresolved_bases": set(),
            "unmatchable_slices": [],
        }

    def type_of_profile(self, url: str) -> str:
        url = strip_version(url)
        if url in self.uscore:
            return self.uscore[url]["type"]
        sd = self.base.by_url.get(url)
        if sd is not None:
            return sd["type"]
        if url.startswith(CORE_SD):
            return url[len(CORE_SD) :]
        die(f"cannot tell the type of target profile {url}")
        return ""

    def chain(self, sd: dict) -> list[dict]:
        """The definitions whose differentials make up `sd`: US Core parents and base R4
        profiles (vitalsigns), root first. Stops at a base resource definition."""
        chain = [sd]
        url = sd.get("baseDefinition")
        while url:
            url = strip_version(url)
            parent = self.uscore.get(url)
            if parent is None:
                parent = self.base.by_url.get(url)
                if parent is not None and parent.get("derivation") != "constraint":
                    break  # a base resource definition: structure.rs checks it
            if parent is None:
                self.stats["unresolved_bases"].add(url)
                warn(f"{sd['url']}: base {url} is not available; its rules are not included")
                break
            chain.append(parent)
            url = parent.get("baseDefinition")
        return list(reversed(chain))

    def binding(self, el: dict, node_types: list[str]) -> dict | None:
        b = el.get("binding")
        if not b or b.get("strength") != "required" or not b.get("valueSet"):
            return None
        on = [t for t in node_types if t in CODED_TYPES]
        if not on:
            return None
        url = strip_version(b["valueSet"])
        codes = self.term.codes_by_system(url)
        if codes is None:
            self.stats["not_enumerable"].add(url)
        return {"valueSet": url, "codes": codes}

    def build_pattern(self, key: str, path: str, merged: dict, consumed: set[str]) -> dict | None:
        """The value an item of slice `key` must contain, from the discriminator `path`."""
        if path == "$this":
            kind, value = fixed_or_pattern(merged.get(key, {}))
            if kind is not None:
                consumed.add(key)
                return {"pattern": value}
            b = merged.get(key, {}).get("binding")
            if b and b.get("strength") == "required":
                url = strip_version(b["valueSet"])
                codes = self.term.codes_by_system(url)
                if codes is None:
                    self.stats["not_enumerable"].add(url)
                consumed.add(key)
                return {"valueSet": url, "codes": codes}
            return None
        child = f"{key}.{path}"
        kind, value = fixed_or_pattern(merged.get(child, {}))
        if kind is None:
            return None
        consumed.add(child)
        # Wrap the value in the shape of `path` below the item (arrays where they repeat).
        steps = self.base.resolve(plain_path(child))[len(split_key(key)) - 1 :]
        for step in reversed(steps):
            mx = step["el"].get("max", "1")
            value = {step["json"]: [value] if mx != "1" else value}
        return {"pattern": value}

    def json_path(self, key: str) -> tuple[str, list[dict]]:
        """The key rewritten with JSON names (`_name` before a primitive's extension/id)."""
        steps = self.base.resolve(plain_path(key))
        segs = split_key(key)
        parts = [segs[0][0]]
        for i, (step, (name, slice_name)) in enumerate(zip(steps, segs[1:])):
            s = name + (f":{slice_name}" if slice_name else "")
            if step["prev_primitive"] and i > 0:
                parts[-1] = "_" + parts[-1]
            parts.append(s)
        return ".".join(parts), steps

    def profile(self, sd: dict) -> dict:
        chain = self.chain(sd)
        merged, order = merge_chain(chain)
        rtype = sd["type"]
        consumed: set[str] = set()
        # Slice discriminators first, so the elements they use are not repeated as rules.
        matches: dict[str, dict | None] = {}
        for key in order:
            segs = split_key(key)
            name, slice_name = segs[-1]
            if slice_name is None:
                continue
            sliced = ".".join(
                n + (f":{s}" if s else "") for n, s in segs[:-1]
            ) + ("." if len(segs) > 1 else "") + name
            slicing = merged.get(sliced, {}).get("slicing")
            el = merged[key]
            if slicing is None and name in ("extension", "modifierExtension"):
                # Extension slices are discriminated by url, implicitly.
                prof = None
                for t in el.get("type", []):
                    for p in t.get("profile", []):
                        prof = p
                matches[key] = {"pattern": {"url": prof}} if prof else None
                continue
            if slicing is None:
                die(f"{sd['url']}: slice {key} without slicing on {sliced}")
            pattern: dict | None = {}
            for d in slicing.get("discriminator", []):
                if d["type"] not in ("value", "pattern"):
                    pattern = None
                    break
                part = self.build_pattern(key, d["path"], merged, consumed)
                if part is None:
                    pattern = None
                    break
                pattern = combine(pattern, part)
            if pattern is None or pattern == {}:
                self.stats["unmatchable_slices"].append(f"{sd['url']}#{key}")
                matches[key] = None
            else:
                matches[key] = pattern

        elements: list[dict] = []
        constraints: list[dict] = []
        must_support: list[str] = []
        for key in order:
            el = merged[key]
            if el.get("mustSupport"):
                must_support.append(key)
            segs = split_key(key)
            if len(segs) == 1:
                for c in el["constraints"].values():
                    constraints.append(c)
                    self.stats["constraints"] += 1
                continue
            jpath, steps = self.json_path(key)
            step = steps[-1]
            base_el = step["el"]
            node_types = (
                [t["code"] for t in base_el.get("type", [])]
                if step["node_type"] is None
                else [step["node_type"]]
            )
            out: dict = {"path": jpath}
            is_slice = segs[-1][1] is not None
            rules = 0
            base_min = int(base_el.get("min", 0))
            base_max = base_el.get("max", "*")
            if is_slice:
                out["min"] = int(el.get("min", 0))
                out["max"] = max_value(el.get("max", base_max))
                out["match"] = matches.get(key)
                for t in el.get("type", []):
                    for p in t.get("profile", []):
                        out["profile"] = p
                rules += 1
            else:
                if "min" in el and int(el["min"]) > base_min:
                    out["min"] = int(el["min"])
                    rules += 1
                if "max" in el and narrower_max(el["max"], base_max):
                    out["max"] = max_value(el["max"])
                    rules += 1
            if key not in consumed:
                kind, value = fixed_or_pattern(el)
                if kind is not None:
                    out[kind] = value
                    rules += 1
                b = self.binding(el, node_types)
                base_b = base_el.get("binding") or {}
                same_as_base = (
                    b is not None
                    and node_types == ["code"]
                    and base_b.get("strength") == "required"
                    and strip_version(base_b.get("valueSet", "")) == b["valueSet"]
                )
                if b is not None and not same_as_base and not (is_slice and matches.get(key)):
                    b["on"] = [t for t in node_types if t in CODED_TYPES]
                    out["binding"] = b
                    rules += 1
            if "type" in el:
                codes = [t["code"] for t in el["type"]]
                base_codes = [t["code"] for t in base_el.get("type", [])]
                if step["choice"] and set(codes) < set(base_codes):
                    out["types"] = codes
                    rules += 1
                targets = self.targets(el)
                base_targets = self.targets(base_el)
                if targets and (base_targets is None or set(targets) < set(base_targets)):
                    out["targets"] = sorted(targets)
                    rules += 1
            if step["choice"]:
                # The JSON keys a choice element may take, for presence and type checks.
                out["choice"] = [t["code"] for t in base_el.get("type", [])]
            if el.get("slicing"):
                s = el["slicing"]
                out["slicing"] = {
                    "discriminator": [f"{d['type']}:{d['path']}" for d in s.get("discriminator", [])],
                    "rules": s.get("rules", "open"),
                }
            if el["constraints"]:
                out["constraints"] = list(el["constraints"].values())
                self.stats["constraints"] += len(out["constraints"])
                rules += len(out["constraints"])
            if rules == 0 and "slicing" not in out:
                continue
            self.stats["rules"] += rules
            elements.append(out)

        parents = [c["url"] for c in chain[:-1]]
        return {
            "url": sd["url"],
            "name": sd["url"].rsplit("/", 1)[1],
            "title": sd.get("title", sd.get("name", "")),
            "type": rtype,
            "base": strip_version(sd["baseDefinition"]),
            "parents": parents,
            "constraints": constraints,
            "elements": elements,
            "mustSupport": must_support,
        }

    def targets(self, el: dict) -> list[str] | None:
        """Target resource types of a Reference element; None when any type is allowed."""
        out: list[str] = []
        for t in el.get("type", []):
            if t["code"] != "Reference":
                continue
            tps = t.get("targetProfile", [])
            if not tps:
                return None
            for tp in tps:
                name = self.type_of_profile(tp)
                if name == "Resource":
                    return None
                if name not in out:
                    out.append(name)
        return out or None

    # ----------------------------------------------------------------------
    # Extensions
    # ----------------------------------------------------------------------

    def value_rule(self, el: dict | None) -> dict | None:
        if el is None:
            return None
        if el.get("max") == "0":
            return None
        types = [t["code"] for t in el.get("type", [])]
        out: dict = {"min": int(el.get("min", 0)), "types": types}
        b = self.binding(el, types)
        if b is not None:
            b["on"] = [t for t in types if t in CODED_TYPES]
            out["binding"] = b
        return out

    def extension(self, sd: dict) -> dict:
        keyed = dict(keyed_differential(sd))
        root = keyed.get("Extension", {})
        out: dict = {
            "url": sd["url"],
            "name": sd["url"].rsplit("/", 1)[1],
            "context": [
                {"type": c.get("type"), "expression": c.get("expression")}
                for c in sd.get("context", [])
            ],
            "min": int(root.get("min", 0)),
            "max": max_value(root.get("max", "*")),
        }
        value_el = keyed.get("Extension.value[x]")
        out["value"] = self.value_rule(value_el) if value_el else None
        ext_el = keyed.get("Extension.extension")
        subs = []
        for key, el in keyed.items():
            segs = split_key(key)
            if len(segs) != 2 or segs[1][0] != "extension" or segs[1][1] is None:
                continue
            url_el = keyed.get(f"{key}.url", {})
            sub_url = url_el.get("fixedUri")
            if not sub_url:
                die(f"{sd['url']}: sub-extension {key} has no fixed url")
            subs.append(
                {
                    "url": sub_url,
                    "slice": segs[1][1],
                    "min": int(el.get("min", 0)),
                    "max": max_value(el.get("max", "*")),
                    "value": self.value_rule(keyed.get(f"{key}.value[x]")),
                }
            )
        out["extensions"] = subs
        out["extensionsAllowed"] = not (ext_el is not None and ext_el.get("max") == "0")
        if value_el is not None and value_el.get("max") == "0":
            out["value"] = None
        elif value_el is None and not subs:
            die(f"{sd['url']}: extension without value[x] or sub-extensions")
        return out


def combine(a: dict, b: dict) -> dict:
    """Merge two slice matchers built from several discriminators."""
    if not a:
        return b
    if "pattern" in a and "pattern" in b:
        return {"pattern": deep_merge(a["pattern"], b["pattern"])}
    die(f"cannot combine slice matchers {a} and {b}")
    return {}


def deep_merge(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = deep_merge(out[k], v) if k in out else v
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == 1 and len(b) == 1:
        # Several value discriminators on one repeating element describe one item.
        return [deep_merge(a[0], b[0])]
    if a == b:
        return a
    die(f"conflicting slice discriminator values {a} and {b}")
    return None


def render(profiles: list[dict], extensions: list[dict]) -> str:
    def dumps(v) -> str:
        return json.dumps(v, separators=(",", ":"), sort_keys=True, ensure_ascii=False)

    head = '{"fhirVersion":%s,"usCoreVersion":%s,\n"profiles":[\n' % (
        dumps(FHIR_VERSION),
        dumps(US_CORE_VERSION),
    )
    body = ",\n".join(dumps(p) for p in profiles)
    ext = ",\n".join(dumps(e) for e in extensions)
    return head + body + "\n],\n\"extensions\":[\n" + ext + "\n]}\n"


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(os.path.dirname(here), "profiles", "us-core", "profiles.json")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("us_core", help="resources/ dir of the US Core 6.1.0 definitions")
    ap.add_argument("package", help="extracted package/ dir of hl7.fhir.r4.examples@4.0.1")
    ap.add_argument("--out", default=default_out, help=f"output file (default {default_out})")
    args = ap.parse_args()

    try:
        with open(os.path.join(args.package, "package.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)
    except OSError as exc:
        die(f"cannot read {args.package}/package.json: {exc}")
    if manifest.get("name") != "hl7.fhir.r4.examples" or manifest.get("version") != FHIR_VERSION:
        die(f"expected hl7.fhir.r4.examples@{FHIR_VERSION}, got {manifest.get('name')}@{manifest.get('version')}")

    base = Base(load_json_files(args.package, "StructureDefinition"))
    us_sds = load_json_files(args.us_core, "StructureDefinition")
    if not us_sds:
        die(f"no StructureDefinitions in {args.us_core}")
    term = Terminology(
        load_json_files(args.us_core, "ValueSet") + load_json_files(args.package, "ValueSet"),
        load_json_files(args.us_core, "CodeSystem") + load_json_files(args.package, "CodeSystem"),
    )
    gen = Generator(us_sds, base, term)

    profiles = []
    extensions = []
    for sd in sorted(us_sds, key=lambda s: s["url"]):
        # These are the IG's source definitions: some carry no fhirVersion (and stale
        # `version` values); all are R4.
        if sd.get("fhirVersion", FHIR_VERSION) != FHIR_VERSION:
            die(f"{sd['url']}: fhirVersion {sd.get('fhirVersion')}")
        if sd.get("kind") == "resource":
            profiles.append(gen.profile(sd))
        elif sd.get("type") == "Extension":
            extensions.append(gen.extension(sd))
        else:
            die(f"{sd['url']}: unexpected kind {sd.get('kind')}")

    text = render(profiles, extensions)
    json.loads(text)  # self-check
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)

    keys = sorted(
        {
            (c["source"], c["key"])
            for p in profiles
            for c in p["constraints"] + [c for e in p["elements"] for c in e.get("constraints", [])]
        }
    )
    print(f"wrote {args.out}")
    print(f"  profiles        {len(profiles):4}")
    print(f"  extensions      {len(extensions):4}")
    print(f"  element rules   {gen.stats['rules']:4} (constraint uses: {gen.stats['constraints']})")
    print(f"  invariants      {len(keys):4} distinct (source, key): " + ", ".join(f"{s}#{k}" for s, k in keys))
    print(f"  value sets not enumerable: {', '.join(sorted(gen.stats['not_enumerable'])) or 'none'}")
    print(f"  bases not available: {', '.join(sorted(gen.stats['unresolved_bases'])) or 'none'}")
    print(f"  slices without a usable discriminator: {', '.join(gen.stats['unmatchable_slices']) or 'none'}")
    print(f"  size            {len(text.encode('utf-8'))} bytes")


if __name__ == "__main__":
    main()
