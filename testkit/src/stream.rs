//! A long realistic eslogger stream for benchmarks: full process objects, 99.9 % unrelated noise.
use super::eslogger::{cast, Capture, Proc};

/// Writes `n` events, calling `sink` with chunks of complete lines.
pub fn generate(n: u64, mut sink: impl FnMut(&str)) {
    let mut c = Capture::new(7);
    let zsh = cast::terminal_zsh();
    let launchd = cast::launchd();
    let slack = cast::slack();
    let md = cast::mdworker();
    let kmd = cast::kernelmanagerd();
    let sudo = cast::sudo();
    let tools: Vec<(Proc, Proc, Vec<&str>)> = [
        (
            "/usr/bin/git",
            "com.apple.git",
            vec!["git", "status", "--porcelain"],
        ),
        ("/bin/ls", "com.apple.ls", vec!["ls", "-la"]),
        (
            "/usr/bin/grep",
            "com.apple.grep",
            vec!["grep", "-r", "TODO", "src"],
        ),
        (
            "/usr/libexec/xpcproxy",
            "com.apple.xpc.proxy",
            vec!["xpcproxy", "com.apple.mdworker.shared"],
        ),
    ]
    .into_iter()
    .map(|(exe, sid, args)| {
        let caller = if exe.contains("xpcproxy") {
            launchd.clone()
        } else {
            zsh.clone()
        };
        let target = caller.exec_into(exe, sid);
        (caller, target, args)
    })
    .collect();

    for i in 0..n {
        c.after_ms(1);
        if i % 1000 == 999 {
            // 0.1 %: kext and policy activity, each unique so folding and correlation hold state.
            match (i / 1000) % 4 {
                0 => {
                    let t = sudo.exec_into("/sbin/kextload", "com.apple.kextload");
                    let path = format!("/Library/Extensions/Bench{i}.kext");
                    c.exec(&sudo, &t, &["kextload", &path], "/");
                }
                1 => {
                    let cp = zsh.exec_into("/bin/cp", "com.apple.cp");
                    c.create(&cp, "/Library/Extensions", &format!("Staged{i}.kext"));
                }
                2 => {
                    c.kextload(&kmd, &format!("com.bench.driver{i}"));
                }
                _ => {
                    let t = zsh.exec_into("/usr/bin/csrutil", "com.apple.csrutil");
                    c.exec(&zsh, &t, &["csrutil", "status"], "/");
                }
            }
        } else {
            match i % 10 {
                0..=2 => {
                    let (caller, target, args) = &tools[(i as usize / 10) % tools.len()];
                    c.exec(caller, target, args, "/Users/alice/src/app");
                }
                3..=5 => {
                    c.open(&md, &format!("/Users/alice/Documents/note{}.txt", i % 977));
                }
                6 => {
                    c.create(
                        &slack,
                        "/Users/alice/Library/Caches/com.tinyspeck.slackmacgap",
                        &format!("c{i}"),
                    );
                }
                7 => {
                    c.write(
                        &slack,
                        &format!("/private/var/folders/zz/T/slack{}", i % 311),
                    );
                }
                8 => {
                    c.close(
                        &slack,
                        &format!("/private/var/folders/zz/T/slack{}", i % 311),
                        true,
                    );
                }
                _ => {
                    if i % 20 == 9 {
                        c.fork(&launchd, &slack);
                    } else {
                        c.exit(&slack);
                    }
                }
            }
        }
        if c.out.len() > 1 << 20 {
            sink(&c.out);
            c.out.clear();
        }
    }
    sink(&c.out);
}
