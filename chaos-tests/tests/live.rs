//! The live fault runner in CI: three real `parley serve` processes, customers posting over
//! HTTP, kill -9 / SIGSTOP / SIGTERM faults for 20 s, then every acknowledged message checked
//! on every node.

use std::path::PathBuf;
use std::time::Duration;

use parley_chaos::live::{run_live, LiveSpec};

/// The `parley` binary the workspace build put next to this test's directory.
fn parley_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let debug_dir = exe.parent()?.parent()?;
    let parley = debug_dir.join("parley");
    parley.is_file().then_some(parley)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_faults_against_real_processes_lose_nothing() {
    let Some(parley) = parley_binary() else {
        println!(
            "SKIPPED: no parley binary next to {:?}; build the workspace first \
             (cargo build --workspace --all-targets)",
            std::env::current_exe().ok()
        );
        return;
    };
    let report = run_live(&LiveSpec {
        parley,
        nodes: 3,
        duration: Duration::from_secs(20),
        customers: 6,
        seed: 7,
    })
    .await
    .expect("the live runner could run");
    for fault in &report.faults {
        println!("fault: {fault}");
    }
    println!("{} acknowledged writes checked", report.writes_checked);
    assert!(!report.faults.is_empty(), "no fault was injected");
    assert!(report.writes_checked > 50, "too little traffic: {report:?}");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}
