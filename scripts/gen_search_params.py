#!/usr/bin/env python3
"""Generate profiles/search/parameters.json, Hearth's SearchParameter registry.

Usage:
    python3 scripts/gen_search_params.py PATH/TO/r4/package PATH/TO/us-core/resources [--out FILE]

PATH/TO/r4/package is the extracted `package/` directory of the npm package
`hl7.fhir.r4.examples@4.0.1` (CC0); its `Bundle-searchParams.json` is the
official list of base R4 SearchParameters. PATH/TO/us-core/resources holds the
US Core 6.1.0 SearchParameters (`searchparameter-us-core-*.json`) and the
server CapabilityStatement (`capabilitystatement-us-core-server.json`).
See profiles/search/README.md. Only facts are carried over into our own
format; none of the official files are copied.

Stdlib only (Python 3.11+). The output is deterministic for a given input.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from collections import Counter, defaultdict

FHIR_VERSION = "4.0.1"
US_CORE_VERSION = "6.1.0"
EXT_EXPECTATION = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-expectation"
EXT_COMBINATION = (
    "http://hl7.org/fhir/StructureDefinition/capabilitystatement-search-parameter-combination"
)
# Resource-level parameters we index, and the ones we leave out (special or
# not index-backed).
RESOURCE_LEVEL_KEEP = {"_id", "_lastUpdated", "_tag", "_security", "_profile", "_source"}
RESOURCE_LEVEL_SKIP = {"_text", "_content", "_query", "_list", "_has", "_type", "_filter"}
ABSTRACT_BASES = {"Resource", "DomainResource"}
# Resource types in scope besides those of the US Core server statement.
EXTRA_TYPES = ("Group",)
EXPECTATIONS = ("SHALL", "SHOULD", "MAY", "SHALL-NOT")
# FHIRPath keyword operators (recognised when they stand alone as words).
WORD_OPERATORS = {"as", "is", "and", "or", "xor", "implies", "in", "contains", "div", "mod"}


def die(msg: str) -> None:
    sys.exit(f"gen_search_params: error: {msg}")


def load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# --------------------------------------------------------------------------
# FHIRPath helpers: top-level union splitting and a token inventory.
# --------------------------------------------------------------------------


def split_union(expr: str) -> list[str] | None:
    """Split on `|` outside parentheses, brackets, braces, strings and
    backtick-quoted identifiers. None if the expression is unbalanced."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    cur: list[str] = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if quote is not None:
            cur.append(ch)
            if ch == "\\" and i + 1 < len(expr):
                cur.append(expr[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'`\"":
            quote = ch
            cur.append(ch)
        elif ch in "([{":
            depth += 1
            cur.append(ch)
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return None
            cur.append(ch)
        elif ch == "|" and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    if depth != 0 or quote is not None:
        return None
    parts.append("".join(cur).strip())
    return parts


def alt_root(alt: str) -> str | None:
    """The type an alternative starts from: `T.` or `(T.` (any number of
    opening parentheses), or the bare type `T` (composites are rooted at the
    resource itself, e.g. `Observation | Observation.component`). None if it
    starts with anything else."""
    m = re.match(r"^\(*\s*([A-Z][A-Za-z]*)(?:\.|\s*\)*$)", alt)
    return m.group(1) if m else None


TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<delim>`(?:[^`\\]|\\.)*`)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|!~|[-+*/&|=~<>.,()\[\]{}%$])
    """,
    re.VERBOSE,
)


CHOICE_SUFFIX_RE = re.compile(
    r"^value(?:Boolean|Integer|Decimal|String|Date|DateTime|Time|Instant|Code|Uri|Url|"
    r"Canonical|Coding|CodeableConcept|Quantity|Period|Range|Reference|Identifier|Attachment)$"
)


def fhirpath_features(expr: str) -> list[str]:
    """Distinct FHIRPath functions and operators used by an expression.
    Functions are named `name()`, operators by their symbol/keyword;
    `[]` is the indexer and `'literal'` marks string literals."""
    feats: list[str] = []
    toks: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = TOKEN_RE.match(expr, pos)
        if m is None:
            feats.append(f"?unparsed:{expr[pos:]}")
            break
        pos = m.end()
        if m.lastgroup != "ws":
            toks.append((m.lastgroup, m.group()))
    for i, (kind, text) in enumerate(toks):
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        prev = toks[i - 1][1] if i > 0 else None
        if kind == "ident":
            if text in ("true", "false") and prev != ".":
                feats.append("boolean literal")
            elif prev == "." and CHOICE_SUFFIX_RE.match(text):
                # e.g. `.valueDateTime`: a choice element by its JSON name,
                # not plain FHIRPath (which would be `.value.ofType(dateTime)`).
                feats.append("choice element by JSON name (.valueX)")
            elif nxt == "(":
                feats.append(f"{text}()")
            elif text in WORD_OPERATORS and prev not in (None, ".", "("):
                feats.append(f"operator {text}")
        elif kind == "op":
            if text in ("|", "=", "!=", "~", "!~", "<", ">", "<=", ">=", "&", "+", "-",
                        "*", "/"):
                feats.append(f"operator {text}")
            elif text == "[":
                feats.append("indexer []")
            elif text in ("$", "%"):
                feats.append(f"variable {text}")
        elif kind == "string":
            feats.append("string literal")
        elif kind == "number":
            feats.append("number literal")
    return feats


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


def load_base(pkg: str) -> list[dict]:
    path = os.path.join(pkg, "Bundle-searchParams.json")
    if not os.path.exists(path):
        die(f"{path} not found (is {pkg} the package/ directory of hl7.fhir.r4.examples@4.0.1?)")
    bundle = load_json(path)
    out = []
    for entry in bundle.get("entry", []):
        res = entry.get("resource", {})
        if res.get("resourceType") == "SearchParameter":
            out.append(res)
    if not out:
        die(f"no SearchParameters in {path}")
    return out


def load_us_core(resdir: str) -> tuple[list[dict], dict]:
    sps = []
    for path in sorted(glob.glob(os.path.join(resdir, "*.json"))):
        name = os.path.basename(path).lower()
        if not name.startswith("searchparameter-"):
            continue
        res = load_json(path)
        if res.get("resourceType") == "SearchParameter":
            sps.append(res)
    cs_path = None
    for cand in ("capabilitystatement-us-core-server.json", "CapabilityStatement-us-core-server.json"):
        if os.path.exists(os.path.join(resdir, cand)):
            cs_path = os.path.join(resdir, cand)
    if cs_path is None:
        die(f"no US Core server CapabilityStatement in {resdir}")
    if not sps:
        die(f"no US Core SearchParameters in {resdir}")
    return sps, load_json(cs_path)


def expectation(elem: dict | None) -> str | None:
    for ext in (elem or {}).get("extension", []):
        if ext.get("url") == EXT_EXPECTATION:
            return ext.get("valueCode")
    return None


# --------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.unsplit: list[str] = []
        self.empty: list[str] = []
        self.unresolved: list[str] = []
        self.notes: list[str] = []


def restrict_expression(sp: dict, rtype: str, rep: Report) -> str | None:
    expr = sp.get("expression")
    if not expr:
        rep.empty.append(f"{rtype}.{sp['code']} ({sp['url']}): no expression")
        return None
    alts = split_union(expr)
    if alts is None:
        rep.unsplit.append(f"{sp['url']}: unbalanced: {expr}")
        return None
    kept = []
    for alt in alts:
        root = alt_root(alt)
        if root is None:
            rep.unsplit.append(f"{sp['url']} [{rtype}]: alternative with no type root: {alt}")
            continue
        if root == rtype:
            kept.append(alt)
        elif root in ABSTRACT_BASES and root in sp.get("base", []):
            # Resource.meta.tag etc.: applies to every type, rooted at it.
            kept.append(re.sub(r"^(\(*\s*)" + root + r"\.", r"\g<1>" + rtype + ".", alt))
        elif root not in sp.get("base", []):
            rep.notes.append(
                f"{sp['url']} [{rtype}]: alternative rooted at {root}, not in base: {alt}"
            )
    if not kept:
        rep.empty.append(f"{rtype}.{sp['code']} ({sp['url']}): no alternative for {rtype}")
        return None
    return " | ".join(kept)


def entry_from(sp: dict, rtype: str, expr: str) -> dict:
    return {
        "resource": rtype,
        "code": sp["code"],
        "type": sp["type"],
        "expression": expr,
        "targets": sorted(sp.get("target", [])),
        "comparators": list(sp.get("comparator", [])),
        "modifiers": list(sp.get("modifier", [])),
        # Absent in the source means the FHIR search default (allowed).
        "multipleOr": sp.get("multipleOr", True),
        "multipleAnd": sp.get("multipleAnd", True),
        "url": sp["url"],
        "components": [],
        "expectations": sp_expectations(sp),
        "_sp": sp,
    }


def sp_expectations(sp: dict) -> dict:
    """US Core's conformance expectations on a SearchParameter's own
    elements (multipleOr, multipleAnd, each comparator, each chain).
    Empty for base R4 parameters, which carry none."""
    out: dict = {}
    for field in ("multipleOr", "multipleAnd"):
        exp = expectation(sp.get("_" + field))
        if exp is not None:
            out[field] = exp
    for field, key in (("comparator", "comparators"), ("modifier", "modifiers"), ("chain", "chains")):
        vals = sp.get(field, [])
        metas = sp.get("_" + field, [])
        got = {}
        for i, v in enumerate(vals):
            exp = expectation(metas[i] if i < len(metas) and metas[i] else None)
            if exp is not None:
                got[v] = exp
        if got:
            out[key] = got
    return out


def build(base_sps: list[dict], us_sps: list[dict], cs: dict, rep: Report):
    rest = cs.get("rest", [])
    if not rest:
        die("CapabilityStatement has no rest")
    cs_resources = rest[0].get("resource", [])
    types = sorted({r["type"] for r in cs_resources} | set(EXTRA_TYPES))

    by_url: dict[str, dict] = {}
    for sp in base_sps + us_sps:
        if sp["url"] in by_url:
            die(f"duplicate SearchParameter url {sp['url']}")
        by_url[sp["url"]] = sp

    params: dict[tuple[str, str], dict] = {}
    for rtype in types:
        # (a) + (b): base R4
        for sp in base_sps:
            bases = sp.get("base", [])
            code = sp["code"]
            if rtype in bases:
                pass
            elif "Resource" in bases or "DomainResource" in bases:
                if code in RESOURCE_LEVEL_SKIP:
                    continue
                if code not in RESOURCE_LEVEL_KEEP:
                    rep.notes.append(f"unlisted resource-level parameter {code} skipped")
                    continue
            else:
                continue
            if sp["type"] == "special":
                rep.notes.append(f"{rtype}.{code}: type special, kept ({sp['url']})")
            expr = restrict_expression(sp, rtype, rep)
            if expr is None:
                continue
            key = (rtype, code)
            if key in params:
                die(f"two base parameters {key}: {params[key]['url']} and {sp['url']}")
            e = entry_from(sp, rtype, expr)
            e["baseUrl"] = sp["url"]
            e["source"] = "base"
            params[key] = e
        # (c): US Core
        for sp in us_sps:
            if rtype not in sp.get("base", []):
                continue
            expr = restrict_expression(sp, rtype, rep)
            if expr is None:
                continue
            key = (rtype, sp["code"])
            e = entry_from(sp, rtype, expr)
            derived = sp.get("derivedFrom")
            if key in params:
                prev = params[key]
                if prev["source"] != "base":
                    die(f"two US Core parameters {key}")
                e["baseUrl"] = prev["baseUrl"]
                e["source"] = "both"
                if derived and derived != prev["baseUrl"]:
                    rep.notes.append(
                        f"{rtype}.{sp['code']}: US Core derivedFrom {derived} "
                        f"but same-code base is {prev['baseUrl']}"
                    )
                if sp["type"] != prev["type"]:
                    rep.notes.append(
                        f"{rtype}.{sp['code']}: type {prev['type']} (base) -> {sp['type']} (US Core)"
                    )
                if sp["type"] == "composite" or prev["_sp"].get("component"):
                    rep.notes.append(f"{rtype}.{sp['code']}: composite overridden by US Core")
            else:
                e["baseUrl"] = None
                e["source"] = "us-core"
                if derived:
                    rep.notes.append(
                        f"{rtype}.{sp['code']}: US Core-only but derivedFrom {derived}"
                    )
            params[key] = e

    # Composite components.
    for (rtype, code), e in params.items():
        sp = e.pop("_sp")
        if sp["type"] != "composite":
            if sp.get("component"):
                rep.notes.append(f"{rtype}.{code}: components on a {sp['type']} parameter")
            continue
        comps = []
        for comp in sp.get("component", []):
            url = comp.get("definition")
            target = by_url.get(url)
            ccode = None
            if target is None:
                rep.unresolved.append(f"{rtype}.{code}: component {url} not found")
            elif rtype not in target.get("base", []):
                rep.unresolved.append(
                    f"{rtype}.{code}: component {url} (code {target['code']}) "
                    f"does not apply to {rtype}"
                )
            else:
                ccode = target["code"]
            comps.append({"definition": url, "code": ccode, "expression": comp.get("expression")})
        if not comps:
            rep.unresolved.append(f"{rtype}.{code}: composite without components")
        e["components"] = comps
    return types, cs_resources, params


def build_us_core(cs_resources: list[dict], params: dict, rep: Report) -> dict:
    out = {}
    for res in cs_resources:
        rtype = res["type"]
        entry: dict = {"expectation": expectation(res)}
        combos: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        search_params = {}
        for sp in res.get("searchParam", []):
            exp = expectation(sp)
            if exp is None:
                rep.notes.append(f"usCore {rtype}: searchParam {sp['name']} without expectation")
                continue
            search_params[sp["name"]] = exp
            combos[exp].add((sp["name"],))
            p = params.get((rtype, sp["name"]))
            if p is None:
                rep.unresolved.append(f"usCore {rtype}: searchParam {sp['name']} not in registry")
            elif sp.get("definition") not in (p["url"], p["baseUrl"]):
                rep.notes.append(
                    f"usCore {rtype}: searchParam {sp['name']} definition {sp.get('definition')} "
                    f"!= registry url {p['url']}"
                )
        for ext in res.get("extension", []):
            if ext.get("url") != EXT_COMBINATION:
                continue
            exp = None
            required = []
            for sub in ext.get("extension", []):
                if sub.get("url") == EXT_EXPECTATION:
                    exp = sub.get("valueCode")
                elif sub.get("url") == "required":
                    required.append(sub["valueString"])
                else:
                    rep.notes.append(f"usCore {rtype}: combination part {sub.get('url')} ignored")
            if exp is None or not required:
                rep.notes.append(f"usCore {rtype}: incomplete combination {required}")
                continue
            for name in required:
                if (rtype, name) not in params:
                    rep.unresolved.append(f"usCore {rtype}: combination param {name} not in registry")
            combos[exp].add(tuple(sorted(required)))
        for exp in combos:
            if exp not in EXPECTATIONS:
                rep.notes.append(f"usCore {rtype}: unknown expectation {exp}")
        for exp, key in (("SHALL", "shall"), ("SHOULD", "should"), ("MAY", "may")):
            entry[key] = [list(c) for c in sorted(combos.get(exp, ()), key=lambda c: (len(c), c))]
        entry["searchParams"] = search_params
        for field, key in (("searchInclude", "include"), ("searchRevInclude", "revinclude")):
            grouped: dict[str, list[str]] = defaultdict(list)
            vals = res.get(field, [])
            metas = res.get("_" + field, [])
            for i, v in enumerate(vals):
                exp = expectation(metas[i] if i < len(metas) else None) or "unspecified"
                grouped[exp].append(v)
            entry[key] = {k: sorted(v) for k, v in grouped.items()}
        entry["supportedProfiles"] = sorted(res.get("supportedProfile", []))
        entry["interactions"] = {
            i["code"]: expectation(i) for i in res.get("interaction", [])
        }
        entry["operations"] = {
            o["name"]: expectation(o) for o in res.get("operation", [])
        }
        out[rtype] = entry
    return out


def dumps(v) -> str:
    return json.dumps(v, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def render(params: dict, us_core: dict) -> str:
    lines = [
        "{" + f'"fhirVersion":{dumps(FHIR_VERSION)},"usCoreVersion":{dumps(US_CORE_VERSION)},',
        '"parameters":[',
    ]
    keys = sorted(params)
    for i, k in enumerate(keys):
        lines.append(dumps(params[k]) + ("," if i + 1 < len(keys) else ""))
    lines.append('],"usCore":{')
    types = sorted(us_core)
    for i, t in enumerate(types):
        lines.append(dumps(t) + ":" + dumps(us_core[t]) + ("," if i + 1 < len(types) else ""))
    lines.append("}}")
    return "\n".join(lines) + "\n"


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(os.path.dirname(here), "profiles", "search", "parameters.json")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("r4_package", help="extracted package/ dir of hl7.fhir.r4.examples@4.0.1")
    ap.add_argument("us_core_resources", help="US Core 6.1.0 resources/ dir")
    ap.add_argument("--out", default=default_out, help=f"output file (default {default_out})")
    args = ap.parse_args()

    base_sps = load_base(args.r4_package)
    us_sps, cs = load_us_core(args.us_core_resources)
    if cs.get("fhirVersion") != FHIR_VERSION:
        die(f"CapabilityStatement fhirVersion {cs.get('fhirVersion')} != {FHIR_VERSION}")
    # The files are the IG's source definitions: their own `version` fields
    # are not the published release (the server statement says 6.0.0), so the
    # release is taken from the directory's README, not checked here.
    if cs.get("url") != "http://hl7.org/fhir/us/core/CapabilityStatement/us-core-server":
        die(f"unexpected CapabilityStatement {cs.get('url')}")

    rep = Report()
    types, cs_resources, params = build(base_sps, us_sps, cs, rep)
    us_core = build_us_core(cs_resources, params, rep)

    # Validate that the output round-trips.
    text = render(params, us_core)
    json.loads(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(text)

    # ---------------------------------------------------------------- summary
    print(f"wrote {args.out} ({len(text.encode())} bytes)")
    print(f"sources: {len(base_sps)} base R4 SearchParameters, {len(us_sps)} US Core")
    per_type = Counter(t for t, _ in params)
    per_source = Counter(p["source"] for p in params.values())
    print("parameters per resource type:")
    for t in types:
        src = Counter(p["source"] for (rt, _), p in params.items() if rt == t)
        print(f"  {t:24} {per_type[t]:3}  (base {src['base']}, both {src['both']}, us-core {src['us-core']})")
    print(f"  {'TOTAL':24} {len(params):3}  {dict(sorted(per_source.items()))}")
    n_shall = sum(len(v["shall"]) for v in us_core.values())
    n_should = sum(len(v["should"]) for v in us_core.values())
    n_may = sum(len(v["may"]) for v in us_core.values())
    print(f"US Core searches: SHALL {n_shall}, SHOULD {n_should}, MAY {n_may}")
    print(f"expressions not split / alternatives dropped ({len(rep.unsplit)}):")
    for s in rep.unsplit:
        print("  " + s)
    print(f"entries skipped, nothing kept ({len(rep.empty)}):")
    for s in rep.empty:
        print("  " + s)
    print(f"unresolved components / references ({len(rep.unresolved)}):")
    for s in rep.unresolved:
        print("  " + s)
    print(f"notes ({len(rep.notes)}):")
    for s in sorted(set(rep.notes)):
        print("  " + s)

    feats: Counter = Counter()
    occ: Counter = Counter()
    exprs = [p["expression"] for p in params.values()]
    exprs += [c["expression"] for p in params.values() for c in p["components"] if c["expression"]]
    for ex in exprs:
        f = fhirpath_features(ex)
        occ.update(f)
        feats.update(set(f))
    print(f"FHIRPath features across {len(exprs)} kept expressions "
          "(feature: expressions using it / occurrences):")
    for f, n in sorted(feats.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {f:40} {n:4} / {occ[f]}")


if __name__ == "__main__":
    main()
