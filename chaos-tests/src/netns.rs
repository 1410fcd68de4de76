//! A private network for a live cluster: each node in its own Linux network namespace with its
//! own address, all plugged into a bridge that lives in a switch namespace, and one link from
//! the runner's namespace to that bridge so the runner (the customers and the oracle) reaches
//! every node. A partition is a set of packet filters inside the nodes' namespaces, so the
//! nodes' real TCP connections see exactly what a cut WAN link does: silence, not resets.
//!
//! ```text
//!   runner ns             switch ns                node namespaces
//!   <link> 10.213.X.254 ── up0 ─┐
//!                               br0 ── n1 ── eth0 10.213.X.1  (parley serve, node 1)
//!                                  ├── n2 ── eth0 10.213.X.2  (node 2)
//!                                  └── n3 ── eth0 10.213.X.3  (node 3)
//! ```
//!
//! The bridge sits in its own namespace on purpose: the host's firewall (Docker sets the
//! FORWARD policy to DROP and filters bridged traffic) never sees node-to-node packets.
//!
//! Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2 and iptables; [`probe`] says
//! why it cannot run, and the live runner then falls back to loopback without partitions.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Names of everything a run creates start with this, followed by the runner's pid.
const PREFIX: &str = "parley-chaos-";

/// The first two octets of every run's /24.
const NET: [u8; 2] = [10, 213];

/// Runs in this process so far (several clusters may run at once, e.g. in parallel tests).
static RUNS: AtomicU32 = AtomicU32::new(0);

/// Setting up or changing the network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command could not start.
    #[error("running `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
    /// Every /24 under 10.213.0.0/16 is taken by other runs.
    #[error("no free 10.213.X.0/24 subnet for a new run")]
    NoSubnet,
}

fn run(program: &str, args: &[&str]) -> Result<String, NetnsError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(NetnsError::Failed {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn ip(args: &[&str]) -> Result<String, NetnsError> {
    run("ip", args)
}

/// Whether namespaces can be used here; `Err` says why not.
pub fn probe() -> Result<(), String> {
    let name = format!("{PREFIX}{}-probe", std::process::id());
    ip(&["netns", "add", &name]).map_err(|e| e.to_string())?;
    let filters = run(
        "ip",
        &["netns", "exec", &name, "iptables", "-w", "-S", "INPUT"],
    );
    let _ = ip(&["netns", "del", &name]);
    filters.map(|_| ()).map_err(|e| e.to_string())
}

/// Whether process `pid` is alive.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces and links that runs which died without cleaning up left behind.
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !alive(pid)) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The third octets of the /24s in use on this host.
fn subnets_in_use() -> BTreeSet<u8> {
    let mut used = BTreeSet::new();
    if let Ok(routes) = ip(&["-4", "route", "show"]) {
        for route in routes.lines() {
            let Some(net) = route.split_whitespace().next() else {
                continue;
            };
            let octets: Vec<&str> = net.split(['.', '/']).collect();
            if octets.len() >= 3 && octets[0] == "10" && octets[1] == "213" {
                if let Ok(third) = octets[2].parse() {
                    used.insert(third);
                }
            }
        }
    }
    used
}

/// One run's network.
#[derive(Debug)]
pub struct Netns {
    /// `parley-chaos-<pid>-<run>`.
    name: String,
    /// The runner's end of the link to the switch (at most 15 characters).
    link: String,
    subnet: u8,
    nodes: u64,
}

impl Netns {
    /// Creates the switch, `nodes` node namespaces and the runner's link.
    pub fn create(nodes: u64) -> Result<Self, NetnsError> {
        remove_stale();
        let pid = std::process::id();
        let run_no = RUNS.fetch_add(1, Ordering::Relaxed);
        let used = subnets_in_use();
        let start = (pid.wrapping_mul(7).wrapping_add(run_no) % 250) as u8;
        let subnet = (0..250u8)
            .map(|k| (start.wrapping_add(k) % 250) + 1)
            .find(|s| !used.contains(s))
            .ok_or(NetnsError::NoSubnet)?;
        let net = Self {
            name: format!("{PREFIX}{pid}-{run_no}"),
            link: format!("plc{pid}r{run_no}").chars().take(15).collect(),
            subnet,
            nodes,
        };
        // On failure half way, Drop removes what was made.
        net.build()?;
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.name)
    }

    fn node_ns(&self, id: u64) -> String {
        format!("{}-n{id}", self.name)
    }

    fn build(&self) -> Result<(), NetnsError> {
        let sw = self.switch();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        ip(&[
            "link", "add", &self.link, "type", "veth", "peer", "name", "up0", "netns", &sw,
        ])?;
        ip(&["-n", &sw, "link", "set", "up0", "master", "br0", "up"])?;
        let runner = format!("{}/24", self.runner_addr());
        ip(&["addr", "add", &runner, "dev", &self.link])?;
        ip(&["link", "set", &self.link, "up"])?;
        for id in 1..=self.nodes {
            let ns = self.node_ns(id);
            let port = format!("n{id}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.addr(id));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Node `id`'s address.
    pub fn addr(&self, id: u64) -> Ipv4Addr {
        Ipv4Addr::new(NET[0], NET[1], self.subnet, id as u8)
    }

    /// The runner's address on the switch.
    pub fn runner_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(NET[0], NET[1], self.subnet, 254)
    }

    /// A command that runs `program` inside node `id`'s namespace (the child's pid is the
    /// program's: `ip netns exec` execs it).
    pub fn command(&self, id: u64, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .arg("netns")
            .arg("exec")
            .arg(self.node_ns(id))
            .arg(program);
        command
    }

    fn iptables(&self, id: u64, args: &[&str]) -> Result<(), NetnsError> {
        let ns = self.node_ns(id);
        let mut all = vec!["netns", "exec", ns.as_str(), "iptables", "-w"];
        all.extend_from_slice(args);
        ip(&all).map(|_| ())
    }

    /// Cuts the network into `sides`: nodes on different sides no longer hear each other
    /// (packets are dropped both ways, as on a broken WAN link). The runner still reaches all.
    pub fn partition(&self, sides: &[Vec<u64>]) -> Result<(), NetnsError> {
        self.heal()?;
        for side in sides {
            for &id in side {
                for other in sides.iter().filter(|s| *s != side).flatten() {
                    let peer = self.addr(*other).to_string();
                    self.iptables(id, &["-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
                    self.iptables(id, &["-A", "OUTPUT", "-d", &peer, "-j", "DROP"])?;
                }
            }
        }
        Ok(())
    }

    /// Removes every partition.
    pub fn heal(&self) -> Result<(), NetnsError> {
        for id in 1..=self.nodes {
            self.iptables(id, &["-F"])?;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for id in 1..=self.nodes {
            let _ = ip(&["netns", "del", &self.node_ns(id)]);
        }
        let _ = ip(&["link", "del", &self.link]);
        let _ = ip(&["netns", "del", &self.switch()]);
    }
}
