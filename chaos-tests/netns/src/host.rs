//! What this host allows and holds: whether labs can be made here, namespaces that dead runs
//! left behind, and the /24s already routed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::command::{command_line, ip, run};
use crate::{NetnsError, Space};

/// Labs and probes made in this process so far (several may exist at once, e.g. in parallel
/// tests); part of their names.
static RUNS: AtomicU32 = AtomicU32::new(0);

/// A number no other lab or probe of this process has.
pub(crate) fn next_run() -> u32 {
    RUNS.fetch_add(1, Ordering::Relaxed)
}

/// Whether the `status` text of `/proc/<pid>/status` names effective user id 0.
fn euid_is_root(status: &str) -> Result<bool, NetnsError> {
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .ok_or(NetnsError::NoEuid)?;
    Ok(euid == "0")
}

/// Whether this process runs with effective user id 0, from `/proc/self/status`.
pub fn is_root() -> Result<bool, NetnsError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(NetnsError::ProcStatus)?;
    euid_is_root(&status)
}

/// Whether `program args` (a `--version`) starts at all: [`NetnsError::Missing`] when it is not
/// on `PATH`.
fn present(program: &'static str, args: &[&str], package: &'static str) -> Result<(), NetnsError> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(NetnsError::Missing { program, package })
        }
        Err(source) => Err(NetnsError::Spawn {
            command: command_line(program, args),
            source,
        }),
    }
}

/// Fails with a clear message unless this process may build a lab: root, and `ip`,
/// `iptables` and `iptables-restore` present. Changes nothing.
pub fn preflight() -> Result<(), NetnsError> {
    if !is_root()? {
        return Err(NetnsError::NotRoot);
    }
    present("ip", &["-V"], "iproute2")?;
    present("iptables", &["--version"], "iptables")?;
    present("iptables-restore", &["--version"], "iptables")?;
    Ok(())
}

/// Whether labs of `space` can be made here, tried for real (a namespace made, its packet
/// filter listed, the namespace removed): works with capabilities short of root too. `Err`
/// says why not.
pub fn probe(space: Space) -> Result<(), NetnsError> {
    let name = format!(
        "{}{}-{}-probe",
        space.prefix,
        std::process::id(),
        next_run()
    );
    ip(&["netns", "add", &name])?;
    let filters = run(
        "ip",
        &["netns", "exec", &name, "iptables", "-w", "-S", "INPUT"],
        None,
    );
    let _ = ip(&["netns", "del", &name]);
    filters.map(|_| ())
}

/// Whether process `pid` is alive.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes the namespaces named `<prefix><pid>-…` whose process is dead: what runs that died
/// without cleaning up left behind. Deleting a switch namespace also removes the veth pairs
/// that end in it, the runner's link too. Best effort: failures are ignored.
pub fn remove_stale(prefix: &str) {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !alive(pid)) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The third octets of the 10.`second_octet`.X.0/24 networks in `routes` (`ip -4 route show`).
fn routed_subnets(routes: &str, second_octet: u8) -> BTreeSet<u8> {
    let second = second_octet.to_string();
    routes
        .lines()
        .filter_map(|route| route.split_whitespace().next())
        .filter_map(|net| {
            let octets: Vec<&str> = net.split(['.', '/']).collect();
            match octets.as_slice() {
                ["10", s, third, ..] if *s == second => third.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

/// The third octets of the 10.`second_octet`.X.0/24 networks routed on this host (none when
/// the routes cannot be listed).
pub fn subnets_in_use(second_octet: u8) -> BTreeSet<u8> {
    ip(&["-4", "route", "show"])
        .map(|routes| routed_subnets(&routes, second_octet))
        .unwrap_or_default()
}

/// The first third octet in 1..=250 not in `used`, counting from the one `start` picks (so
/// that runs of different processes start in different places); `None` when all are used.
pub fn pick_subnet(used: &BTreeSet<u8>, start: u32) -> Option<u8> {
    (0..250u32)
        .filter_map(|k| u8::try_from((start % 250 + k) % 250 + 1).ok())
        .find(|s| !used.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_uid_is_the_second_of_the_uid_line() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert!(euid_is_root(status).unwrap());
        let status = "Uid:\t0\t1000\t0\t0\n";
        assert!(!euid_is_root(status).unwrap());
        assert!(matches!(euid_is_root(""), Err(NetnsError::NoEuid)));
    }

    #[test]
    fn only_the_spaces_range_counts_as_used() {
        let routes = "default via 172.17.0.1 dev eth0\n\
                      10.213.7.0/24 dev plc1r0 proto kernel scope link src 10.213.7.254\n\
                      10.214.9.0/24 dev pbh2r0 proto kernel scope link src 10.214.9.254\n\
                      10.2140.1.0/24 dev x\n";
        assert_eq!(routed_subnets(routes, 213), BTreeSet::from([7]));
        assert_eq!(routed_subnets(routes, 214), BTreeSet::from([9]));
    }

    #[test]
    fn a_subnet_is_picked_past_the_used_ones_and_wraps() {
        let used = BTreeSet::from([5, 6]);
        assert_eq!(pick_subnet(&used, 4), Some(7));
        assert_eq!(pick_subnet(&used, 249), Some(250));
        assert_eq!(pick_subnet(&BTreeSet::from([250]), 249), Some(1));
        let all: BTreeSet<u8> = (1..=250).collect();
        assert_eq!(pick_subnet(&all, 0), None);
    }
}
