//! Every named scenario of the failure matrix, on a few seeds. Run one alone with
//! `PARLEY_CHAOS_SCENARIO=<name>` and a seed with `PARLEY_CHAOS_SEED=<seed>`.

use parley_chaos::scenarios;
use parley_chaos::sim::run;

#[test]
fn every_failure_matrix_row_keeps_the_guarantees() {
    let only = std::env::var("PARLEY_CHAOS_SCENARIO").ok();
    let seeds: Vec<u64> = match std::env::var("PARLEY_CHAOS_SEED") {
        Ok(seed) => vec![seed.parse().expect("PARLEY_CHAOS_SEED is a number")],
        Err(_) => (1..=3).collect(),
    };
    let mut ran = 0;
    for scenario in scenarios::all() {
        if only.as_deref().is_some_and(|name| name != scenario.name) {
            continue;
        }
        for &seed in &seeds {
            let spec = (scenario.spec)(seed);
            let started = std::time::Instant::now();
            let report = run(&spec);
            println!(
                "{:<32} seed {seed}: {} faults ({} on the leader, {} skipped: no leader), {} \
                 writes ({} taken by islands) and {} agent actions ({} taken by islands) \
                 checked, term {}, {} completed, {} offer timeouts, {:?}",
                scenario.name,
                report.faults,
                report.leader_faults,
                report.leader_faults_skipped,
                report.writes_checked,
                report.island_writes_checked,
                report.agent_actions_checked,
                report.island_agent_actions_checked,
                report.term,
                report.completed,
                report.offer_timeouts,
                started.elapsed()
            );
            if spec.leases.is_some() {
                let lease = &report.lease;
                println!(
                    "{:<32} lease: {} takes ({} hand-overs), fenced {} accepted, {} refused \
                     lease_lost ({} superseded on their way), {} not committed, resumed {:?} \
                     after the heal",
                    "",
                    lease.takes,
                    lease.hand_overs,
                    lease.fenced_applied,
                    lease.fenced_lease_lost,
                    lease.fenced_superseded,
                    report.fenced_not_committed,
                    report.lease_resumed_after
                );
            }
            assert!(
                report.violations.is_empty(),
                "{} (incumbent: {}), seed {seed}: {:#?}",
                scenario.name,
                scenario.incumbent,
                report.violations
            );
            let unmet = scenario.unmet(&spec, &report);
            assert!(
                unmet.is_empty(),
                "{}, seed {seed}: {unmet:#?}",
                scenario.name
            );
            ran += 1;
        }
    }
    assert!(ran > 0, "no scenario matched");
}
