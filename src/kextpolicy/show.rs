//! `kextwatch policy show`: the tables as aligned text.

use std::fmt::Write as _;

use super::Snapshot;
use crate::text::escape_controls;

fn table(out: &mut String, title: &str, header: &[&str], rows: Vec<Vec<String>>) {
    let _ = writeln!(out, "{title} ({} rows)", rows.len());
    out.push_str(&crate::text::table(header, &rows, 2, 1));
    out.push('\n');
}

fn cell<T: ToString>(v: &Option<T>) -> String {
    crate::text::cell(v.as_ref().map(ToString::to_string).as_deref())
}

/// The three tables, readable in a terminal. Values come from the database and are escaped.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    table(
        &mut out,
        "kext_policy: user approvals",
        &["team_id", "bundle_id", "allowed", "developer_name", "flags"],
        s.approvals
            .values()
            .map(|a| {
                vec![
                    cell(&a.team_id),
                    cell(&a.bundle_id),
                    yes_no(a.allowed),
                    cell(&a.developer_name),
                    cell(&a.flags),
                ]
            })
            .collect(),
    );
    table(
        &mut out,
        "kext_policy_mdm: MDM approvals",
        &["team_id", "bundle_id", "allowed", "payload_uuid"],
        s.mdm
            .values()
            .map(|a| {
                vec![
                    cell(&a.team_id),
                    cell(&a.bundle_id),
                    yes_no(a.allowed),
                    cell(&a.payload_uuid),
                ]
            })
            .collect(),
    );
    table(
        &mut out,
        "kext_load_history_v3: loaded kexts",
        &[
            "path",
            "team_id",
            "bundle_id",
            "last_seen",
            "created_at",
            "cdhash",
        ],
        s.history
            .values()
            .map(|r| {
                vec![
                    escape_controls(&r.path).into_owned(),
                    cell(&r.team_id),
                    cell(&r.bundle_id),
                    cell(&r.last_seen),
                    cell(&r.created_at),
                    cell(&r.cdhash),
                ]
            })
            .collect(),
    );
    if s.skipped_rows > 0 {
        let _ = writeln!(
            out,
            "{} rows skipped: unexpected value types",
            s.skipped_rows
        );
    }
    for w in &s.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_rows_and_warnings_are_reported_only_when_there_are_some() {
        let mut s = Snapshot::default();
        let clean = render(&s);
        assert!(
            clean.starts_with("kext_policy: user approvals (0 rows)"),
            "{clean}"
        );
        assert!(
            !clean.contains("skipped") && !clean.contains("warning"),
            "{clean}"
        );

        s.skipped_rows = 1;
        s.warnings.push("table kext_policy_mdm missing".into());
        let out = render(&s);
        assert!(
            out.contains("\n1 rows skipped: unexpected value types\n"),
            "{out}"
        );
        assert!(
            out.ends_with("warning: table kext_policy_mdm missing\n"),
            "{out}"
        );
    }
}
