//! The MITRE ATT&CK techniques kextwatch's rules name: one table, from which every alert's
//! `threat.*` fields (ECS) and the CEF and syslog technique lists are written.

use serde::Serialize;

#[derive(Debug, PartialEq, Eq)]
pub struct Tactic {
    pub id: &'static str,
    pub name: &'static str,
}

/// A technique or sub-technique (`parent` set).
#[derive(Debug, PartialEq, Eq)]
pub struct Technique {
    pub id: &'static str,
    pub name: &'static str,
    pub parent: Option<&'static Technique>,
    pub tactics: &'static [&'static Tactic],
}

pub const PERSISTENCE: Tactic = Tactic {
    id: "TA0003",
    name: "Persistence",
};
pub const PRIVILEGE_ESCALATION: Tactic = Tactic {
    id: "TA0004",
    name: "Privilege Escalation",
};
pub const DEFENSE_EVASION: Tactic = Tactic {
    id: "TA0005",
    name: "Defense Evasion",
};
pub const DISCOVERY: Tactic = Tactic {
    id: "TA0007",
    name: "Discovery",
};

pub const BOOT_AUTOSTART: Technique = Technique {
    id: "T1547",
    name: "Boot or Logon Autostart Execution",
    parent: None,
    tactics: &[&PERSISTENCE, &PRIVILEGE_ESCALATION],
};
pub const KERNEL_MODULES: Technique = Technique {
    id: "T1547.006",
    name: "Kernel Modules and Extensions",
    parent: Some(&BOOT_AUTOSTART),
    tactics: &[&PERSISTENCE, &PRIVILEGE_ESCALATION],
};
pub const IMPAIR_DEFENSES: Technique = Technique {
    id: "T1562",
    name: "Impair Defenses",
    parent: None,
    tactics: &[&DEFENSE_EVASION],
};
pub const DISABLE_TOOLS: Technique = Technique {
    id: "T1562.001",
    name: "Disable or Modify Tools",
    parent: Some(&IMPAIR_DEFENSES),
    tactics: &[&DEFENSE_EVASION],
};
pub const SUBVERT_TRUST: Technique = Technique {
    id: "T1553",
    name: "Subvert Trust Controls",
    parent: None,
    tactics: &[&DEFENSE_EVASION],
};
pub const GATEKEEPER_BYPASS: Technique = Technique {
    id: "T1553.001",
    name: "Gatekeeper Bypass",
    parent: Some(&SUBVERT_TRUST),
    tactics: &[&DEFENSE_EVASION],
};
pub const CODE_SIGNING_POLICY: Technique = Technique {
    id: "T1553.006",
    name: "Code Signing Policy Modification",
    parent: Some(&SUBVERT_TRUST),
    tactics: &[&DEFENSE_EVASION],
};
pub const SYSTEM_INFORMATION_DISCOVERY: Technique = Technique {
    id: "T1082",
    name: "System Information Discovery",
    parent: None,
    tactics: &[&DISCOVERY],
};

impl Technique {
    /// The technique's page on attack.mitre.org (`T1547.006` is `techniques/T1547/006/`).
    pub fn reference(&self) -> String {
        format!(
            "https://attack.mitre.org/techniques/{}/",
            self.id.replace('.', "/")
        )
    }
}

impl Tactic {
    pub fn reference(&self) -> String {
        format!("https://attack.mitre.org/tactics/{}/", self.id)
    }
}

/// The techniques behind one alert, most specific first as the rule lists them. Serialised as
/// ECS `threat.*`: `threat.technique.*` holds the techniques (a sub-technique's parent in its
/// place), `threat.technique.subtechnique.*` the sub-techniques, `threat.tactic.*` their tactics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Threat {
    pub techniques: Vec<&'static Technique>,
}

impl Threat {
    /// The most specific ids (`T1547.006`, `T1082`): what CEF and syslog structured data carry.
    pub fn ids(&self) -> Vec<&'static str> {
        self.techniques.iter().map(|t| t.id).collect()
    }

    /// Add a technique unless it is already there.
    pub fn add(&mut self, t: &'static Technique) {
        if !self.techniques.contains(&t) {
            self.techniques.push(t);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.techniques.is_empty()
    }
}

/// ECS's parallel arrays: entry i of `id`, `name` and `reference` describe one item.
#[derive(Serialize, Default)]
struct Items {
    id: Vec<&'static str>,
    name: Vec<&'static str>,
    reference: Vec<String>,
}

impl Items {
    fn push(&mut self, id: &'static str, name: &'static str, reference: String) {
        if !self.id.contains(&id) {
            self.id.push(id);
            self.name.push(name);
            self.reference.push(reference);
        }
    }
}

#[derive(Serialize)]
struct EcsTechnique {
    #[serde(flatten)]
    items: Items,
    #[serde(skip_serializing_if = "Option::is_none")]
    subtechnique: Option<Items>,
}

#[derive(Serialize)]
struct EcsThreat {
    framework: &'static str,
    tactic: Items,
    technique: EcsTechnique,
}

impl Serialize for Threat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut tactic = Items::default();
        let mut technique = Items::default();
        let mut sub = Items::default();
        for t in &self.techniques {
            let top = match t.parent {
                Some(parent) => {
                    sub.push(t.id, t.name, t.reference());
                    parent
                }
                None => t,
            };
            technique.push(top.id, top.name, top.reference());
            for a in t.tactics {
                tactic.push(a.id, a.name, a.reference());
            }
        }
        EcsThreat {
            framework: "MITRE ATT&CK",
            tactic,
            technique: EcsTechnique {
                items: technique,
                subtechnique: (!sub.id.is_empty()).then_some(sub),
            },
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_techniques_go_under_their_parent_and_tactics_are_listed_once() {
        let mut threat = Threat::default();
        threat.add(&KERNEL_MODULES);
        threat.add(&DISABLE_TOOLS);
        threat.add(&CODE_SIGNING_POLICY);
        threat.add(&KERNEL_MODULES);
        threat.add(&SYSTEM_INFORMATION_DISCOVERY);
        assert_eq!(
            threat.ids(),
            ["T1547.006", "T1562.001", "T1553.006", "T1082"]
        );
        let v = serde_json::to_value(&threat).unwrap();
        assert_eq!(v["framework"], "MITRE ATT&CK");
        assert_eq!(
            v["technique"]["id"],
            serde_json::json!(["T1547", "T1562", "T1553", "T1082"])
        );
        assert_eq!(
            v["technique"]["subtechnique"]["id"],
            serde_json::json!(["T1547.006", "T1562.001", "T1553.006"])
        );
        assert_eq!(
            v["technique"]["subtechnique"]["reference"][0],
            "https://attack.mitre.org/techniques/T1547/006/"
        );
        assert_eq!(
            v["technique"]["name"][0],
            "Boot or Logon Autostart Execution"
        );
        assert_eq!(
            v["tactic"]["id"],
            serde_json::json!(["TA0003", "TA0004", "TA0005", "TA0007"])
        );
        assert_eq!(
            v["tactic"]["reference"][2],
            "https://attack.mitre.org/tactics/TA0005/"
        );
    }

    #[test]
    fn a_technique_without_sub_techniques_has_no_subtechnique_object() {
        let mut threat = Threat::default();
        threat.add(&SYSTEM_INFORMATION_DISCOVERY);
        let v = serde_json::to_value(&threat).unwrap();
        assert_eq!(v["technique"]["id"], serde_json::json!(["T1082"]));
        assert!(v["technique"].get("subtechnique").is_none());
        assert_eq!(
            v["technique"]["reference"][0],
            "https://attack.mitre.org/techniques/T1082/"
        );
    }
}
