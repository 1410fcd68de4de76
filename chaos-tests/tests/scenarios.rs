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
            let report = run(&spec);
            println!(
                "{:<32} seed {seed}: {} faults, {} writes checked, term {}, {} assigned, {} offer timeouts",
                scenario.name,
                report.faults,
                report.writes_checked,
                report.term,
                report.assigned,
                report.offer_timeouts
            );
            assert!(
                report.violations.is_empty(),
                "{} (incumbent: {}), seed {seed}: {:#?}",
                scenario.name,
                scenario.incumbent,
                report.violations
            );
            if scenario.all_assigned {
                assert_eq!(
                    report.assigned as usize, spec.customers,
                    "{}, seed {seed}: queued work was not all routed after the faults",
                    scenario.name
                );
            }
            if scenario.offers_time_out {
                assert!(
                    report.offer_timeouts > 0,
                    "{}, seed {seed}: no offer timed out",
                    scenario.name
                );
            }
            ran += 1;
        }
    }
    assert!(ran > 0, "no scenario matched");
}
