//! `cargo xtask install`: puts the sensor on a gateway as a systemd service. Idempotent: files
//! are rewritten with the same content, an existing configuration is never overwritten, the
//! `sensor` user is created only if missing.
//!
//! | what | where |
//! |---|---|
//! | the release binary | `PREFIX/bin/sensor` |
//! | `deploy/sensor.service` (ExecStart pointed at that binary) | `/etc/systemd/system/sensor.service` |
//! | `deploy/sensor.logrotate` | `/etc/logrotate.d/sensor` |
//! | `deploy/sensor.toml`, when the repository has one, unless the file exists | `/etc/sensor/sensor.toml` |
//! | `README.md` | `PREFIX/share/doc/sensor/README.md` |
//!
//! With `--destdir DIR` every path is staged under DIR (for packaging, or to look first), and
//! nothing outside it is touched: no user, no `systemctl daemon-reload`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

/// Where `deploy/sensor.service` expects the binary; rewritten to `PREFIX/bin/sensor`.
const UNIT_BINARY: &str = "/usr/local/bin/sensor";
const UNIT_DOC: &str = "file:/usr/local/share/doc/sensor/README.md";

pub struct Options {
    pub prefix: PathBuf,
    pub destdir: Option<PathBuf>,
    /// A built binary to install instead of building this checkout's release one.
    pub sensor: Option<PathBuf>,
}

/// One file to install.
struct Item {
    dest: PathBuf,
    contents: Vec<u8>,
    mode: u32,
    /// An administrator's edits win: an existing file is left alone.
    keep_existing: bool,
}

/// The files to install and their contents; `binary` is the sensor executable.
fn plan(root: &Path, prefix: &Path, binary: &Path) -> anyhow::Result<Vec<Item>> {
    anyhow::ensure!(
        prefix.is_absolute(),
        "--prefix must be absolute: {}",
        prefix.display()
    );
    let read = |rel: &str| std::fs::read(root.join(rel)).with_context(|| format!("reading {rel}"));
    let bin = prefix.join("bin/sensor");
    let doc = prefix.join("share/doc/sensor/README.md");
    let unit = String::from_utf8(read("deploy/sensor.service")?)?;
    anyhow::ensure!(
        unit.contains(UNIT_BINARY) && unit.contains(UNIT_DOC),
        "deploy/sensor.service no longer names {UNIT_BINARY} and {UNIT_DOC}"
    );
    let unit = unit
        .replace(UNIT_DOC, &format!("file:{}", doc.display()))
        .replace(UNIT_BINARY, &bin.to_string_lossy());
    let mut items = vec![
        Item {
            dest: bin,
            contents: std::fs::read(binary)
                .with_context(|| format!("reading {}", binary.display()))?,
            mode: 0o755,
            keep_existing: false,
        },
        Item {
            dest: "/etc/systemd/system/sensor.service".into(),
            contents: unit.into_bytes(),
            mode: 0o644,
            keep_existing: false,
        },
        Item {
            dest: "/etc/logrotate.d/sensor".into(),
            contents: read("deploy/sensor.logrotate")?,
            mode: 0o644,
            keep_existing: false,
        },
        Item {
            dest: doc,
            contents: read("README.md")?,
            mode: 0o644,
            keep_existing: false,
        },
    ];
    if root.join("deploy/sensor.toml").is_file() {
        items.push(Item {
            dest: "/etc/sensor/sensor.toml".into(),
            contents: read("deploy/sensor.toml")?,
            mode: 0o644,
            keep_existing: true,
        });
    }
    Ok(items)
}

/// `dest` under `destdir` (an absolute path joined as a relative one).
fn staged(destdir: Option<&Path>, dest: &Path) -> PathBuf {
    match destdir {
        Some(dir) => dir.join(dest.strip_prefix("/").unwrap_or(dest)),
        None => dest.to_path_buf(),
    }
}

/// Writes every file (through a temporary name, so a running binary is replaced, not
/// truncated); returns the paths written or kept.
fn write_all(
    items: &[Item],
    destdir: Option<&Path>,
) -> anyhow::Result<Vec<(PathBuf, &'static str)>> {
    let mut done = Vec::new();
    for item in items {
        let path = staged(destdir, &item.dest);
        if item.keep_existing && path.exists() {
            done.push((path, "kept (exists)"));
            continue;
        }
        let dir = path.parent().context("installing to /")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let unchanged = std::fs::read(&path).is_ok_and(|old| old == item.contents)
            && std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o7777 == item.mode);
        if unchanged {
            done.push((path, "unchanged"));
            continue;
        }
        let tmp = dir.join(format!(
            ".{}.xtask-new",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&tmp, &item.contents)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(item.mode))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("installing {}", path.display()))?;
        done.push((path, "installed"));
    }
    Ok(done)
}

fn quiet_success(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The system user the unit runs as.
fn ensure_user() -> anyhow::Result<()> {
    if quiet_success(Command::new("getent").args(["passwd", "sensor"])) {
        return Ok(());
    }
    crate::setup::step(Command::new("useradd").args([
        "--system",
        "--user-group",
        "--home-dir",
        "/var/lib/sensor",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        "--comment",
        "BitTorrent-vs-scan sensor",
        "sensor",
    ]))
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<()> {
    let destdir = opts.destdir.as_deref();
    if destdir.is_none() && !crate::is_root() {
        bail!("installing into / needs root (or stage it with --destdir DIR)");
    }
    let binary = if let Some(path) = &opts.sensor {
        path.clone()
    } else {
        crate::setup::ensure_build(root)?;
        let status = crate::status_of(crate::cargo().current_dir(root).args([
            "build",
            "--locked",
            "--release",
            "-p",
            "sensor",
            "--bin",
            "sensor",
        ]))?;
        if !status.success() {
            bail!("building the release sensor failed");
        }
        root.join("target/release/sensor")
    };
    let items = plan(root, &opts.prefix, &binary)?;
    for (path, what) in write_all(&items, destdir)? {
        println!("xtask install: {} {what}", path.display());
    }
    if destdir.is_none() {
        ensure_user()?;
        // Only where systemd is the running init (not in a container or a chroot).
        if Path::new("/run/systemd/system").is_dir() {
            crate::setup::step(Command::new("systemctl").arg("daemon-reload"))?;
        }
        if !root.join("deploy/sensor.toml").is_file()
            && !Path::new("/etc/sensor/sensor.toml").exists()
        {
            println!(
                "xtask install: this checkout has no sample configuration (deploy/sensor.toml): \
                 write /etc/sensor/sensor.toml yourself"
            );
        }
        println!(
            "xtask install: next: set the interfaces in /etc/sensor/sensor.toml, then \
             `systemctl enable --now sensor`"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> PathBuf {
        crate::workspace_root()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-install-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Staged under a directory: every file where the README says, the unit pointing at the
    /// installed binary, an existing configuration kept, and a second run changing nothing.
    #[test]
    fn install_stages_every_file_and_is_idempotent() {
        let dest = scratch("stage");
        // Any executable stands for the binary here; the unit check below uses the real one.
        let fake = dest.join("built-sensor");
        std::fs::write(&fake, b"#!/bin/sh\n").unwrap();
        let opts = Options {
            prefix: "/opt/sensor".into(),
            destdir: Some(dest.join("root")),
            sensor: Some(fake),
        };
        let root = dest.join("root");
        // An administrator's configuration, if the repository ships a sample.
        let shipped = workspace().join("deploy/sensor.toml").is_file();
        if shipped {
            std::fs::create_dir_all(root.join("etc/sensor")).unwrap();
            std::fs::write(root.join("etc/sensor/sensor.toml"), b"# mine\n").unwrap();
        }
        run(&workspace(), &opts).unwrap();
        let bin = root.join("opt/sensor/bin/sensor");
        assert_eq!(std::fs::read(&bin).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let unit = std::fs::read_to_string(root.join("etc/systemd/system/sensor.service")).unwrap();
        assert!(
            unit.contains(
                "\nExecStart=/opt/sensor/bin/sensor run --config /etc/sensor/sensor.toml\n"
            ),
            "{unit}"
        );
        assert!(unit.contains("Documentation=file:/opt/sensor/share/doc/sensor/README.md"));
        assert!(!unit.contains("/usr/local"));
        assert_eq!(
            std::fs::read(root.join("etc/logrotate.d/sensor")).unwrap(),
            std::fs::read(workspace().join("deploy/sensor.logrotate")).unwrap()
        );
        assert!(root.join("opt/sensor/share/doc/sensor/README.md").is_file());
        if shipped {
            assert_eq!(
                std::fs::read(root.join("etc/sensor/sensor.toml")).unwrap(),
                b"# mine\n"
            );
        }
        // Again: everything already in place.
        let items = plan(&workspace(), &opts.prefix, opts.sensor.as_ref().unwrap()).unwrap();
        let second = write_all(&items, opts.destdir.as_deref()).unwrap();
        assert!(
            second.iter().all(|(_, what)| *what != "installed"),
            "{second:?}"
        );
        std::fs::remove_dir_all(&dest).unwrap();
    }

    /// `systemd-analyze verify` accepts the unit as installed, with its binary in place: no
    /// unknown directive, no missing executable. Needs systemd-analyze and a built sensor.
    #[test]
    fn the_installed_unit_passes_systemd_analyze_verify() {
        let Some(binary) = ["target/release/sensor", "target/debug/sensor"]
            .iter()
            .map(|p| workspace().join(p))
            .find(|p| p.is_file())
        else {
            eprintln!("no built sensor binary: unit check skipped");
            return;
        };
        if !quiet_success(Command::new("systemd-analyze").arg("--version")) {
            eprintln!("systemd-analyze missing: unit check skipped");
            return;
        }
        let dest = scratch("verify");
        // The prefix is the staging directory itself, so ExecStart names a real file.
        let prefix = dest.join("prefix");
        let opts = Options {
            prefix: prefix.clone(),
            destdir: None,
            sensor: Some(binary),
        };
        let items = plan(&workspace(), &opts.prefix, opts.sensor.as_ref().unwrap()).unwrap();
        let unit_items: Vec<Item> = items
            .into_iter()
            .filter(|i| i.dest.starts_with(&prefix) || i.dest.ends_with("sensor.service"))
            .map(|mut i| {
                if i.dest.ends_with("sensor.service") {
                    i.dest = dest.join("sensor.service");
                }
                i
            })
            .collect();
        write_all(&unit_items, None).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dest.join("sensor.service"))
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "systemd-analyze verify: {report}"
        );
        // The check bites: an unknown directive is reported.
        let unit = std::fs::read_to_string(dest.join("sensor.service")).unwrap();
        std::fs::write(
            dest.join("sensor.service"),
            unit.replace("[Install]", "ProtectEverything=yes\n[Install]"),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dest.join("sensor.service"))
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("ProtectEverything"));
        std::fs::remove_dir_all(&dest).unwrap();
    }

    /// logrotate on the shipped file, its paths moved into a scratch directory and its
    /// signal replaced by a marker: the logs are renamed (not copied), no new file is created
    /// (the sensor reopens its own on SIGHUP), and postrotate runs once for all of them.
    #[test]
    fn the_logrotate_file_renames_and_signals_once() {
        let Some(logrotate) = ["/usr/sbin/logrotate", "/usr/bin/logrotate"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
        else {
            assert!(
                std::env::var_os("SENSOR_REQUIRE_PRIVILEGED").is_none_or(|v| v != "1"),
                "logrotate missing (cargo xtask setup installs it)"
            );
            eprintln!("logrotate missing: rotation check skipped");
            return;
        };
        let dir = scratch("logrotate");
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let marker = dir.join("signalled");
        let shipped = std::fs::read_to_string(workspace().join("deploy/sensor.logrotate")).unwrap();
        let signal = "systemctl kill --signal=HUP --kill-whom=main sensor.service";
        assert!(shipped.contains("/var/log/sensor/*.log") && shipped.contains(signal));
        let conf = shipped
            .replace("/var/log/sensor/", &format!("{}/", logs.display()))
            .replace(signal, &format!("echo hup >> {}; true", marker.display()));
        std::fs::write(dir.join("conf"), conf).unwrap();
        for name in ["notice", "attempts", "suppressed"] {
            std::fs::write(logs.join(format!("{name}.log")), format!("{name} line\n")).unwrap();
        }
        let out = Command::new(logrotate)
            .args(["-f", "-s"])
            .arg(dir.join("state"))
            .arg(dir.join("conf"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for name in ["notice", "attempts", "suppressed"] {
            // delaycompress: the newest rotation stays plain, for a reader still on it.
            assert_eq!(
                std::fs::read_to_string(logs.join(format!("{name}.log.1"))).unwrap(),
                format!("{name} line\n")
            );
            assert!(
                !logs.join(format!("{name}.log")).exists(),
                "{name}.log recreated"
            );
        }
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "hup\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
