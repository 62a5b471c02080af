//! `kextwatch profile`: one signed-ready `.mobileconfig` that lets MDM deploy kextwatch silently —
//! system-extension policy (allowed, non-removable, Endpoint Security type), Full Disk Access through
//! TCC/PPPC with code requirements naming the Team ID, and managed background items by Team ID.
//!
//! Payload UUIDs are derived from the Team ID and bundle id (UUID v5), so the same inputs give the same
//! profile and an MDM update replaces the installed profile instead of adding a second one.

use plist::{Dictionary, Value};
use uuid::Uuid;

use crate::config::Config;

/// Where the daemon-mode binary is installed (packaging/scripts/layout.env) and its signing id.
pub const DAEMON_BINARY: &str = "/Library/Application Support/kextwatch/kextwatch";
pub const DAEMON_SIGNING_ID: &str = "com.kextwatch.kextwatch";
pub const DAEMON_LABEL: &str = "com.kextwatch.daemon";
/// Preference domain of the managed configuration payload.
pub const CONFIG_DOMAIN: &str = "com.kextwatch";

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
    #[error("--organization {0:?} contains control characters, which an XML profile cannot hold")]
    Organization(String),
}

pub struct ProfileRequest<'a> {
    pub team_id: &'a str,
    pub bundle_id: &'a str,
    /// A config file's text, validated and delivered as managed preferences.
    pub config_toml: Option<&'a str>,
    pub organization: &'a str,
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
    // XML 1.0 has no way to write most control characters; `<`, `&` and the rest are escaped by
    // the writer.
    if req.organization.chars().any(char::is_control) {
        return Err(ProfileError::Organization(req.organization.to_string()));
    }
    let team_list = |v: Value| dict(vec![(team, v)]);
    let mut content = vec![
        payload(
            team,
            bundle,
            "com.apple.system-extension-policy",
            "kextwatch system extension",
            vec![
                ("AllowUserOverrides", Value::Boolean(false)),
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
        ),
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
                            ("Identifier", s(DAEMON_BINARY)),
                            ("IdentifierType", s("path")),
                            (
                                "CodeRequirement",
                                s(&code_requirement(DAEMON_SIGNING_ID, team)),
                            ),
                            ("StaticCode", Value::Boolean(false)),
                            ("Authorization", s("Allow")),
                            ("Comment", s("kextwatch daemon (LaunchDaemon mode)")),
                        ]),
                    ]),
                )]),
            )],
        ),
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
                    dict(vec![
                        ("RuleType", s("Label")),
                        ("RuleValue", s(DAEMON_LABEL)),
                    ]),
                ]),
            )],
        ),
    ];
    if let Some(text) = req.config_toml {
        Config::parse(text, "--config").map_err(|e| ProfileError::Config(e.to_string()))?;
        content.push(payload(
            team,
            bundle,
            CONFIG_DOMAIN,
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
