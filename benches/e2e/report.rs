//! The results: one markdown table of every measurement, the targets with
//! whether each was met, and a PNG chart of wall time against the number of
//! changed files, diff-aware versus the naive re-import and the clone.
//! Pure formatting, plus writing the two files.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;
use projectsync::api::StageDurations;

/// Which way a scenario was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The operator's diff-aware pipeline on a GitHub source (REST API).
    GitHub,
    /// The operator's diff-aware pipeline on a plain git remote (`git
    /// daemon`): what GitLab, Bitbucket, Gitea and self-hosted users get.
    Git,
    /// (a) The operator re-importing every file (the reindex annotation).
    Naive,
    /// (b) `git clone --depth 1` plus a full import of the clone.
    Clone,
    /// Postgres `COPY FROM STDIN` of the same rows.
    Copy,
}

impl Route {
    /// The operator's own routes (the rest are baselines).
    pub const OURS: [Route; 2] = [Route::GitHub, Route::Git];

    pub fn is_ours(self) -> bool {
        Route::OURS.contains(&self)
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::GitHub => "diff-aware, GitHub API",
            Route::Git => "diff-aware, git remote",
            Route::Naive => "(a) naive: re-import every file",
            Route::Clone => "(b) git clone --depth 1 + full import",
            Route::Copy => "Postgres COPY of the same rows",
        }
    }
}

pub struct Measurement {
    pub repo: String,
    pub scenario: String,
    /// Changed files, for the chart.
    pub k: Option<usize>,
    pub route: Route,
    pub wall: Duration,
    pub cpu: Option<Duration>,
    pub peak_rss: Option<u64>,
    pub requests: Option<usize>,
    /// How many of the requests were answered 304.
    pub not_modified: usize,
    pub rows: Option<i64>,
    /// Rows Postgres read (sequential and index fetches) during the scenario.
    pub rows_read: Option<i64>,
    /// Objects and bytes the run fetched, as `status.lastSync.fetched`
    /// reports them (git: from the pack; GitHub: blobs).
    pub fetched: Option<(i64, i64)>,
    /// Where the operator's run spent its time, by stage.
    pub stages: Option<StageDurations>,
}

/// One line of the repositories table.
pub struct RepoLine {
    pub label: String,
    pub description: String,
    pub files: usize,
    pub bytes: u64,
    pub binary: usize,
    pub build: Duration,
}

/// A target of the issue and what was measured against it.
pub struct Verdict {
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 {
        format!("{}m {:04.1}s", (s / 60.0).floor(), s % 60.0)
    } else if s >= 1.0 {
        format!("{s:.2}s")
    } else {
        format!("{:.0}ms", s * 1000.0)
    }
}

/// Bytes in KiB below a MiB, else in MiB.
pub fn kib(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn or_dash<T>(value: Option<T>, f: impl Fn(T) -> String) -> String {
    value.map(f).unwrap_or_else(|| "–".into())
}

fn requests_cell(m: &Measurement) -> String {
    match (m.route, m.requests) {
        (Route::Clone, _) => "1 clone".into(),
        (_, None) => "–".into(),
        (_, Some(n)) if m.not_modified > 0 => format!(
            "{} ({} × 304)",
            thousands(n as u64),
            thousands(m.not_modified as u64)
        ),
        (_, Some(n)) => thousands(n as u64),
    }
}

/// The whole report as markdown.
pub fn markdown(
    header: &str,
    repos: &[RepoLine],
    rows: &[Measurement],
    verdicts: &[Verdict],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    let _ = writeln!(out, "### Repositories\n");
    let _ = writeln!(
        out,
        "| repository | what | files | bytes | binary files | built in |"
    );
    let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: |");
    for r in repos {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.label,
            r.description,
            thousands(r.files as u64),
            mib(r.bytes),
            thousands(r.binary as u64),
            duration(r.build)
        );
    }
    let _ = writeln!(out, "\n### Targets\n");
    let _ = writeln!(out, "| target | measured | met |");
    let _ = writeln!(out, "| --- | --- | --- |");
    for v in verdicts {
        let met = match v.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(out, "| {} | {} | {met} |", v.target, v.measured);
    }
    let _ = writeln!(out, "\n### Every measurement\n");
    let _ = writeln!(
        out,
        "| repository | scenario | route | wall time | CPU | peak RSS | source requests | objects / bytes fetched | rows read | rows written | in the run: prepare / scan / import / finalize |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for m in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            m.repo,
            m.scenario,
            m.route.label(),
            duration(m.wall),
            or_dash(m.cpu, duration),
            or_dash(m.peak_rss, mib),
            requests_cell(m),
            or_dash(m.fetched, |(objects, bytes)| format!(
                "{} / {}",
                thousands(objects.max(0) as u64),
                kib(bytes.max(0) as u64)
            )),
            or_dash(m.rows_read, |r| thousands(r.max(0) as u64)),
            or_dash(m.rows, |r| thousands(r.max(0) as u64)),
            or_dash(m.stages.as_ref(), stages_cell),
        );
    }
    out
}

/// A TrueType font for the chart's text: `BENCH_FONT`, else a common one on
/// Debian-like systems. Without one the chart is drawn without text.
fn find_font() -> Option<&'static [u8]> {
    let candidates = std::env::var("BENCH_FONT").into_iter().chain(
        [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
        ]
        .map(String::from),
    );
    candidates
        .filter_map(|path| std::fs::read(path).ok())
        .next()
        .map(|bytes| &*Box::leak(bytes.into_boxed_slice()))
}

/// Wall time against changed files, log-log, one line per repository and
/// route; returns whether text could be drawn.
pub fn chart(path: &Path, rows: &[Measurement]) -> Result<bool, Box<dyn std::error::Error>> {
    let font = find_font();
    if let Some(bytes) = font {
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "cannot load the font")?;
    }
    let points: Vec<&Measurement> = rows
        .iter()
        .filter(|m| m.k.is_some() && m.route != Route::Copy)
        .collect();
    let seconds = |m: &Measurement| m.wall.as_secs_f64().max(0.001);
    let (lo, hi) = points
        .iter()
        .map(|m| seconds(m))
        .fold((f64::MAX, 0.0f64), |(lo, hi), s| (lo.min(s), hi.max(s)));
    let (lo, hi) = if points.is_empty() {
        (0.01, 1.0)
    } else {
        (lo / 2.0, hi * 8.0)
    };

    // Room above the lines for the legend, and the largest k on the axis.
    let max_k = points
        .iter()
        .filter_map(|m| m.k)
        .max()
        .unwrap_or(1_000)
        .max(1_000) as f64;
    let root = BitMapBackend::new(path, (1100, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70);
    if font.is_some() {
        builder.caption(
            "Wall time of a sync against changed files (log-log)",
            ("sans-serif", 24),
        );
    }
    let mut chart =
        builder.build_cartesian_2d((0.7f64..max_k * 1.5).log_scale(), (lo..hi).log_scale())?;
    let mut mesh = chart.configure_mesh();
    if font.is_some() {
        mesh.x_desc("changed files (k)")
            .y_desc("seconds, trigger to Ready")
            .label_style(("sans-serif", 16));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;

    let mut series: Vec<(String, Route)> = Vec::new();
    for m in &points {
        if !series
            .iter()
            .any(|(r, route)| *r == m.repo && *route == m.route)
        {
            series.push((m.repo.clone(), m.route));
        }
    }
    let palette = [
        RED,
        BLUE,
        GREEN,
        MAGENTA,
        CYAN,
        BLACK,
        RGBColor(230, 140, 0),
        RGBColor(120, 60, 160),
    ];
    for (i, (repo, route)) in series.iter().enumerate() {
        let color = palette[i % palette.len()];
        let mut line: Vec<(f64, f64)> = points
            .iter()
            .filter(|m| &m.repo == repo && m.route == *route)
            .map(|m| (m.k.unwrap_or(1) as f64, seconds(m)))
            .collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        let style = if route.is_ours() {
            color.stroke_width(3)
        } else {
            color.stroke_width(1)
        };
        let drawn = chart.draw_series(LineSeries::new(line.clone(), style))?;
        if font.is_some() {
            drawn
                .label(format!("{repo}: {}", route.label()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
        }
        chart.draw_series(line.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    if font.is_some() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()?;
    Ok(font.is_some())
}

/// The stage durations of a run, in milliseconds, as the status reports them.
fn stages_cell(d: &StageDurations) -> String {
    format!(
        "{} / {} / {} / {} ms",
        d.prepare_ms, d.scan_ms, d.import_ms, d.finalize_ms
    )
}
