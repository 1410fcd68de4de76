//! Every named scenario of the failure matrix, on a few seeds. Run one alone with
//! `PARLEY_CHAOS_SCENARIO=<name>` and a seed with `PARLEY_CHAOS_SEED=<seed>`.

use parley_chaos::scenarios;
use parley_chaos::sim::{run, Fault};

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
                 writes ({} taken by islands) and {} agent actions checked, term {}, {} \
                 completed, {} offer timeouts, {:?}",
                scenario.name,
                report.faults,
                report.leader_faults,
                report.leader_faults_skipped,
                report.writes_checked,
                report.island_writes_checked,
                report.agent_actions_checked,
                report.term,
                report.completed,
                report.offer_timeouts,
                started.elapsed()
            );
            assert!(
                report.violations.is_empty(),
                "{} (incumbent: {}), seed {seed}: {:#?}",
                scenario.name,
                scenario.incumbent,
                report.violations
            );
            if scenario.all_completed {
                assert_eq!(
                    report.completed as usize, spec.customers,
                    "{}, seed {seed}: queued work was not all routed and completed after the \
                     faults",
                    scenario.name
                );
            }
            if scenario.leader_survives {
                assert_eq!(
                    report.term, 1,
                    "{}, seed {seed}: a node that was cut off deposed the leader on its return \
                     (pre-vote should keep it from campaigning)",
                    scenario.name
                );
            }
            if let Some(islands) = scenario.islands {
                let became = report.islands_entered.values().filter(|n| **n > 0).count();
                assert_eq!(
                    became, islands,
                    "{}, seed {seed}: nodes that became islands: {:?}",
                    scenario.name, report.islands_entered
                );
            }
            if scenario.snapshot_installed {
                assert!(
                    report.snapshots_installed > 0,
                    "{}, seed {seed}: no member caught up by installing a snapshot",
                    scenario.name
                );
            }
            if scenario.island_writes_taken {
                assert!(
                    report.island_writes_checked > 0,
                    "{}, seed {seed}: no island acknowledged a write",
                    scenario.name
                );
            }
            if let Some(journals) = scenario.island_journals {
                assert_eq!(
                    report.island_journals.len(),
                    journals,
                    "{}, seed {seed}: island journals that took writes: {:?}",
                    scenario.name,
                    report.island_journals
                );
            }
            if scenario.offers_time_out {
                assert!(
                    report.offer_timeouts > 0,
                    "{}, seed {seed}: no offer timed out",
                    scenario.name
                );
            }
            let aimed_at_leader = spec
                .schedule
                .iter()
                .any(|(_, f)| matches!(f, Fault::CrashLeader | Fault::IsolateLeader));
            if aimed_at_leader {
                // The leader faults bit: each found a leader, and another node was elected
                // in a later term after each.
                assert!(
                    report.leader_faults > 0 && report.leader_faults_skipped == 0,
                    "{}, seed {seed}: a leader fault found no leader ({} injected, {} skipped)",
                    scenario.name,
                    report.leader_faults,
                    report.leader_faults_skipped
                );
                assert_eq!(
                    report.leader_faults_without_election, 0,
                    "{}, seed {seed}: no other node was elected after a leader fault",
                    scenario.name
                );
            }
            ran += 1;
        }
    }
    assert!(ran > 0, "no scenario matched");
}
