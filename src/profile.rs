//! `kextwatch profile`: one signed-ready `.mobileconfig` that lets MDM deploy kextwatch silently —
//! system-extension policy (allowed, non-removable, Endpoint Security type), Full Disk Access through
//! TCC/PPPC with code requirements naming the Team ID, and managed background items by Team ID.
//!
//! Payload UUIDs are derived from the Team ID and bundle id (UUID v5), so the same inputs give the same
//! profile and an MDM update replaces the installed profile instead of adding a second one.

use plist::{Dictionary, Value};
use uuid::Uuid;

use crate::config::Config;
use crate::layout;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("--team-id {0:?} is not an Apple Team ID (10 upper-case letters or digits, as in the signing certificate)")]
    TeamId(String),
    #[error(
        "--bundle-id {0:?} is not a bundle identifier (reverse DNS: letters, digits, '.', '-')"
    )]
    BundleId(String),
    #[error("--config: {0}")]
    Config(String),
    #[error(
        "--organization {0:?} contains a control character, or one an XML profile cannot hold"
    )]
    Organization(String),
}

pub struct ProfileRequest<'a> {
    pub team_id: &'a str,
    pub bundle_id: &'a str,
    /// A config file's text, validated and delivered as managed preferences.
    pub config_toml: Option<&'a str>,
    pub organization: &'a str,
    /// Whether users may still approve system extensions the profile does not name (Apple's
    /// default, true; false leaves only MDM-allowed extensions, kextwatch's and any others).
    pub allow_user_overrides: bool,
}

/// XML 1.0 can hold these characters and no others (its `Char` production), escaped or not.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// The first character of `text` that XML cannot hold, with its line.
fn unwritable(text: &str) -> Option<(usize, char)> {
    text.lines()
        .enumerate()
        .find_map(|(i, l)| l.chars().find(|c| !xml_char(*c)).map(|c| (i + 1, c)))
}

fn uuid(team: &str, bundle: &str, part: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("urn:kextwatch:profile:{team}:{bundle}:{part}").as_bytes(),
    )
    .hyphenated()
    .to_string()
    .to_uppercase()
}

fn dict(entries: Vec<(&str, Value)>) -> Value {
    let mut d = Dictionary::new();
    for (k, v) in entries {
        d.insert(k.to_string(), v);
    }
    Value::Dictionary(d)
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// A designated requirement: Apple-issued Developer ID certificate whose OU is the Team ID.
fn code_requirement(identifier: &str, team: &str) -> String {
    format!(
        "identifier \"{identifier}\" and anchor apple generic and certificate 1[field.1.2.840.113635.100.6.2.6] /* exists */ and certificate leaf[field.1.2.840.113635.100.6.1.13] /* exists */ and certificate leaf[subject.OU] = \"{team}\""
    )
}

fn payload(
    team: &str,
    bundle: &str,
    kind: &str,
    name: &str,
    mut body: Vec<(&str, Value)>,
) -> Value {
    let mut entries = vec![
        ("PayloadDisplayName", s(name)),
        (
            "PayloadIdentifier",
            s(&format!("com.kextwatch.profile.{team}.{kind}")),
        ),
        ("PayloadType", s(kind)),
        ("PayloadUUID", s(&uuid(team, bundle, kind))),
        ("PayloadVersion", Value::Integer(1.into())),
    ];
    entries.append(&mut body);
    dict(entries)
}

/// The extension allowed, of the Endpoint Security type, and not removable by users.
fn system_extension_policy(team: &str, bundle: &str, allow_user_overrides: bool) -> Value {
    let team_list = |v: Value| dict(vec![(team, v)]);
    payload(
        team,
        bundle,
        "com.apple.system-extension-policy",
        "kextwatch system extension",
        vec![
            ("AllowUserOverrides", Value::Boolean(allow_user_overrides)),
            (
                "AllowedSystemExtensions",
                team_list(Value::Array(vec![s(bundle)])),
            ),
            (
                "AllowedSystemExtensionTypes",
                team_list(Value::Array(vec![s("EndpointSecurityExtension")])),
            ),
            // macOS 15+: users cannot remove or disable the extension.
            (
                "NonRemovableSystemExtensions",
                team_list(Value::Array(vec![s(bundle)])),
            ),
        ],
    )
}

/// Full Disk Access for the extension and the daemon binary, each pinned to the Team ID.
fn full_disk_access(team: &str, bundle: &str) -> Value {
    payload(
        team,
        bundle,
        "com.apple.TCC.configuration-profile-policy",
        "kextwatch Full Disk Access",
        vec![(
            "Services",
            dict(vec![(
                "SystemPolicyAllFiles",
                Value::Array(vec![
                    dict(vec![
                        ("Identifier", s(bundle)),
                        ("IdentifierType", s("bundleID")),
                        ("CodeRequirement", s(&code_requirement(bundle, team))),
                        ("StaticCode", Value::Boolean(false)),
                        ("Authorization", s("Allow")),
                        ("Comment", s("kextwatch Endpoint Security system extension")),
                    ]),
                    dict(vec![
                        ("Identifier", s(layout::BINARY)),
                        ("IdentifierType", s("path")),
                        (
                            "CodeRequirement",
                            s(&code_requirement(layout::BINARY_SIGNING_ID, team)),
                        ),
                        ("StaticCode", Value::Boolean(false)),
                        ("Authorization", s("Allow")),
                        ("Comment", s("kextwatch daemon (LaunchDaemon mode)")),
                    ]),
                ]),
            )]),
        )],
    )
}

/// Background items managed (users cannot turn them off): the team's, and the daemon's label when the team signed it.
fn background_items(team: &str, bundle: &str) -> Value {
    payload(
        team,
        bundle,
        "com.apple.servicemanagement",
        "kextwatch background items",
        vec![(
            "Rules",
            Value::Array(vec![
                dict(vec![
                    ("RuleType", s("TeamIdentifier")),
                    ("RuleValue", s(team)),
                    ("Comment", s("kextwatch daemon and agent")),
                ]),
                // A label alone is a name anyone's launchd plist can claim: the rule also
                // names the Team ID that must have signed the job's program.
                dict(vec![
                    ("RuleType", s("Label")),
                    ("RuleValue", s(layout::LAUNCHD_LABEL)),
                    ("TeamIdentifier", s(team)),
                    ("Comment", s("kextwatch daemon (LaunchDaemon mode)")),
                ]),
            ]),
        )],
    )
}

pub fn build(req: &ProfileRequest) -> Result<Value, ProfileError> {
    let team = req.team_id;
    let bundle = req.bundle_id;
    if !(team.len() == 10
        && team
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
    {
        return Err(ProfileError::TeamId(team.to_string()));
    }
    let bundle_ok = bundle.contains('.')
        && !bundle.starts_with('.')
        && !bundle.ends_with('.')
        && bundle
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !bundle_ok {
        return Err(ProfileError::BundleId(bundle.to_string()));
    }
    // `<`, `&` and the rest are escaped by the plist writer; XML has no way to write most
    // control characters, and a name shown to users has no use for any.
    if req
        .organization
        .chars()
        .any(|c| c.is_control() || !xml_char(c))
    {
        return Err(ProfileError::Organization(req.organization.to_string()));
    }
    let mut content = vec![
        system_extension_policy(team, bundle, req.allow_user_overrides),
        full_disk_access(team, bundle),
        background_items(team, bundle),
    ];
    if let Some(text) = req.config_toml {
        Config::parse(text, "--config").map_err(|e| ProfileError::Config(e.to_string()))?;
        if let Some((line, c)) = unwritable(text) {
            return Err(ProfileError::Config(format!(
                "line {line}: character U+{:04X} cannot be written in an XML profile",
                u32::from(c)
            )));
        }
        content.push(payload(
            team,
            bundle,
            layout::PREFERENCE_DOMAIN,
            "kextwatch configuration",
            vec![("ConfigTOML", s(text))],
        ));
    }
    Ok(dict(vec![
        ("PayloadContent", Value::Array(content)),
        (
            "PayloadDescription",
            s("Allows the kextwatch Endpoint Security extension, grants it Full Disk Access and keeps its daemon enabled."),
        ),
        ("PayloadDisplayName", s("kextwatch")),
        ("PayloadIdentifier", s(&format!("com.kextwatch.profile.{team}"))),
        ("PayloadOrganization", s(req.organization)),
        ("PayloadRemovalDisallowed", Value::Boolean(true)),
        ("PayloadScope", s("System")),
        ("PayloadType", s("Configuration")),
        ("PayloadUUID", s(&uuid(team, bundle, "Configuration"))),
        ("PayloadVersion", Value::Integer(1.into())),
    ]))
}

/// The profile as an XML plist.
pub fn to_xml(profile: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing a plist Value to memory cannot fail.
    let _ = profile.to_writer_xml(&mut out);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request<'a>(organization: &'a str, config_toml: Option<&'a str>) -> ProfileRequest<'a> {
        ProfileRequest {
            team_id: "ABCDE12345",
            bundle_id: layout::SYSEXT_BUNDLE_ID,
            config_toml,
            organization,
            allow_user_overrides: true,
        }
    }

    proptest! {
        /// Whatever an admin types, the profile is refused or it parses back to what was typed.
        #[test]
        fn any_organization_is_refused_or_round_trips(org in any::<String>()) {
            match build(&request(&org, None)) {
                Err(e) => prop_assert_eq!(e, ProfileError::Organization(org)),
                Ok(p) => {
                    let back = plist::Value::from_reader_xml(&to_xml(&p)[..]).unwrap();
                    let back = back.as_dictionary().unwrap()["PayloadOrganization"].as_string();
                    prop_assert_eq!(back, Some(org.as_str()));
                }
            }
        }

        /// Any text a TOML comment can hold is delivered exactly, or refused naming its line.
        #[test]
        fn any_config_comment_is_refused_or_round_trips(comment in "[^\n\r]*") {
            let text = format!("# {comment}\n[allowlist]\n");
            let Ok(p) = build(&request("kextwatch", Some(&text))) else {
                // Not TOML (a control character) or not XML: refused, never written.
                return Ok(());
            };
            let back = plist::Value::from_reader_xml(&to_xml(&p)[..]).unwrap();
            let config = back.as_dictionary().unwrap()["PayloadContent"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|d| d.as_dictionary()?.get("ConfigTOML")?.as_string())
                .next()
                .map(str::to_owned);
            prop_assert_eq!(config, Some(text));
        }
    }

    #[test]
    fn a_refused_config_names_the_line_and_character() {
        let e = build(&request("kextwatch", Some("[allowlist]\n\n# \u{FFFE}\n"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--config: line 3: character U+FFFE cannot be written in an XML profile"
        );
    }
}
