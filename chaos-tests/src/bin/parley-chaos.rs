//! `parley-chaos`: the chaos suites for SREs, with progress and a summary table.
//!
//! ```sh
//! parley-chaos --seeds 1000             # random fault schedules on seeds 1..=1000
//! parley-chaos --seed 42 --nodes 5      # one seed, exactly as a failure printed it
//! parley-chaos --seeds 200 --sites 2,2,1 # five nodes over three sites: sites cut off too
//! parley-chaos --scenarios --seeds 10   # every named failure-matrix scenario on 10 seeds
//! parley-chaos --scenarios --scenario site-cut-off-one-day --seed 1  # a long one: by name only
//! parley-chaos --live --duration-s 60    # real processes: kill -9, SIGSTOP, SIGTERM, partitions
//! parley-chaos --live --target c.toml    # an existing cluster, faults by its commands
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use parley_chaos::live::{run_live, ClusterSpec, LiveSpec, Network};
use parley_chaos::oracle::lease_history::LeaseFigures;
use parley_chaos::oracle::Violation;
use parley_chaos::scenarios::{self, Scenario};
use parley_chaos::sim::{random_site_schedule, run, Report, Spec};
use parley_chaos::target::Target;

/// Simulated clusters under seeded faults, checked by an oracle of acknowledged writes.
#[derive(Parser)]
#[command(name = "parley-chaos", version, about)]
struct Args {
    /// Run seeds 1..=N.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Run only this seed (overrides --seeds).
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster size for random schedules.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// For random schedules: the nodes' sites, as sizes in node id order (`2,2,1`: nodes 1-2,
    /// 3-4 and 5), which also sets the cluster size; a site's link to the others then drops
    /// among the random faults (an island from 2 s on).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=9))]
    sites: Vec<u64>,
    /// Length of the random fault window, in seconds of simulated time.
    #[arg(long, default_value_t = 15)]
    window_s: u64,
    /// Run the named failure-matrix scenarios instead of random schedules.
    #[arg(long)]
    scenarios: bool,
    /// With --scenarios: only this one.
    #[arg(long)]
    scenario: Option<String>,
    /// Run the live fault runner against real `parley serve` processes instead.
    #[arg(long)]
    live: bool,
    /// With --live: the parley binary (default: next to this one).
    #[arg(long)]
    parley: Option<PathBuf>,
    /// With --live: seconds of faults while customers post.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// With --live: where the nodes run. `netns` puts each node in a network namespace of its
    /// own (needs root) so partitions can be injected; `auto` does so when it can.
    #[arg(long, value_enum, default_value_t = Network::Auto)]
    network: Network,
    /// With --live: run against the existing cluster this file names (its nodes' URLs and
    /// the commands that inject faults on it; see docs/CHAOS.md) instead of starting one.
    #[arg(long)]
    target: Option<PathBuf>,
}

fn live(args: &Args) -> ExitCode {
    let cluster = match &args.target {
        Some(path) => match Target::load(path) {
            Ok(target) => ClusterSpec::Target(Box::new(target)),
            Err(error) => {
                eprintln!("parley-chaos: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => ClusterSpec::Local {
            parley: args.parley.clone().unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|exe| exe.parent().map(|dir| dir.join("parley")))
                    .unwrap_or_else(|| PathBuf::from("parley"))
            }),
            nodes: args.nodes,
            network: args.network,
        },
    };
    let nodes = match &cluster {
        ClusterSpec::Local { nodes, .. } => *nodes as usize,
        ClusterSpec::Target(target) => target.nodes.len(),
    };
    let spec = LiveSpec {
        cluster,
        duration: Duration::from_secs(args.duration_s),
        customers: 8,
        seed: args.seed.unwrap_or(1),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("parley-chaos: {error}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    match runtime.block_on(run_live(&spec)) {
        Err(error) => {
            eprintln!("parley-chaos: {error}");
            ExitCode::FAILURE
        }
        Ok(report) => {
            println!("nodes on {}", report.network);
            if let Some(why) = &report.partitions_skipped {
                println!("partitions SKIPPED: {why}");
            }
            if let Some(why) = &report.faults_skipped {
                println!("faults SKIPPED: {why}");
            }
            if let Some(why) = &report.validate_skipped {
                println!("validate SKIPPED: {why}");
            }
            for fault in &report.faults {
                println!("fault: {fault}");
            }
            for violation in &report.violations {
                println!("VIOLATED: {violation}");
            }
            println!();
            println!("| nodes | faults injected | acknowledged writes checked | nodes validated | violations | wall time |");
            println!("|---|---|---|---|---|---|");
            println!(
                "| {} | {} | {} | {} | {} | {:.0} s |",
                nodes,
                report.faults.len(),
                report.writes_checked,
                report.nodes_validated,
                report.violations.len(),
                started.elapsed().as_secs_f64()
            );
            if report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[derive(Default)]
struct Totals {
    runs: u64,
    faults: usize,
    leader_faults_skipped: usize,
    writes: usize,
    actions: usize,
    completed: u64,
    elections: u64,
    offer_timeouts: u64,
    violations: usize,
    simulated: Duration,
    island_writes: usize,
    island_actions: usize,
    islands: u64,
    /// Runs with a lease workload, and what their lease histories showed.
    lease_runs: u64,
    lease: LeaseFigures,
    fenced_not_committed: u64,
    lease_resumed_max: Duration,
}

impl Totals {
    fn add(&mut self, report: &Report) {
        self.runs += 1;
        self.faults += report.faults;
        self.leader_faults_skipped += report.leader_faults_skipped;
        self.writes += report.writes_checked;
        self.actions += report.agent_actions_checked;
        self.completed += report.completed;
        self.elections += report.term.saturating_sub(1);
        self.offer_timeouts += report.offer_timeouts;
        self.violations += report.violations.len();
        self.simulated += report.simulated;
        self.island_writes += report.island_writes_checked;
        self.island_actions += report.island_agent_actions_checked;
        self.islands += report.islands_entered.values().sum::<u64>();
        if report.lease != LeaseFigures::default() {
            let (total, run) = (&mut self.lease, &report.lease);
            self.lease_runs += 1;
            total.takes += run.takes;
            total.hand_overs += run.hand_overs;
            total.renewals += run.renewals;
            total.acquisitions_refused += run.acquisitions_refused;
            total.releases += run.releases;
            total.fenced_applied += run.fenced_applied;
            total.fenced_lease_lost += run.fenced_lease_lost;
            total.fenced_superseded += run.fenced_superseded;
            total.fenced_refused_other += run.fenced_refused_other;
            self.fenced_not_committed += report.fenced_not_committed;
            self.lease_resumed_max = self
                .lease_resumed_max
                .max(report.lease_resumed_after.unwrap_or_default());
        }
    }
}

/// One run's lease figures, for its line.
fn lease_line(report: &Report) -> String {
    let l = &report.lease;
    format!(
        "lease: {} takes ({} hand-overs), fenced {} accepted, {} refused lease_lost ({} \
         superseded on their way), {} not committed, resumed {:.1}s after the heal",
        l.takes,
        l.hand_overs,
        l.fenced_applied,
        l.fenced_lease_lost,
        l.fenced_superseded,
        report.fenced_not_committed,
        report
            .lease_resumed_after
            .map_or(f64::NAN, |d| d.as_secs_f64())
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.live {
        return live(&args);
    }
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (1..=args.seeds).collect(),
    };
    let mut runs: Vec<(String, Spec, Option<Scenario>)> = Vec::new();
    if args.scenarios {
        // The long scenarios run only when named.
        let long = scenarios::long()
            .into_iter()
            .filter(|_| args.scenario.is_some());
        for scenario in scenarios::all().into_iter().chain(long) {
            if args.scenario.as_deref().is_some_and(|s| s != scenario.name) {
                continue;
            }
            for &seed in &seeds {
                runs.push((
                    scenario.name.to_owned(),
                    (scenario.spec)(seed),
                    Some(scenario),
                ));
            }
        }
    } else {
        let window = Duration::from_secs(args.window_s);
        let sites = if args.sites.is_empty() {
            vec![args.nodes]
        } else {
            args.sites.clone()
        };
        let nodes: u64 = sites.iter().sum();
        if !(1..=9).contains(&nodes) {
            eprintln!("parley-chaos: {nodes} nodes; simulate 1 to 9");
            return ExitCode::FAILURE;
        }
        let name = if sites.len() > 1 {
            format!(
                "random-sites-{}",
                args.sites
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("+")
            )
        } else {
            format!("random-{nodes}-nodes")
        };
        for &seed in &seeds {
            let schedule = random_site_schedule(&sites, seed, window);
            runs.push((
                name.clone(),
                Spec {
                    sites: sites.clone(),
                    ..Spec::new(nodes, seed, schedule)
                },
                None,
            ));
        }
    }
    if runs.is_empty() {
        eprintln!("parley-chaos: nothing to run (unknown scenario?)");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut failed: Vec<(String, u64)> = Vec::new();
    let count = runs.len();
    for (index, (name, spec, scenario)) in runs.into_iter().enumerate() {
        let mut report = run(&spec);
        // A scenario's own expectations (islands entered, a snapshot installed, ...) count as
        // violations here.
        if let Some(scenario) = scenario {
            let unmet = scenario.unmet(&spec, &report);
            report.violations.extend(
                unmet
                    .into_iter()
                    .map(|what| Violation(format!("scenario: {what}"))),
            );
        }
        totals.add(&report);
        let verdict = if report.violations.is_empty() {
            "ok"
        } else {
            "VIOLATED"
        };
        println!(
            "[{:>5}/{count}] {name:<32} seed {:<6} {verdict:<8} faults {:>2}  writes {:>3}  \
             actions {:>3} ({:>2} on islands)  term {:>3}  {:.1}s simulated  state {}",
            index + 1,
            spec.seed,
            report.faults,
            report.writes_checked,
            report.agent_actions_checked,
            report.island_agent_actions_checked,
            report.term,
            report.simulated.as_secs_f64(),
            report.digest.get(..12).unwrap_or("-")
        );
        if spec.leases.is_some() {
            println!("        {}", lease_line(&report));
        }
        for violation in &report.violations {
            println!("        {violation}");
        }
        if !report.violations.is_empty() {
            failed.push((name, spec.seed));
        }
    }
    println!();
    println!("| runs | faults injected | leader faults skipped (no leader) | acknowledged writes checked | of them taken by islands | islands entered | agent actions checked | of them taken by islands | chats completed | elections caused | offer timeouts | violations | simulated | wall time |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} s | {:.0} s |",
        totals.runs,
        totals.faults,
        totals.leader_faults_skipped,
        totals.writes,
        totals.island_writes,
        totals.islands,
        totals.actions,
        totals.island_actions,
        totals.completed,
        totals.elections,
        totals.offer_timeouts,
        totals.violations,
        totals.simulated.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if totals.lease_runs > 0 {
        let l = &totals.lease;
        println!();
        println!("| lease runs | takes | hand-overs | renewals | acquisitions refused | releases | fenced accepted | fenced refused lease_lost | of them superseded on their way | fenced refused otherwise | fenced not committed | longest resume after the heal |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s |",
            totals.lease_runs,
            l.takes,
            l.hand_overs,
            l.renewals,
            l.acquisitions_refused,
            l.releases,
            l.fenced_applied,
            l.fenced_lease_lost,
            l.fenced_superseded,
            l.fenced_refused_other,
            totals.fenced_not_committed,
            totals.lease_resumed_max.as_secs_f64()
        );
    }
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    for (name, seed) in failed {
        if args.scenarios {
            println!("rerun: parley-chaos --scenarios --scenario {name} --seed {seed}");
        } else {
            let sites: Vec<String> = args.sites.iter().map(u64::to_string).collect();
            if sites.is_empty() {
                println!("rerun: parley-chaos --nodes {} --seed {seed}", args.nodes);
            } else {
                println!(
                    "rerun: parley-chaos --sites {} --seed {seed}",
                    sites.join(",")
                );
            }
        }
    }
    ExitCode::FAILURE
}
