//! `market-sim`: runs the scenarios under Gavel's rule and its three baselines, with agents
//! bidding their best responses, and prints the table `docs/market.md` quotes. With the `plot`
//! feature it also writes `market.png` (price paid and the newcomer's share over time).
//!
//! Usage: market-sim [AUCTIONS_PER_RUN] [OUT_DIR]   (defaults: 20000, target/market)

use std::time::Instant;

use market_sim::{GRID, Report, Rule, Scenario, deviation_gains, equilibrium, scenarios, simulate};

const SEED: u64 = 20_261_201;

#[expect(clippy::print_stdout, reason = "printing the report is what this program is for")]
fn main() {
    let mut args = std::env::args().skip(1);
    let auctions: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "target/market".into()));
    let started = Instant::now();
    let mut simulated = 0_usize;
    let mut plotted: Vec<(Rule, Report)> = Vec::new();
    for scenario in [
        scenarios::three_equals(auctions),
        scenarios::newcomer(auctions),
        scenarios::mixed(auctions),
    ] {
        println!("\n### {} ({} auctions per rule)\n", scenario.name, scenario.auctions);
        println!(
            "| rule | bids (x cost) | price / competitive | caller surplus | best-value share | winner failed | newcomer: auctions to 1st win | newcomer share, first 500 / 1,000 | best deviation's gain, credits per 1,000 jobs: -20% / -5% / +5% / +20% |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for rule in Rule::ALL {
            let multipliers = equilibrium(&scenario, rule, &GRID, 2_000, 3, SEED);
            simulated += 2_000 * GRID.len() * scenario.agents.len() * 3;
            let report = simulate(&scenario, rule, &multipliers, SEED + 1);
            let gains =
                deviation_gains(&scenario, rule, &multipliers, &[-0.2, -0.05, 0.05, 0.2], SEED + 1);
            simulated += scenario.auctions * (1 + 4 * scenario.agents.len());
            println!("{}", row(&scenario, rule, &multipliers, &report, &gains));
            if scenario.name == "mixed reliability" {
                plotted.push((rule, report));
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "\n{simulated} auctions simulated in {seconds:.1} s ({:.0} per second), seed {SEED}.",
        simulated as f64 / seconds
    );
    if let Err(err) = std::fs::create_dir_all(&out) {
        println!("could not create {}: {err}", out.display());
        return;
    }
    plot(&out.join("market.png"), &plotted);
}

fn row(
    scenario: &Scenario,
    rule: Rule,
    multipliers: &[f64],
    report: &Report,
    gains: &[(f64, f64)],
) -> String {
    let bids: Vec<String> = multipliers.iter().map(|m| format!("{m:.2}")).collect();
    let newcomer = report.newcomer(scenario);
    let first = newcomer.map_or("-".to_owned(), |n| {
        n.auctions_to_first_win.map_or("never".to_owned(), |a| a.to_string())
    });
    let share = newcomer.map_or("-".to_owned(), |n| {
        format!(
            "{:.0} % / {:.0} %",
            100.0 * n.wins_in_first_500 as f64 / 500.0,
            100.0 * n.wins_in_first_1000 as f64 / n.auctions_in_first_1000.max(1) as f64
        )
    });
    let gains: Vec<String> = gains.iter().map(|(_, g)| format!("{g:+.2}")).collect();
    format!(
        "| {} | {} | {:.3} ({:.3} / {:.3}) | {:.3} | {:.0} % | {:.1} % | {} | {} | {} |",
        rule.name(),
        bids.join(", "),
        report.price_ratio(),
        report.mean_price,
        report.mean_competitive,
        report.caller_surplus,
        100.0 * report.best_value_share,
        100.0 * report.winner_failed,
        first,
        share,
        gains.join(" / "),
    )
}

#[cfg(feature = "plot")]
#[expect(clippy::print_stdout, reason = "says where the plot went")]
fn plot(path: &std::path::Path, runs: &[(Rule, Report)]) {
    match draw(path, runs) {
        Ok(()) => println!("plot: {}", path.display()),
        Err(err) => println!("no plot: {err}"),
    }
}

#[cfg(feature = "plot")]
fn draw(path: &std::path::Path, runs: &[(Rule, Report)]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let font =
        ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"]
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or("no DejaVuSans.ttf to label the plot with")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "could not load the font")?;
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let colors = [BLUE, RED, GREEN, MAGENTA];
    let windows = runs.first().map_or(0, |(_, r)| r.timeline.len());
    let max_price =
        runs.iter().flat_map(|(_, r)| r.timeline.iter().map(|(p, _)| *p)).fold(1.0_f64, f64::max);
    for (area, title, y_max, pick) in [
        (&left, "Mixed reliability: price paid per job (credits)", max_price * 1.1, 0),
        (&right, "Mixed reliability: newcomer's share of wins", 1.0, 1),
    ] {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0..windows * market_sim::WINDOW, 0.0..y_max)?;
        chart.configure_mesh().x_desc("auction").draw()?;
        for ((rule, report), color) in runs.iter().zip(colors) {
            let points = report.timeline.iter().enumerate().map(|(i, (price, share))| {
                ((i + 1) * market_sim::WINDOW, if pick == 0 { *price } else { *share })
            });
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(rule.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(not(feature = "plot"))]
#[expect(clippy::print_stdout, reason = "says how to get the plot")]
fn plot(_path: &std::path::Path, _runs: &[(Rule, Report)]) {
    println!("no plot: build with --features plot (scripts/bench market does)");
}
