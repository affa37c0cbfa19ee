//! ORU^R01: DiagnosticReport per OBR with its result Observations (OBX by value type),
//! notes (NTE), specimen (SPM) and attachments (ED OBX → presentedForm).

use serde_json::{Map, Value, json};

use super::adt::patient;
use super::datatypes::{
    codeable_concept, concept, datetime, decimal, identifier, is_instant, quantity,
};
use super::{Content, MapContext, Mapped, MappingError, Write, error_at};
use crate::hl7v2::message::Segment;

const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";

pub fn map_oru(ctx: &MapContext) -> Result<Mapped, MappingError> {
    let msg = ctx.message;
    let pid = msg
        .first("PID")
        .ok_or_else(|| error_at(100, "PID segment is required", "PID", 0, 0))?;
    let mut mapped = Mapped::default();
    // A result feed names the patient; it does not own their demographics. Create the
    // patient if unknown, otherwise leave the record to the ADT feed.
    let patient_id = patient(ctx, pid, &mut mapped)?;
    for w in mapped
        .writes
        .iter_mut()
        .filter(|w| w.resource_type == "Patient")
    {
        w.content = w.content.create_only(w.resource_type);
    }
    let encounter_id = msg.first("PV1").and_then(|pv1| {
        let visit = pv1
            .repetitions(19)
            .first()
            .and_then(|r| identifier(ctx, r))?;
        let id = ctx.stable_id(
            "enc",
            &[
                visit["system"].as_str().unwrap_or_default(),
                visit["value"].as_str().unwrap_or_default(),
            ],
        );
        let class = match pv1.component(2, 1).as_deref() {
            Some("E") => "EMER",
            Some("I") => "IMP",
            _ => "AMB",
        };
        let mut e = Map::new();
        e.insert("resourceType".into(), "Encounter".into());
        e.insert("identifier".into(), json!([visit]));
        e.insert("status".into(), "unknown".into());
        e.insert(
            "class".into(),
            json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class}),
        );
        e.insert(
            "subject".into(),
            json!({"reference": format!("Patient/{patient_id}")}),
        );
        mapped.push(Write {
            resource_type: "Encounter",
            id: id.clone(),
            content: Content::Ensure(e),
        });
        Some(id)
    });

    // Walk the segments in order: each OBR opens a report; OBX, NTE and SPM belong to the
    // most recent OBR (NTE to the most recent OBX when one follows the OBR).
    let segments = msg.segments();
    let mut i = 0;
    let mut found_obr = false;
    while i < segments.len() {
        if segments[i].name != "OBR" {
            i += 1;
            continue;
        }
        found_obr = true;
        let obr = &segments[i];
        let mut end = i + 1;
        while end < segments.len() && !matches!(segments[end].name.as_str(), "OBR" | "ORC") {
            end += 1;
        }
        report(
            ctx,
            obr,
            &segments[i + 1..end],
            &patient_id,
            encounter_id.as_deref(),
            &mut mapped,
        )?;
        i = end;
    }
    if !found_obr {
        return Err(error_at(100, "ORU^R01 needs at least one OBR", "OBR", 0, 0));
    }
    Ok(mapped)
}

fn reference(t: &str, id: &str) -> Value {
    json!({"reference": format!("{t}/{id}")})
}

fn report(
    ctx: &MapContext,
    obr: &Segment,
    group: &[Segment],
    patient_id: &str,
    encounter_id: Option<&str>,
    mapped: &mut Mapped,
) -> Result<(), MappingError> {
    let filler = obr.component(3, 1);
    let placer = obr.component(2, 1);
    let control = ctx.message.control_id().unwrap_or_default();
    let seq = obr.sequence.to_string();
    let key: Vec<&str> = match (&filler, &placer) {
        (Some(f), _) => vec!["filler", f],
        (None, Some(p)) => vec!["placer", p],
        (None, None) => vec!["message", &control, &seq],
    };
    let report_id = ctx.stable_id("dr", &key);
    let code = obr
        .repetitions(4)
        .first()
        .and_then(codeable_concept)
        .ok_or_else(|| {
            error_at(
                101,
                "OBR-4 (universal service identifier) is required",
                "OBR",
                obr.sequence,
                4,
            )
        })?;
    let report_time = datetime(ctx, obr, 7, false)?;
    let mut dr = Map::new();
    dr.insert("resourceType".into(), "DiagnosticReport".into());
    if let Some(f) = &filler {
        dr.insert(
            "identifier".into(),
            json!([{"system": "urn:hearth:hl7v2:filler-order-number", "value": f}]),
        );
    }
    let status = match obr.component(25, 1).as_deref() {
        Some("P") | Some("I") | Some("A") | Some("S") => "preliminary",
        Some("C") => "corrected",
        Some("X") => "cancelled",
        Some("R") | Some("O") => "registered",
        _ => "final",
    };
    dr.insert("status".into(), status.into());
    let section = obr.component(24, 1).unwrap_or_else(|| "LAB".into());
    dr.insert(
        "category".into(),
        json!([concept(
            "http://terminology.hl7.org/CodeSystem/v2-0074",
            &section,
            None
        )]),
    );
    dr.insert("code".into(), code);
    dr.insert("subject".into(), reference("Patient", patient_id));
    if let Some(e) = encounter_id {
        dr.insert("encounter".into(), reference("Encounter", e));
    }
    if let Some(t) = &report_time {
        dr.insert("effectiveDateTime".into(), t.clone().into());
    }
    if let Some(issued) = datetime(ctx, obr, 22, false)?.filter(|t| is_instant(t)) {
        dr.insert("issued".into(), issued.into());
    }

    let mut results = Vec::new();
    let mut attachments = Vec::new();
    let mut report_notes = Vec::new();
    let mut specimen_refs = Vec::new();
    let mut last_observation: Option<usize> = None;
    let mut observations: Vec<(String, Map<String, Value>)> = Vec::new();
    for seg in group {
        match seg.name.as_str() {
            "OBX" => {
                last_observation = None;
                if let Some((id, obs, attachment)) = observation(
                    ctx,
                    seg,
                    &report_id,
                    patient_id,
                    encounter_id,
                    report_time.as_deref(),
                )? {
                    if let Some(a) = attachment {
                        attachments.push(a);
                    } else {
                        results.push(reference("Observation", &id));
                        observations.push((id, obs));
                        last_observation = Some(observations.len() - 1);
                    }
                }
            }
            "NTE" => {
                let text: Vec<String> = seg
                    .repetitions(3)
                    .iter()
                    .filter_map(|r| r.component(1).map(str::to_owned))
                    .collect();
                if text.is_empty() {
                    continue;
                }
                let text = text.join("\n");
                match last_observation {
                    Some(k) => {
                        let notes = observations[k].1.entry("note").or_insert_with(|| json!([]));
                        if let Value::Array(n) = notes {
                            n.push(json!({"text": text}));
                        }
                    }
                    None => report_notes.push(text),
                }
            }
            "SPM" => {
                let spm_key = seg
                    .component(2, 1)
                    .unwrap_or_else(|| seg.sequence.to_string());
                let specimen_id = ctx.stable_id("spm", &[&report_id, &spm_key]);
                let mut s = Map::new();
                s.insert("resourceType".into(), "Specimen".into());
                if let Some(t) = seg.repetitions(4).first().and_then(codeable_concept) {
                    s.insert("type".into(), t);
                }
                s.insert("subject".into(), reference("Patient", patient_id));
                if let Some(collected) = datetime(ctx, seg, 17, false)? {
                    s.insert("collection".into(), json!({"collectedDateTime": collected}));
                }
                if let Some(received) = datetime(ctx, seg, 18, false)?.filter(|t| is_instant(t)) {
                    s.insert("receivedTime".into(), received.into());
                }
                mapped.push(Write {
                    resource_type: "Specimen",
                    id: specimen_id.clone(),
                    content: Content::Replace(s),
                });
                specimen_refs.push(reference("Specimen", &specimen_id));
            }
            _ => {}
        }
    }
    for (id, mut obs) in observations {
        if !specimen_refs.is_empty() {
            obs.insert("specimen".into(), specimen_refs[0].clone());
        }
        mapped.push(Write {
            resource_type: "Observation",
            id,
            content: Content::Replace(obs),
        });
    }
    if !results.is_empty() {
        dr.insert("result".into(), Value::Array(results));
    }
    if !specimen_refs.is_empty() {
        dr.insert("specimen".into(), Value::Array(specimen_refs));
    }
    if !report_notes.is_empty() {
        dr.insert("conclusion".into(), report_notes.join("\n").into());
    }
    if !attachments.is_empty() {
        dr.insert("presentedForm".into(), Value::Array(attachments));
    }
    mapped.push(Write {
        resource_type: "DiagnosticReport",
        id: report_id,
        content: Content::Replace(dr),
    });
    Ok(())
}

type ObservationOut = Option<(String, Map<String, Value>, Option<Value>)>;

/// One OBX: an Observation, or (for ED) an attachment for the report.
fn observation(
    ctx: &MapContext,
    obx: &Segment,
    report_id: &str,
    patient_id: &str,
    encounter_id: Option<&str>,
    report_time: Option<&str>,
) -> Result<ObservationOut, MappingError> {
    let value_type = obx.component(2, 1).unwrap_or_default();
    let values = obx.repetitions(5);
    if value_type == "ED" {
        let Some(ed) = values.first() else {
            return Ok(None);
        };
        let content_type = match (ed.component(2), ed.component(3)) {
            (Some(t), Some(s)) => format!("{}/{}", t.to_ascii_lowercase(), s.to_ascii_lowercase()),
            (Some(t), None) => t.to_ascii_lowercase(),
            _ => "application/octet-stream".into(),
        };
        let data = ed.component(5).ok_or_else(|| {
            error_at(101, "OBX-5.5 (ED data) is required", "OBX", obx.sequence, 5)
        })?;
        if !ed
            .component(4)
            .is_some_and(|e| e.eq_ignore_ascii_case("Base64"))
        {
            return Err(error_at(
                102,
                "ED data must be Base64-encoded",
                "OBX",
                obx.sequence,
                5,
            ));
        }
        let title = obx
            .repetitions(3)
            .first()
            .and_then(|r| r.component(2))
            .map(str::to_owned);
        let mut attachment =
            json!({"contentType": content_type, "data": data.replace(['\r', '\n', ' '], "")});
        if let Some(t) = title {
            attachment["title"] = t.into();
        }
        return Ok(Some((String::new(), Map::new(), Some(attachment))));
    }
    let code_rep = obx.repetitions(3).first().ok_or_else(|| {
        error_at(
            101,
            "OBX-3 (observation identifier) is required",
            "OBX",
            obx.sequence,
            3,
        )
    })?;
    let code = codeable_concept(code_rep).ok_or_else(|| {
        error_at(
            101,
            "OBX-3 (observation identifier) is required",
            "OBX",
            obx.sequence,
            3,
        )
    })?;
    let set_id = obx.component(1, 1).unwrap_or_default();
    let sub_id = obx.component(4, 1).unwrap_or_default();
    let id = ctx.stable_id(
        "obs",
        &[
            report_id,
            code_rep.component(1).unwrap_or_default(),
            &sub_id,
            &set_id,
        ],
    );
    let mut o = Map::new();
    o.insert("resourceType".into(), "Observation".into());
    let status = match obx.component(11, 1).as_deref() {
        Some("P") | Some("R") | Some("S") => "preliminary",
        Some("C") => "corrected",
        Some("X") | Some("N") => "cancelled",
        Some("W") | Some("D") => "entered-in-error",
        Some("I") => "registered",
        _ => "final",
    };
    o.insert("status".into(), status.into());
    o.insert(
        "category".into(),
        json!([concept(OBS_CATEGORY, "laboratory", Some("Laboratory"))]),
    );
    o.insert("code".into(), code);
    o.insert("subject".into(), reference("Patient", patient_id));
    if let Some(e) = encounter_id {
        o.insert("encounter".into(), reference("Encounter", e));
    }
    if let Some(t) = datetime(ctx, obx, 14, false)?.or(report_time.map(str::to_owned)) {
        o.insert("effectiveDateTime".into(), t.into());
    }
    let units = obx.repetitions(6).first();
    let first = values.first();
    let value_error = |text: &str| error_at(102, text, "OBX", obx.sequence, 5);
    if let Some(first) = first {
        match value_type.as_str() {
            "NM" => {
                let raw = first.component(1).unwrap_or_default();
                let n = decimal(raw)
                    .ok_or_else(|| value_error("OBX-5 is not a number (OBX-2 is NM)"))?;
                o.insert("valueQuantity".into(), quantity(n, units));
            }
            "ST" | "TX" | "FT" => {
                let text: Vec<String> = values
                    .iter()
                    .filter_map(|r| r.component(1).map(str::to_owned))
                    .collect();
                o.insert("valueString".into(), text.join("\n").into());
            }
            "CE" | "CWE" | "CNE" => {
                let cc = codeable_concept(first).ok_or_else(|| value_error("OBX-5 has no code"))?;
                o.insert("valueCodeableConcept".into(), cc);
            }
            "SN" => {
                o.extend(
                    structured_numeric(first, units)
                        .ok_or_else(|| value_error("OBX-5 is not a structured numeric"))?,
                );
            }
            "DT" | "DTM" | "TS" => {
                let t = datetime(ctx, obx, 5, false)?
                    .ok_or_else(|| value_error("OBX-5 is not a date"))?;
                o.insert("valueDateTime".into(), t.into());
            }
            "" => {
                return Err(error_at(
                    101,
                    "OBX-2 (value type) is required when OBX-5 has a value",
                    "OBX",
                    obx.sequence,
                    2,
                ));
            }
            _ => {
                return Err(error_at(
                    102,
                    "unsupported OBX-2 value type",
                    "OBX",
                    obx.sequence,
                    2,
                ));
            }
        }
    }
    let interpretations: Vec<Value> = obx
        .repetitions(8)
        .iter()
        .filter_map(|r| r.component(1))
        .map(|flag| concept(INTERPRETATION, flag, None))
        .collect();
    if !interpretations.is_empty() {
        o.insert("interpretation".into(), Value::Array(interpretations));
    }
    if let Some(range) = obx.component(7, 1).and_then(|r| reference_range(&r, units)) {
        o.insert("referenceRange".into(), json!([range]));
    }
    Ok(Some((id, o, None)))
}

/// OBX-7 "12.0-16.0", ">5", "<1.2" → a referenceRange; anything else as text.
fn reference_range(text: &str, units: Option<&crate::hl7v2::message::Repetition>) -> Option<Value> {
    let t = text.trim();
    let bound = |s: &str| decimal(s).map(|n| quantity(n, units));
    let mut r = Map::new();
    if let Some(v) = t.strip_prefix('>').map(|s| s.trim_start_matches('=')) {
        r.insert("low".into(), bound(v)?);
    } else if let Some(v) = t.strip_prefix('<').map(|s| s.trim_start_matches('=')) {
        r.insert("high".into(), bound(v)?);
    } else if let Some((lo, hi)) = t.split_once('-').filter(|(lo, _)| !lo.is_empty()) {
        match (bound(lo), bound(hi)) {
            (Some(l), Some(h)) => {
                r.insert("low".into(), l);
                r.insert("high".into(), h);
            }
            _ => {
                r.insert("text".into(), t.into());
            }
        }
    } else {
        r.insert("text".into(), t.into());
    }
    Some(Value::Object(r))
}

/// SN: `[comparator]^num1[^separator^num2]` → valueQuantity (with comparator), valueRange
/// (`-`) or valueRatio (`:` or `/`).
fn structured_numeric(
    rep: &crate::hl7v2::message::Repetition,
    units: Option<&crate::hl7v2::message::Repetition>,
) -> Option<Map<String, Value>> {
    let comparator = rep.component(1);
    let n1 = decimal(rep.component(2)?)?;
    let separator = rep.component(3);
    let n2 = rep.component(4).and_then(decimal);
    let mut out = Map::new();
    match (separator, n2) {
        (Some("-"), Some(n2)) => {
            out.insert(
                "valueRange".into(),
                json!({"low": quantity(n1, units), "high": quantity(n2, units)}),
            );
        }
        (Some(":") | Some("/"), Some(n2)) => {
            out.insert(
                "valueRatio".into(),
                json!({"numerator": {"value": n1}, "denominator": {"value": n2}}),
            );
        }
        (None, None) => {
            let mut q = quantity(n1, units);
            match comparator {
                Some(c @ ("<" | "<=" | ">=" | ">")) => {
                    q["comparator"] = c.into();
                }
                Some("=") | None => {}
                Some(_) => return None,
            }
            out.insert("valueQuantity".into(), q);
        }
        _ => return None,
    }
    Some(out)
}
