//! Alert encoders: JSON Lines (the contract) and one readable text line for a person at a terminal.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::Alert;
use crate::text::Escaped;

/// One JSON object and a newline. serde_json escapes control characters, so an event field cannot
/// break the line framing.
pub fn write_json(out: &mut dyn Write, alert: &Alert) -> io::Result<()> {
    serde_json::to_writer(&mut *out, alert).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// `TIME SEVERITY RULE-ID name: reasons | who did what`. Strings from events are escaped so that
/// terminal control sequences in hostile paths or arguments are shown, not interpreted.
pub fn write_text(out: &mut dyn Write, alert: &Alert) -> io::Result<()> {
    let mut line = String::with_capacity(256);
    let _ = write!(
        line,
        "{} {:<8} {} {}: {}",
        alert.timestamp,
        alert.severity.as_str().to_uppercase(),
        alert.rule.id,
        alert.rule.name,
        Escaped(&alert.reasons.join("; "))
    );
    match &alert.process {
        Some(p) => {
            let _ = write!(line, " | pid {} {}", p.pid, Escaped(&p.executable));
            if let Some(args) = &p.args {
                line.push_str(" [");
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        line.push(' ');
                    }
                    let _ = write!(line, "{}", Escaped(a));
                }
                line.push(']');
            }
        }
        None => line.push_str(" | KextPolicy"),
    }
    if let Some(f) = &alert.file {
        let _ = write!(line, " file {}", Escaped(&f.path));
        if let Some(src) = &f.source_path {
            let _ = write!(line, " (from {})", Escaped(src));
        }
    }
    if let Some(k) = &alert.kextwatch.kext {
        let _ = write!(line, " kext {}", Escaped(&k.bundle_id));
    }
    if let Some(u) = &alert.user {
        let _ = write!(line, " user {}", u.id);
    }
    if let Some(f) = &alert.kextwatch.folded {
        let _ = write!(line, " (x{} from {} to {})", f.count, f.first, f.last);
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}
