//! The paper's figures, drawn from result records alone (SVG, `plotters`):
//! dev metric against trainable parameters on a log axis (one point per
//! method and rank, the paper's signature plot), per-run training-loss
//! curves, and the dev metric after every epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use loraxs_data::GlueTask;
use loraxs_train::RunRecord;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::table::{best_pair, method_label, reference, training_variant};
use crate::{ExperimentError, Result};

/// The figure files written for a results file `glue-<profile>.jsonl`:
/// `<stem>-params.svg`, `<stem>-loss.svg`, `<stem>-dev.svg` beside it.
pub fn figure_paths(results: &Path) -> [PathBuf; 3] {
    let stem = results
        .file_stem()
        .map_or_else(|| "glue".into(), |s| s.to_string_lossy().into_owned());
    ["params", "loss", "dev"].map(|kind| results.with_file_name(format!("{stem}-{kind}.svg")))
}

/// Colours of the method families, in a fixed order so that a method keeps
/// its colour across figures and profiles.
fn colour(family: &str) -> RGBColor {
    match family {
        "lora-xs" => RGBColor(0xd6, 0x27, 0x28),
        "lora" => RGBColor(0x1f, 0x77, 0xb4),
        "full" => RGBColor(0x2c, 0xa0, 0x2c),
        "vera" => RGBColor(0x94, 0x67, 0xbd),
        "lora-xs-random" => RGBColor(0xff, 0x7f, 0x0e),
        _ => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

/// A readable name of a method family for legends.
fn family_name(family: &str) -> &str {
    match family {
        "lora-xs" => "LoRA-XS",
        "lora" => "LoRA",
        "full" => "Full FT",
        "vera" => "VeRA",
        "lora-xs-random" => "LoRA-XS, random A/B",
        other => other,
    }
}

fn tasks_of(records: &[RunRecord]) -> Vec<GlueTask> {
    GlueTask::ALL
        .into_iter()
        .filter(|t| records.iter().any(|r| r.config.task == *t))
        .collect()
}

/// Rows and columns for `n` panels (at most three per row).
fn grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, 3);
    (n.div_ceil(cols).max(1), cols)
}

fn figure_error(path: &Path, e: impl std::fmt::Display) -> ExperimentError {
    ExperimentError::Results {
        path: path.to_path_buf(),
        reason: format!("cannot draw the figure: {e}"),
    }
}

/// A range around `values` padded by 8 % of its width, at least
/// `min_pad` (a unit range for none).
fn padded(values: impl Iterator<Item = f64>, min_pad: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(min_pad);
    (lo - pad, hi + pad)
}

/// The points of the parameters figure: per task, per method family, the
/// `(trainable adapter values, median dev metric ×100)` of each rank.
pub type ParamPoints = BTreeMap<GlueTask, BTreeMap<String, Vec<(f64, f64)>>>;

/// Per task and method family, each rank's point: trainable adapter values
/// and the table's cell value (median over seeds of the best lr pair).
/// Records that differ in sampler window or dropout are families of their
/// own (`lora-xs · window 4, dropout 0`), as they are rows of the table.
pub fn param_points(records: &[RunRecord]) -> ParamPoints {
    // (task, family, rank) → (trainable, runs).
    type Key = (GlueTask, String, usize);
    type Runs = (usize, Vec<(f64, f64, f64)>);
    let variants: std::collections::BTreeSet<String> = records.iter().map(training_variant).collect();
    let mut runs: BTreeMap<Key, Runs> = BTreeMap::new();
    for r in records {
        let family = match variants.len() {
            0 | 1 => r.config.adapter.preset_name().to_string(),
            _ => format!("{} · {}", r.config.adapter.preset_name(), training_variant(r)),
        };
        let key = (r.config.task, family, r.config.adapter.rank);
        let entry = runs.entry(key).or_insert((r.trainable_adapter, Vec::new()));
        entry
            .1
            .push((r.config.lr, r.config.head_lr, r.best.metrics[&r.metric] * 100.0));
    }
    let mut points = ParamPoints::new();
    for ((task, family, _), (trainable, values)) in runs {
        if let Some(cell) = best_pair(&values) {
            points
                .entry(task)
                .or_default()
                .entry(family)
                .or_default()
                .push((trainable as f64, cell.median));
        }
    }
    for families in points.values_mut() {
        for line in families.values_mut() {
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
    points
}

/// Draws the three figures of `records` into `paths` (see
/// [`figure_paths`]); `title` names the profile.
pub fn draw_glue_figures(title: &str, records: &[RunRecord], paths: &[PathBuf; 3]) -> Result<()> {
    params_figure(title, records, &paths[0])?;
    loss_figure(title, records, &paths[1])?;
    dev_figure(title, records, &paths[2])?;
    Ok(())
}

/// A white SVG canvas at `path` with `title` on top and `n` panels under
/// it (at most three per row), and the first cell of the grid left over,
/// if any (five tasks leave one: the figure's legend goes there); present
/// the first value when done.
fn canvas<'a>(path: &'a Path, n: usize, title: &str) -> Result<(Area<'a>, Vec<Area<'a>>, Option<Area<'a>>)> {
    let (rows, cols) = grid(n);
    let err = |e: &dyn std::fmt::Display| figure_error(path, e);
    let root =
        SVGBackend::new(path, ((420 * cols as u32).max(900), 320 * rows as u32 + 30)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut panels = root
        .titled(title, ("sans-serif", 18))
        .map_err(|e| err(&e))?
        .split_evenly((rows, cols));
    let spare = panels.split_off(n.min(panels.len())).into_iter().next();
    Ok((root, panels, spare))
}

/// The entries of a figure's legend: label, colour and whether the line
/// is dashed (the reference), each once, in the order first drawn.
#[derive(Default)]
struct LegendEntries(Vec<(String, RGBColor, bool)>);

impl LegendEntries {
    fn add(&mut self, label: &str, colour: RGBColor, dashed: bool) {
        if !self.0.iter().any(|e| e.0 == label) {
            self.0.push((label.to_string(), colour, dashed));
        }
    }
}

/// One legend for the whole figure in a spare cell of its grid, in place
/// of a legend in every panel that would hide some of the panel's lines.
fn draw_shared_legend(area: &Area<'_>, entries: &LegendEntries, path: &Path) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| figure_error(path, e);
    let (x, y0, row) = (40, 60, 24);
    for (i, (label, colour, dashed)) in entries.0.iter().enumerate() {
        let y = y0 + row * i as i32;
        let style = colour.stroke_width(2);
        if *dashed {
            for k in 0..4 {
                area.draw(&PathElement::new(vec![(x + 9 * k, y), (x + 9 * k + 5, y)], style))
                    .map_err(|e| err(&e))?;
            }
        } else {
            area.draw(&PathElement::new(vec![(x, y), (x + 32, y)], style))
                .map_err(|e| err(&e))?;
        }
        area.draw(&Text::new(label.clone(), (x + 44, y - 8), ("sans-serif", 14)))
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

/// A drawing area of an SVG figure.
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// A panel: linear f64 axes (the parameters axis holds log10 values).
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The legend's name of the reference line.
const REFERENCE: &str = "best constant prediction";

/// The reference line's colour in the shared legend: its panels' 60 %
/// black on white, as an opaque colour.
const REFERENCE_GREY: RGBColor = RGBColor(102, 102, 102);

/// The dashed line of the best constant prediction across a panel.
fn draw_reference(
    chart: &mut Chart<'_, '_>,
    (x_lo, x_hi): (f64, f64),
    value: f64,
    path: &Path,
) -> Result<()> {
    chart
        .draw_series(DashedLineSeries::new(
            [(x_lo, value), (x_hi, value)],
            6,
            4,
            BLACK.mix(0.6).stroke_width(1),
        ))
        .map_err(|e| figure_error(path, e))?
        .label(REFERENCE)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.6)));
    Ok(())
}

/// Corners for panels whose lines end high (metrics): lower ones first.
const LOWER_FIRST: [SeriesLabelPosition; 4] = [
    SeriesLabelPosition::LowerRight,
    SeriesLabelPosition::LowerLeft,
    SeriesLabelPosition::UpperLeft,
    SeriesLabelPosition::UpperRight,
];

/// Corners for panels whose lines end low (losses): upper ones first.
const UPPER_FIRST: [SeriesLabelPosition; 4] = [
    SeriesLabelPosition::UpperRight,
    SeriesLabelPosition::LowerLeft,
    SeriesLabelPosition::LowerRight,
    SeriesLabelPosition::UpperLeft,
];

/// The corner of a panel whose legend box would hide the least of its
/// lines: each line is walked in steps of 1 % of the panel (so a sparse
/// per-epoch line counts where it is drawn, not only at its dots) and the
/// samples that fall inside the box a legend of `entries` rows takes in
/// each corner are counted. Ties go to the first of `preferred`, which
/// lists the four corners in the order a figure would rather use them.
fn clearest_corner(
    lines: &[&[(f64, f64)]],
    (x_lo, x_hi): (f64, f64),
    (y_lo, y_hi): (f64, f64),
    entries: usize,
    preferred: [SeriesLabelPosition; 4],
) -> SeriesLabelPosition {
    // The legend's share of the plotting area: about half its width, and
    // a row of 11-point text per entry on a panel some 270 pixels tall.
    let (w, h) = (0.5, (0.065 * entries as f64 + 0.05).min(0.95));
    let norm = |(x, y): (f64, f64)| {
        (
            (x - x_lo) / (x_hi - x_lo).max(f64::MIN_POSITIVE),
            (y - y_lo) / (y_hi - y_lo).max(f64::MIN_POSITIVE),
        )
    };
    let mut samples = Vec::new();
    for line in lines {
        for pair in line.windows(2) {
            let (a, b) = (norm(pair[0]), norm(pair[1]));
            let steps = ((b.0 - a.0).hypot(b.1 - a.1) / 0.01).ceil().max(1.0) as usize;
            samples.extend((0..steps).map(|i| {
                let t = i as f64 / steps as f64;
                (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1))
            }));
        }
        samples.extend(line.last().map(|&p| norm(p)));
    }
    let hidden = |corner: &SeriesLabelPosition| {
        let (right, upper) = match corner {
            SeriesLabelPosition::UpperLeft => (false, true),
            SeriesLabelPosition::UpperRight => (true, true),
            SeriesLabelPosition::LowerLeft => (false, false),
            _ => (true, false),
        };
        samples
            .iter()
            .filter(|&&(x, y)| {
                (if right { x >= 1.0 - w } else { x <= w }) && (if upper { y >= 1.0 - h } else { y <= h })
            })
            .count()
    };
    let counts: Vec<usize> = preferred.iter().map(hidden).collect();
    let best = (0..4).min_by_key(|&i| (counts[i], i)).unwrap_or(0);
    preferred[best].clone()
}

/// A panel's legend at `position`.
fn draw_legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: SeriesLabelPosition,
    path: &Path,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 11))
        .draw()
        .map_err(|e| figure_error(path, e))
}

fn params_figure(title: &str, records: &[RunRecord], path: &Path) -> Result<()> {
    let points = param_points(records);
    let tasks = tasks_of(records);
    let err = |e: &dyn std::fmt::Display| figure_error(path, e);
    let mut entries = LegendEntries::default();
    let (root, panels, spare) = canvas(
        path,
        tasks.len(),
        &format!("GLUE `{title}`: dev metric (median over seeds) against trainable adapter values"),
    )?;
    // The x axis is log10 of the trainable values, labelled in values
    // (plotters' own log axis crowds its labels). Full fine-tuning's
    // adapter values are the whole encoder: a point far to the right.
    let (x_lo, x_hi) = {
        let xs: Vec<f64> = points
            .values()
            .flat_map(|f| f.values().flatten().map(|p| p.0))
            .filter(|&x| x > 0.0)
            .map(f64::log10)
            .collect();
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() {
            (lo.floor() - 0.1, hi.ceil() + 0.1)
        } else {
            (0.0, 6.0)
        }
    };
    for (panel, task) in panels.iter().zip(&tasks) {
        let families = points.get(task).cloned().unwrap_or_default();
        let baseline = reference(records, *task);
        let (y_lo, y_hi) = padded(families.values().flatten().map(|p| p.1).chain(baseline), 0.5);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{task} ({})", task.metrics()[0].name()),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_labels(8)
            .x_desc("trainable adapter values (log scale)")
            .x_label_formatter(&|v| format_count(10f64.powf(*v)))
            .draw()
            .map_err(|e| err(&e))?;
        if let Some(b) = baseline {
            draw_reference(&mut chart, (x_lo, x_hi), b, path)?;
            entries.add(REFERENCE, REFERENCE_GREY, true);
        }
        let mut drawn: Vec<Vec<(f64, f64)>> = Vec::new();
        for (i, (family, line)) in families.iter().enumerate() {
            // A study's variants (`lora-xs · window 4, dropout 0`) share a
            // method: tell them apart by a palette instead.
            let (c, label) = match family.split_once(" · ") {
                Some((method, variant)) => {
                    let (r, g, b) = Palette99::pick(i).to_rgba().rgb();
                    (RGBColor(r, g, b), format!("{} · {variant}", family_name(method)))
                }
                None => (colour(family), family_name(family).to_string()),
            };
            let line: Vec<(f64, f64)> = line
                .iter()
                .filter(|p| p.0 > 0.0)
                .map(|&(x, y)| (x.log10(), y))
                .collect();
            entries.add(&label, c, false);
            chart
                .draw_series(LineSeries::new(line.iter().copied(), c.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(|e| err(&e))?;
            drawn.push(line);
        }
        if spare.is_none() {
            let drawn: Vec<&[(f64, f64)]> = drawn.iter().map(Vec::as_slice).collect();
            let corner = clearest_corner(
                &drawn,
                (x_lo, x_hi),
                (y_lo, y_hi),
                families.len() + usize::from(baseline.is_some()),
                LOWER_FIRST,
            );
            draw_legend(&mut chart, corner, path)?;
        }
    }
    if let Some(area) = &spare {
        draw_shared_legend(area, &entries, path)?;
    }
    root.present().map_err(|e| err(&e))
}

/// Two significant digits: `12288` → `12k`, `3162` → `3.2k`, `1500000` →
/// `1.5M`, `398` → `400`.
fn format_count(v: f64) -> String {
    let trim = |s: String| s.trim_end_matches('0').trim_end_matches('.').to_string();
    if v >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if v >= 100.0 {
        format!("{:.0}", (v / 10.0).round() * 10.0)
    } else {
        format!("{v:.0}")
    }
}

/// A running mean over `window` steps (shorter at the start).
pub fn smooth(values: &[f32], window: usize) -> Vec<f64> {
    let window = window.max(1);
    let mut out = Vec::with_capacity(values.len());
    let mut sum = 0.0f64;
    for (i, &v) in values.iter().enumerate() {
        sum += v as f64;
        if i >= window {
            sum -= values[i - window] as f64;
        }
        out.push(sum / (i + 1).min(window) as f64);
    }
    out
}

/// The legend label of a run among `runs`: its method, with every rank
/// the method has among them (`LoRA-XS (r=4, 8, 16)`), since a method's
/// runs share one colour whatever their rank, seed or rate.
fn legend_labels<'r>(runs: impl Iterator<Item = &'r RunRecord>) -> impl Fn(&RunRecord) -> String {
    let mut ranks: BTreeMap<String, std::collections::BTreeSet<usize>> = BTreeMap::new();
    for r in runs {
        let a = &r.config.adapter;
        ranks
            .entry(a.preset_name().to_string())
            .or_default()
            .insert(a.rank);
    }
    move |r: &RunRecord| {
        let preset = r.config.adapter.preset_name();
        match (preset, ranks.get(preset)) {
            ("full", _) | (_, None) => method_label(r),
            (_, Some(ranks)) => {
                let ranks: Vec<String> = ranks.iter().map(usize::to_string).collect();
                format!("{} (r={})", family_name(preset), ranks.join(", "))
            }
        }
    }
}

/// One line per run: its legend label, colour and points.
type Lines = Vec<(String, RGBColor, Vec<(f64, f64)>)>;

/// A figure with one panel per task and one line per run.
struct Panels<'a> {
    title: String,
    x_desc: &'a str,
    /// Epochs on the x axis (one label each), else steps.
    integer_x: bool,
    /// The dashed reference line of a task, if any.
    reference_of: &'a dyn Fn(GlueTask) -> Option<f64>,
    /// The corners the legend would rather take, best first (losses end
    /// low, metrics high); the one hiding least of the lines is used.
    legend: [SeriesLabelPosition; 4],
    y_desc: &'a dyn Fn(GlueTask) -> String,
    lines_of: &'a dyn Fn(&RunRecord) -> Vec<(f64, f64)>,
}

fn per_run_panels(panels: Panels<'_>, records: &[RunRecord], path: &Path) -> Result<()> {
    let Panels {
        title,
        x_desc,
        integer_x,
        reference_of,
        legend,
        y_desc,
        lines_of,
    } = panels;
    let tasks = tasks_of(records);
    let err = |e: &dyn std::fmt::Display| figure_error(path, e);
    let (root, panels, spare) = canvas(path, tasks.len(), &title)?;
    let mut entries = LegendEntries::default();
    let legend_label = legend_labels(records.iter());
    for (panel, task) in panels.iter().zip(&tasks) {
        let lines: Lines = records
            .iter()
            .filter(|r| r.config.task == *task)
            .map(|r| {
                (
                    legend_label(r),
                    colour(r.config.adapter.preset_name()),
                    lines_of(r),
                )
            })
            .filter(|(_, _, points)| !points.is_empty())
            .collect();
        let x_hi = lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.0))
            .fold(1.0f64, f64::max);
        // Epochs: from the first to the last, one label each.
        let (x_lo, x_hi) = if integer_x { (0.8, x_hi + 0.2) } else { (0.0, x_hi) };
        let baseline = reference_of(*task);
        let (y_lo, y_hi) = padded(
            lines.iter().flat_map(|l| l.2.iter().map(|p| p.1)).chain(baseline),
            0.01,
        );
        let mut chart = ChartBuilder::on(panel)
            .caption(task.to_string(), ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(|e| err(&e))?;
        let epochs = (x_hi - x_lo).round() as usize + 1;
        chart
            .configure_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_labels(if integer_x { epochs } else { 10 })
            .x_label_formatter(&|v| {
                if integer_x {
                    format!("{v:.0}")
                } else {
                    format_count(*v)
                }
            })
            .x_desc(x_desc)
            .y_desc(y_desc(*task))
            .draw()
            .map_err(|e| err(&e))?;
        if let Some(b) = baseline {
            draw_reference(&mut chart, (x_lo, x_hi), b, path)?;
            entries.add(REFERENCE, REFERENCE_GREY, true);
        }
        // Chosen before the lines move into the chart; only a figure
        // without a spare cell draws per-panel legends.
        let corner = spare.is_none().then(|| {
            let drawn: Vec<&[(f64, f64)]> = lines.iter().map(|l| l.2.as_slice()).collect();
            let families = lines
                .iter()
                .map(|l| &l.0)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            clearest_corner(
                &drawn,
                (x_lo, x_hi),
                (y_lo, y_hi),
                families + usize::from(baseline.is_some()),
                legend.clone(),
            )
        });
        // One legend entry per method (seeds, rates and ranks share its
        // colour, so they share its entry).
        let mut labelled = std::collections::BTreeSet::new();
        for (family, c, points) in lines {
            let series = chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    c.mix(0.75).stroke_width(2),
                ))
                .map_err(|e| err(&e))?;
            entries.add(&family, c, false);
            if labelled.insert(family.clone()) {
                series
                    .label(family)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            }
            if points.len() < 12 {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(|e| err(&e))?;
            }
        }
        if let Some(corner) = corner {
            draw_legend(&mut chart, corner, path)?;
        }
    }
    if let Some(area) = &spare {
        draw_shared_legend(area, &entries, path)?;
    }
    root.present().map_err(|e| err(&e))
}

fn loss_figure(title: &str, records: &[RunRecord], path: &Path) -> Result<()> {
    let panels = Panels {
        title: format!("GLUE `{title}`: training loss per step (running mean over 1/20 of the run)"),
        x_desc: "optimiser step",
        integer_x: false,
        reference_of: &|_| None,
        legend: UPPER_FIRST,
        y_desc: &|_| "training loss".to_string(),
        lines_of: &|r: &RunRecord| {
            let losses: Vec<f32> = r
                .epochs
                .iter()
                .flat_map(|e| e.step_losses.iter().copied())
                .collect();
            smooth(&losses, losses.len() / 20)
                .into_iter()
                .enumerate()
                .map(|(i, v)| ((i + 1) as f64, v))
                .collect()
        },
    };
    per_run_panels(panels, records, path)
}

fn dev_figure(title: &str, records: &[RunRecord], path: &Path) -> Result<()> {
    let panels = Panels {
        title: format!("GLUE `{title}`: dev metric after each epoch"),
        x_desc: "epoch",
        integer_x: true,
        reference_of: &|t| reference(records, t),
        legend: LOWER_FIRST,
        y_desc: &|t| format!("{} ×100", t.metrics()[0].name()),
        lines_of: &|r: &RunRecord| {
            r.epochs
                .iter()
                .filter_map(|e| e.metrics.get(&r.metric).map(|v| (e.epoch as f64, v * 100.0)))
                .collect()
        },
    };
    per_run_panels(panels, records, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legend_takes_the_corner_that_hides_least_of_the_lines() {
        use SeriesLabelPosition::*;
        let range = ((0.0, 10.0), (0.0, 10.0));
        // Lines ending high leave the lower corners free: the preferred
        // lower right is kept.
        let rising: &[(f64, f64)] = &[(0.0, 5.0), (10.0, 9.5)];
        let at = |lines: &[&[(f64, f64)]], pref| clearest_corner(lines, range.0, range.1, 4, pref);
        assert!(matches!(at(&[rising], LOWER_FIRST), LowerRight));
        // A line through the lower right (drawn between two far dots, so
        // only its segment crosses the corner) sends it to the lower left.
        let dipping: &[(f64, f64)] = &[(4.0, 9.0), (10.0, 0.0)];
        assert!(matches!(at(&[rising, dipping], LOWER_FIRST), LowerLeft));
        // Lines everywhere but the upper left.
        let low: &[(f64, f64)] = &[(0.0, 0.5), (10.0, 0.5)];
        let right: &[(f64, f64)] = &[(9.5, 0.0), (9.5, 10.0)];
        assert!(matches!(at(&[low, right], LOWER_FIRST), UpperLeft));
        // Losses (falling lines) keep the preferred upper right free.
        let falling: &[(f64, f64)] = &[(0.0, 7.0), (10.0, 0.5)];
        assert!(matches!(at(&[falling], UPPER_FIRST), UpperRight));
    }

    #[test]
    fn counts_and_running_means() {
        assert_eq!(format_count(12288.0), "12k");
        assert_eq!(format_count(1_500_000.0), "1.5M");
        assert_eq!(format_count(96.0), "96");
        assert_eq!(format_count(3162.3), "3.2k");
        assert_eq!(format_count(398.1), "400");
        assert_eq!(smooth(&[1.0, 3.0, 5.0, 7.0], 2), vec![1.0, 2.0, 4.0, 6.0]);
        assert_eq!(smooth(&[2.0, 4.0], 0), vec![2.0, 4.0]);
    }
}
