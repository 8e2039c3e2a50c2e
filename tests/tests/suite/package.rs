//! The Debian package (`make deb`): built from the binaries under test,
//! installed on this machine with dpkg, run, its units verified by systemd
//! and its man pages rendered, then purged without leaving a file behind.

use dbsafe_tests::{bin_dir, require, Cmd, Scene};
use std::path::Path;

const INSTALLED: &[&str] = &[
    "/usr/bin/dbsnap",
    "/usr/bin/walship",
    "/usr/share/man/man1/dbrestore.1",
    "/usr/share/man/man5/dbsafe.toml.5",
    "/usr/share/bash-completion/completions/dbverify",
    "/usr/share/zsh/site-functions/_dbprune",
    "/usr/share/fish/vendor_completions.d/dbpromote.fish",
    "/usr/share/dbsafe/backup.sh",
    "/usr/lib/systemd/system/dbsafe-backup@.service",
    "/usr/lib/systemd/system/dbsafe-failure@.service",
    "/usr/lib/sysusers.d/dbsafe.conf",
    "/etc/dbsafe/dbsafe.toml.example",
];

#[test]
fn the_debian_package_installs_runs_verifies_its_units_and_purges_cleanly() {
    let dpkg = require("dpkg", "the Debian package dpkg");
    require("dpkg-deb", "the Debian package dpkg");
    require("man", "the Debian package man-db");
    assert_eq!(
        Cmd::new("id").arg("-u").succeeds().stdout().trim(),
        "0",
        "dpkg -i installs into /usr: run the suite as root"
    );
    let s = Scene::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let deb = Cmd::new(repo.join("scripts/deb.sh"))
        .env("DBSAFE_BIN_DIR", bin_dir())
        .env("DEB_OUT", s.path("out"))
        .env("DEB_COMPRESS", "none")
        .succeeds()
        .stdout()
        .trim()
        .to_string();
    assert!(deb.ends_with(".deb"), "{deb}");
    let fields = Cmd::new("dpkg-deb").args(["-f", &deb]).succeeds().stdout();
    assert!(fields.contains("Package: dbsafe"), "{fields}");
    // A package of another build may be installed: this one replaces it.
    Cmd::new(&dpkg).args(["-i", &deb]).succeeds();
    let purge = || Cmd::new(&dpkg).args(["--purge", "dbsafe"]).succeeds();
    for path in INSTALLED {
        assert!(Path::new(path).exists(), "{path} is not installed");
    }
    let version = Cmd::new("/usr/bin/dbsnap")
        .arg("--version")
        .succeeds()
        .stdout();
    assert!(version.starts_with("dbsnap 0.1.0"), "{version}");
    // The units name the installed scripts under /usr, which verify checks exist.
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/dbsafe-backup@.service").unwrap();
    assert!(
        unit.contains("ExecStart=/usr/share/dbsafe/backup.sh"),
        "{unit}"
    );
    assert!(!unit.contains("/usr/local"), "{unit}");
    let units: Vec<String> = std::fs::read_dir("/usr/lib/systemd/system")
        .unwrap()
        .flatten()
        .map(|e| e.path().display().to_string())
        .filter(|p| p.contains("/dbsafe-"))
        .collect();
    assert_eq!(units.len(), 5, "{units:?}");
    dbsafe_tests::systemd_verify(&units, Path::new("/"));
    for page in ["man1/dbsnap.1", "man1/dbrestore.1", "man5/dbsafe.toml.5"] {
        let r = Cmd::new("man")
            .args(["--warnings", "-l"])
            .arg(format!("/usr/share/man/{page}"))
            .env("MANWIDTH", "80")
            .succeeds();
        assert!(r.stderr().trim().is_empty(), "{page}: {}", r.stderr());
    }
    // Everything the package put on the machine, not only the paths above.
    let listed = Cmd::new("dpkg").args(["-L", "dbsafe"]).succeeds().stdout();
    let files: Vec<&str> = listed.lines().filter(|p| Path::new(p).is_file()).collect();
    assert!(files.len() > INSTALLED.len(), "{listed}");
    purge();
    for path in INSTALLED.iter().chain(&files) {
        assert!(!Path::new(path).exists(), "{path} is left after the purge");
    }
    assert!(
        !Path::new("/etc/dbsafe").exists(),
        "/etc/dbsafe is left after the purge"
    );
}
