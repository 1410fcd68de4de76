//! Seeded simulations of a three-node cluster under random crashes and partitions. A failing
//! seed is printed; rerun it alone with `PARLEY_CHAOS_SEED=<seed>`, or run seeds 1..=N with
//! `PARLEY_CHAOS_SEEDS=<N>` (`cargo test --workspace --test smoke -- --nocapture`).

use std::time::Duration;

use parley_chaos::sim::{random_schedule, random_site_schedule, run, Spec};

fn spec(nodes: u64, seed: u64) -> Spec {
    Spec::new(
        nodes,
        seed,
        random_schedule(nodes, seed, Duration::from_secs(15)),
    )
}

#[test]
fn random_faults_lose_nothing() {
    let count: u64 = std::env::var("PARLEY_CHAOS_SEEDS")
        .map(|n| n.parse().expect("PARLEY_CHAOS_SEEDS is a number"))
        .unwrap_or(50);
    let seeds: Vec<u64> = match std::env::var("PARLEY_CHAOS_SEED") {
        Ok(seed) => vec![seed.parse().expect("PARLEY_CHAOS_SEED is a number")],
        Err(_) => (1..=count).collect(),
    };
    let mut elections = 0;
    let mut completed = 0;
    for seed in seeds {
        let started = std::time::Instant::now();
        let report = run(&spec(3, seed));
        println!(
            "seed {seed}: {} faults, {} writes and {} agent actions checked, term {}, {} completed, \
             {:?} simulated in {:?}",
            report.faults,
            report.writes_checked,
            report.agent_actions_checked,
            report.term,
            report.completed,
            report.simulated,
            started.elapsed()
        );
        assert!(
            report.violations.is_empty(),
            "seed {seed} (rerun with PARLEY_CHAOS_SEED={seed}): {:#?}",
            report.violations
        );
        assert!(report.writes_checked > 0, "seed {seed} checked nothing");
        elections += report.term.saturating_sub(1);
        completed += report.completed;
    }
    // And the agents took and finished chats through routing, offers, accepts, transfers and
    // completions under those faults.
    assert!(completed > 0, "no chat was ever completed");
    // The faults must have bitten: leaders were lost and re-elected.
    assert!(elections > 0, "no fault ever caused an election");
}

#[test]
fn five_nodes_under_random_faults_lose_nothing() {
    for seed in 1..=10 {
        let report = run(&spec(5, seed));
        println!(
            "5 nodes, seed {seed}: {} faults, {} writes and {} agent actions checked, term {}",
            report.faults, report.writes_checked, report.agent_actions_checked, report.term
        );
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:#?}",
            report.violations
        );
    }
}

#[test]
fn three_sites_under_random_faults_and_site_cuts_lose_nothing() {
    // Five nodes over three sites (2 + 2 + 1): among the random faults a site's WAN link drops
    // for up to 8 s, so sites become islands, take writes and merge them.
    let sites = [2, 2, 1];
    let (mut islands, mut island_writes) = (0, 0);
    for seed in 1..=10 {
        let spec = Spec {
            sites: sites.to_vec(),
            ..Spec::new(
                5,
                seed,
                random_site_schedule(&sites, seed, Duration::from_secs(15)),
            )
        };
        let report = run(&spec);
        println!(
            "3 sites, seed {seed}: {} faults, {} writes ({} taken by islands) and {} agent \
             actions checked, islands entered {:?}, term {}",
            report.faults,
            report.writes_checked,
            report.island_writes_checked,
            report.agent_actions_checked,
            report.islands_entered,
            report.term
        );
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:#?}",
            report.violations
        );
        islands += report.islands_entered.values().sum::<u64>();
        island_writes += report.island_writes_checked;
    }
    // The site cuts must have bitten: islands formed and took acknowledged writes.
    assert!(islands > 0, "no site ever became an island");
    assert!(island_writes > 0, "no island ever acknowledged a write");
}
