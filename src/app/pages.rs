//! The clinician's pages, server-rendered: pure functions from view structs to HTML. No
//! HTTP, no SQL. maud escapes every spliced string; nothing input-derived is ever spliced
//! pre-escaped. The pages are built for the EHR's embedded browser and its CSP: no inline
//! scripts, event handlers or `style=` attributes; the one inline `<style>` carries the
//! nonce and only the SMART style variables, each validated to a safe character set.

use std::fmt::Write as _;
use std::ops::Range;

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::render;

/// The stylesheet, served at [`APP_CSS_PATH`].
pub const APP_CSS: &str = include_str!("static/app.css");
/// The only script (inactivity, activity pings, the authorize POST), served at [`APP_JS_PATH`].
pub const APP_JS: &str = include_str!("static/app.js");
/// Where the pages link the stylesheet from.
pub const APP_CSS_PATH: &str = "/app/static/app.css";
/// Where the pages load the script from.
pub const APP_JS_PATH: &str = "/app/static/app.js";
/// Where app.js POSTs reading activity (header `X-Hearth-CSRF`, from the `hearth-csrf` meta).
pub const ACTIVITY_PATH: &str = "/app/activity";
/// Where the session-bearing pages' "Sign out" form POSTs (field `csrf`).
pub const LOGOUT_PATH: &str = "/app/logout";

/// What every page shares.
#[derive(Debug, Clone, Copy)]
pub struct Chrome<'a> {
    pub title: &'a str,
    /// CSP nonce for the one inline `<style>` (the SMART style variables).
    pub nonce: &'a str,
    /// From the EHR's smart_style_url, already validated by [`SmartStyle::from_json`].
    pub style: Option<&'a SmartStyle>,
    /// None on error/ended pages without a session.
    pub session: Option<SessionChrome<'a>>,
}

/// The parts of the page that exist only inside a launch session.
#[derive(Debug, Clone, Copy)]
pub struct SessionChrome<'a> {
    /// Local patient id, used to build the nav links `/app/patient/{id}/...`.
    pub patient_id: &'a str,
    /// Some only when the EHR said need_patient_banner=true (else the EHR shows its own).
    pub banner: Option<&'a PatientBanner>,
    /// The clinician's name if known.
    pub user_display: Option<&'a str>,
    /// For app.js: clear the screen after this much inactivity.
    pub inactivity_secs: u64,
    /// Hidden field of the logout form and the `hearth-csrf` meta tag app.js sends back.
    pub csrf: &'a str,
    /// E.g. "Epic (https://fhir.example.org/api/FHIR/R4)".
    pub ehr_name: &'a str,
}

/// SMART style values (smart_style_url), each checked by [`SmartStyle::from_json`]:
/// colours are normalised to `#rrggbb`, font families to `[A-Za-z0-9 ,'-]` lists, sizes to
/// a number and a unit. Whatever fails is dropped, so the values are safe to put in CSS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmartStyle {
    pub color_background: Option<String>,
    pub color_text: Option<String>,
    pub color_highlight: Option<String>,
    pub color_border: Option<String>,
    pub font_family_base: Option<String>,
    pub font_family_heading: Option<String>,
    pub dim_border_radius: Option<String>,
    pub dim_font_size: Option<String>,
}

/// The page colours app.css uses when the EHR sets none; the contrast check compares an
/// EHR's colour with these when it sets only one of the pair.
const DEFAULT_BG: (u8, u8, u8) = (0xff, 0xff, 0xff);
const DEFAULT_TEXT: (u8, u8, u8) = (0x1b, 0x1f, 0x24);
/// app.css's `--hearth-link`.
const DEFAULT_LINK: (u8, u8, u8) = (0x0b, 0x57, 0xa4);
/// WCAG AA for normal text.
const MIN_CONTRAST: f64 = 4.5;

impl SmartStyle {
    /// The validated style from the EHR's smart_style_url JSON. Drops every value that fails
    /// its check (CSS injection: `red;}</style><script>`, `url(...)`, expressions), and drops
    /// the background/text colours together when they would fall below WCAG AA contrast.
    /// Reads `font_family_body` (the SMART name) or `font_family_base`.
    pub fn from_json(value: &Value) -> SmartStyle {
        let get = |key: &str| value.get(key).and_then(Value::as_str);
        let mut style = SmartStyle {
            color_background: get("color_background").and_then(css_color),
            color_text: get("color_text").and_then(css_color),
            color_highlight: get("color_highlight").and_then(css_color),
            color_border: get("color_border").and_then(css_color),
            font_family_base: get("font_family_body")
                .or_else(|| get("font_family_base"))
                .and_then(css_font_family),
            font_family_heading: get("font_family_heading").and_then(css_font_family),
            dim_border_radius: get("dim_border_radius").and_then(|s| css_length(s, Length::Radius)),
            dim_font_size: get("dim_font_size").and_then(|s| css_length(s, Length::FontSize)),
        };
        if (style.color_background.is_some() || style.color_text.is_some())
            && contrast(style.background_rgb(), style.text_rgb()) < MIN_CONTRAST
        {
            style.color_background = None;
            style.color_text = None;
        }
        style
    }

    fn background_rgb(&self) -> (u8, u8, u8) {
        self.color_background
            .as_deref()
            .and_then(parse_hex)
            .unwrap_or(DEFAULT_BG)
    }

    fn text_rgb(&self) -> (u8, u8, u8) {
        self.color_text
            .as_deref()
            .and_then(parse_hex)
            .unwrap_or(DEFAULT_TEXT)
    }

    /// The `:root { --hearth-… }` block, empty when the EHR set nothing. Only validated
    /// values reach it, none containing `<`, `>`, `&`, `"`, `;`, `{` or `}`.
    fn css_variables(&self) -> String {
        let mut decls: Vec<(&str, String)> = Vec::new();
        let pairs = [
            ("--hearth-bg", &self.color_background),
            ("--hearth-text", &self.color_text),
            ("--hearth-highlight", &self.color_highlight),
            ("--hearth-border", &self.color_border),
            ("--hearth-font", &self.font_family_base),
            ("--hearth-heading-font", &self.font_family_heading),
            ("--hearth-radius", &self.dim_border_radius),
            ("--hearth-font-size", &self.dim_font_size),
        ];
        for (name, value) in pairs {
            if let Some(value) = value {
                decls.push((name, value.clone()));
            }
        }
        // On a background the default link blue does not contrast with, links take the
        // (checked) text colour; they keep their underline either way.
        if contrast(DEFAULT_LINK, self.background_rgb()) < MIN_CONTRAST {
            let (r, g, b) = self.text_rgb();
            decls.push(("--hearth-link", format!("#{r:02x}{g:02x}{b:02x}")));
        }
        if decls.is_empty() {
            return String::new();
        }
        let mut css = String::from(":root{");
        for (name, value) in decls {
            let _ = write!(css, "{name}:{value};");
        }
        css.push('}');
        css
    }
}

/// The patient banner's facts (shown when the EHR asks for one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientBanner {
    pub name: String,
    pub birth_date: Option<String>,
    pub gender: Option<String>,
    /// (label, value), e.g. ("MRN", "123").
    pub identifiers: Vec<(String, String)>,
}

impl PatientBanner {
    /// From a FHIR Patient: the official (else usual, else first current) name, birthDate,
    /// gender, and identifiers labelled by type.text / coding display (MR → "MRN") or "ID".
    /// Leaves out old identifiers and social security numbers: a banner on a shared screen
    /// needs identifiers that match the chart, not ones that enable identity theft.
    pub fn from_patient(patient: &Value) -> PatientBanner {
        let name =
            render::human_name(&patient["name"]).unwrap_or_else(|| "Name not recorded".to_owned());
        let birth_date = text_at(patient, "birthDate");
        let gender = text_at(patient, "gender").map(|g| {
            let mut chars = g.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => g,
            }
        });
        let identifiers = patient["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|id| text_at(id, "use").as_deref() != Some("old") && !is_ssn(id))
            .filter_map(|id| Some((identifier_label(id), text_at(id, "value")?)))
            .collect();
        PatientBanner {
            name,
            birth_date,
            gender,
            identifiers,
        }
    }
}

fn identifier_label(identifier: &Value) -> String {
    let kind = &identifier["type"];
    let codings = kind["coding"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    text_at(kind, "text")
        .or_else(|| codings.iter().find_map(|c| text_at(c, "display")))
        .or_else(|| {
            codings
                .iter()
                .find_map(|c| match text_at(c, "code").as_deref() {
                    Some("MR") => Some("MRN".to_owned()),
                    _ => None,
                })
        })
        .unwrap_or_else(|| "ID".to_owned())
}

fn is_ssn(identifier: &Value) -> bool {
    let ssn_system = matches!(
        text_at(identifier, "system").as_deref(),
        Some("http://hl7.org/fhir/sid/us-ssn" | "urn:oid:2.16.840.1.113883.4.1")
    );
    let ssn_type = identifier["type"]["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| matches!(text_at(c, "code").as_deref(), Some("SS" | "SB")));
    ssn_system || ssn_type
}

/// The summary page's content.
#[derive(Debug, Clone)]
pub struct SummaryView {
    pub groups: Vec<ResourceGroup>,
    pub sync: SyncStatus,
    /// The cited clinical summary (extractive or verified AI), when there is one.
    pub clinical: Option<ClinicalView>,
}

/// A clinical summary as shown: sections of sentences, each with links to its sources.
#[derive(Debug, Clone)]
pub struct ClinicalView {
    /// "extractive" or "bedrock".
    pub engine: String,
    pub notice: Option<String>,
    pub sections: Vec<CitedSection>,
}

#[derive(Debug, Clone)]
pub struct CitedSection {
    pub title: String,
    pub statements: Vec<CitedStatement>,
    pub empty_text: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CitedStatement {
    pub text: String,
    /// Why the verifier doubts it (shown, not hidden, when the tenant flags instead of removing).
    pub flagged: Option<String>,
    /// (link text, href to the source view).
    pub citations: Vec<(String, String)>,
}

/// The cited summary: every sentence followed by links to the records it came from.
fn clinical_summary(view: &ClinicalView) -> Markup {
    html! {
        section.clinical aria-labelledby="clinical-heading" {
            h2 id="clinical-heading" { "Clinical summary" }
            p.engine {
                @if view.engine == "bedrock" {
                    "Written by an AI model from the record; every sentence was checked against its sources."
                } @else {
                    "Generated from the structured record; every sentence cites its source."
                }
            }
            @if let Some(notice) = &view.notice { p.notice role="status" { (notice) } }
            @for section in &view.sections {
                h3 { (section.title) }
                @if section.statements.is_empty() {
                    p.empty { (section.empty_text.as_deref().unwrap_or("Nothing recorded.")) }
                } @else {
                    ul.statements {
                        @for statement in &section.statements {
                            li {
                                @if let Some(why) = &statement.flagged {
                                    strong.flag { "Unverified: " } (statement.text) " (" (why) ")"
                                } @else {
                                    (statement.text)
                                }
                                @for (label, href) in &statement.citations {
                                    " "
                                    a.citation.source href=(safe_url(href)) { "[" (label) "]" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One resource type's records.
#[derive(Debug, Clone)]
pub struct ResourceGroup {
    pub resource_type: String,
    /// E.g. "Conditions" ([`render::group_heading`]).
    pub heading: String,
    pub items: Vec<ResourceItem>,
}

/// One record row; its label links to the source page (the clinician's "citation").
#[derive(Debug, Clone)]
pub struct ResourceItem {
    pub label: String,
    pub date: Option<String>,
    pub status: Option<String>,
    /// `/app/patient/{pid}/source/{Type}/{id}`.
    pub source_href: String,
}

/// How the launch's record sync went.
#[derive(Debug, Clone)]
pub struct SyncStatus {
    pub outcome: SyncOutcome,
    pub ehr: String,
    pub finished_at: String,
    pub fetched: usize,
    pub stored: usize,
    pub unchanged: usize,
    /// Human messages, e.g. "Immunization: the EHR refused access (403)".
    pub problems: Vec<String>,
}

/// The sync's overall result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    Complete,
    Partial,
    Failed,
    NotRun,
}

/// The source page's content: one stored resource, and the note passage a citation points at.
#[derive(Debug, Clone)]
pub struct SourceView<'a> {
    pub resource_type: &'a str,
    pub id: &'a str,
    pub version: i64,
    pub last_updated: &'a str,
    pub resource: &'a Value,
    /// meta.source.
    pub source: Option<&'a str>,
    pub note: Option<NoteView>,
    pub back_href: String,
}

/// A note's text, with the cited passage to highlight.
#[derive(Debug, Clone)]
pub struct NoteView {
    pub title: String,
    pub text: String,
    /// Byte range into `text`. May be out of range or off char boundaries: it is clamped
    /// to the text and widened to whole characters; an empty or reversed range is ignored.
    pub highlight: Option<Range<usize>>,
}

/// An error page's content: the human message only, never error internals.
#[derive(Debug, Clone, Copy)]
pub struct ErrorView<'a> {
    pub status: u16,
    pub heading: &'a str,
    pub message: &'a str,
    /// (label, href).
    pub action: Option<(&'a str, &'a str)>,
}

/// A demo patient or practitioner to launch with.
#[derive(Debug, Clone)]
pub struct DemoChoice {
    pub id: String,
    pub label: String,
}

/// Which nav entry is the current page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Summary,
    PriorAuth,
    Other,
}

/// The patient summary: sync status, then each resource group's records, each label a
/// `class="citation"` link to its source page.
pub fn summary_page(chrome: &Chrome, view: &SummaryView) -> String {
    let groups: Vec<&ResourceGroup> = view.groups.iter().filter(|g| !g.items.is_empty()).collect();
    let main = html! {
        h1 { "Patient summary" }
        @if let Some(clinical) = &view.clinical { (clinical_summary(clinical)) }
        (sync_status(&view.sync, chrome.session.as_ref()))
        @if groups.is_empty() {
            (empty_record(view.sync.outcome))
        } @else {
            @if groups.len() > 1 {
                nav.jump aria-label="Record sections" {
                    h2.visually-hidden { "Record sections" }
                    ul {
                        @for (i, group) in groups.iter().enumerate() {
                            li { a href={ "#" (group_id(i, group)) } { (group.heading) } }
                        }
                    }
                }
            }
            @for (i, group) in groups.iter().enumerate() {
                @let id = group_id(i, group);
                section.group aria-labelledby=(id) {
                    h2 id=(id) { (group.heading) " " span.count { "(" (group.items.len()) ")" } }
                    table.records aria-labelledby=(id) {
                        thead {
                            tr {
                                th scope="col" { "Record" }
                                th scope="col" { "Date" }
                                th scope="col" { "Status" }
                            }
                        }
                        tbody {
                            @for item in &group.items {
                                tr {
                                    th scope="row" {
                                        a.citation href=(safe_url(&item.source_href)) { (item.label) }
                                    }
                                    td { (or_not_recorded(item.date.as_deref().map(readable_date).as_deref())) }
                                    td { (or_not_recorded(item.status.as_deref())) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(chrome, Section::Summary, main)
}

/// One resource as the EHR sent it: version facts, the note with the cited passage in
/// `<mark id="cited">`, the readable details, and the raw JSON.
pub fn source_page(chrome: &Chrome, view: &SourceView) -> String {
    let json =
        serde_json::to_string_pretty(view.resource).unwrap_or_else(|_| view.resource.to_string());
    let back = safe_url(&view.back_href);
    let main = html! {
        p.back { a href=(back) { span aria-hidden="true" { "← " } "Back to summary" } }
        h1.resource-id { (view.resource_type) "/" (view.id) }
        p.label { (render::resource_label(view.resource)) }
        dl.facts {
            dt { "Version" } dd { (view.version) }
            dt { "Last updated" } dd { (view.last_updated) }
            @if let Some(source) = view.source { dt { "Source" } dd { (source) } }
        }
        @if let Some(note) = &view.note { (note_section(note)) }
        section aria-labelledby="details-heading" {
            h2 id="details-heading" { "Details" }
            (render::resource_details(view.resource))
            details.raw-json {
                summary { "FHIR JSON" }
                pre { code { (json) } }
            }
        }
        p.back { a href=(back) { span aria-hidden="true" { "← " } "Back to summary" } }
    };
    page(chrome, Section::Other, main)
}

/// An order the patient has, and whether a rule set covers it.
#[derive(Debug, Clone)]
pub struct PriorAuthOrder {
    pub label: String,
    /// `ServiceRequest/{id}` or `MedicationRequest/{id}`.
    pub reference: String,
    /// The covering rule set's title; None: no rule set, no draft.
    pub rule_set: Option<String>,
}

/// A packet in the list.
#[derive(Debug, Clone)]
pub struct PacketLink {
    pub href: String,
    pub title: String,
    pub status: String,
    pub updated: String,
}

/// The prior-authorization page: the orders to draft for, and the packets so far.
#[derive(Debug, Clone, Default)]
pub struct PriorAuthList {
    pub orders: Vec<PriorAuthOrder>,
    pub packets: Vec<PacketLink>,
    /// Where "Draft" POSTs (field `order`).
    pub draft_action: String,
}

/// One answer of a packet, as the reviewer sees it.
#[derive(Debug, Clone)]
pub struct PacketItem {
    pub link_id: String,
    pub question: String,
    pub required: bool,
    /// None: "not found in the record" (or rejected).
    pub answer: Option<String>,
    /// auto, override, manual (with who).
    pub origin: Option<String>,
    pub confidence: Option<String>,
    /// pending, accepted, edited, rejected.
    pub review: String,
    /// (label, href to the source view).
    pub citations: Vec<(String, String)>,
}

/// A packet's page.
#[derive(Debug, Clone)]
pub struct PacketPage {
    pub title: String,
    pub status: String,
    pub order: String,
    pub items: Vec<PacketItem>,
    /// Why it cannot be approved yet.
    pub blockers: Vec<String>,
    pub review_action: String,
    pub decision_action: String,
    /// For an approved packet: the PAS Bundle download and the payer submission.
    pub bundle_href: Option<String>,
    pub submit_action: Option<String>,
    pub submission: Option<String>,
    /// (when, who, what), oldest first.
    pub history: Vec<(String, String, String)>,
    pub back_href: String,
}

/// The prior-authorization page: orders a rule set covers (each with a Draft button) and
/// the packets drafted so far.
pub fn prior_auth_page(chrome: &Chrome, view: &PriorAuthList) -> String {
    let csrf = chrome.session.as_ref().map(|s| s.csrf).unwrap_or_default();
    let main = html! {
        h1 { "Prior authorization" }
        section aria-labelledby="orders-heading" {
            h2 id="orders-heading" { "Orders" }
            @if view.orders.is_empty() {
                p.empty { "No orders were found for this patient." }
            } @else {
                table.records aria-labelledby="orders-heading" {
                    thead { tr { th scope="col" { "Order" } th scope="col" { "Payer criteria" } th scope="col" { span.visually-hidden { "Action" } } } }
                    tbody {
                        @for order in &view.orders {
                            tr {
                                td { (order.label) }
                                td { @match &order.rule_set { Some(t) => (t), None => "None on file" } }
                                td {
                                    @if order.rule_set.is_some() {
                                        form method="post" action=(safe_url(&view.draft_action)) {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="order" value=(order.reference);
                                            button type="submit" { "Draft prior authorization" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="packets-heading" {
            h2 id="packets-heading" { "Drafts and requests" }
            @if view.packets.is_empty() {
                p.empty { "No prior-authorization drafts yet." }
            } @else {
                ul.packets {
                    @for p in &view.packets {
                        li { a href=(safe_url(&p.href)) { (p.title) } " — " (p.status) ", updated " (p.updated) }
                    }
                }
            }
        }
    };
    page(chrome, Section::PriorAuth, main)
}

/// A packet: every answer with its evidence and the reviewer's choices; approval.
pub fn packet_page(chrome: &Chrome, view: &PacketPage) -> String {
    let csrf = chrome.session.as_ref().map(|s| s.csrf).unwrap_or_default();
    let draft = view.status == "draft";
    let main = html! {
        p.back { a href=(safe_url(&view.back_href)) { span aria-hidden="true" { "← " } "Back to prior authorization" } }
        h1 { (view.title) }
        dl.facts {
            dt { "Order" } dd { (view.order) }
            dt { "Status" } dd.packet-status { (view.status) }
        }
        p { "Hearth drafted these answers from the record. Check each against its evidence: accept it, correct it, or reject it. Nothing is sent to the payer until you approve." }
        ol.answers {
            @for item in &view.items {
                li.answer id={ "item-" (item.link_id) } data-review=(item.review) {
                    h2 { (item.question) @if item.required { " " span.required { "(required)" } } }
                    @match &item.answer {
                        Some(a) => p.value { strong { (a) } },
                        None => p.value.not-found { strong { "Not found in the record" } },
                    }
                    p.meta {
                        "Review: " span.review { (item.review) }
                        @if let Some(o) = &item.origin { " · Source: " (o) }
                        @if let Some(c) = &item.confidence { " · Confidence: " (c) }
                    }
                    @if !item.citations.is_empty() {
                        p.evidence { "Evidence: "
                            @for (i, (label, href)) in item.citations.iter().enumerate() {
                                @if i > 0 { ", " }
                                a.citation href=(safe_url(href)) { (label) }
                            }
                        }
                    }
                    @if draft {
                        form.review method="post" action=(safe_url(&view.review_action)) {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="link_id" value=(item.link_id);
                            @if item.answer.is_some() {
                                button type="submit" name="action" value="accept" { "Accept" }
                                " "
                            }
                            button type="submit" name="action" value="reject" { "Reject" }
                        }
                        form.edit method="post" action=(safe_url(&view.review_action)) {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="link_id" value=(item.link_id);
                            input type="hidden" name="action" value="edit";
                            label for={ "value-" (item.link_id) } { "Your answer" }
                            " "
                            input type="text" id={ "value-" (item.link_id) } name="value";
                            " "
                            button type="submit" { "Save answer" }
                        }
                    }
                }
            }
        }
        @if draft {
            section.decision aria-labelledby="decision-heading" {
                h2 id="decision-heading" { "Decision" }
                @if !view.blockers.is_empty() {
                    p { "Before approving:" }
                    ul.blockers { @for b in &view.blockers { li { (b) } } }
                }
                form method="post" action=(safe_url(&view.decision_action)) {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" name="decision" value="approve" disabled[!view.blockers.is_empty()] { "Approve request" }
                    " "
                    button type="submit" name="decision" value="reject" { "Reject request" }
                }
            }
        }
        @if let Some(href) = &view.bundle_href {
            section aria-labelledby="export-heading" {
                h2 id="export-heading" { "Request to the payer" }
                p { a.button href=(safe_url(href)) download { "Download the PAS request (FHIR Bundle)" } }
                @if let Some(action) = &view.submit_action {
                    form method="post" action=(safe_url(action)) {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Submit to the payer" }
                    }
                }
                @if let Some(s) = &view.submission { p.submission { (s) } }
            }
        }
        section aria-labelledby="history-heading" {
            h2 id="history-heading" { "History" }
            ol.history { @for (at, who, what) in &view.history { li { (at) " — " (who) ": " (what) } } }
        }
    };
    page(chrome, Section::PriorAuth, main)
}

/// An error: the given heading and human message, an optional action link, and the
/// status code for support calls. Nothing else from the error is shown.
pub fn error_page(chrome: &Chrome, view: &ErrorView) -> String {
    let main = html! {
        h1 { (view.heading) }
        p.message { (view.message) }
        @if let Some((label, href)) = view.action {
            p { a.button href=(safe_url(href)) { (label) } }
        }
        p.code { "Error code " (view.status) }
    };
    page(chrome, Section::Other, main)
}

/// After logout, inactivity or expiry. Renders without the session parts whatever `chrome`
/// holds: no banner, no nav, no csrf: no patient data at all.
pub fn ended_page(chrome: &Chrome, heading: &str, message: &str) -> String {
    let chrome = Chrome {
        session: None,
        ..*chrome
    };
    let main = html! {
        h1 { (heading) }
        p.message { (message) }
    };
    page(&chrome, Section::Other, main)
}

/// A POST to the EHR's authorize endpoint (when the scopes make the URL too long): hidden
/// fields and a visible "Continue to sign in" button; app.js submits `#authorize-post` on
/// load, and without JS the button does.
pub fn authorize_post_page(chrome: &Chrome, action: &str, fields: &[(String, String)]) -> String {
    let main = html! {
        h1 { "Signing you in" }
        p { "Hearth is taking you to your EHR to sign in." }
        form id="authorize-post" method="post" action=(safe_url(action)) {
            (hidden_fields(fields))
            button.primary type="submit" { "Continue to sign in" }
        }
    };
    page(chrome, Section::Other, main)
}

/// Demo EHR chart (demo mode only): choose a demo patient and practitioner and GET
/// `launch_action` with `patient` and `practitioner`.
pub fn demo_chart_page(
    chrome: &Chrome,
    launch_action: &str,
    patients: &[DemoChoice],
    practitioners: &[DemoChoice],
) -> String {
    let main = html! {
        h1 { "Demo EHR: patient chart" }
        p { "This page stands in for an EHR in demo mode. Choose who is being seen and by whom, then launch Hearth as the EHR would." }
        @if patients.is_empty() || practitioners.is_empty() {
            p.message { "There are no demo patients or practitioners to launch with. Load the demo data first." }
        } @else {
            form.launch method="get" action=(safe_url(launch_action)) {
                div.field {
                    label for="patient" { "Patient" }
                    select id="patient" name="patient" {
                        @for p in patients { option value=(p.id) { (p.label) } }
                    }
                }
                div.field {
                    label for="practitioner" { "Practitioner" }
                    select id="practitioner" name="practitioner" {
                        @for p in practitioners { option value=(p.id) { (p.label) } }
                    }
                }
                button.primary type="submit" { "Launch Hearth" }
            }
        }
    };
    page(chrome, Section::Other, main)
}

/// Demo EHR authorize step: the app's requested scopes (with what each allows) and a form
/// POSTing to `action` with the hidden fields and decision=allow / decision=deny buttons.
pub fn demo_authorize_page(
    chrome: &Chrome,
    action: &str,
    client_name: &str,
    scopes: &[String],
    fields: &[(String, String)],
) -> String {
    let main = html! {
        h1 { "Allow " (client_name) " to use this record?" }
        p { "Demo EHR: " (client_name) " asks for the following access." }
        ul.scopes {
            @for scope in scopes {
                li { code { (scope) } ": " (scope_description(scope)) }
            }
        }
        form.decision method="post" action=(safe_url(action)) {
            (hidden_fields(fields))
            div.actions {
                button.primary type="submit" name="decision" value="allow" { "Allow" }
                button type="submit" name="decision" value="deny" { "Deny" }
            }
        }
    };
    page(chrome, Section::Other, main)
}

/// The document around a page's main content.
fn page(chrome: &Chrome, section: Section, main: Markup) -> String {
    let session = chrome.session.as_ref();
    let variables = chrome
        .style
        .map(SmartStyle::css_variables)
        .filter(|css| !css.is_empty());
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                @if let Some(s) = session { meta name="hearth-csrf" content=(s.csrf); }
                title { (chrome.title) " · Hearth" }
                link rel="stylesheet" href=(APP_CSS_PATH);
                // After the stylesheet, so the EHR's values override its defaults.
                @if let Some(css) = variables { style nonce=(chrome.nonce) { (css) } }
                script src=(APP_JS_PATH) defer {}
            }
            body data-inactivity-secs=[session.map(|s| s.inactivity_secs)]
                data-activity-url=[session.map(|_| ACTIVITY_PATH)] {
                a.skip-link href="#main" { "Skip to main content" }
                header.site-header {
                    div.bar {
                        p.app-name { "Hearth" }
                        @if let Some(s) = session {
                            p.ehr { span.visually-hidden { "Connected to " } (s.ehr_name) }
                            @if let Some(user) = s.user_display {
                                p.user { "Signed in as " (user) }
                            }
                            form.logout method="post" action=(LOGOUT_PATH) {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                    @if let Some(banner) = session.and_then(|s| s.banner) {
                        (patient_banner(banner))
                    }
                }
                @if let Some(s) = session { (app_nav(s.patient_id, section)) }
                main id="main" tabindex="-1" { (main) }
            }
        }
    }
    .into_string()
}

fn patient_banner(banner: &PatientBanner) -> Markup {
    html! {
        section.patient-banner aria-label="Patient" {
            p.patient-name { (banner.name) }
            dl.patient-facts {
                @if let Some(dob) = &banner.birth_date { div { dt { "DOB" } dd { (dob) } } }
                @if let Some(gender) = &banner.gender { div { dt { "Gender" } dd { (gender) } } }
                @for (label, value) in &banner.identifiers { div { dt { (label) } dd { (value) } } }
            }
        }
    }
}

fn app_nav(patient_id: &str, section: Section) -> Markup {
    let base = format!("/app/patient/{}", path_segment(patient_id));
    let current = |s: Section| (section == s).then_some("page");
    html! {
        nav.app-nav aria-label="Patient record" {
            ul {
                li { a href=(base) aria-current=[current(Section::Summary)] { "Summary" } }
                li {
                    a href={ (base) "/prior-auth" } aria-current=[current(Section::PriorAuth)] {
                        "Prior authorization"
                    }
                }
            }
        }
    }
}

fn sync_status(sync: &SyncStatus, session: Option<&SessionChrome>) -> Markup {
    // Words and a symbol carry the outcome; the colour only repeats it.
    let (class, symbol, words) = match sync.outcome {
        SyncOutcome::Complete => ("complete", "✓", "Sync complete"),
        SyncOutcome::Partial => (
            "partial",
            "!",
            "Sync incomplete: some records could not be fetched",
        ),
        SyncOutcome::Failed => (
            "failed",
            "✕",
            "Sync failed: Hearth could not fetch this patient's record",
        ),
        SyncOutcome::NotRun => ("not-run", "…", "Not synced yet"),
    };
    html! {
        section.sync aria-labelledby="sync-heading" {
            h2 id="sync-heading" { "Record sync" }
            p class={ "outcome outcome-" (class) } {
                span.symbol aria-hidden="true" { (symbol) } " " strong { (words) }
            }
            @if sync.outcome != SyncOutcome::NotRun {
                p {
                    @if !sync.finished_at.is_empty() { "Finished " (sync.finished_at) " from " } @else { "From " }
                    (sync.ehr) ". "
                    "Fetched " (plural(sync.fetched, "record", "records")) ": "
                    (sync.stored) " new or changed, " (sync.unchanged) " unchanged."
                }
            }
            @if !sync.problems.is_empty() {
                h3 { "Problems" }
                ul.problems { @for problem in &sync.problems { li { (problem) } } }
            }
            @if let Some(s) = session {
                form method="post" action=(format!("/app/patient/{}/sync", path_segment(s.patient_id))) {
                    input type="hidden" name="csrf" value=(s.csrf);
                    button type="submit" { "Sync again from the EHR" }
                }
            }
        }
    }
}

/// What an empty record means depends on the sync: "none found" is only true when the
/// sync ran; after a failure it would read as "no allergies", which is unsafe.
fn empty_record(outcome: SyncOutcome) -> Markup {
    html! {
        @match outcome {
            SyncOutcome::Complete => p.empty { "No records were found in the EHR for this patient." },
            SyncOutcome::Partial => p.empty {
                "No records were found in the EHR for this patient. "
                "Some record types could not be fetched (see the problems above), so check the EHR's chart."
            },
            SyncOutcome::Failed => p.empty {
                "No records are shown because the sync with the EHR failed. Check the EHR's chart directly."
            },
            SyncOutcome::NotRun => p.empty { "This patient's record has not been synced from the EHR yet." },
        }
    }
}

fn note_section(note: &NoteView) -> Markup {
    let (before, cited, after) = split_highlight(&note.text, note.highlight.as_ref());
    let title = if note.title.trim().is_empty() {
        "Note"
    } else {
        note.title.as_str()
    };
    html! {
        section.note aria-labelledby="note-heading" {
            h2 id="note-heading" { (title) }
            @if cited.is_some() {
                p { a href="#cited" { "Go to the cited passage" } }
            }
            div.note-text {
                (before)
                @if let Some(cited) = cited { mark id="cited" { (cited) } }
                (after)
            }
        }
    }
}

/// `text` split around the highlight: the range clamped to the text and widened to whole
/// characters; None for the middle when there is nothing to highlight.
fn split_highlight<'t>(
    text: &'t str,
    range: Option<&Range<usize>>,
) -> (&'t str, Option<&'t str>, &'t str) {
    let Some(range) = range else {
        return (text, None, "");
    };
    let start = text.floor_char_boundary(range.start.min(text.len()));
    let end = text.ceil_char_boundary(range.end.min(text.len()));
    match (text.get(..start), text.get(start..end), text.get(end..)) {
        (Some(before), Some(cited), Some(after)) if start < end => (before, Some(cited), after),
        _ => (text, None, ""),
    }
}

fn hidden_fields(fields: &[(String, String)]) -> Markup {
    html! {
        @for (name, value) in fields { input type="hidden" name=(name) value=(value); }
    }
}

/// A FHIR dateTime with a space for the "T" ("2024-03-01 09:30:00Z"): the same value, but it
/// wraps between date and time in a narrow column and reads as a time to a clinician.
fn readable_date(date: &str) -> String {
    match (date.get(..10), date.get(10..11), date.get(11..)) {
        (Some(day), Some("T"), Some(time)) => format!("{day} {time}"),
        _ => date.to_owned(),
    }
}

fn or_not_recorded(value: Option<&str>) -> Markup {
    html! {
        @match value {
            Some(v) if !v.trim().is_empty() => (v),
            _ => { span aria-hidden="true" { "—" } span.visually-hidden { "not recorded" } },
        }
    }
}

/// A fragment id unique per group whatever the resource type holds.
fn group_id(index: usize, group: &ResourceGroup) -> String {
    let kind: String = group
        .resource_type
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("group-{index}-{kind}")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What a requested SMART scope lets the app do, in words (v1 `read`/`write`/`*` and v2
/// `cruds`).
fn scope_description(scope: &str) -> String {
    let fixed = match scope {
        "openid" => Some("confirm who you are"),
        "fhirUser" | "profile" => Some("see your user record (name and role)"),
        "launch" => Some("open with the EHR's current patient and encounter"),
        "launch/patient" => Some("ask for a patient when opened outside a chart"),
        "launch/encounter" => Some("ask for an encounter when opened outside a chart"),
        "offline_access" => Some("keep access after you close it"),
        "online_access" => Some("keep access while you stay signed in"),
        _ => None,
    };
    if let Some(text) = fixed {
        return text.to_owned();
    }
    let (resource_part, query) = match scope.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (scope, None),
    };
    let Some((context, rest)) = resource_part.split_once('/') else {
        return "access defined by the EHR".to_owned();
    };
    let Some((kind, permissions)) = rest.rsplit_once('.') else {
        return "access defined by the EHR".to_owned();
    };
    let verbs: Vec<&str> = match permissions {
        "read" => vec!["read"],
        "write" => vec!["create, change and delete"],
        "*" => vec!["read and change"],
        letters => letters
            .chars()
            .filter_map(|c| match c {
                'c' => Some("create"),
                'r' => Some("read"),
                'u' => Some("update"),
                'd' => Some("delete"),
                's' => Some("search"),
                _ => None,
            })
            .collect(),
    };
    let whose = match context {
        "patient" => "this patient's",
        "user" => "your",
        "system" => "all",
        _ => "some",
    };
    let what = if kind == "*" {
        "records of every type".to_owned()
    } else {
        format!("{kind} records")
    };
    let verbs = if verbs.is_empty() {
        "use".to_owned()
    } else {
        verbs.join(", ")
    };
    match query {
        Some(q) => format!("{verbs} {whose} {what} (only where {q})"),
        None => format!("{verbs} {whose} {what}"),
    }
}

/// Hrefs and form actions are ours (local paths) or the EHR's (http/https); anything else
/// (`javascript:`, `data:`, protocol-relative `//host`) becomes "#".
fn safe_url(url: &str) -> &str {
    let local = url
        .strip_prefix('/')
        .is_some_and(|rest| !rest.starts_with(['/', '\\']));
    let web = url.starts_with("https://") || url.starts_with("http://");
    let fragment = url.starts_with('#');
    if (local || web || fragment) && !url.chars().any(|c| c.is_control() || c == ' ') {
        url
    } else {
        "#"
    }
}

/// A local id as one URL path segment.
fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A non-blank string member, trimmed.
fn text_at(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `#rgb`, `#rrggbb` or `rgb(r, g, b)` (0–255), normalised to `#rrggbb`.
fn css_color(input: &str) -> Option<String> {
    let s = input.trim();
    let (r, g, b) = if let Some(hex) = s.strip_prefix('#') {
        match hex.len() {
            3 | 6 => parse_hex(s)?,
            _ => return None,
        }
    } else {
        let lower = s.to_ascii_lowercase();
        let inner = lower.strip_prefix("rgb(")?.strip_suffix(')')?;
        let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
        let [r, g, b] = parts.as_slice() else {
            return None;
        };
        let channel = |p: &str| {
            (!p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()))
                .then(|| p.parse::<u8>().ok())
                .flatten()
        };
        (channel(r)?, channel(g)?, channel(b)?)
    };
    Some(format!("#{r:02x}{g:02x}{b:02x}"))
}

/// `#rgb` / `#rrggbb` to its channels.
fn parse_hex(color: &str) -> Option<(u8, u8, u8)> {
    let hex = color.strip_prefix('#')?;
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let digit = |i: usize| u8::from_str_radix(hex.get(i..=i)?, 16).ok();
    match hex.len() {
        3 => Some((digit(0)? * 17, digit(1)? * 17, digit(2)? * 17)),
        6 => Some((
            digit(0)? * 16 + digit(1)?,
            digit(2)? * 16 + digit(3)?,
            digit(4)? * 16 + digit(5)?,
        )),
        _ => None,
    }
}

/// WCAG contrast ratio of two colours.
fn contrast(a: (u8, u8, u8), b: (u8, u8, u8)) -> f64 {
    fn luminance((r, g, b): (u8, u8, u8)) -> f64 {
        let channel = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.039_28 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
    }
    let (la, lb) = (luminance(a), luminance(b));
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

/// A font-family list of plain or single-quoted names (`"` is accepted and turned into
/// `'`), from `[A-Za-z0-9 ,'"-]` only, each quote balanced.
fn css_font_family(input: &str) -> Option<String> {
    let s = input.trim();
    if s.is_empty()
        || s.len() > 200
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | ',' | '\'' | '"' | '-'))
    {
        return None;
    }
    let s = s.replace('"', "'");
    let mut families = Vec::new();
    for family in s.split(',').map(str::trim) {
        let quotes = family.matches('\'').count();
        let well_formed = match quotes {
            0 => !family.is_empty(),
            2 => {
                family.len() > 2
                    && family.starts_with('\'')
                    && family.ends_with('\'')
                    && !family[1..family.len() - 1].trim().is_empty()
            }
            _ => false,
        };
        if !well_formed {
            return None;
        }
        families.push(family);
    }
    Some(families.join(", "))
}

#[derive(Clone, Copy)]
enum Length {
    FontSize,
    Radius,
}

/// A number and a unit within a range that keeps the page readable: font sizes 10–32px
/// (or the rem/em/pt/% equivalents), radii 0–32px.
fn css_length(input: &str, kind: Length) -> Option<String> {
    let s = input.trim().to_ascii_lowercase();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let digits_ok = !number.is_empty()
        && number.len() <= 6
        && number.matches('.').count() <= 1
        && !number.starts_with('.')
        && !number.ends_with('.');
    if !digits_ok {
        return None;
    }
    let n: f64 = number.parse().ok()?;
    let range = match (kind, unit) {
        (Length::FontSize, "px") => 10.0..=32.0,
        (Length::FontSize, "rem" | "em") => 0.625..=2.0,
        (Length::FontSize, "pt") => 7.5..=24.0,
        (Length::FontSize, "%") => 62.5..=200.0,
        (Length::Radius, "px") => 0.0..=32.0,
        (Length::Radius, "rem" | "em") => 0.0..=2.0,
        (Length::Radius, "") if n == 0.0 => 0.0..=0.0,
        _ => return None,
    };
    range.contains(&n).then(|| format!("{number}{unit}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn banner() -> PatientBanner {
        PatientBanner {
            name: "Ana López".to_owned(),
            birth_date: Some("1970-01-02".to_owned()),
            gender: Some("Female".to_owned()),
            identifiers: vec![("MRN".to_owned(), "123".to_owned())],
        }
    }

    fn session(banner: &PatientBanner) -> SessionChrome<'_> {
        SessionChrome {
            patient_id: "p1",
            banner: Some(banner),
            user_display: Some("Dr. <b>Who</b>"),
            inactivity_secs: 900,
            csrf: "csrf-token",
            ehr_name: "Epic (https://fhir.example.org/api/FHIR/R4)",
        }
    }

    fn chrome<'a>(style: Option<&'a SmartStyle>, session: Option<SessionChrome<'a>>) -> Chrome<'a> {
        Chrome {
            title: "Summary",
            nonce: "n0nce",
            style,
            session,
        }
    }

    fn summary(groups: Vec<ResourceGroup>, outcome: SyncOutcome) -> SummaryView {
        SummaryView {
            groups,
            sync: SyncStatus {
                outcome,
                ehr: "Epic".to_owned(),
                finished_at: "2024-03-01 09:30".to_owned(),
                fetched: 3,
                stored: 2,
                unchanged: 1,
                problems: vec!["Immunization: the EHR refused access (403)".to_owned()],
            },
            clinical: Some(ClinicalView {
                engine: "extractive".to_owned(),
                notice: None,
                sections: vec![CitedSection {
                    title: "Labs".to_owned(),
                    statements: vec![CitedStatement {
                        text: "Hemoglobin A1c <script>7.2</script> %".to_owned(),
                        flagged: None,
                        citations: vec![(
                            "1".to_owned(),
                            "/app/patient/p/source/Observation/o".to_owned(),
                        )],
                    }],
                    empty_text: None,
                }],
            }),
        }
    }

    fn hostile_group() -> ResourceGroup {
        ResourceGroup {
            resource_type: "Condition".to_owned(),
            heading: "Conditions".to_owned(),
            items: vec![ResourceItem {
                label: "<script>alert(1)</script>".to_owned(),
                date: Some("2024-01-01".to_owned()),
                status: None,
                source_href: "/app/patient/p1/source/Condition/c1".to_owned(),
            }],
        }
    }

    /// Every page the module renders, with hostile text where text is free.
    fn all_pages() -> Vec<String> {
        let banner = banner();
        let style = SmartStyle::from_json(
            &json!({"color_background": "#fafafa", "font_family_body": "Georgia, \"Times New Roman\", serif"}),
        );
        let c = chrome(Some(&style), Some(session(&banner)));
        let bare = chrome(Some(&style), None);
        let resource = json!({"resourceType": "Condition", "id": "c1",
            "code": {"text": "<script>alert(1)</script>"}});
        let fields = vec![("scope".to_owned(), "\" onfocus=\"alert(1)".to_owned())];
        let choices = vec![DemoChoice {
            id: "p1".to_owned(),
            label: "<i>Ana</i>".to_owned(),
        }];
        vec![
            summary_page(&c, &summary(vec![hostile_group()], SyncOutcome::Partial)),
            summary_page(&c, &summary(vec![], SyncOutcome::Complete)),
            source_page(
                &c,
                &SourceView {
                    resource_type: "Condition",
                    id: "c1",
                    version: 2,
                    last_updated: "2024-03-01T09:30:00Z",
                    resource: &resource,
                    source: Some("https://ehr.example/<x>"),
                    note: Some(NoteView {
                        title: "Progress note".to_owned(),
                        text: "Café au lait <b>spots</b>".to_owned(),
                        highlight: Some(4..8),
                    }),
                    back_href: "/app/patient/p1".to_owned(),
                },
            ),
            prior_auth_page(&c, &PriorAuthList::default()),
            error_page(
                &bare,
                &ErrorView {
                    status: 502,
                    heading: "The EHR did not answer",
                    message: "Try again in a minute.",
                    action: Some(("Try again", "javascript:alert(1)")),
                },
            ),
            ended_page(&c, "Signed out", "You have signed out."),
            authorize_post_page(&bare, "https://ehr.example/authorize", &fields),
            demo_chart_page(&bare, "/demo/launch", &choices, &choices),
            demo_authorize_page(
                &bare,
                "/demo/authorize",
                "<b>Hearth</b>",
                &["patient/Observation.rs".to_owned()],
                &fields,
            ),
        ]
    }

    /// Attribute names of every tag, read the way a browser tokenises them (quoted values
    /// skipped, so text inside a value cannot look like an attribute).
    fn attributes(html: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut rest = html;
        while let Some(open) = rest.find('<') {
            rest = &rest[open + 1..];
            let end = rest.find('>').unwrap_or(rest.len());
            let tag = &rest[..end];
            rest = &rest[end..];
            let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
            let element = tag[..name_end].to_ascii_lowercase();
            let mut attrs = &tag[name_end..];
            loop {
                attrs = attrs.trim_start();
                if attrs.is_empty() {
                    break;
                }
                let n = attrs
                    .find(|c: char| c == '=' || c.is_whitespace())
                    .unwrap_or(attrs.len());
                found.push((element.clone(), attrs[..n].to_ascii_lowercase()));
                attrs = &attrs[n..];
                if let Some(value) = attrs.strip_prefix("=\"") {
                    let close = value.find('"').unwrap_or(value.len());
                    attrs = value.get(close + 1..).unwrap_or("");
                }
            }
        }
        found
    }

    #[test]
    fn no_inline_script_handlers_or_style_attributes() {
        for html in all_pages() {
            for (element, attribute) in attributes(&html) {
                assert!(attribute != "style", "style= on <{element}> in {html}");
                assert!(
                    !attribute.starts_with("on"),
                    "{attribute}= on <{element}> in {html}"
                );
                if element == "script" {
                    assert!(matches!(attribute.as_str(), "src" | "defer"), "{html}");
                }
                if element == "style" {
                    assert_eq!(attribute, "nonce", "{html}");
                }
            }
            assert_eq!(html.matches("<script").count(), 1, "{html}");
            assert!(!html.contains("<script>"), "{html}");
            assert!(!html.contains("<b>") && !html.contains("<i>"), "{html}");
            assert!(!html.contains("javascript:"), "{html}");
            assert!(html.starts_with("<!DOCTYPE html><html lang=\"en\">"));
            assert!(html.contains("href=\"#main\"") && html.contains("<main id=\"main\""));
        }
    }

    #[test]
    fn labels_and_json_are_escaped() {
        let pages = all_pages();
        assert!(pages[0].contains("&lt;script&gt;alert(1)&lt;/script&gt;</a>"));
        assert!(pages[0].contains("class=\"citation\""));
        // The raw JSON block escapes the quotes and angle brackets of the resource.
        assert!(pages[2].contains("&quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;"));
        assert!(pages[2].contains("<summary>FHIR JSON</summary>"));
        // Hidden field values cannot break out of their attribute.
        assert!(pages[6].contains("value=\"&quot; onfocus=&quot;alert(1)\""));
    }

    #[test]
    fn nav_marks_the_current_page() {
        let banner = banner();
        let c = chrome(None, Some(session(&banner)));
        let summary = summary_page(&c, &summary(vec![], SyncOutcome::Complete));
        assert!(summary.contains(r#"<a href="/app/patient/p1" aria-current="page">Summary</a>"#));
        assert!(summary.contains(r#"<a href="/app/patient/p1/prior-auth">Prior"#));
        let prior = prior_auth_page(&c, &PriorAuthList::default());
        assert!(prior.contains(r#"<a href="/app/patient/p1">Summary</a>"#));
        assert!(prior.contains(r#"<a href="/app/patient/p1/prior-auth" aria-current="page">"#));
        assert!(prior.contains(r#"data-inactivity-secs="900""#));
        assert!(prior.contains(r#"<meta name="hearth-csrf" content="csrf-token">"#));
        assert!(prior.contains("Dr. &lt;b&gt;Who&lt;/b&gt;"));
        // Ids become one path segment.
        let odd = SessionChrome {
            patient_id: "a/b?c",
            ..session(&banner)
        };
        assert!(
            prior_auth_page(&chrome(None, Some(odd)), &PriorAuthList::default())
                .contains("/app/patient/a%2Fb%3Fc\"")
        );
    }

    #[test]
    fn empty_summary_says_so_only_when_the_sync_ran() {
        let banner = banner();
        let c = chrome(None, Some(session(&banner)));
        let empty_group = ResourceGroup {
            items: vec![],
            ..hostile_group()
        };
        let complete = summary_page(&c, &summary(vec![empty_group], SyncOutcome::Complete));
        assert!(complete.contains("No records were found in the EHR for this patient."));
        let failed = summary_page(&c, &summary(vec![], SyncOutcome::Failed));
        assert!(!failed.contains("No records were found"));
        assert!(failed.contains("the sync with the EHR failed"));
        assert!(failed.contains("Immunization: the EHR refused access (403)"));
    }

    #[test]
    fn highlight_is_clamped_to_characters_and_the_text() {
        let text = "Café é";
        // 'é' spans bytes 3..5; a range starting inside it widens to the whole character.
        assert_eq!(
            split_highlight(text, Some(&(4..5))),
            ("Caf", Some("é"), " é")
        );
        assert_eq!(
            split_highlight(text, Some(&(6..100))),
            ("Café ", Some("é"), "")
        );
        assert_eq!(split_highlight(text, Some(&(100..200))), (text, None, ""));
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 5..2;
        assert_eq!(split_highlight(text, Some(&reversed)), (text, None, ""));
        assert_eq!(split_highlight(text, Some(&(2..2))), (text, None, ""));
        assert_eq!(split_highlight(text, None), (text, None, ""));
        // In the page: the cited passage is marked, the note text still escaped.
        let pages = all_pages();
        assert!(
            pages[2].contains(r#"Caf<mark id="cited">é au</mark> lait &lt;b&gt;spots"#),
            "{}",
            pages[2]
        );
        assert!(pages[2].contains(r##"<a href="#cited">"##));
    }

    #[test]
    fn smart_style_rejects_injection() {
        let style = SmartStyle::from_json(&json!({
            "color_background": "red;}</style><script>alert(1)</script>",
            "color_text": "url(https://evil.example/x)",
            "color_highlight": "rgb(255, 0, 0)",
            "color_border": "#ABC",
            "font_family_body": "x</style><script>",
            "font_family_heading": "Georgia, \"Times New Roman\", serif",
            "dim_border_radius": "expression(alert(1))",
            "dim_font_size": "14px",
        }));
        assert_eq!(
            style,
            SmartStyle {
                color_highlight: Some("#ff0000".to_owned()),
                color_border: Some("#aabbcc".to_owned()),
                font_family_heading: Some("Georgia, 'Times New Roman', serif".to_owned()),
                dim_font_size: Some("14px".to_owned()),
                ..SmartStyle::default()
            }
        );
        for bad in [
            "#12",
            "#gggggg",
            "rgb(256,0,0)",
            "rgb(1,2)",
            "blue",
            "#fff;x",
        ] {
            assert_eq!(css_color(bad), None, "{bad}");
        }
        for bad in ["'Arial", "Arial;", "a{b}", "'', x", "x,,y", "Arial\\"] {
            assert_eq!(css_font_family(bad), None, "{bad}");
        }
        for bad in ["1px;", "2px", "1e3px", ".5rem", "100px", "12"] {
            assert_eq!(css_length(bad, Length::FontSize), None, "{bad}");
        }
        let css = style.css_variables();
        assert_eq!(
            css,
            ":root{--hearth-highlight:#ff0000;--hearth-border:#aabbcc;\
             --hearth-heading-font:Georgia, 'Times New Roman', serif;--hearth-font-size:14px;}"
        );
        // Rendered in the nonce'd block unchanged (nothing in it needs escaping).
        let page = error_page(
            &chrome(Some(&style), None),
            &ErrorView {
                status: 404,
                heading: "Not found",
                message: "No such page.",
                action: None,
            },
        );
        assert!(page.contains(&format!("<style nonce=\"n0nce\">{css}</style>")));
    }

    #[test]
    fn smart_style_drops_colours_without_contrast() {
        let low =
            SmartStyle::from_json(&json!({"color_background": "#777777", "color_text": "#888888"}));
        assert_eq!((low.color_background, low.color_text), (None, None));
        let dark =
            SmartStyle::from_json(&json!({"color_background": "#101010", "color_text": "#f0f0f0"}));
        assert_eq!(dark.color_background.as_deref(), Some("#101010"));
        assert!(dark.css_variables().contains("--hearth-link:#f0f0f0;"));
        // A dark background alone would leave the default dark text unreadable.
        let alone = SmartStyle::from_json(&json!({"color_background": "#101010"}));
        assert_eq!(alone.color_background, None);
        assert_eq!(alone.css_variables(), "");
    }

    #[test]
    fn error_page_shows_the_message_only() {
        let html = error_page(
            &chrome(None, None),
            &ErrorView {
                status: 500,
                heading: "Something went wrong",
                message: "Hearth could not load this record. Try again.",
                action: Some(("Back to summary", "/app/patient/p1")),
            },
        );
        assert!(html.contains("Hearth could not load this record. Try again."));
        assert!(html.contains(r#"<a class="button" href="/app/patient/p1">Back to summary</a>"#));
        for debug in [
            "panicked",
            "Error {",
            "src/",
            "RUST_BACKTRACE",
            "hearth-csrf",
        ] {
            assert!(!html.contains(debug), "{debug}");
        }
    }

    #[test]
    fn ended_page_has_no_patient_data() {
        let banner = banner();
        let html = ended_page(
            &chrome(None, Some(session(&banner))),
            "Signed out",
            "You have signed out of Hearth.",
        );
        assert!(html.contains("You have signed out of Hearth."));
        for leak in [
            "Ana López",
            "1970-01-02",
            "csrf-token",
            "/app/patient",
            "data-inactivity",
        ] {
            assert!(!html.contains(leak), "{leak}");
        }
    }

    #[test]
    fn banner_from_patient() {
        let patient = json!({"resourceType": "Patient",
        "name": [{"use": "official", "given": ["Ana"], "family": "López"}],
        "birthDate": "1970-01-02", "gender": "female",
        "identifier": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "value": "123"},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-99-9999"},
            {"type": {"text": "EPI"}, "value": "E1"},
            {"value": "x9"},
            {"use": "old", "value": "gone"}
        ]});
        assert_eq!(
            PatientBanner::from_patient(&patient),
            PatientBanner {
                name: "Ana López".to_owned(),
                birth_date: Some("1970-01-02".to_owned()),
                gender: Some("Female".to_owned()),
                identifiers: vec![
                    ("MRN".to_owned(), "123".to_owned()),
                    ("EPI".to_owned(), "E1".to_owned()),
                    ("ID".to_owned(), "x9".to_owned()),
                ],
            }
        );
        assert_eq!(
            PatientBanner::from_patient(&json!({})).name,
            "Name not recorded"
        );
    }

    #[test]
    fn dates_wrap_between_day_and_time() {
        assert_eq!(
            readable_date("2024-03-01T09:30:00Z"),
            "2024-03-01 09:30:00Z"
        );
        assert_eq!(readable_date("2024-03"), "2024-03");
        assert_eq!(readable_date("2024-03-01é"), "2024-03-01é");
    }

    #[test]
    fn scopes_in_words() {
        assert_eq!(
            scope_description("patient/Observation.rs"),
            "read, search this patient's Observation records"
        );
        assert_eq!(
            scope_description("user/*.read"),
            "read your records of every type"
        );
        assert_eq!(
            scope_description("patient/Condition.rs?category=problem-list-item"),
            "read, search this patient's Condition records (only where category=problem-list-item)"
        );
    }
}
