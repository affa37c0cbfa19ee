//! ADT events: Patient (PID, PD1, NK1), Encounter (PV1, PV2), Coverage (IN1),
//! AllergyIntolerance (AL1), Condition (DG1), Practitioner and Location (deduplicated).

use serde_json::{Map, Value, json};

use super::datatypes::{
    address, codeable_concept, concept, contact_point, datetime, human_name, identifier,
    join_present,
};
use super::{
    Content, Field, Fields, MapContext, Mapped, MappingError, PatientMerge, Write, error_at,
};
use crate::hl7v2::message::{Presence, Segment};

const V3_ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const US_CORE_RACE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
const US_CORE_ETHNICITY: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity";
const OMB_RACE: &[(&str, &str)] = &[
    ("1002-5", "American Indian or Alaska Native"),
    ("2028-9", "Asian"),
    ("2054-5", "Black or African American"),
    ("2076-8", "Native Hawaiian or Other Pacific Islander"),
    ("2106-3", "White"),
];

pub fn map_adt(ctx: &MapContext) -> Result<Mapped, MappingError> {
    let msg = ctx.message;
    let event = msg.trigger_event().unwrap_or_default();
    let pid = msg
        .first("PID")
        .ok_or_else(|| error_at(100, "PID segment is required", "PID", 0, 0))?;
    let mut mapped = Mapped::default();
    let patient_id = patient(ctx, pid, &mut mapped)?;

    if event == "A40" {
        let mrg = msg
            .first("MRG")
            .ok_or_else(|| error_at(100, "MRG segment is required for A40", "MRG", 0, 0))?;
        let merged_identifiers: Vec<Value> = mrg
            .repetitions(1)
            .iter()
            .filter_map(|r| identifier(ctx, r))
            .collect();
        let merged_key = merged_identifiers
            .first()
            .ok_or_else(|| error_at(101, "MRG-1 is required", "MRG", mrg.sequence, 1))?;
        let merged = patient_id_for(ctx, merged_key);
        if merged == patient_id {
            return Err(error_at(
                205,
                "MRG-1 names the surviving patient",
                "MRG",
                mrg.sequence,
                1,
            ));
        }
        mapped.merge = Some(PatientMerge {
            survivor: patient_id,
            merged,
            merged_identifiers,
        });
        return Ok(mapped);
    }
    if matches!(event.as_str(), "A28" | "A31") {
        return Ok(mapped);
    }
    if let Some(pv1) = msg.first("PV1") {
        let encounter_id = encounter(ctx, &event, pv1, &patient_id, &mut mapped)?;
        for in1 in msg.all("IN1") {
            coverage(ctx, in1, &patient_id, &mut mapped)?;
        }
        for al1 in msg.all("AL1") {
            allergy(ctx, al1, &patient_id, &mut mapped)?;
        }
        for dg1 in msg.all("DG1") {
            diagnosis(ctx, dg1, &patient_id, &encounter_id, &mut mapped)?;
        }
    } else if !matches!(event.as_str(), "A28" | "A31") {
        return Err(error_at(
            100,
            "PV1 segment is required for this event",
            "PV1",
            0,
            0,
        ));
    }
    Ok(mapped)
}

/// The Patient id of an identifier: the Patient the tenant already holds with it, else a
/// tenant-salted hash of system and value.
fn patient_id_for(ctx: &MapContext, id: &Value) -> String {
    let system = id["system"].as_str().unwrap_or_default();
    let value = id["value"].as_str().unwrap_or_default();
    if let Some(known) = ctx
        .known_patients
        .get(&(system.to_owned(), value.to_owned()))
    {
        return known.clone();
    }
    ctx.stable_id("pat", &[system, value])
}

/// Was the field sent as HL7 `""` (delete what the receiver has)?
fn is_null(seg: &Segment, n: usize) -> bool {
    seg.presence(n) == Presence::Null
}

/// A field as Set, Clear (HL7 `""`) or absent (None: keep what is stored).
fn field_or_clear(seg: &Segment, n: usize, value: Option<Value>) -> Option<Field> {
    if is_null(seg, n) {
        return Some(Field::Clear);
    }
    value.map(Field::Set)
}

/// PID (+ PD1, NK1) → Patient; returns its id.
pub fn patient(
    ctx: &MapContext,
    pid: &Segment,
    mapped: &mut Mapped,
) -> Result<String, MappingError> {
    let identifiers: Vec<Value> = pid
        .repetitions(3)
        .iter()
        .filter_map(|r| identifier(ctx, r))
        .collect();
    // The key identifier: the MR one, else the first.
    let key = identifiers
        .iter()
        .find(|i| i["type"]["coding"][0]["code"] == "MR")
        .or_else(|| identifiers.first())
        .ok_or_else(|| {
            error_at(
                101,
                "PID-3 (patient identifier) is required",
                "PID",
                pid.sequence,
                3,
            )
        })?;
    let id = patient_id_for(ctx, key);
    let mut p: Fields = Fields::new();
    p.insert("identifier".into(), Field::Union(identifiers.clone()));
    p.insert("active".into(), Field::Set(true.into()));
    let names: Vec<Value> = pid.repetitions(5).iter().filter_map(human_name).collect();
    if let Some(f) = field_or_clear(pid, 5, (!names.is_empty()).then(|| Value::Array(names))) {
        p.insert("name".into(), f);
    }
    if let Some(f) = field_or_clear(pid, 7, datetime(ctx, pid, 7, true)?.map(Value::from)) {
        p.insert("birthDate".into(), f);
    }
    let gender = pid.component(8, 1).map(|g| match g.as_str() {
        "M" => "male",
        "F" => "female",
        "O" | "A" => "other",
        _ => "unknown",
    });
    if let Some(f) = field_or_clear(pid, 8, gender.map(Value::from)) {
        p.insert("gender".into(), f);
    }
    let addresses: Vec<Value> = pid.repetitions(11).iter().filter_map(address).collect();
    if let Some(f) = field_or_clear(
        pid,
        11,
        (!addresses.is_empty()).then(|| Value::Array(addresses)),
    ) {
        p.insert("address".into(), f);
    }
    let telecom: Vec<Value> = pid
        .repetitions(13)
        .iter()
        .filter_map(|r| contact_point(r, "home"))
        .chain(
            pid.repetitions(14)
                .iter()
                .filter_map(|r| contact_point(r, "work")),
        )
        .collect();
    if !telecom.is_empty() {
        p.insert("telecom".into(), Field::Set(Value::Array(telecom)));
    } else if is_null(pid, 13) {
        p.insert("telecom".into(), Field::Clear);
    }
    if let Some(code) = pid.component(16, 1) {
        p.insert(
            "maritalStatus".into(),
            Field::Set(concept(
                "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                &code,
                None,
            )),
        );
    }
    if let Some(lang) = pid.repetitions(15).first().and_then(codeable_concept) {
        p.insert(
            "communication".into(),
            Field::Set(json!([{"language": lang}])),
        );
    }
    let mut extensions = Vec::new();
    if let Some(race) = pid.repetitions(10).first() {
        let code = race.component(1);
        let display = race.component(2).or(code).unwrap_or("unknown");
        let mut ext = vec![json!({"url": "text", "valueString": display})];
        if let Some((c, d)) = code.and_then(|c| OMB_RACE.iter().find(|(o, _)| *o == c)) {
            ext.insert(0, json!({"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": c, "display": d}}));
        }
        extensions.push(json!({"url": US_CORE_RACE, "extension": ext}));
    }
    if let Some(eth) = pid.repetitions(22).first() {
        let omb = match eth.component(1) {
            Some("H") | Some("2135-2") => Some(("2135-2", "Hispanic or Latino")),
            Some("N") | Some("2186-5") => Some(("2186-5", "Not Hispanic or Latino")),
            _ => None,
        };
        let text = eth.component(2).or(omb.map(|o| o.1)).unwrap_or("unknown");
        let mut ext = vec![json!({"url": "text", "valueString": text})];
        if let Some((c, d)) = omb {
            ext.insert(0, json!({"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": c, "display": d}}));
        }
        extensions.push(json!({"url": US_CORE_ETHNICITY, "extension": ext}));
    }
    if !extensions.is_empty() {
        p.insert("extension".into(), Field::Set(Value::Array(extensions)));
    }
    match (
        pid.component(30, 1).as_deref(),
        datetime(ctx, pid, 29, false)?,
    ) {
        (_, Some(when)) => {
            p.insert("deceasedDateTime".into(), Field::Set(when.into()));
        }
        (Some("Y"), None) => {
            p.insert("deceasedBoolean".into(), Field::Set(true.into()));
        }
        (Some("N"), None) => {
            p.insert("deceasedBoolean".into(), Field::Set(false.into()));
        }
        _ => {}
    }
    if let Some(pd1) = ctx.message.first("PD1") {
        let gps: Vec<Value> = pd1
            .repetitions(4)
            .iter()
            .filter_map(|r| practitioner(ctx, r, mapped))
            .map(|pid| json!({"reference": format!("Practitioner/{pid}")}))
            .collect();
        if !gps.is_empty() {
            p.insert("generalPractitioner".into(), Field::Set(Value::Array(gps)));
        }
    }
    let contacts: Vec<Value> = ctx.message.all("NK1").filter_map(contact).collect();
    if !contacts.is_empty() {
        p.insert("contact".into(), Field::Set(Value::Array(contacts)));
    }
    mapped.push(Write {
        resource_type: "Patient",
        id: id.clone(),
        content: Content::Merge(p),
    });
    Ok(id)
}

/// NK1 → Patient.contact.
fn contact(nk1: &Segment) -> Option<Value> {
    let mut c = Map::new();
    if let Some(n) = nk1.repetitions(2).first().and_then(human_name) {
        c.insert("name".into(), n);
    }
    if let Some(rel) = nk1.repetitions(3).first() {
        let mut cc = codeable_concept(rel).unwrap_or_else(|| json!({}));
        if let (Some(code), None) = (rel.component(1), rel.component(3)) {
            cc = concept(
                "http://terminology.hl7.org/CodeSystem/v2-0063",
                code,
                rel.component(2),
            );
        }
        c.insert("relationship".into(), json!([cc]));
    }
    let telecom: Vec<Value> = nk1
        .repetitions(5)
        .iter()
        .filter_map(|r| contact_point(r, "home"))
        .collect();
    if !telecom.is_empty() {
        c.insert("telecom".into(), Value::Array(telecom));
    }
    if let Some(a) = nk1.repetitions(4).first().and_then(address) {
        c.insert("address".into(), a);
    }
    (!c.is_empty()).then_some(Value::Object(c))
}

/// XCN → a deduplicated Practitioner; returns its id.
pub fn practitioner(
    ctx: &MapContext,
    rep: &crate::hl7v2::message::Repetition,
    mapped: &mut Mapped,
) -> Option<String> {
    let number = rep.component(1);
    let family = rep.subcomponent(2, 1);
    if number.is_none() && family.is_none() {
        return None;
    }
    let authority = rep.subcomponent(9, 1).unwrap_or_default();
    let key_number = number.unwrap_or_default();
    let id = ctx.stable_id(
        "prac",
        &[
            authority,
            key_number,
            if number.is_none() {
                family.unwrap_or_default()
            } else {
                ""
            },
        ],
    );
    let mut p: Fields = Fields::new();
    if let Some(n) = number {
        let system = if authority.eq_ignore_ascii_case("NPI") {
            "http://hl7.org/fhir/sid/us-npi".to_owned()
        } else {
            ctx.feed
                .assigning_authorities
                .get(authority)
                .cloned()
                .unwrap_or_else(|| {
                    format!(
                        "urn:hearth:hl7v2:assigning-authority:{}",
                        if authority.is_empty() {
                            "unknown"
                        } else {
                            authority
                        }
                    )
                })
        };
        p.insert(
            "identifier".into(),
            Field::Union(vec![json!({"system": system, "value": n})]),
        );
    }
    let mut name = Map::new();
    if let Some(f) = family {
        name.insert("family".into(), f.into());
    }
    let given: Vec<Value> = [rep.component(3), rep.component(4)]
        .into_iter()
        .flatten()
        .map(Value::from)
        .collect();
    if !given.is_empty() {
        name.insert("given".into(), Value::Array(given));
    }
    if let Some(prefix) = rep.component(6) {
        name.insert("prefix".into(), json!([prefix]));
    }
    if !name.is_empty() {
        p.insert("name".into(), Field::Set(json!([name])));
    }
    p.insert("active".into(), Field::Set(true.into()));
    mapped.push(Write {
        resource_type: "Practitioner",
        id: id.clone(),
        content: Content::Merge(p),
    });
    Some(id)
}

/// PL → a deduplicated Location (facility, point of care, room, bed); returns its id.
fn location(
    ctx: &MapContext,
    rep: &crate::hl7v2::message::Repetition,
    mapped: &mut Mapped,
) -> Option<String> {
    let (poc, room, bed, facility) = (
        rep.component(1),
        rep.component(2),
        rep.component(3),
        rep.subcomponent(4, 1),
    );
    let name = join_present(&[poc, room, bed], " ")?;
    let id = ctx.stable_id(
        "loc",
        &[
            facility.unwrap_or_default(),
            poc.unwrap_or_default(),
            room.unwrap_or_default(),
            bed.unwrap_or_default(),
        ],
    );
    let mut l: Fields = Fields::new();
    l.insert("name".into(), Field::Set(name.into()));
    l.insert("status".into(), Field::Set("active".into()));
    l.insert("mode".into(), Field::Set("instance".into()));
    let physical = if bed.is_some() {
        "bd"
    } else if room.is_some() {
        "ro"
    } else {
        "wa"
    };
    l.insert(
        "physicalType".into(),
        Field::Set(concept(
            "http://terminology.hl7.org/CodeSystem/location-physical-type",
            physical,
            None,
        )),
    );
    if let Some(f) = facility {
        l.insert("alias".into(), Field::Set(json!([f])));
    }
    mapped.push(Write {
        resource_type: "Location",
        id: id.clone(),
        content: Content::Merge(l),
    });
    Some(id)
}

/// PV1 (+ PV2) → Encounter; returns its id.
fn encounter(
    ctx: &MapContext,
    event: &str,
    pv1: &Segment,
    patient_id: &str,
    mapped: &mut Mapped,
) -> Result<String, MappingError> {
    let visit = pv1.repetitions(19).first().and_then(|r| identifier(ctx, r));
    let id = match &visit {
        Some(v) => ctx.stable_id(
            "enc",
            &[
                v["system"].as_str().unwrap_or_default(),
                v["value"].as_str().unwrap_or_default(),
            ],
        ),
        None => {
            let admit = pv1.component(44, 1).unwrap_or_default();
            if admit.is_empty() {
                return Err(error_at(
                    101,
                    "PV1-19 (visit number) or PV1-44 (admit time) is required",
                    "PV1",
                    pv1.sequence,
                    19,
                ));
            }
            ctx.stable_id("enc", &[patient_id, &admit])
        }
    };
    let mut e: Fields = Fields::new();
    if let Some(v) = visit {
        e.insert("identifier".into(), Field::Union(vec![v]));
    }
    let status = match event {
        "A01" | "A02" | "A04" | "A13" => Some("in-progress"),
        "A03" => Some("finished"),
        "A05" => Some("planned"),
        "A11" => Some("cancelled"),
        _ => None, // A08: the status is not the message's to change
    };
    match status {
        Some(s) => e.insert("status".into(), Field::Set(s.into())),
        // An update for a visit not seen before: its status is unknown, not guessed.
        None => e.insert("status".into(), Field::Default("unknown".into())),
    };
    let class = pv1.component(2, 1).map(|c| match c.as_str() {
        "E" => ("EMER", "emergency"),
        "I" => ("IMP", "inpatient encounter"),
        "P" => ("PRENC", "pre-admission"),
        _ => ("AMB", "ambulatory"),
    });
    match class {
        Some((code, display)) => e.insert(
            "class".into(),
            Field::Set(json!({"system": V3_ACT_CODE, "code": code, "display": display})),
        ),
        // Encounter.class is required; without PV1-2 on a new encounter, say it is unknown.
        None => e.insert(
            "class".into(),
            Field::Default(json!({"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK", "display": "unknown"})),
        ),
    };
    e.insert(
        "subject".into(),
        Field::Set(json!({"reference": format!("Patient/{patient_id}")})),
    );
    let mut period: Fields = Fields::new();
    if let Some(start) = datetime(ctx, pv1, 44, false)? {
        period.insert("start".into(), Field::Set(start.into()));
    }
    if let Some(end) = datetime(ctx, pv1, 45, false)? {
        period.insert("end".into(), Field::Set(end.into()));
    } else if event == "A13" || is_null(pv1, 45) {
        // A13 cancels the discharge: the encounter is open again.
        period.insert("end".into(), Field::Clear);
    }
    if !period.is_empty() {
        e.insert("period".into(), Field::Merge(period));
    }
    if let Some(loc) = pv1
        .repetitions(3)
        .first()
        .and_then(|r| location(ctx, r, mapped))
    {
        e.insert(
            "location".into(),
            Field::Set(
                json!([{"location": {"reference": format!("Location/{loc}")}, "status": "active"}]),
            ),
        );
    }
    let mut participants = Vec::new();
    for (field, code, display) in [
        (7, "ATND", "attender"),
        (8, "REF", "referrer"),
        (9, "CON", "consultant"),
        (17, "ADM", "admitter"),
    ] {
        for rep in pv1.repetitions(field) {
            if let Some(p) = practitioner(ctx, rep, mapped) {
                participants.push(json!({
                    "type": [concept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", code, Some(display))],
                    "individual": {"reference": format!("Practitioner/{p}")}
                }));
            }
        }
    }
    if !participants.is_empty() {
        e.insert("participant".into(), Field::Set(Value::Array(participants)));
    }
    let mut hospitalization: Fields = Fields::new();
    if let Some(src) = pv1.component(14, 1) {
        hospitalization.insert(
            "admitSource".into(),
            Field::Set(concept(
                "http://terminology.hl7.org/CodeSystem/v2-0023",
                &src,
                None,
            )),
        );
    }
    if let Some(disp) = pv1.component(36, 1) {
        hospitalization.insert(
            "dischargeDisposition".into(),
            Field::Set(concept(
                "http://terminology.hl7.org/CodeSystem/v2-0112",
                &disp,
                None,
            )),
        );
    }
    if !hospitalization.is_empty() {
        e.insert("hospitalization".into(), Field::Merge(hospitalization));
    }
    if let Some(reason) = ctx
        .message
        .first("PV2")
        .and_then(|pv2| pv2.repetitions(3).first().and_then(codeable_concept))
    {
        e.insert("reasonCode".into(), Field::Set(json!([reason])));
    }
    mapped.push(Write {
        resource_type: "Encounter",
        id: id.clone(),
        content: Content::Merge(e),
    });
    Ok(id)
}

/// IN1 → Coverage (and its payor Organization).
fn coverage(
    ctx: &MapContext,
    in1: &Segment,
    patient_id: &str,
    mapped: &mut Mapped,
) -> Result<(), MappingError> {
    let company_id = in1.component(3, 1);
    let company_name = in1.component(4, 1);
    let payor_key = company_id.clone().or(company_name.clone()).ok_or_else(|| {
        error_at(
            101,
            "IN1-3 or IN1-4 (insurance company) is required",
            "IN1",
            in1.sequence,
            3,
        )
    })?;
    let org_id = ctx.stable_id("org", &["payor", &payor_key]);
    let mut org: Fields = Fields::new();
    org.insert("active".into(), Field::Set(true.into()));
    if let Some(n) = &company_name {
        org.insert("name".into(), Field::Set(n.clone().into()));
    }
    if let Some(cid) = &company_id {
        org.insert(
            "identifier".into(),
            Field::Union(vec![
                json!({"system": "urn:hearth:hl7v2:insurance-company", "value": cid}),
            ]),
        );
    }
    mapped.push(Write {
        resource_type: "Organization",
        id: org_id.clone(),
        content: Content::Merge(org),
    });
    let plan = in1.component(2, 1).unwrap_or_default();
    let policy = in1.component(36, 1).unwrap_or_default();
    let id = ctx.stable_id("cov", &[patient_id, &payor_key, &plan, &policy]);
    let mut c: Fields = Fields::new();
    c.insert("status".into(), Field::Set("active".into()));
    c.insert(
        "beneficiary".into(),
        Field::Set(json!({"reference": format!("Patient/{patient_id}")})),
    );
    c.insert(
        "payor".into(),
        Field::Set(json!([{"reference": format!("Organization/{org_id}")}])),
    );
    if !policy.is_empty() {
        c.insert("subscriberId".into(), Field::Set(policy.into()));
    }
    let mut period = Fields::new();
    if let Some(s) = datetime(ctx, in1, 12, true)? {
        period.insert("start".into(), Field::Set(s.into()));
    }
    if let Some(e) = datetime(ctx, in1, 13, true)? {
        period.insert("end".into(), Field::Set(e.into()));
    }
    if !period.is_empty() {
        c.insert("period".into(), Field::Merge(period));
    }
    if let Some(rel) = in1.component(17, 1) {
        let code = match rel.as_str() {
            "SEL" => "self",
            "SPO" => "spouse",
            "CHD" => "child",
            "DOM" => "common",
            _ => "other",
        };
        c.insert(
            "relationship".into(),
            Field::Set(concept(
                "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
                code,
                None,
            )),
        );
    }
    mapped.push(Write {
        resource_type: "Coverage",
        id,
        content: Content::Merge(c),
    });
    Ok(())
}

/// AL1 → AllergyIntolerance.
fn allergy(
    ctx: &MapContext,
    al1: &Segment,
    patient_id: &str,
    mapped: &mut Mapped,
) -> Result<(), MappingError> {
    let rep = al1
        .repetitions(3)
        .first()
        .ok_or_else(|| error_at(101, "AL1-3 (allergen) is required", "AL1", al1.sequence, 3))?;
    let code = codeable_concept(rep)
        .ok_or_else(|| error_at(101, "AL1-3 (allergen) is required", "AL1", al1.sequence, 3))?;
    let key = rep.component(1).or(rep.component(2)).unwrap_or_default();
    let id = ctx.stable_id("alg", &[patient_id, key]);
    let mut a = Map::new();
    a.insert("resourceType".into(), "AllergyIntolerance".into());
    a.insert(
        "clinicalStatus".into(),
        concept(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
            "active",
            None,
        ),
    );
    a.insert(
        "verificationStatus".into(),
        concept(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
            "confirmed",
            None,
        ),
    );
    let category = match al1.component(2, 1).as_deref() {
        Some("DA") | Some("MA") => Some("medication"),
        Some("FA") => Some("food"),
        Some("EA") | Some("AA") | Some("PA") | Some("LA") => Some("environment"),
        _ => None,
    };
    if let Some(c) = category {
        a.insert("category".into(), json!([c]));
    }
    if let Some(crit) = al1.component(4, 1) {
        let criticality = match crit.as_str() {
            "SV" => "high",
            "MO" | "MI" => "low",
            _ => "unable-to-assess",
        };
        a.insert("criticality".into(), criticality.into());
    }
    a.insert("code".into(), code);
    a.insert(
        "patient".into(),
        json!({"reference": format!("Patient/{patient_id}")}),
    );
    let manifestations: Vec<Value> = al1
        .repetitions(5)
        .iter()
        .filter_map(|r| r.component(1).map(|t| json!({"text": t})))
        .collect();
    if !manifestations.is_empty() {
        a.insert(
            "reaction".into(),
            json!([{"manifestation": manifestations}]),
        );
    }
    if let Some(onset) = datetime(ctx, al1, 6, true)? {
        a.insert("onsetDateTime".into(), onset.into());
    }
    mapped.push(Write {
        resource_type: "AllergyIntolerance",
        id,
        content: Content::Replace(a),
    });
    Ok(())
}

/// DG1 → Condition (encounter-diagnosis).
fn diagnosis(
    ctx: &MapContext,
    dg1: &Segment,
    patient_id: &str,
    encounter_id: &str,
    mapped: &mut Mapped,
) -> Result<(), MappingError> {
    let rep = dg1.repetitions(3).first().ok_or_else(|| {
        error_at(
            101,
            "DG1-3 (diagnosis code) is required",
            "DG1",
            dg1.sequence,
            3,
        )
    })?;
    let code = codeable_concept(rep).ok_or_else(|| {
        error_at(
            101,
            "DG1-3 (diagnosis code) is required",
            "DG1",
            dg1.sequence,
            3,
        )
    })?;
    let key = rep.component(1).or(rep.component(2)).unwrap_or_default();
    let id = ctx.stable_id("cond", &[encounter_id, key]);
    let verification = match dg1.component(6, 1).as_deref() {
        Some("F") => "confirmed",
        _ => "provisional",
    };
    let mut c = Map::new();
    c.insert("resourceType".into(), "Condition".into());
    c.insert(
        "clinicalStatus".into(),
        concept(
            "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "active",
            None,
        ),
    );
    c.insert(
        "verificationStatus".into(),
        concept(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            verification,
            None,
        ),
    );
    c.insert(
        "category".into(),
        json!([concept(
            "http://terminology.hl7.org/CodeSystem/condition-category",
            "encounter-diagnosis",
            Some("Encounter Diagnosis")
        )]),
    );
    c.insert("code".into(), code);
    c.insert(
        "subject".into(),
        json!({"reference": format!("Patient/{patient_id}")}),
    );
    c.insert(
        "encounter".into(),
        json!({"reference": format!("Encounter/{encounter_id}")}),
    );
    if let Some(recorded) = datetime(ctx, dg1, 5, false)? {
        c.insert("recordedDate".into(), recorded.into());
    }
    mapped.push(Write {
        resource_type: "Condition",
        id,
        content: Content::Replace(c),
    });
    Ok(())
}
