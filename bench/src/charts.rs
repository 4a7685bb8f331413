//! PNG bar charts for docs/benchmarks.md, drawn with `plotters` on a bitmap. Text
//! uses a TrueType font read from the system (Debian's `fonts-dejavu-core`,
//! which `scripts/bench` installs when missing).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers the font once; charts cannot be drawn without one.
pub fn load_font() -> anyhow::Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).exists())
        .context("no DejaVuSans.ttf found: install Debian's fonts-dejavu-core")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{path} is not a usable font"))?;
    Ok(())
}

/// One group of bars (e.g. a scenario), one bar per series (e.g. a system).
pub struct Group {
    pub label: String,
    pub values: Vec<f64>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A grouped bar chart: `series` names the bars of every group, in order.
pub fn bars(path: &Path, title: &str, unit: &str, series: &[String], groups: &[Group]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = groups
        .iter()
        .flat_map(|g| g.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let slots = series.len() + 1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..(groups.len() * slots) as f64, 0.0..top)?;
    // Group names go under each group's middle, drawn here: the mesh's own x
    // labels fall on "nice" numbers and skip groups.
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(unit)
        .x_label_formatter(&|_| String::new())
        .draw()?;
    let below = ("sans-serif", 14)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (g, group) in groups.iter().enumerate() {
        let middle = (g * slots) as f64 + series.len() as f64 / 2.0;
        let (x, y) = chart.backend_coord(&(middle, 0.0));
        root.draw(&Text::new(group.label.clone(), (x, y + 8), below.clone()))?;
    }
    for (s, name) in series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        chart
            .draw_series(groups.iter().enumerate().filter_map(|(g, group)| {
                let value = *group.values.get(s)?;
                if !value.is_finite() {
                    return None;
                }
                let x = (g * slots + s) as f64;
                Some(Rectangle::new([(x + 0.1, 0.0), (x + 0.9, value)], color.filled()))
            }))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
