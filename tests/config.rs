//! Config parsing and validation: the shipped file, and errors that name file, line and key.

use kextwatch::config::{AlertFormat, Config, KextTrust, OutputSpec, DEFAULT_CONFIG};

fn err(text: &str) -> String {
    Config::parse(text, "test.toml").unwrap_err().to_string()
}

#[test]
fn shipped_config_is_valid_and_allowlists_the_examples() {
    let c = Config::parse(DEFAULT_CONFIG, "config/kextwatch.toml").unwrap();
    let a = &c.allowlist;
    assert_eq!(
        a.kext_trust(Some("VB5E2TV963"), "org.virtualbox.kext.VBoxUSB"),
        KextTrust::Allowlisted
    );
    assert_eq!(
        a.kext_trust(Some("EG7KH642X6"), "com.vmware.kext.vmhgfs"),
        KextTrust::Allowlisted
    );
    assert_eq!(
        a.kext_trust(Some("EG7KH642X6"), "com.other.kext"),
        KextTrust::NotAllowlisted
    );
    assert_eq!(
        a.kext_trust(None, "com.vmware.kext.vmx86"),
        KextTrust::BundleMatchUnverified
    );
    assert!(a.initiator_allowed(Some("com.jamfsoftware.jamf"), Some("483DWKW443")));
    assert!(!a.initiator_allowed(Some("com.jamfsoftware.jamf"), None));
    // No [[output]]: commands print JSON Lines; the daemon appends to the rotated alert log,
    // never to launchd's stdout.
    assert!(c.outputs.is_empty());
    assert_eq!(
        c.command_outputs(),
        [OutputSpec::Stdout {
            format: AlertFormat::Json
        }]
    );
    assert_eq!(
        c.daemon_outputs(),
        [OutputSpec::File {
            path: kextwatch::layout::ALERT_LOG.into(),
            format: AlertFormat::Json
        }]
    );
    assert_eq!(c.detection.watched_roots.len(), 3);
}

/// Every key a table accepts, as the parser lists them when it meets an unknown one.
fn accepted_keys(table_and_probe: &str) -> Vec<String> {
    let e = err(table_and_probe);
    let list = e
        .split_once("expected one of ")
        .map(|(_, l)| l)
        .or_else(|| e.split_once("expected ").map(|(_, l)| l))
        .unwrap_or_else(|| panic!("{e}"));
    list.split([',', ' '])
        .filter_map(|w| w.strip_prefix('`')?.strip_suffix('`'))
        .map(String::from)
        .collect()
}

#[test]
fn the_shipped_config_shows_every_key_the_parser_accepts() {
    let probes = [
        "zzz = 1\n",
        "[allowlist]\nzzz = 1\n",
        "[allowlist]\nkexts = [{ zzz = 1 }]\n",
        "[allowlist]\ninitiators = [{ zzz = 1 }]\n",
        "[detection]\nzzz = 1\n",
        "[kextpolicy]\nzzz = 1\n",
        "[daemon]\nzzz = 1\n",
        "[[output]]\nzzz = 1\n",
    ];
    let mut missing = Vec::new();
    for probe in probes {
        let keys = accepted_keys(probe);
        assert!(!keys.is_empty(), "{probe}");
        for k in keys {
            let shown = DEFAULT_CONFIG.lines().any(|l| {
                l.trim_start_matches(['#', ' '])
                    .starts_with(&format!("{k} ="))
                    || l.contains(&format!("{{ {k} ="))
                    || l.contains(&format!(", {k} ="))
                    || l.trim() == format!("[{k}]")
                    || l.trim_start_matches(['#', ' ']) == format!("[[{k}]]")
            });
            if !shown {
                missing.push(k);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in config/kextwatch.toml: {missing:?}"
    );
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = err("[allowlist]\nteam_ids = []\nteam_idz = [\"VB5E2TV963\"]\n");
    assert!(e.starts_with("test.toml:3:1:"), "{e}");
    assert!(e.contains("team_idz"), "{e}");
}

#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    assert_eq!(
        err("[detection]\nmin_severity = 5\n"),
        "test.toml:2:16: key `detection.min_severity`: invalid type: integer `5`, expected a string"
    );
    let e = err("[daemon]\nheartbeat_minutes = \"x\"\n");
    assert!(
        e.starts_with("test.toml:2:21: key `daemon.heartbeat_minutes`: invalid type"),
        "{e}"
    );
}

#[test]
fn unknown_table_is_an_error() {
    let e = err("[allowlists]\nteam_ids = []\n");
    assert!(e.starts_with("test.toml:1:"), "{e}");
    assert!(e.contains("allowlists"), "{e}");
}

#[test]
fn bad_values_name_the_key_path() {
    let cases = [
        ("[allowlist]\nteam_ids = [\"VB5E2TV963\", \"nope\"]\n", "test.toml:2:27: key `allowlist.team_ids[1]`"),
        (
            "[allowlist]\nkexts = [\n  { team_id = \"VB5E2TV963\", bundle_id = \"has space\" },\n]\n",
            "test.toml:3:41: key `allowlist.kexts[0].bundle_id`",
        ),
        (
            "[allowlist]\ninitiators = [{ signing_id = \"com.jamfsoftware.jamf\" }]\n",
            "test.toml:2:15",
        ),
        ("[detection]\nmin_severity = \"urgent\"\n", "test.toml:2:16: key `detection.min_severity`"),
        ("[detection]\ncorrelation_window_secs = 0\n", "key `detection.correlation_window_secs`"),
        ("[detection]\nwatched_roots = [\"Library/Extensions\"]\n", "key `detection.watched_roots[0]`"),
        ("[[output]]\ntype = \"file\"\n", "test.toml:2:8: key `output[0].type`: a file output needs `path`"),
        ("[[output]]\ntype = \"stdout\"\nformat = \"xml\"\n", "key `output[0].format`"),
        ("[[output]]\ntype = \"syslog\"\naddress = \"siem\"\n", "test.toml:3:11: key `output[0].address`: \"siem\" is not host:port"),
        ("[[output]]\ntype = \"syslog\"\naddress = \"siem:6514\"\ntransport = \"tls\"\nframing = \"lf\"\n", "key `output[0].framing`: TLS syslog (RFC 5425) requires octet counting"),
        ("[[output]]\ntype = \"syslog\"\naddress = \"siem:514\"\ntransport = \"udp\"\ntls_ca_file = \"/x\"\n", "key `output[0].tls_ca_file`: applies to transport = \"tls\" only"),
        ("[[output]]\ntype = \"syslog\"\naddress = \"siem:514\"\nfacility = \"local9\"\n", "key `output[0].facility`"),
        ("[daemon]\nheartbeat_minutes = 0\n", "key `daemon.heartbeat_minutes`"),
        ("[[output]]\ntype = \"stdout\"\naddress = \"siem:514\"\n", "key `output[0].address`"),
        ("[[output]]\ntype = \"kafka\"\n", "unknown output type \"kafka\""),
        ("[allowlist\n", "test.toml:1:"),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(e.contains(want), "for {text:?}\n got: {e}\nwant: {want}");
    }
}

#[test]
fn syslog_outputs_with_defaults_and_tls_options() {
    use kextwatch::config::{Framing, SyslogFormat, SyslogPayload, SyslogTransport};
    let c = Config::parse(
        "[[output]]\ntype = \"syslog\"\naddress = \"siem.example.com:514\"\n\n[[output]]\ntype = \"syslog\"\naddress = \"[::1]:6514\"\ntransport = \"tls\"\npayload = \"cef\"\nformat = \"rfc3164\"\ntls_ca_file = \"/etc/kextwatch/ca.pem\"\nfacility = \"authpriv\"\n",
        "t",
    )
    .unwrap();
    let [OutputSpec::Syslog(a), OutputSpec::Syslog(b)] = &c.outputs[..] else {
        panic!("{:?}", c.outputs)
    };
    assert_eq!(
        (a.host.as_str(), a.port, a.transport, a.framing),
        (
            "siem.example.com",
            514,
            SyslogTransport::Tcp,
            Framing::OctetCounting
        )
    );
    assert_eq!(
        (a.format, a.payload, a.facility),
        (SyslogFormat::Rfc5424, SyslogPayload::Json, 20)
    );
    assert_eq!(
        (
            b.host.as_str(),
            b.port,
            b.transport,
            b.payload,
            b.format,
            b.facility
        ),
        (
            "::1",
            6514,
            SyslogTransport::Tls,
            SyslogPayload::Cef,
            SyslogFormat::Rfc3164,
            10
        )
    );
    assert!(!b.tls.danger_accept_invalid_certs);
    assert_eq!(
        b.tls.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/kextwatch/ca.pem"))
    );
}

#[test]
fn missing_initiator_team_is_rejected() {
    // Initiators are never trusted by signing id alone.
    let e = err("[allowlist]\ninitiators = [{ signing_id = \"com.jamfsoftware.jamf\" }]\n");
    assert!(e.contains("team_id"), "{e}");
}

#[test]
fn watched_roots_are_normalised() {
    let c = Config::parse(
        "[detection]\nwatched_roots = [\"/Library//Extensions/\", \"/opt/kexts\"]\n",
        "t",
    )
    .unwrap();
    assert_eq!(
        c.detection.watched_roots,
        ["/Library/Extensions", "/opt/kexts"]
    );
}

#[test]
fn unreadable_file_is_a_clear_error() {
    let e = Config::load(std::path::Path::new("/nonexistent/kextwatch.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/nonexistent/kextwatch.toml: cannot read"),
        "{e}"
    );
}

#[cfg(unix)]
#[test]
fn a_fifo_a_device_or_a_huge_file_as_config_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let load = |p: &std::path::Path| Config::load(p).unwrap_err().to_string();
    // A FIFO nobody writes to: a blocking open would hang the SIGHUP reload for good.
    let fifo = dir.path().join("fifo.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(
        load(&fifo).ends_with("cannot read: not a regular file (a FIFO)"),
        "{}",
        load(&fifo)
    );
    // A symlink to /dev/zero once grew the daemon without bound.
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    assert!(load(&zero).ends_with("cannot read: not a regular file (a device)"));
    // Larger than any real config: refused before it is read.
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 1024 * 1024 + 1]).unwrap();
    assert!(
        load(&big).ends_with("cannot read: 1048577 bytes exceeds the 1048576 byte limit"),
        "{}",
        load(&big)
    );
    // Nesting that would exhaust a recursive parser is refused with its position.
    let deep = format!("x = {}{}\n", "[".repeat(200_000), "]".repeat(200_000));
    let e = Config::parse(&deep, "deep.toml").unwrap_err().to_string();
    assert!(
        e.starts_with("deep.toml:1:") && e.contains("recursion"),
        "{e}"
    );
}

#[test]
fn managed_preferences_too_deep_for_a_parser_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let managed = dir.path().join("com.kextwatch.plist");
    let plist = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict><key>ConfigTOML</key><string></string><key>X</key>{}<true/>{}</dict></plist>\n",
        "<array>".repeat(69_000),
        "</array>".repeat(69_000)
    );
    std::fs::write(&managed, plist).unwrap();
    let e = Config::load_managed_or_file(&managed, std::path::Path::new("/nonexistent"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("plist nests deeper than 64 levels"), "{e}");
}

/// `[[output]]` of type syslog with `extra` lines after the address.
fn syslog(extra: &str) -> String {
    format!("[[output]]\ntype = \"syslog\"\naddress = \"siem.example:6514\"\n{extra}\n")
}

fn syslog_spec(extra: &str) -> kextwatch::config::SyslogSpec {
    match Config::parse(&syslog(extra), "test.toml")
        .unwrap_or_else(|e| panic!("{extra}: {e}"))
        .outputs
        .remove(0)
    {
        OutputSpec::Syslog(s) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn paths_the_daemon_opens_must_be_absolute() {
    // The daemon runs from / under launchd: "alerts.jsonl" would land in /, where nobody looks.
    let e = err("[[output]]\ntype = \"file\"\npath = \"alerts.jsonl\"\n");
    assert_eq!(
        e,
        "test.toml:3:8: key `output[0].path`: \"alerts.jsonl\" must be an absolute path (the daemon runs from /)"
    );
    let e = err(&syslog(
        "transport = \"tls\"\ntls_ca_file = \"certs/ca.pem\"",
    ));
    assert!(
        e.contains("key `output[0].tls_ca_file`: \"certs/ca.pem\" must be an absolute path"),
        "{e}"
    );
    assert!(Config::parse(
        "[[output]]\ntype = \"file\"\npath = \"/var/log/kextwatch/alerts.jsonl\"\n",
        "test.toml"
    )
    .is_ok());
}

#[test]
fn syslog_outputs_are_validated_key_by_key() {
    use kextwatch::config::{Framing, SyslogTransport};
    // Defaults, written out: TCP, octet counting, local4 (20), 1200-byte datagrams, 64 MiB spool.
    let s = syslog_spec("");
    assert_eq!(
        (s.host.as_str(), s.port, s.transport, s.framing, s.facility),
        (
            "siem.example",
            6514,
            SyslogTransport::Tcp,
            Framing::OctetCounting,
            20
        )
    );
    assert_eq!(
        (s.max_datagram_bytes, s.spool_max_bytes),
        (1200, 64 * 1024 * 1024)
    );
    // Accepted values at the edges of their ranges, and the choices each key offers.
    assert_eq!(syslog_spec("framing = \"lf\"").framing, Framing::Lf);
    let udp = syslog_spec("transport = \"udp\"\nmax_datagram_bytes = 480");
    assert_eq!(
        (udp.transport, udp.max_datagram_bytes),
        (SyslogTransport::Udp, 480)
    );
    assert_eq!(
        syslog_spec("transport = \"udp\"\nmax_datagram_bytes = 65000").max_datagram_bytes,
        65_000
    );
    assert_eq!(syslog_spec("spool_max_bytes = 4096").spool_max_bytes, 4096);
    assert_eq!(
        syslog_spec("spool_max_bytes = 1099511627776").spool_max_bytes,
        1 << 40
    );
    assert_eq!(syslog_spec("facility = \"local0\"").facility, 16);
    let tls = syslog_spec(
        "transport = \"tls\"\ntls_client_cert = \"/c.pem\"\ntls_client_key = \"/k.pem\"\ntls_server_name = \"siem\"",
    );
    assert_eq!(
        (tls.transport, tls.framing),
        (SyslogTransport::Tls, Framing::OctetCounting)
    );
    // Saying what TLS requires anyway is fine.
    let explicit = syslog_spec("transport = \"tls\"\nframing = \"octet-counting\"");
    assert_eq!(explicit.framing, Framing::OctetCounting);
    assert_eq!(tls.tls.server_name.as_deref(), Some("siem"));

    // Each mistake: the line and key it names, and why. The address is on line 3, extras from 4.
    let cases = [
        (
            "transport = \"udp\"\nframing = \"lf\"",
            "test.toml:5:11: key `output[0].framing`",
            "no framing",
        ),
        (
            "transport = \"tls\"\nframing = \"lf\"",
            "test.toml:5:11: key `output[0].framing`",
            "requires octet counting",
        ),
        (
            "max_datagram_bytes = 9000",
            "test.toml:4:22: key `output[0].max_datagram_bytes`",
            "UDP only",
        ),
        (
            "transport = \"udp\"\nmax_datagram_bytes = 479",
            "test.toml:5:22: key `output[0].max_datagram_bytes`",
            "out of range",
        ),
        (
            "transport = \"udp\"\nmax_datagram_bytes = 65001",
            "test.toml:5:22: key `output[0].max_datagram_bytes`",
            "out of range",
        ),
        (
            "spool_max_bytes = 4095",
            "test.toml:4:19: key `output[0].spool_max_bytes`",
            "out of range",
        ),
        (
            "spool_max_bytes = 1099511627777",
            "test.toml:4:19: key `output[0].spool_max_bytes`",
            "out of range",
        ),
        (
            "tls_server_name = \"siem\"",
            "test.toml:4:19: key `output[0].tls_server_name`",
            "tls\" only",
        ),
        (
            "tls_danger_accept_invalid_certs = true",
            "test.toml:4:35: key `output[0].tls_danger_accept_invalid_certs`",
            "tls\" only",
        ),
        (
            "transport = \"tls\"\ntls_client_key = \"/k.pem\"",
            "test.toml:5:18: key `output[0].tls_client_cert`",
            "needs both",
        ),
        (
            "transport = \"tls\"\ntls_client_cert = \"/c.pem\"",
            "test.toml:5:19: key `output[0].tls_client_cert`",
            "needs both",
        ),
    ];
    for (extra, at, why) in cases {
        let e = err(&syslog(extra));
        assert!(e.starts_with(at), "{extra}: {e}");
        assert!(e.contains(why), "{extra}: {e}");
    }
    for address in [
        "siem.example",
        "siem.example:0",
        ":514",
        "siem.example:65536",
    ] {
        let e = err(&format!(
            "[[output]]\ntype = \"syslog\"\naddress = \"{address}\"\n"
        ));
        assert!(e.contains("is not host:port"), "{address}: {e}");
    }
}

#[test]
fn team_ids_are_ten_upper_case_letters_and_digits() {
    for good in ["VB5E2TV963", "ABCDEFGHIJ", "0123456789"] {
        Config::parse(&format!("[allowlist]\nteam_ids = [\"{good}\"]\n"), "t").unwrap();
    }
    for bad in ["vb5e2tv963", "VB5E2TV96", "VB5E2TV9634", "VB5E2TV96-"] {
        let e = err(&format!("[allowlist]\nteam_ids = [\"{bad}\"]\n"));
        assert!(e.contains("allowlist.team_ids[0]"), "{bad}: {e}");
    }
}

#[test]
fn daemon_and_kextpolicy_settings_are_validated() {
    let ok =
        |text: &str| Config::parse(text, "test.toml").unwrap_or_else(|e| panic!("{text}: {e}"));
    let c = ok("[daemon]\nheartbeat_minutes = 2\nevent_queue = 1\nstate_dir = \"/srv/kw\"\n\n[kextpolicy]\npath = \"/tmp/KextPolicy\"\nknown_mdm_payloads = [\"3c1f6f0a-6d0b-4d3e-9e57-0d6b3f0e2a11\"]\n");
    assert_eq!(
        c.daemon.heartbeat_interval,
        std::time::Duration::from_secs(120)
    );
    assert_eq!(c.daemon.event_queue, 1);
    assert_eq!(c.daemon.state_dir, std::path::PathBuf::from("/srv/kw"));
    assert_eq!(
        c.kextpolicy.path,
        std::path::PathBuf::from("/tmp/KextPolicy")
    );
    // Payload UUIDs are kept upper-case, as MDM profiles write them.
    assert_eq!(
        c.kextpolicy.known_mdm_payloads,
        ["3C1F6F0A-6D0B-4D3E-9E57-0D6B3F0E2A11"]
    );
    assert_eq!(
        ok("[daemon]\nevent_queue = 1048576\n").daemon.event_queue,
        1_048_576
    );

    let cases = [
        (
            "[daemon]\nevent_queue = 0\n",
            "daemon.event_queue",
            "out of range",
        ),
        (
            "[daemon]\nevent_queue = 1048577\n",
            "daemon.event_queue",
            "out of range",
        ),
        (
            "[daemon]\nstate_dir = \"var/db/kw\"\n",
            "daemon.state_dir",
            "must be an absolute path",
        ),
        (
            "[kextpolicy]\npath = \"KextPolicy\"\n",
            "kextpolicy.path",
            "must be an absolute path",
        ),
        // One digit short, a dash out of place, a letter that is not hex.
        (
            "[kextpolicy]\nknown_mdm_payloads = [\"3C1F6F0A-6D0B-4D3E-9E57-0D6B3F0E2A1\"]\n",
            "known_mdm_payloads[0]",
            "not a payload UUID",
        ),
        (
            "[kextpolicy]\nknown_mdm_payloads = [\"3C1F6F0A6-D0B-4D3E-9E57-0D6B3F0E2A11\"]\n",
            "known_mdm_payloads[0]",
            "not a payload UUID",
        ),
        (
            "[kextpolicy]\nknown_mdm_payloads = [\"3C1F6F0A-6D0B-4D3E-9E57-0D6B3F0E2AG1\"]\n",
            "known_mdm_payloads[0]",
            "not a payload UUID",
        ),
    ];
    for (text, key, why) in cases {
        let e = err(text);
        assert!(e.starts_with("test.toml:2:"), "{text}: {e}");
        assert!(e.contains(key) && e.contains(why), "{text}: {e}");
    }
}
