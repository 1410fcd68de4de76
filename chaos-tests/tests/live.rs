//! The live fault runner in CI: three real `parley serve` processes (each in a network
//! namespace of its own when the run is root), customers posting over HTTP, kill -9 / SIGSTOP /
//! SIGTERM / partition faults for 20 s, then every acknowledged message checked on every node.
//! And the same runner against an "existing" cluster named in a target file, its faults
//! injected by the file's shell commands.
//!
//! Out of CI a test that cannot run (no `parley` binary built) prints SKIPPED and passes; in CI
//! (`CI=true`) it fails, and a root run there requires network namespaces (partitions).

use std::path::{Path, PathBuf};
use std::time::Duration;

use parley_chaos::live::{
    loopback_addrs, make_certs, node_config, run_live, ClusterSpec, LiveSpec, Network, ADMIN_TOKEN,
};
use parley_chaos::target::Target;

/// The `parley` binary the workspace build put next to this test's directory.
fn parley_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let debug_dir = exe.parent()?.parent()?;
    let parley = debug_dir.join("parley");
    parley.is_file().then_some(parley)
}

/// Whether this runs in CI, where nothing may be skipped.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether this process runs as root (network namespaces can be made).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().next())
            == Some("0")
    })
}

/// The binary, or `None` (SKIPPED) out of CI; in CI a missing binary fails the test.
fn skip_without_binary() -> Option<PathBuf> {
    let parley = parley_binary();
    if parley.is_none() {
        let why = format!(
            "no parley binary next to {:?}; build the workspace first \
             (cargo build --workspace --all-targets)",
            std::env::current_exe().ok()
        );
        assert!(!in_ci(), "CI=true and the live test cannot run: {why}");
        println!("SKIPPED: {why}");
    }
    parley
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_faults_against_real_processes_lose_nothing() {
    let Some(parley) = skip_without_binary() else {
        return;
    };
    // In CI as root, namespaces are required: their absence fails the run instead of
    // skipping partitions.
    let network = if in_ci() && is_root() {
        Network::Netns
    } else {
        Network::Auto
    };
    let report = run_live(&LiveSpec {
        cluster: ClusterSpec::Local {
            parley,
            nodes: 3,
            network,
        },
        duration: Duration::from_secs(20),
        customers: 6,
        seed: 7,
    })
    .await
    .expect("the live runner could run");
    println!("nodes on {}", report.network);
    for fault in &report.faults {
        println!("fault: {fault}");
    }
    println!(
        "{} acknowledged writes checked; validate checked on {} nodes",
        report.writes_checked, report.nodes_validated
    );
    assert!(!report.faults.is_empty(), "no fault was injected");
    assert_eq!(report.nodes_validated, 3, "{:?}", report.validate_skipped);
    match &report.partitions_skipped {
        Some(why) => println!("partitions SKIPPED: {why}"),
        None => assert!(
            report.faults.iter().any(|f| f.starts_with("partition")),
            "namespaces were made but no partition was injected: {:?}",
            report.faults
        ),
    }
    assert!(report.writes_checked > 50, "too little traffic: {report:?}");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

/// Kills whatever the target's start command left running.
struct Pids(PathBuf, u64);

impl Drop for Pids {
    fn drop(&mut self) {
        for id in 1..=self.1 {
            if let Ok(pid) = std::fs::read_to_string(self.0.join(format!("node{id}.pid"))) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid.trim()])
                    .status();
            }
        }
    }
}

/// A target file for three nodes this test starts with the kind of commands an SRE would
/// write for their own cluster (here: a pid file per node).
fn target_file(dir: &Path, parley: &Path, urls: &[String]) -> String {
    let d = dir.display();
    let p = parley.display();
    let pid = format!("$(cat {d}/node{{id}}.pid)");
    let start = format!(
        "nohup {p} serve --config {d}/node{{id}}.toml >> {d}/node{{id}}.log 2>&1 & \
         echo $! > {d}/node{{id}}.pid"
    );
    // Wait for a graceful exit; the orphaned process may stay a zombie, which counts as gone.
    let gone = format!(
        "p={pid}; while [ -e /proc/$p ] && ! grep -q zombie /proc/$p/status; do sleep 0.1; done"
    );
    let mut text =
        format!("queue = \"sales\"\ncommand_timeout = \"30s\"\nadmin_token = \"{ADMIN_TOKEN}\"\n");
    for (index, url) in urls.iter().enumerate() {
        text.push_str(&format!(
            "\n[[nodes]]\nid = {}\nurl = \"{url}\"\n",
            index + 1
        ));
    }
    text.push_str(&format!(
        "\n[faults]\nstart = \"{start}\"\nkill = \"kill -9 {pid}\"\npause = \"kill -STOP {pid}\"\n\
         resume = \"kill -CONT {pid}\"\nrestart = \"kill -TERM {pid}; {gone}; {start}\"\n"
    ));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_faults_against_a_cluster_named_in_a_target_file() {
    let Some(parley) = skip_without_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let addrs = loopback_addrs(3).expect("free ports");
    let certs = dir.path().join("certs");
    make_certs(&certs, 3).expect("node certificates");
    for id in 1..=3u64 {
        let config = node_config(id, &dir.path().join(format!("data{id}")), &certs, &addrs);
        std::fs::write(dir.path().join(format!("node{id}.toml")), config).expect("config");
    }
    let urls: Vec<String> = addrs
        .iter()
        .map(|(http, _)| format!("http://{http}"))
        .collect();
    let text = target_file(dir.path(), &parley, &urls);
    let target = Target::parse(&text, "target.toml").expect("a valid target file");
    let _pids = Pids(dir.path().to_path_buf(), 3);
    // The "existing" cluster is started by the file's own start command.
    for id in 1..=3 {
        target
            .run(target.faults.start.as_ref(), Some(id), None)
            .await
            .expect("the start command runs");
    }
    let report = match run_live(&LiveSpec {
        cluster: ClusterSpec::Target(Box::new(target)),
        duration: Duration::from_secs(15),
        customers: 4,
        seed: 11,
    })
    .await
    {
        Ok(report) => report,
        Err(error) => {
            // What the nodes said is what tells why (a node that never got ready, say).
            for id in 1..=3 {
                let log = std::fs::read_to_string(dir.path().join(format!("node{id}.log")))
                    .unwrap_or_else(|e| format!("(no log: {e})"));
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!("--- node {id}, last lines of its log ---");
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
            panic!("the live runner could not run against the target: {error}");
        }
    };
    println!("nodes: {}", report.network);
    for fault in &report.faults {
        println!("fault: {fault}");
    }
    if let Some(why) = &report.partitions_skipped {
        println!("partitions SKIPPED: {why}");
    }
    println!(
        "{} acknowledged writes checked; validate checked on {} nodes",
        report.writes_checked, report.nodes_validated
    );
    assert_eq!(report.nodes_validated, 3, "{:?}", report.validate_skipped);
    assert!(
        report.faults_skipped.is_none(),
        "{:?}",
        report.faults_skipped
    );
    // Every command the file gives was used (each fault comes once per round).
    for fault in ["kill -9", "SIGSTOP", "SIGTERM"] {
        assert!(
            report.faults.iter().any(|f| f.starts_with(fault)),
            "{fault} was never injected: {:?}",
            report.faults
        );
    }
    assert!(report.writes_checked > 30, "too little traffic: {report:?}");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}
