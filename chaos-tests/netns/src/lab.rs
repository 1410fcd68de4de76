//! One run's network ([`Lab`]) in the names and addresses of its kind of run ([`Space`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::net::Ipv4Addr;
use std::process::Command;

use crate::command::{ip, iptables_restore, run};
use crate::host::{next_run, pick_subnet, remove_stale, subnets_in_use};
use crate::rules::{filter_rules, partition_blocks, NODE_IF};
use crate::NetnsError;

/// Most nodes a lab holds (host numbers 1 to 250 of its /24; 254 is the runner's).
pub const MAX_NODES: u64 = 250;

/// The names and addresses one kind of run owns. Two spaces must differ in all three fields so
/// that their runs can share a host: neither removes the other's namespaces as stale, and their
/// links and /24s never clash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Every namespace a run makes is named `<prefix><pid>-<run>-…`, after the process that
    /// made it; namespaces with this prefix whose process is dead are removed as stale.
    pub prefix: &'static str,
    /// The runner's end of the link to the switch is named `<link_tag><pid>r<run>`, cut to the
    /// 15 characters an interface name may have.
    pub link_tag: &'static str,
    /// A run's /24 is `10.<second_octet>.X.0/24`, `X` one no other route on the host uses.
    pub second_octet: u8,
}

impl Space {
    /// The live chaos runner's (`parley-chaos --live`): `parley-chaos-…`, 10.213.X.0/24.
    pub const CHAOS: Space = Space {
        prefix: "parley-chaos-",
        link_tag: "plc",
        second_octet: 213,
    };

    /// The benchmark harness's (`parley-bench failover --stop host-loss`): `parley-bench-…`,
    /// 10.214.X.0/24.
    pub const BENCH: Space = Space {
        prefix: "parley-bench-",
        link_tag: "pbh",
        second_octet: 214,
    };
}

/// One run's network: a switch namespace with its bridge, a namespace per node and the
/// runner's link (see the crate's diagram), and the faults in force. Removed on drop.
#[derive(Debug)]
pub struct Lab {
    space: Space,
    /// `<prefix><pid>-<run>`.
    name: String,
    /// The runner's end of the link to the switch (at most 15 characters).
    link: String,
    /// The third octet of the lab's /24.
    subnet: u8,
    nodes: u64,
    /// Nodes whose host is lost.
    cut: BTreeSet<u64>,
    /// For each partitioned node, the peers it is cut off from.
    blocked: BTreeMap<u64, BTreeSet<u64>>,
}

impl Lab {
    /// Creates the switch, `nodes` node namespaces (ids 1 to `nodes`) and the runner's link, in
    /// a /24 of `space` no other run uses, after removing what dead runs of `space` left behind.
    /// Needs root ([`crate::preflight`], [`crate::probe`]).
    pub fn create(space: Space, nodes: u64) -> Result<Self, NetnsError> {
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err(NetnsError::NodeCount { nodes });
        }
        remove_stale(space.prefix);
        let pid = std::process::id();
        let run_no = next_run();
        let name = format!("{}{pid}-{run_no}", space.prefix);
        // Checked before the lab exists: its Drop would remove namespaces it did not make.
        let taken = format!("{name}-");
        if ip(&["netns", "list"])?
            .lines()
            .any(|line| line.starts_with(&taken))
        {
            return Err(NetnsError::Exists(name));
        }
        let subnet = pick_subnet(
            &subnets_in_use(space.second_octet),
            pid.wrapping_mul(7).wrapping_add(run_no),
        )
        .ok_or(NetnsError::NoSubnet {
            second_octet: space.second_octet,
        })?;
        let lab = Self {
            space,
            name,
            link: format!("{}{pid}r{run_no}", space.link_tag)
                .chars()
                .take(15)
                .collect(),
            subnet,
            nodes,
            cut: BTreeSet::new(),
            blocked: BTreeMap::new(),
        };
        // On failure half way, Drop removes what was made.
        lab.build()?;
        Ok(lab)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.name)
    }

    /// The name of node `id`'s namespace.
    pub fn namespace(&self, id: u64) -> String {
        format!("{}-n{id}", self.name)
    }

    fn build(&self) -> Result<(), NetnsError> {
        let sw = self.switch();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
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
            let ns = self.namespace(id);
            let port = format!("n{id}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", NODE_IF, "netns",
                &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.addr(id));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", NODE_IF])?;
            ip(&["-n", &ns, "link", "set", NODE_IF, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // The filter works here, before anything depends on it.
            run(
                "ip",
                &["netns", "exec", &ns, "iptables", "-w", "-S", "INPUT"],
                None,
            )?;
        }
        Ok(())
    }

    /// The space the lab was made in.
    pub fn space(&self) -> Space {
        self.space
    }

    /// How many nodes the lab holds (ids 1 to this).
    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    /// Node `id`'s address, `10.<second_octet>.X.<id>`.
    pub fn addr(&self, id: u64) -> Ipv4Addr {
        // `create` allows at most MAX_NODES (250) nodes, so ids fit in the last octet.
        Ipv4Addr::new(10, self.space.second_octet, self.subnet, id as u8)
    }

    /// The runner's (the harness's) address on the switch, `10.<second_octet>.X.254`, from
    /// which its clients reach every node, partitions and cuts aside.
    pub fn runner_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.space.second_octet, self.subnet, 254)
    }

    /// The program and arguments to put in front of a command line to run it inside node
    /// `id`'s namespace: `ip netns exec <namespace>` (which execs the program, so the child's
    /// pid is the program's).
    pub fn wrapper(&self, id: u64) -> Vec<OsString> {
        ["ip", "netns", "exec"]
            .into_iter()
            .map(OsString::from)
            .chain([OsString::from(self.namespace(id))])
            .collect()
    }

    /// A command that runs `program` inside node `id`'s namespace (the child's pid is the
    /// program's); add its arguments.
    pub fn command(&self, id: u64, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .arg("netns")
            .arg("exec")
            .arg(self.namespace(id))
            .arg(program);
        command
    }

    fn check(&self, id: u64) -> Result<(), NetnsError> {
        if (1..=self.nodes).contains(&id) {
            Ok(())
        } else {
            Err(NetnsError::NoSuchNode {
                id,
                nodes: self.nodes,
            })
        }
    }

    /// Writes node `id`'s whole filter table as the faults in force say, in one transaction.
    fn apply(&self, id: u64) -> Result<(), NetnsError> {
        let blocked: Vec<Ipv4Addr> = self
            .blocked
            .get(&id)
            .into_iter()
            .flatten()
            .map(|&peer| self.addr(peer))
            .collect();
        iptables_restore(
            &self.namespace(id),
            &filter_rules(self.cut.contains(&id), &blocked),
        )
    }

    /// Cuts the network into `sides`: nodes on different sides no longer hear each other
    /// (packets are dropped both ways, as on a broken WAN link), nodes on no side hear
    /// everyone. Replaces the partition before; cuts stay. The runner still reaches all.
    pub fn partition(&mut self, sides: &[Vec<u64>]) -> Result<(), NetnsError> {
        for &id in sides.iter().flatten() {
            self.check(id)?;
        }
        self.blocked = partition_blocks(sides);
        for id in 1..=self.nodes {
            self.apply(id)?;
        }
        Ok(())
    }

    /// Removes every partition; cuts stay.
    pub fn heal(&mut self) -> Result<(), NetnsError> {
        self.blocked.clear();
        for id in 1..=self.nodes {
            self.apply(id)?;
        }
        Ok(())
    }

    /// Loses node `id`'s host: every packet into or out of its namespace is dropped from now
    /// on, both directions at the same instant. Its process keeps running, unaware.
    pub fn cut(&mut self, id: u64) -> Result<(), NetnsError> {
        self.check(id)?;
        if !self.cut.insert(id) {
            return Err(NetnsError::AlreadyCut(id));
        }
        // The transaction failed whole: nothing changed.
        self.apply(id).inspect_err(|_| {
            self.cut.remove(&id);
        })
    }

    /// Gives node `id` its link back (nothing when it is not cut); a partition stays.
    pub fn restore(&mut self, id: u64) -> Result<(), NetnsError> {
        if !self.cut.remove(&id) {
            return Ok(());
        }
        self.apply(id).inspect_err(|_| {
            self.cut.insert(id);
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The rules live in the namespaces and go with them; removed first all the same, so a
        // node still running (its namespace outlives its name while it does) is not left cut.
        let filtered: BTreeSet<u64> = self
            .cut
            .iter()
            .chain(self.blocked.keys())
            .copied()
            .collect();
        for id in filtered {
            let _ = iptables_restore(&self.namespace(id), &filter_rules(false, &[]));
        }
        for id in 1..=self.nodes {
            let _ = ip(&["netns", "del", &self.namespace(id)]);
        }
        let _ = ip(&["link", "del", &self.link]);
        let _ = ip(&["netns", "del", &self.switch()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chaos_and_bench_spaces_can_share_a_host() {
        let (chaos, bench) = (Space::CHAOS, Space::BENCH);
        assert!(!chaos.prefix.starts_with(bench.prefix));
        assert!(!bench.prefix.starts_with(chaos.prefix));
        assert_ne!(chaos.link_tag, bench.link_tag);
        assert_ne!(chaos.second_octet, bench.second_octet);
    }
}
