//! Rules for KextPolicy changes: approvals, MDM approvals, the load history, and the database itself.

use super::rules::{
    Activity, Finding, RuleDef, APPROVAL_MODIFIED, APPROVAL_WITHDRAWN, DATABASE_UNAVAILABLE,
    HISTORY_LOAD, IDENTITY_CHANGED, MDM_APPROVAL, USER_APPROVAL,
};
use crate::alert::{FileInfo, KextInfo, Severity};
use crate::config::{Config, KextTrust};
use crate::kextpolicy::{Approval, LoadRecord, MdmApproval, PolicyChange};

fn or_none(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("(none)")
}

fn team_trust(config: &Config, team: Option<&str>, bundle: Option<&str>) -> KextTrust {
    match team {
        None => KextTrust::NotAllowlisted,
        Some(t) => config.allowlist.kext_trust(Some(t), bundle.unwrap_or("")),
    }
}

fn kext_info(team: &Option<String>, bundle: &Option<String>) -> Option<KextInfo> {
    bundle.as_ref().map(|b| KextInfo {
        bundle_id: b.clone(),
        team_id: team.clone(),
    })
}

fn finding(rule: RuleDef, severity: Severity, subject: String) -> Finding {
    Finding::new(rule, severity, subject)
}

/// A finding about one team/bundle entry, with its first reason.
fn about(
    rule: RuleDef,
    severity: Severity,
    team: &Option<String>,
    bundle: &Option<String>,
    reason: String,
) -> Finding {
    let mut f = finding(rule, severity, subject(team, bundle));
    f.reasons.push(reason);
    f.kext = kext_info(team, bundle);
    f
}

/// The ECS `event.action` of a change.
pub fn action(c: &PolicyChange) -> &'static str {
    match c {
        PolicyChange::ApprovalAdded { .. } => "kextpolicy.approval_added",
        PolicyChange::ApprovalRemoved { .. } => "kextpolicy.approval_removed",
        PolicyChange::ApprovalChanged { .. } => "kextpolicy.approval_changed",
        PolicyChange::MdmApprovalAdded { .. } => "kextpolicy.mdm_approval_added",
        PolicyChange::MdmApprovalRemoved { .. } => "kextpolicy.mdm_approval_removed",
        PolicyChange::MdmApprovalChanged { .. } => "kextpolicy.mdm_approval_changed",
        PolicyChange::KextRecorded { .. } => "kextpolicy.kext_recorded",
        PolicyChange::KextLoaded { .. } => "kextpolicy.kext_loaded",
        PolicyChange::KextIdentityChanged { .. } => "kextpolicy.kext_identity_changed",
        PolicyChange::DatabaseVanished { .. } => "kextpolicy.database_vanished",
        PolicyChange::DatabaseUnreadable { .. } => "kextpolicy.database_unreadable",
    }
}

pub fn evaluate(config: &Config, change: &PolicyChange) -> Finding {
    match change {
        PolicyChange::ApprovalAdded { approval } => approval_granted(config, approval, None),
        PolicyChange::ApprovalChanged { old, new } if new.allowed && !old.allowed => {
            approval_granted(config, new, Some(old))
        }
        PolicyChange::ApprovalChanged { old, new } if old.allowed && !new.allowed => {
            withdrawn(new, "approval revoked (allowed changed to false)")
        }
        PolicyChange::ApprovalChanged { old, new } => about(
            APPROVAL_MODIFIED,
            Severity::Low,
            &new.team_id,
            &new.bundle_id,
            format!(
                "approval of {} (team {}) modified: flags {:?} -> {:?}, developer name {:?} -> {:?} (flag meanings are undocumented)",
                or_none(&new.bundle_id),
                or_none(&new.team_id),
                old.flags,
                new.flags,
                old.developer_name,
                new.developer_name
            ),
        ),
        PolicyChange::ApprovalRemoved { approval } => {
            withdrawn(approval, "approval removed from KextPolicy")
        }
        PolicyChange::MdmApprovalAdded { approval } => mdm(config, approval, "added"),
        PolicyChange::MdmApprovalChanged { new, .. } => mdm(config, new, "changed"),
        PolicyChange::MdmApprovalRemoved { approval } => about(
            MDM_APPROVAL,
            Severity::Low,
            &approval.team_id,
            &approval.bundle_id,
            format!(
                "MDM approval of {} (team {}, payload {}) removed",
                or_none(&approval.bundle_id),
                or_none(&approval.team_id),
                or_none(&approval.payload_uuid)
            ),
        ),
        PolicyChange::KextRecorded { record } => {
            load(config, record, "first load of this path recorded")
        }
        PolicyChange::KextLoaded {
            record,
            previous_last_seen,
        } => load(
            config,
            record,
            &format!(
                "loaded again (last_seen {} -> {})",
                or_none(previous_last_seen),
                or_none(&record.last_seen)
            ),
        ),
        PolicyChange::KextIdentityChanged { old, new } => identity_changed(config, old, new),
        PolicyChange::DatabaseVanished { path, emptied } => {
            let mut f = finding(DATABASE_UNAVAILABLE, Severity::High, path.clone());
            let what = if *emptied {
                "was emptied to 0 bytes"
            } else {
                "disappeared"
            };
            f.reasons.push(format!(
                "{path} {what}; it is owned by syspolicyd and SIP-protected, so this needs SIP off or a compromise"
            ));
            f
        }
        PolicyChange::DatabaseUnreadable { path, reason } => {
            let mut f = finding(DATABASE_UNAVAILABLE, Severity::Medium, path.clone());
            f.reasons.push(reason.clone());
            f
        }
    }
}

fn subject(team: &Option<String>, bundle: &Option<String>) -> String {
    format!("{}/{}", or_none(team), or_none(bundle))
}

fn approval_granted(config: &Config, a: &Approval, old: Option<&Approval>) -> Finding {
    let mut f = finding(
        USER_APPROVAL,
        Severity::Info,
        subject(&a.team_id, &a.bundle_id),
    );
    f.kext = kext_info(&a.team_id, &a.bundle_id);
    let what = format!(
        "{} approval of {} by {} (team {})",
        if old.is_some() {
            "changed to allowed:"
        } else {
            "new user"
        },
        or_none(&a.bundle_id),
        or_none(&a.developer_name),
        or_none(&a.team_id)
    );
    if !a.allowed {
        f.reasons.push(format!("{what} recorded as not allowed"));
        f.trusted = true;
        return f;
    }
    match team_trust(config, a.team_id.as_deref(), a.bundle_id.as_deref()) {
        KextTrust::Allowlisted => {
            f.trusted = true;
            f.reasons.push(format!("{what}; the team is allowlisted"));
        }
        _ => f.floor(
            Severity::High,
            format!("{what}; the team is not allowlisted"),
        ),
    }
    f.activity = Some(Activity::Approval);
    f
}

fn withdrawn(a: &Approval, why: &str) -> Finding {
    about(
        APPROVAL_WITHDRAWN,
        Severity::Low,
        &a.team_id,
        &a.bundle_id,
        format!(
            "{why}: {} (team {})",
            or_none(&a.bundle_id),
            or_none(&a.team_id)
        ),
    )
}

fn mdm(config: &Config, a: &MdmApproval, verb: &str) -> Finding {
    let mut f = finding(
        MDM_APPROVAL,
        Severity::Low,
        subject(&a.team_id, &a.bundle_id),
    );
    f.kext = kext_info(&a.team_id, &a.bundle_id);
    f.reasons.push(format!(
        "MDM approval of {} (team {}, allowed {}) {verb} by payload {}",
        or_none(&a.bundle_id),
        or_none(&a.team_id),
        a.allowed,
        or_none(&a.payload_uuid)
    ));
    if !a.allowed {
        f.trusted = true;
        f.severity = Severity::Info;
        return f;
    }
    let known = a.payload_uuid.as_deref().is_some_and(|p| {
        config
            .kextpolicy
            .known_mdm_payloads
            .iter()
            .any(|k| k.eq_ignore_ascii_case(p))
    });
    let team_ok =
        team_trust(config, a.team_id.as_deref(), a.bundle_id.as_deref()) == KextTrust::Allowlisted;
    if !known {
        f.raise(
            "the payload is not one of the known MDM payloads (kextpolicy.known_mdm_payloads)"
                .into(),
        );
    }
    if !team_ok {
        f.raise("the team is not allowlisted".into());
    }
    if known && team_ok {
        f.trusted = true;
        f.severity = Severity::Info;
    } else {
        f.activity = Some(Activity::Approval);
    }
    f
}

fn load(config: &Config, r: &LoadRecord, what: &str) -> Finding {
    let mut f = finding(HISTORY_LOAD, Severity::Info, r.path.clone());
    f.kext = kext_info(&r.team_id, &r.bundle_id);
    f.file = Some(FileInfo {
        path: r.path.clone(),
        source_path: None,
    });
    f.reasons.push(format!("{}: {what}", r.path));
    match (
        &r.team_id,
        team_trust(config, r.team_id.as_deref(), r.bundle_id.as_deref()),
    ) {
        (None, _) => f.floor(
            Severity::Critical,
            "KextPolicy recorded the load with no Team ID: the kext is unsigned".into(),
        ),
        (Some(_), KextTrust::Allowlisted) => f.trusted = true,
        (Some(t), _) => f.floor(Severity::High, format!("Team ID {t} is not allowlisted")),
    }
    if !f.trusted {
        f.activity = Some(Activity::Load {
            paths: vec![r.path.clone()],
            bundle_ids: r.bundle_id.iter().cloned().collect(),
        });
    }
    f
}

fn identity_changed(config: &Config, old: &LoadRecord, new: &LoadRecord) -> Finding {
    let mut f = finding(IDENTITY_CHANGED, Severity::Low, new.path.clone());
    f.kext = kext_info(&new.team_id, &new.bundle_id);
    f.file = Some(FileInfo {
        path: new.path.clone(),
        source_path: None,
    });
    if old.team_id != new.team_id {
        f.floor(
            Severity::High,
            format!(
                "{}: Team ID changed from {} to {}: a different developer's code now sits at this path",
                new.path,
                or_none(&old.team_id),
                or_none(&new.team_id)
            ),
        );
    } else {
        f.reasons.push(format!(
            "{}: cdhash changed from {} to {} (same team: an update, or a replaced binary)",
            new.path,
            or_none(&old.cdhash),
            or_none(&new.cdhash)
        ));
    }
    if team_trust(config, new.team_id.as_deref(), new.bundle_id.as_deref())
        != KextTrust::Allowlisted
    {
        f.raise(format!(
            "Team ID {} is not allowlisted",
            or_none(&new.team_id)
        ));
    }
    f
}
