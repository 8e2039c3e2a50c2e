//! Two hosts writing one name into one shared store at once.

use crate::faultproxy::FaultProxy;
use crate::{Cmd, Scene};
use std::time::Duration;

/// Two hosts (two lock directories) snapshot one series in one second, so
/// both pick one name; `snap(proxy)` is a host's dbsnap reaching the store
/// at port `upstream` through `proxy`. The second host's link is slower (10
/// ms a chunk against 3 ms: the first still finishes first, but only after
/// the second looked for the name and found it free, however loaded the
/// machine is). Asserts that the first succeeds and the second is refused
/// (exit 4, "created by another writer"); returns both hosts' stderr.
pub fn two_hosts_snapshot_one_name(
    s: &Scene,
    upstream: u16,
    snap: impl Fn(&FaultProxy) -> Cmd,
) -> [String; 2] {
    let delayed = |ms| FaultProxy::slow(upstream, Duration::from_millis(ms));
    let (less_slow, slow) = (delayed(3), delayed(10));
    let host = |n: &str, proxy: &FaultProxy| {
        let dir = s.path(&format!("host-{n}"));
        std::fs::create_dir_all(&dir).expect("host dir");
        snap(proxy)
            .env("XDG_RUNTIME_DIR", &dir)
            .stderr_file(dir.join("stderr"))
    };
    crate::next_second();
    let first = host("a", &less_slow).spawn();
    let second = host("b", &slow).spawn();
    let codes: Vec<i32> = [first, second]
        .into_iter()
        .map(|mut c| c.wait().expect("wait").code().unwrap_or(-1))
        .collect();
    let errs = ["a", "b"]
        .map(|n| std::fs::read_to_string(s.path(&format!("host-{n}/stderr"))).unwrap_or_default());
    assert_eq!(codes, [0, 4], "{errs:?}");
    assert!(errs[1].contains("created by another writer"), "{errs:?}");
    errs
}
