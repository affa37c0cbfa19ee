//! Search over real HTTP and PostgreSQL, asserting the exact resources returned.

mod common;

use std::collections::BTreeSet;

use common::{Ctx, ctx, expect_outcome};
use serde_json::{Value, json};

/// Ids of the entries with `search.mode == mode`, as `Type/id`, sorted.
fn ids(bundle: &Value, mode: &str) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap_or(""),
                e["resource"]["id"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn search(ctx: &Ctx, query: &str) -> Value {
    let response = ctx.get(query).send().await.expect("search");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 200, "{query}: {body}");
    assert_eq!(body["resourceType"], "Bundle", "{query}");
    assert_eq!(body["type"], "searchset");
    body
}

async fn matches(ctx: &Ctx, query: &str) -> BTreeSet<String> {
    ids(&search(ctx, query).await, "match")
}

async fn put(ctx: &Ctx, resource: Value) {
    let path = format!(
        "{}/{}",
        resource["resourceType"].as_str().expect("type"),
        resource["id"].as_str().expect("id")
    );
    let response = ctx.put(&path, &resource).send().await.expect("put");
    let status = response.status();
    assert!(
        status == 201 || status == 200,
        "{path}: {}",
        response.text().await.unwrap_or_default()
    );
}

fn cc(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}]})
}

const LOINC: &str = "http://loinc.org";
const OBS_CAT: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

/// Two patients and a small clinical record with known values.
async fn seed_clinical(ctx: &Ctx) {
    put(ctx, json!({"resourceType": "Patient", "id": "pa", "gender": "female", "birthDate": "1970-05-06",
        "identifier": [{"system": "urn:mrn", "value": "A-1", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
        "name": [{"family": "Ñúñez", "given": ["Ana"]}], "meta": {"tag": [{"system": "urn:tags", "code": "vip"}], "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}], "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]}})).await;
    put(ctx, json!({"resourceType": "Patient", "id": "pb", "gender": "male", "birthDate": "1980-01-01",
        "identifier": [{"system": "urn:mrn", "value": "B-2"}, {"system": "urn:other", "value": "A-1"}],
        "name": [{"family": "Nunnally", "given": ["Bo"]}]})).await;
    let obs = |id: &str, patient: &str, cat: &str, code: &str, date: &str, value: Value| {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
            "category": [cc(OBS_CAT, cat)], "code": cc(LOINC, code),
            "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": date});
        if let Some(obj) = o.as_object_mut() {
            for (k, v) in value.as_object().cloned().unwrap_or_default() {
                obj.insert(k, v);
            }
        }
        o
    };
    put(ctx, obs("a1c-2023", "pa", "laboratory", "4548-4", "2023-06-01T09:00:00-05:00", json!({"valueQuantity": {"value": 7.5, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}}))).await;
    put(ctx, obs("a1c-2024", "pa", "laboratory", "4548-4", "2024-02-10T09:00:00Z", json!({"valueQuantity": {"value": 6.4, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}}))).await;
    put(ctx, obs("hr-2024", "pa", "vital-signs", "8867-4", "2024-02-10", json!({"valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}))).await;
    put(
        ctx,
        obs(
            "note-2024",
            "pa",
            "laboratory",
            "11111-1",
            "2024",
            json!({"valueString": "see note", "code": {"text": "Hémoglobine glyquée"}}),
        ),
    )
    .await;
    put(ctx, obs("b-a1c", "pb", "laboratory", "4548-4", "2024-02-10T10:00:00+01:00", json!({"valueQuantity": {"value": 9.1, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}}))).await;
    put(ctx, json!({"resourceType": "Provenance", "id": "prov-a1c", "recorded": "2024-02-10T09:00:00Z",
        "target": [{"reference": "Observation/a1c-2024"}], "agent": [{"who": {"reference": "Practitioner/doc"}}]})).await;
    put(
        ctx,
        json!({"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Welby"}]}),
    )
    .await;
}

#[tokio::test]
async fn token_searches() {
    let ctx = ctx().await;
    seed_clinical(&ctx).await;
    assert_eq!(
        matches(&ctx, "Observation?patient=pa&code=http://loinc.org|4548-4").await,
        set(&["Observation/a1c-2023", "Observation/a1c-2024"])
    );
    assert_eq!(
        matches(&ctx, "Observation?patient=pa&code=4548-4").await,
        set(&["Observation/a1c-2023", "Observation/a1c-2024"])
    );
    assert_eq!(
        matches(&ctx, "Observation?patient=pa&code=|4548-4").await,
        set(&[]),
        "|code means no system"
    );
    assert_eq!(
        matches(
            &ctx,
            "Observation?patient=pa&code=http://snomed.info/sct|4548-4"
        )
        .await,
        set(&[])
    );
    // note-2024 has only text, no coding.
    assert_eq!(
        matches(&ctx, "Observation?patient=pa&code=http://loinc.org|").await,
        set(&[
            "Observation/a1c-2023",
            "Observation/a1c-2024",
            "Observation/hr-2024"
        ])
    );
    assert_eq!(
        matches(&ctx, "Observation?patient=pa&code:not=4548-4").await,
        set(&["Observation/hr-2024", "Observation/note-2024"])
    );
    assert_eq!(
        matches(&ctx, "Observation?patient=pa&code:not=4548-4,8867-4").await,
        set(&["Observation/note-2024"])
    );
    assert_eq!(
        matches(&ctx, "Observation?patient=pa&code:text=hemoglobine").await,
        set(&["Observation/note-2024"]),
        ":text is accent-insensitive prefix on display text"
    );
    assert_eq!(
        matches(
            &ctx,
            "Observation?patient=pa&category=vital-signs,laboratory&code=8867-4"
        )
        .await,
        set(&["Observation/hr-2024"])
    );
    assert_eq!(
        matches(&ctx, "Patient?identifier=urn:mrn|A-1").await,
        set(&["Patient/pa"])
    );
    assert_eq!(
        matches(&ctx, "Patient?identifier=A-1").await,
        set(&["Patient/pa", "Patient/pb"])
    );
    assert_eq!(
        matches(
            &ctx,
            "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|A-1"
        )
        .await,
        set(&["Patient/pa"])
    );
    assert_eq!(
        matches(&ctx, "Patient?gender=female").await,
        set(&["Patient/pa"])
    );
    assert_eq!(
        matches(&ctx, "Patient?_tag=urn:tags|vip").await,
        set(&["Patient/pa"])
    );
    assert_eq!(
        matches(&ctx, "Patient?_security=R").await,
        set(&["Patient/pa"])
    );
    assert_eq!(
        matches(
            &ctx,
            "Patient?_profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
        )
        .await,
        set(&["Patient/pa"])
    );
    assert_eq!(
        matches(&ctx, "Patient?_tag:missing=true").await,
        set(&["Patient/pb"])
    );
    assert_eq!(
        matches(&ctx, "Patient?_tag:missing=false").await,
        set(&["Patient/pa"])
    );
}

#[tokio::test]
async fn string_searches() {
    let ctx = ctx().await;
    seed_clinical(&ctx).await;
    assert_eq!(
        matches(&ctx, "Patient?name=nun").await,
        set(&["Patient/pa", "Patient/pb"]),
        "prefix, accent- and case-insensitive"
    );
    assert_eq!(
        matches(&ctx, "Patient?name=NÚÑ").await,
        set(&["Patient/pa", "Patient/pb"])
    );
    assert_eq!(
        matches(&ctx, "Patient?name=nunez").await,
        set(&["Patient/pa"])
    );
    assert_eq!(
        matches(&ctx, "Patient?name:exact=Ñúñez").await,
        set(&["Patient/pa"])
    );
    assert_eq!(matches(&ctx, "Patient?name:exact=nunez").await, set(&[]));
    assert_eq!(
        matches(&ctx, "Patient?name:contains=nal").await,
        set(&["Patient/pb"])
    );
    assert_eq!(
        matches(&ctx, "Patient?given=an").await,
        set(&["Patient/pa"])
    );
    assert_eq!(
        matches(&ctx, "Patient?name=ana,bo").await,
        set(&["Patient/pa", "Patient/pb"]),
        "comma is OR"
    );
    assert_eq!(
        matches(&ctx, "Patient?name=nun&name=ana").await,
        set(&["Patient/pa"]),
        "repetition is AND"
    );
    assert_eq!(
        matches(&ctx, "Patient?name=50%25").await,
        set(&[]),
        "LIKE wildcards are literal"
    );
}

#[tokio::test]
async fn date_prefixes_precision_and_time_zones() {
    let ctx = ctx().await;
    seed_clinical(&ctx).await;
    let q = |d: &str| format!("Observation?patient=pa&date={d}");
    // a1c-2023: 2023-06-01T14:00:00Z (1 s); a1c-2024: 2024-02-10T09:00:00Z (1 s); hr-2024: the day
    // 2024-02-10; note-2024: the year 2024.
    assert_eq!(
        matches(&ctx, &q("2024-02-10")).await,
        set(&["Observation/a1c-2024", "Observation/hr-2024"]),
        "eq: the day contains the value"
    );
    assert_eq!(
        matches(&ctx, &q("eq2024")).await,
        set(&[
            "Observation/a1c-2024",
            "Observation/hr-2024",
            "Observation/note-2024"
        ])
    );
    assert_eq!(
        matches(&ctx, &q("ne2024")).await,
        set(&["Observation/a1c-2023"])
    );
    assert_eq!(
        matches(&ctx, &q("gt2024-01-31")).await,
        set(&[
            "Observation/a1c-2024",
            "Observation/hr-2024",
            "Observation/note-2024"
        ])
    );
    assert_eq!(
        matches(&ctx, &q("lt2024-01-01")).await,
        set(&["Observation/a1c-2023"])
    );
    assert_eq!(
        matches(&ctx, &q("ge2024-02-10")).await,
        set(&[
            "Observation/a1c-2024",
            "Observation/hr-2024",
            "Observation/note-2024"
        ])
    );
    assert_eq!(
        matches(&ctx, &q("le2023-06-01")).await,
        set(&["Observation/a1c-2023"])
    );
    assert_eq!(
        matches(&ctx, &q("sa2023-12-31")).await,
        set(&[
            "Observation/a1c-2024",
            "Observation/hr-2024",
            "Observation/note-2024"
        ])
    );
    assert_eq!(
        matches(&ctx, &q("eb2024-01-01")).await,
        set(&["Observation/a1c-2023"])
    );
    assert_eq!(
        matches(&ctx, &q("ap2023-06-02")).await,
        set(&["Observation/a1c-2023"])
    );
    // The -05:00 offset: 09:00 local is 14:00Z.
    assert_eq!(
        matches(&ctx, &q("2023-06-01T14:00:00Z")).await,
        set(&["Observation/a1c-2023"])
    );
    assert_eq!(
        matches(&ctx, &q("2023-06-01T09:00:00-05:00")).await,
        set(&["Observation/a1c-2023"])
    );
    assert_eq!(matches(&ctx, &q("2023-06-01T09:00:00Z")).await, set(&[]));
    assert_eq!(
        matches(&ctx, "Patient?birthdate=1970").await,
        set(&["Patient/pa"])
    );
    assert_eq!(
        matches(&ctx, "Patient?birthdate=lt1975-01-01&name=nun").await,
        set(&["Patient/pa"])
    );
}

#[tokio::test]
async fn quantity_and_reference_searches() {
    let ctx = ctx().await;
    seed_clinical(&ctx).await;
    let q = |v: &str| format!("Observation?patient=pa&value-quantity={v}");
    assert_eq!(
        matches(&ctx, &q("6.4")).await,
        set(&["Observation/a1c-2024"])
    );
    assert_eq!(
        matches(&ctx, &q("6.40")).await,
        set(&["Observation/a1c-2024"])
    );
    assert_eq!(
        matches(&ctx, &q("6")).await,
        set(&["Observation/a1c-2024"]),
        "6 means [5.5, 6.5)"
    );
    assert_eq!(
        matches(&ctx, &q("gt7|http://unitsofmeasure.org|%")).await,
        set(&["Observation/a1c-2023"])
    );
    assert_eq!(
        matches(&ctx, &q("gt7||/min")).await,
        set(&["Observation/hr-2024"])
    );
    assert_eq!(
        matches(&ctx, &q("le7.5")).await,
        set(&["Observation/a1c-2023", "Observation/a1c-2024"])
    );
    assert_eq!(
        matches(&ctx, &q("ap70")).await,
        set(&["Observation/hr-2024"])
    );
    assert_eq!(
        matches(&ctx, &q("ne6.4||%")).await,
        set(&["Observation/a1c-2023"])
    );
    // Reference forms are equivalent.
    let by_id = matches(&ctx, "Observation?patient=pb").await;
    assert_eq!(by_id, set(&["Observation/b-a1c"]));
    assert_eq!(matches(&ctx, "Observation?patient=Patient/pb").await, by_id);
    assert_eq!(
        matches(
            &ctx,
            &format!("Observation?patient={}", ctx.url("Patient/pb"))
        )
        .await,
        by_id
    );
    assert_eq!(matches(&ctx, "Observation?subject:Patient=pb").await, by_id);
    assert_eq!(matches(&ctx, "Observation?subject=Patient/pb").await, by_id);
    let bad = ctx
        .get("Observation?subject:Organization=pb")
        .send()
        .await
        .expect("get");
    expect_outcome(bad, 400).await;
}

#[tokio::test]
async fn chains_has_include_and_revinclude() {
    let ctx = ctx().await;
    seed_clinical(&ctx).await;
    assert_eq!(
        matches(&ctx, "Observation?patient.name=nunez&code=4548-4").await,
        set(&["Observation/a1c-2023", "Observation/a1c-2024"])
    );
    assert_eq!(
        matches(&ctx, "Observation?subject:Patient.name=nunn").await,
        set(&["Observation/b-a1c"])
    );
    assert_eq!(
        matches(&ctx, "Observation?patient.identifier=urn:mrn|B-2").await,
        set(&["Observation/b-a1c"])
    );
    assert_eq!(
        matches(&ctx, "Patient?_has:Observation:patient:code=8867-4").await,
        set(&["Patient/pa"])
    );
    assert_eq!(
        matches(
            &ctx,
            "Patient?_has:Observation:patient:value-quantity=gt9||%"
        )
        .await,
        set(&["Patient/pb"])
    );
    assert_eq!(
        matches(
            &ctx,
            "Patient?_has:Observation:patient:code-value-quantity=4548-4$gt7"
        )
        .await,
        set(&["Patient/pa", "Patient/pb"])
    );
    assert_eq!(
        matches(
            &ctx,
            "Observation?patient=pa&code-value-quantity=http://loinc.org|4548-4$lt7"
        )
        .await,
        set(&["Observation/a1c-2024"])
    );

    let b = search(&ctx, "Observation?patient=pa&code=4548-4&_include=Observation:patient&_revinclude=Provenance:target").await;
    assert_eq!(
        ids(&b, "match"),
        set(&["Observation/a1c-2023", "Observation/a1c-2024"])
    );
    assert_eq!(
        ids(&b, "include"),
        set(&["Patient/pa", "Provenance/prov-a1c"])
    );
    let iterate = search(
        &ctx,
        "Observation?_id=a1c-2024&_revinclude=Provenance:target&_include:iterate=Provenance:agent",
    )
    .await;
    assert_eq!(
        ids(&iterate, "include"),
        set(&["Provenance/prov-a1c", "Practitioner/doc"])
    );
    let typed = search(
        &ctx,
        "Observation?patient=pa&code=8867-4&_include=Observation:subject:Patient",
    )
    .await;
    assert_eq!(ids(&typed, "include"), set(&["Patient/pa"]));
    for absurd in [
        "Observation?patient.organization.name=x",
        "Observation?patient.nonsense=x",
        "Patient?_has:Observation:patient:_has:Observation:patient:code=1",
        "Observation?patient=pa&_include=Observation:code",
    ] {
        let r = ctx.get(absurd).send().await.expect("get");
        expect_outcome(r, 400).await;
    }
}

#[tokio::test]
async fn id_last_updated_sort_count_summary_elements_total() {
    let ctx = ctx().await;
    seed_clinical(&ctx).await;
    assert_eq!(
        matches(&ctx, "Patient?_id=pa,pb,nope").await,
        set(&["Patient/pa", "Patient/pb"])
    );
    assert_eq!(
        matches(&ctx, "Patient?_lastUpdated=gt2000-01-01").await,
        set(&["Patient/pa", "Patient/pb"])
    );
    assert_eq!(
        matches(&ctx, "Patient?_lastUpdated=lt2000-01-01").await,
        set(&[])
    );
    let order = |b: &Value| -> Vec<String> {
        b["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
            .collect()
    };
    let by_date = search(&ctx, "Observation?patient=pa&_sort=date,_id").await;
    // Ascending by the start of each value's range: the year 2024 starts before the day
    // 2024-02-10, which starts before 09:00 that day.
    assert_eq!(
        order(&by_date),
        vec!["a1c-2023", "note-2024", "hr-2024", "a1c-2024"]
    );
    let by_date_desc = search(&ctx, "Observation?patient=pa&_sort=-date,_id").await;
    assert_eq!(
        order(&by_date_desc),
        vec!["note-2024", "hr-2024", "a1c-2024", "a1c-2023"]
    );
    let two_keys = search(&ctx, "Observation?patient=pa&_sort=code,-date").await;
    // note-2024 has no code: it sorts last.
    assert_eq!(
        order(&two_keys),
        vec!["a1c-2024", "a1c-2023", "hr-2024", "note-2024"]
    );
    let count = search(&ctx, "Observation?patient=pa&_summary=count").await;
    assert_eq!(count["total"], 4);
    assert!(count["entry"].as_array().is_none_or(|e| e.is_empty()));
    let total = search(&ctx, "Observation?patient=pa&_count=1&_total=accurate").await;
    assert_eq!(total["total"], 4);
    assert_eq!(total["entry"].as_array().map(Vec::len), Some(1));
    let summary = search(&ctx, "Patient?_id=pa&_summary=true").await;
    let p = &summary["entry"][0]["resource"];
    assert!(p.get("name").is_some() && p.get("birthDate").is_some());
    assert!(
        p["meta"]["tag"]
            .as_array()
            .is_some_and(|t| t.iter().any(|c| c["code"] == "SUBSETTED"))
    );
    let elements = search(&ctx, "Patient?_id=pa&_elements=gender").await;
    let p = &elements["entry"][0]["resource"];
    assert_eq!(p["gender"], "female");
    assert!(p.get("name").is_none() && p.get("birthDate").is_none());
    let big = search(&ctx, "Patient?_count=100000").await;
    assert!(big["link"].as_array().is_some_and(|l| l.iter().any(|l| {
        l["relation"] == "self"
            && l["url"]
                .as_str()
                .is_some_and(|u| u.contains("_count=100000"))
    })));
}

#[tokio::test]
async fn post_search_equals_get() {
    let ctx = ctx().await;
    seed_clinical(&ctx).await;
    let get = matches(
        &ctx,
        "Observation?patient=pa&category=laboratory&date=ge2024-01-01",
    )
    .await;
    let post: Value = ctx
        .client
        .post(ctx.url("Observation/_search"))
        .bearer_auth(&ctx.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("patient=pa&category=laboratory&date=ge2024-01-01")
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&post, "match"), get);
    assert_eq!(get, set(&["Observation/a1c-2024", "Observation/note-2024"]));
}

#[tokio::test]
async fn unknown_parameters_lenient_and_strict() {
    let ctx = ctx().await;
    seed_clinical(&ctx).await;
    let lenient = search(&ctx, "Patient?name=nunez&frobnicate=1").await;
    assert_eq!(ids(&lenient, "match"), set(&["Patient/pa"]));
    let outcome = lenient["entry"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["search"]["mode"] == "outcome"))
        .expect("outcome entry");
    assert!(
        outcome["resource"]["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains("frobnicate"))
    );
    assert!(
        !lenient["link"][0]["url"]
            .as_str()
            .unwrap_or_default()
            .contains("frobnicate"),
        "self link shows what was used"
    );
    let strict = ctx
        .get("Patient?name=nunez&frobnicate=1")
        .header("prefer", "handling=strict")
        .send()
        .await
        .expect("get");
    let body = expect_outcome(strict, 400).await;
    assert!(
        body["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains("frobnicate"))
    );
    for (query, param) in [
        ("Patient?birthdate=1970-13-45", "birthdate"),
        ("Patient?birthdate=xx1970", "birthdate"),
        ("Patient?_count=-1", "_count"),
        ("Patient?name:sounds-like=x", "name:sounds-like"),
        ("Patient?_sort=address-nonsense", "_sort"),
        ("Observation?category=laboratory", "patient"),
        ("Patient?_page=not-a-token", "_page"),
    ] {
        let r = ctx.get(query).send().await.expect("get");
        let body = expect_outcome(r, 400).await;
        assert!(
            body["issue"][0]["diagnostics"]
                .as_str()
                .is_some_and(|d| d.contains(param)),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn paging_is_stable_while_others_write() {
    let ctx = ctx().await;
    let mut originals = BTreeSet::new();
    for i in 0..23 {
        let id = format!("pg-{i:02}");
        put(
            &ctx,
            json!({"resourceType": "Patient", "id": id, "name": [{"family": "Pager"}]}),
        )
        .await;
        originals.insert(format!("Patient/{id}"));
    }
    let mut seen: Vec<String> = Vec::new();
    let mut url = ctx.url("Patient?name=pager&_count=5");
    let mut pages = Vec::new();
    loop {
        let page: Value = ctx
            .client
            .get(&url)
            .bearer_auth(&ctx.token)
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json");
        seen.extend(ids(&page, "match"));
        pages.push(page.clone());
        // Meanwhile: new patients arrive, existing ones change, one is deleted.
        let n = pages.len();
        put(&ctx, json!({"resourceType": "Patient", "id": format!("pg-new-{n}"), "name": [{"family": "Pager"}]})).await;
        put(&ctx, json!({"resourceType": "Patient", "id": "pg-03", "name": [{"family": "Pager"}], "gender": "other"})).await;
        match page["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
        {
            Some(next) => url = next["url"].as_str().expect("url").to_owned(),
            None => break,
        }
        assert!(pages.len() < 20, "paging must end");
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no resource twice: {seen:?}");
    assert!(
        originals.is_subset(&unique),
        "every original patient seen once"
    );
    // previous from page 2 gives page 1 again.
    let second = &pages[1];
    let previous = second["link"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["relation"] == "previous"))
        .expect("previous link");
    let back: Value = ctx
        .client
        .get(previous["url"].as_str().expect("url"))
        .bearer_auth(&ctx.token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&back, "match"), ids(&pages[0], "match"));
}
