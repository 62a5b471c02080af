//! The ECS field check: every field of a document kextwatch writes is an ECS field of the ECS type
//! (from `tests/fixtures/ecs/fields.tsv`, written from Elastic's field list) or lives under
//! `kextwatch.`; event categories and types take ECS's allowed values and agree with each other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

const TABLE: &str = include_str!("../../tests/fixtures/ecs/fields.tsv");

struct Field {
    ty: String,
    array: bool,
}

struct Table {
    fields: BTreeMap<String, Field>,
    allowed: BTreeMap<String, BTreeSet<String>>,
    expected_types: BTreeMap<String, BTreeSet<String>>,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = Table {
            fields: BTreeMap::new(),
            allowed: BTreeMap::new(),
            expected_types: BTreeMap::new(),
        };
        let set = |s: &str| s.split(',').map(str::to_string).collect::<BTreeSet<_>>();
        for line in TABLE.lines().filter(|l| !l.starts_with('#')) {
            let cols: Vec<&str> = line.split('\t').collect();
            match cols[..] {
                ["field", name, ty, array] => {
                    t.fields.insert(
                        name.into(),
                        Field {
                            ty: ty.into(),
                            array: array == "array",
                        },
                    );
                }
                ["allowed", name, values] => {
                    t.allowed.insert(name.into(), set(values));
                }
                ["expected", category, types] => {
                    t.expected_types.insert(category.into(), set(types));
                }
                _ => panic!("bad line in fields.tsv: {line:?}"),
            }
        }
        t
    })
}

/// Leaves of `v` as dotted paths; `kextwatch` (our namespace) is not descended into.
fn leaves<'a>(prefix: &str, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) if prefix != "kextwatch" => {
            for (k, child) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, child, out);
            }
        }
        _ => out.push((prefix.to_string(), v)),
    }
}

fn type_problem(ty: &str, v: &Value) -> Option<String> {
    let ok = match ty {
        "keyword" | "match_only_text" | "wildcard" => v.is_string(),
        "long" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "date" => v.as_str().is_some_and(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        }),
        other => return Some(format!("type {other} has no check")),
    };
    (!ok).then(|| format!("{v} is not a {ty}"))
}

/// Every way `doc` departs from ECS (empty: it conforms).
pub fn problems(doc: &Value) -> Vec<String> {
    let t = table();
    let mut out = Vec::new();
    if !doc.is_object() {
        return vec![format!("not an object: {doc}")];
    }
    let mut found = Vec::new();
    leaves("", doc, &mut found);
    for (path, v) in &found {
        if path == "kextwatch" {
            if !v.is_object() {
                out.push(format!("kextwatch: {v} is not an object"));
            }
            continue;
        }
        let Some(field) = t.fields.get(path) else {
            out.push(format!(
                "{path}: not an ECS field kextwatch uses (value {v})"
            ));
            continue;
        };
        let values: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            _ if field.array => {
                out.push(format!("{path}: ECS expects an array, got {v}"));
                vec![v]
            }
            _ => vec![v],
        };
        if v.is_array() && !field.array {
            out.push(format!("{path}: ECS expects one value, got {v}"));
        }
        for item in values {
            if let Some(p) = type_problem(&field.ty, item) {
                out.push(format!("{path}: {p}"));
            }
            if let (Some(allowed), Some(s)) = (t.allowed.get(path), item.as_str()) {
                if !allowed.contains(s) {
                    out.push(format!("{path}: {s:?} is not an allowed value"));
                }
            }
        }
    }
    out.extend(event_problems(doc, t));
    out.extend(threat_problems(doc));
    out
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Each event.type is one ECS expects with one of the event.category values; alerts carry a
/// numeric severity that matches their label.
fn event_problems(doc: &Value, t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    let event = &doc["event"];
    for field in ["kind", "category", "type", "action", "module", "dataset"] {
        if event.get(field).is_none() {
            out.push(format!("event.{field} missing"));
        }
    }
    let categories = strings(&event["category"]);
    for ty in strings(&event["type"]) {
        let expected = categories
            .iter()
            .any(|c| t.expected_types.get(*c).is_some_and(|e| e.contains(ty)));
        if !expected {
            out.push(format!(
                "event.type {ty:?} is not expected with event.category {categories:?}"
            ));
        }
    }
    for field in ["message", "ecs", "agent", "host"] {
        if doc.get(field).is_none() {
            out.push(format!("{field} missing"));
        }
    }
    if event["kind"] == "alert" {
        let label = doc["kextwatch"]["severity"].as_str().unwrap_or("");
        let number = match label {
            "info" => 1,
            "low" => 21,
            "medium" => 47,
            "high" => 73,
            "critical" => 99,
            other => {
                out.push(format!("kextwatch.severity {other:?} is not a label"));
                return out;
            }
        };
        if event["severity"] != number {
            out.push(format!(
                "event.severity {} does not match {label} ({number})",
                event["severity"]
            ));
        }
    }
    out
}

/// An ATT&CK id's form: `TA####` (tactic), `T####` (technique) or `T####.###` (sub-technique).
fn well_formed_id(id: &str, sub: bool, tactic: bool) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let rest = if tactic {
        id.strip_prefix("TA")
    } else {
        id.strip_prefix('T')
    };
    match (rest, sub) {
        (Some(r), true) => r
            .split_once('.')
            .is_some_and(|(a, b)| digits(a, 4) && digits(b, 3)),
        (Some(r), false) => digits(r, 4),
        (None, _) => false,
    }
}

/// One of `threat`'s parallel groups: ids of the right form, one name and reference per id.
fn threat_group<'a>(
    path: &str,
    v: &'a Value,
    sub: bool,
    tactic: bool,
    out: &mut Vec<String>,
) -> Vec<&'a str> {
    let ids = strings(&v["id"]);
    for id in &ids {
        if !well_formed_id(id, sub, tactic) {
            out.push(format!("{path}.id: {id:?} is not of the expected form"));
        }
    }
    for part in ["name", "reference"] {
        if strings(&v[part]).len() != ids.len() {
            out.push(format!("{path}.{part}: not one per id"));
        }
    }
    ids
}

/// ATT&CK ids in the right arrays: sub-techniques only under `subtechnique`, each under a listed
/// technique.
fn threat_problems(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(threat) = doc.get("threat") else {
        return out;
    };
    let techniques = threat_group(
        "threat.technique",
        &threat["technique"],
        false,
        false,
        &mut out,
    );
    threat_group("threat.tactic", &threat["tactic"], false, true, &mut out);
    if let Some(sub) = threat["technique"].get("subtechnique") {
        for id in threat_group("threat.technique.subtechnique", sub, true, false, &mut out) {
            let parent = id.split('.').next().unwrap_or("");
            if !techniques.contains(&parent) {
                out.push(format!("sub-technique {id} without its technique {parent}"));
            }
        }
    }
    if threat["framework"] != "MITRE ATT&CK" {
        out.push(format!("threat.framework {}", threat["framework"]));
    }
    out
}

/// Panic with every problem when `doc` departs from ECS.
pub fn assert_conforms(doc: &Value) {
    let p = problems(doc);
    assert!(p.is_empty(), "not ECS:\n  {}\nin {doc:#}", p.join("\n  "));
}
