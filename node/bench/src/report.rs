//! What a comparison prints and writes: a table per run as it finishes, a summary with
//! Parley's ratio to each peer, `compare.json`, `compare.csv` and two SVG plots.

use std::fmt;
use std::fs;
use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;
use serde::Serialize;

use super::compare::CompareArgs;
use super::driver::Figures;

/// The machine a run is on, as the docs need it.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads /proc (what it cannot read stays "unknown").
    pub fn read() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_owned(), |m| m.trim().to_owned());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned()),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} × {}, {:.0} GiB, Linux {}",
            self.cpus, self.cpu, self.memory_gib, self.kernel
        )
    }
}

/// Prints one finished measurement and hands it back.
pub fn progress(figures: Figures) -> Figures {
    println!(
        "  {:<7} {:>5} clients: {:>9.0} ops/s  p50 {:>8.2} ms  p99 {:>8.2} ms  p999 {:>8.2} ms  \
         errors {}",
        figures.system,
        figures.concurrency,
        figures.per_second,
        figures.p50_ms,
        figures.p99_ms,
        figures.p999_ms,
        figures.errors
    );
    figures
}

#[derive(Serialize)]
struct Report<'a> {
    machine: &'a Machine,
    duration_s: f64,
    warmup_s: f64,
    payload_bytes: usize,
    /// Whether etcd's and NATS's members used mutual TLS between them (Parley's always do).
    members_tls: bool,
    results: &'a [Figures],
    ratios: Vec<Ratio>,
}

/// Parley against one peer at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The peer.
    pub peer: String,
    /// Clients.
    pub concurrency: usize,
    /// Parley's throughput divided by the peer's.
    pub throughput: f64,
    /// Parley's p50 divided by the peer's.
    pub p50: f64,
    /// Parley's p99 divided by the peer's.
    pub p99: f64,
}

/// Parley's ratio to every other system at every concurrency both ran.
pub fn ratios(results: &[Figures]) -> Vec<Ratio> {
    let mut ratios = Vec::new();
    for parley in results.iter().filter(|f| f.system == "parley") {
        // `parley-leader` and `parley-follower` are Parley too, measured apart at one client.
        for peer in results
            .iter()
            .filter(|f| !f.system.starts_with("parley") && f.concurrency == parley.concurrency)
        {
            let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            ratios.push(Ratio {
                peer: peer.system.clone(),
                concurrency: parley.concurrency,
                throughput: div(parley.per_second, peer.per_second),
                p50: div(parley.p50_ms, peer.p50_ms),
                p99: div(parley.p99_ms, peer.p99_ms),
            });
        }
    }
    ratios
}

/// The summary as a Markdown table (printed, and pasted into docs/BENCHMARKS.md).
pub fn markdown(results: &[Figures], ratios: &[Ratio]) -> String {
    let mut out = String::from(
        "| system | clients | ops/s | p50 ms | p99 ms | p999 ms | max ms | errors | server CPU s / 1k ops |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in results {
        let cpu = f
            .server_cpu_s_per_1k
            .map_or_else(|| "–".to_owned(), |cpu| format!("{cpu:.3}"));
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {cpu} |\n",
            f.system,
            f.concurrency,
            f.per_second,
            f.p50_ms,
            f.p99_ms,
            f.p999_ms,
            f.max_ms,
            f.errors
        ));
    }
    if !ratios.is_empty() {
        out.push_str(
            "\n| Parley ÷ | clients | throughput | p50 latency | p99 latency |\n\
             |---|---:|---:|---:|---:|\n",
        );
        for r in ratios {
            out.push_str(&format!(
                "| {} | {} | {:.2}× | {:.2}× | {:.2}× |\n",
                r.peer, r.concurrency, r.throughput, r.p50, r.p99
            ));
        }
    }
    out
}

/// Prints `table` and writes it as `<name>.md`, and `figures` as `<name>.json`, into `out`.
pub fn write_json_and_table(
    out: &Path,
    name: &str,
    figures: &impl serde::Serialize,
    table: &str,
) -> anyhow::Result<()> {
    println!("\n{table}");
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join(format!("{name}.json"));
    fs::write(
        &json,
        serde_json::to_vec_pretty(figures).context("encoding")?,
    )
    .with_context(|| format!("writing {}", json.display()))?;
    let md = out.join(format!("{name}.md"));
    fs::write(&md, table).with_context(|| format!("writing {}", md.display()))?;
    println!("wrote {} and {}", json.display(), md.display());
    Ok(())
}

/// Prints the summary and writes `compare.{json,csv,md}` and the plots into `out`.
pub fn write(
    out: &Path,
    machine: &Machine,
    args: &CompareArgs,
    results: &[Figures],
) -> anyhow::Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ratios = ratios(results);
    let table = markdown(results, &ratios);
    println!("\n{table}");
    let report = Report {
        machine,
        duration_s: args.load.duration.as_secs_f64(),
        warmup_s: args.load.warmup.as_secs_f64(),
        payload_bytes: args.payload_bytes,
        members_tls: !args.members_plaintext,
        results,
        ratios,
    };
    let json = out.join("compare.json");
    fs::write(
        &json,
        serde_json::to_vec_pretty(&report).context("encoding the report")?,
    )
    .with_context(|| format!("writing {}", json.display()))?;
    let md = out.join("compare.md");
    fs::write(&md, &table).with_context(|| format!("writing {}", md.display()))?;
    let csv_path = out.join("compare.csv");
    let mut csv = csv::Writer::from_path(&csv_path)
        .with_context(|| format!("writing {}", csv_path.display()))?;
    for figures in results {
        csv.serialize(figures).context("writing a CSV row")?;
    }
    csv.flush().context("writing the CSV")?;
    plot(
        &out.join("compare-throughput.svg"),
        "Acknowledged writes per second (3 nodes, one machine)",
        "ops/s",
        results,
        |f| f.per_second,
    )?;
    plot(
        &out.join("compare-p99.svg"),
        "p99 write latency, ms (3 nodes, one machine)",
        "p99 ms",
        results,
        |f| f.p99_ms,
    )?;
    println!(
        "wrote {}, {}, {} and plots compare-throughput.svg, compare-p99.svg in {}",
        json.display(),
        csv_path.display(),
        md.display(),
        out.display()
    );
    Ok(())
}

/// One line per system over the concurrencies (log-scaled axes).
fn plot(
    path: &Path,
    title: &str,
    y_label: &str,
    results: &[Figures],
    value: impl Fn(&Figures) -> f64,
) -> anyhow::Result<()> {
    let systems: Vec<&str> = {
        let mut seen = Vec::new();
        for f in results {
            if !seen.contains(&f.system.as_str()) {
                seen.push(f.system.as_str());
            }
        }
        seen
    };
    let xs = results.iter().map(|f| f.concurrency as f64);
    let x_max = xs.fold(1.0_f64, f64::max) * 1.5;
    let ys: Vec<f64> = results.iter().map(&value).filter(|v| *v > 0.0).collect();
    let y_min = ys.iter().copied().fold(f64::INFINITY, f64::min).min(1.0) / 2.0;
    let y_max = ys.iter().copied().fold(1.0_f64, f64::max) * 2.0;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0.7_f64..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc(y_label)
        .draw()
        .map_err(|e| draw(&e))?;
    let colors = [RED, BLUE, GREEN, MAGENTA, BLACK];
    for (index, system) in systems.iter().enumerate() {
        let color = colors[index % colors.len()];
        let points: Vec<(f64, f64)> = results
            .iter()
            .filter(|f| f.system == *system)
            .map(|f| (f.concurrency as f64, value(f)))
            .filter(|(_, y)| *y > 0.0)
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| draw(&e))?
            .label(*system)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| draw(&e))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(system: &str, concurrency: usize, per_second: f64, p99_ms: f64) -> Figures {
        Figures {
            system: system.to_owned(),
            concurrency,
            ops: 0,
            errors: 0,
            per_second,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            p999_ms: p99_ms,
            max_ms: p99_ms,
            server_cpu_s_per_1k: None,
        }
    }

    #[test]
    fn ratios_pair_parley_with_each_peer_at_equal_concurrency() {
        let results = [
            figures("parley", 1, 100.0, 10.0),
            figures("parley", 16, 800.0, 20.0),
            figures("etcd", 1, 400.0, 5.0),
            figures("nats", 16, 1600.0, 4.0),
        ];
        let ratios = ratios(&results);
        assert_eq!(ratios.len(), 2);
        assert_eq!(
            (ratios[0].peer.as_str(), ratios[0].concurrency),
            ("etcd", 1)
        );
        assert!((ratios[0].throughput - 0.25).abs() < 1e-9);
        assert!((ratios[0].p99 - 2.0).abs() < 1e-9);
        assert_eq!(
            (ratios[1].peer.as_str(), ratios[1].concurrency),
            ("nats", 16)
        );
        assert!((ratios[1].throughput - 0.5).abs() < 1e-9);
        let table = markdown(&results, &ratios);
        assert!(
            table.contains("| etcd | 1 | 0.25× | 2.00× | 2.00× |"),
            "{table}"
        );
    }

    #[test]
    fn plots_are_written_as_svg() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("p.svg");
        let results = [
            figures("parley", 1, 100.0, 10.0),
            figures("parley", 64, 900.0, 30.0),
            figures("etcd", 1, 400.0, 5.0),
            figures("etcd", 64, 4000.0, 15.0),
        ];
        plot(&path, "t", "ops/s", &results, |f| f.per_second).expect("plot");
        let svg = fs::read_to_string(&path).expect("the plot");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("parley") && svg.contains("etcd"));
    }
}
