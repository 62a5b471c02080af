//! Snapshot differences as policy-change events.

use std::collections::BTreeMap;

use super::{PolicyChange, Snapshot};

/// Changes from `old` to `new`, in a stable order: approvals, MDM approvals, then load history.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<PolicyChange> {
    let mut out = Vec::new();
    keyed(
        &old.approvals,
        &new.approvals,
        &mut out,
        |approval| PolicyChange::ApprovalAdded { approval },
        |approval| PolicyChange::ApprovalRemoved { approval },
        |old, new| PolicyChange::ApprovalChanged { old, new },
    );
    keyed(
        &old.mdm,
        &new.mdm,
        &mut out,
        |approval| PolicyChange::MdmApprovalAdded { approval },
        |approval| PolicyChange::MdmApprovalRemoved { approval },
        |old, new| PolicyChange::MdmApprovalChanged { old, new },
    );
    for (path, rec) in &new.history {
        match old.history.get(path) {
            None => out.push(PolicyChange::KextRecorded {
                record: rec.clone(),
            }),
            Some(prev)
                if prev.team_id != rec.team_id
                    || (prev.cdhash != rec.cdhash && rec.cdhash.is_some()) =>
            {
                out.push(PolicyChange::KextIdentityChanged {
                    old: prev.clone(),
                    new: rec.clone(),
                })
            }
            // Timestamps are fixed-width `YYYY-MM-DD HH:MM:SS`, so string order is time order.
            Some(prev) if rec.last_seen > prev.last_seen => out.push(PolicyChange::KextLoaded {
                record: rec.clone(),
                previous_last_seen: prev.last_seen.clone(),
            }),
            Some(_) => {}
        }
    }
    // History rows that vanish are pruning by syspolicyd, not a security event: not reported.
    out
}

fn keyed<K: Ord, V: Clone + PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    out: &mut Vec<PolicyChange>,
    added: impl Fn(V) -> PolicyChange,
    removed: impl Fn(V) -> PolicyChange,
    changed: impl Fn(V, V) -> PolicyChange,
) {
    for (k, v) in new {
        match old.get(k) {
            None => out.push(added(v.clone())),
            Some(o) if o != v => out.push(changed(o.clone(), v.clone())),
            Some(_) => {}
        }
    }
    for (k, v) in old {
        if !new.contains_key(k) {
            out.push(removed(v.clone()));
        }
    }
}
