//! Two hosts writing one name into one shared store at once.

use crate::faultproxy::{Fault, FaultProxy, Gate};
use crate::{Cmd, Scene};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Two hosts (two lock directories) snapshot one series in one second, so
/// both pick one name; `snap(proxy)` is a host's dbsnap reaching the store
/// at port `upstream` through `proxy`. Each host's link holds its first
/// write under the name, the `.sha256` sidecar (written once the artifact
/// is uploaded, before it is committed), until both hosts are there (both
/// looked for the name and found it free); then the first goes on, and the
/// second only once the first has ended: the order is the test's, however
/// loaded the machine is. Asserts that the first succeeds and the second is refused
/// (exit 4, "created by another writer"); returns both hosts' stderr.
pub fn two_hosts_snapshot_one_name(
    s: &Scene,
    upstream: u16,
    snap: impl Fn(&FaultProxy) -> Cmd,
) -> [String; 2] {
    let held = |gate: &Gate| {
        FaultProxy::start(
            upstream,
            Fault::Hold {
                method: "PUT".into(),
                containing: ".sha256".into(),
                gate: gate.clone(),
            },
        )
    };
    let gates = [Gate::new(), Gate::new()];
    let proxies = [held(&gates[0]), held(&gates[1])];
    let host = |n: &str, proxy: &FaultProxy| {
        let dir = s.path(&format!("host-{n}"));
        std::fs::create_dir_all(&dir).expect("host dir");
        snap(proxy)
            .env("XDG_RUNTIME_DIR", &dir)
            .stderr_file(dir.join("stderr"))
    };
    crate::next_second();
    let mut hosts = [
        host("a", &proxies[0]).spawn(),
        host("b", &proxies[1]).spawn(),
    ];
    crate::wait_until(
        "both hosts to reach their first write (or one to end)",
        Duration::from_secs(120),
        || {
            proxies
                .iter()
                .all(|p| p.stats.held.load(Ordering::SeqCst) > 0)
                || hosts
                    .iter_mut()
                    .any(|h| h.try_wait().ok().flatten().is_some())
        },
    );
    for (n, p) in ["a", "b"].iter().zip(&proxies) {
        assert_eq!(
            p.stats.held.load(Ordering::SeqCst),
            1,
            "host {n}'s first write was held (else the race is not the test's): {}",
            std::fs::read_to_string(s.path(&format!("host-{n}/stderr"))).unwrap_or_default()
        );
    }
    let codes: Vec<i32> = hosts
        .iter_mut()
        .zip(&gates)
        .map(|(h, gate)| {
            gate.open();
            h.wait().expect("wait").code().unwrap_or(-1)
        })
        .collect();
    let errs = ["a", "b"]
        .map(|n| std::fs::read_to_string(s.path(&format!("host-{n}/stderr"))).unwrap_or_default());
    assert_eq!(codes, [0, 4], "{errs:?}");
    assert!(errs[1].contains("created by another writer"), "{errs:?}");
    errs
}
