//! The cluster family's chart, as a hand-written SVG: two panels side by side against the
//! cluster size (a log scale, since the sizes double): idle CPU per node, and time from the last
//! node's start to a full mesh, each with its floor as a dashed line and Erlang's curves beside
//! Switchboard's. SVG is text, so `BENCHMARKS.md` can embed the file and a diff can show it.

use std::fmt::Write as _;

/// One line of a panel: its legend, its colour, and a value per cluster size (none where not
/// measured).
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) colour: &'static str,
    pub(crate) points: Vec<(usize, Option<f64>)>,
}

/// One panel: a title, the unit of its values, its lines, and a floor to draw.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    pub(crate) title: String,
    pub(crate) unit: &'static str,
    pub(crate) series: Vec<Series>,
    /// A horizontal dashed line and its label, such as the 1% floor.
    pub(crate) floor: Option<(f64, String)>,
}

const PANEL_WIDTH: f64 = 480.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 92.0;
const BOTTOM: f64 = 48.0;

/// The chart: `panels` side by side under `title`, against the cluster sizes `sizes`.
pub(crate) fn render(title: &str, sizes: &[usize], panels: &[Panel]) -> String {
    let width = PANEL_WIDTH * panels.len() as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (index, panel) in panels.iter().enumerate() {
        draw_panel(&mut svg, PANEL_WIDTH * index as f64, sizes, panel);
    }
    svg.push_str("</svg>\n");
    svg
}

fn draw_panel(svg: &mut String, x0: f64, sizes: &[usize], panel: &Panel) {
    let (left, right) = (x0 + LEFT, x0 + PANEL_WIDTH - RIGHT);
    let (top, bottom) = (TOP, HEIGHT - BOTTOM);
    let log = |n: usize| (n.max(1) as f64).log2();
    let (lo, hi) = (
        sizes.iter().copied().map(log).fold(f64::INFINITY, f64::min),
        sizes
            .iter()
            .copied()
            .map(log)
            .fold(f64::NEG_INFINITY, f64::max),
    );
    let x = |n: usize| {
        if hi > lo {
            left + (log(n) - lo) / (hi - lo) * (right - left)
        } else {
            (left + right) / 2.0
        }
    };
    let largest = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|(_, v)| *v))
        .chain(panel.floor.as_ref().map(|(v, _)| *v))
        .fold(0.0_f64, f64::max);
    let top_value = nice_ceiling(largest * 1.1);
    let y = |v: f64| bottom - v / top_value * (bottom - top);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="44" text-anchor="middle" font-size="13">{}</text>"#,
        (left + right) / 2.0,
        escape(&panel.title)
    );
    // Grid lines and the y axis's labels: five steps.
    for step in 0..=5 {
        let value = top_value * f64::from(step) / 5.0;
        let at = y(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{at:.1}" x2="{right}" y2="{at:.1}" stroke="#e4e4e4"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            at + 4.0,
            number(value)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text>"#,
        x0 + 16.0,
        (top + bottom) / 2.0,
        x0 + 16.0,
        (top + bottom) / 2.0,
        escape(panel.unit)
    );
    // The x axis: a tick per measured size.
    let _ = writeln!(
        svg,
        r#"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>"#
    );
    for &n in sizes {
        let at = x(n);
        let _ = writeln!(
            svg,
            r#"<line x1="{at:.1}" y1="{bottom}" x2="{at:.1}" y2="{:.1}" stroke="black"/>"#,
            bottom + 5.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{at:.1}" y="{:.1}" text-anchor="middle">{n}</text>"#,
            bottom + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">nodes in the cluster</text>"#,
        (left + right) / 2.0,
        bottom + 36.0
    );
    if let Some((value, label)) = &panel.floor {
        let at = y(*value);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{at:.1}" x2="{right}" y2="{at:.1}" stroke="#c00000" stroke-dasharray="6 4"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#c00000">{}</text>"##,
            right - 2.0,
            at - 4.0,
            escape(label)
        );
    }
    for (index, series) in panel.series.iter().enumerate() {
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter_map(|&(n, v)| Some((x(n), y(v?))))
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        if points.len() > 1 {
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                path.join(" "),
                series.colour
            );
        }
        for (px, py) in &points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="{}"/>"#,
                series.colour
            );
        }
        // The legend: one line per series above the plot.
        let ly = 60.0 + 14.0 * index as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"/>"#,
            ly - 4.0,
            left + 18.0,
            ly - 4.0,
            series.colour
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#,
            left + 24.0,
            escape(&series.label)
        );
    }
}

/// The smallest of 1, 2 and 5 times a power of ten at or above `value` (1 for nothing).
fn nice_ceiling(value: f64) -> f64 {
    if !(value > 0.0 && value.is_finite()) {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&c| c >= value * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// An axis label: no more digits than it needs.
fn number(value: f64) -> String {
    let text = if value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(nice_ceiling(0.83), 1.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(3.3), 5.0);
        assert_eq!(nice_ceiling(5.0), 5.0);
        assert_eq!(nice_ceiling(730.0), 1000.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(number(0.4), "0.4");
        assert_eq!(number(2.0), "2");
        assert_eq!(number(250.0), "250");
    }

    #[test]
    fn draws_every_measured_point_and_skips_the_rest() {
        let panel = Panel {
            title: "idle CPU per node".into(),
            unit: "% of one core",
            series: vec![
                Series {
                    label: "Switchboard".into(),
                    colour: "#1f77b4",
                    points: vec![(5, Some(0.2)), (16, Some(0.4)), (64, None)],
                },
                Series {
                    label: "Erlang <ticktime 1>".into(),
                    colour: "#ff7f0e",
                    points: vec![(5, Some(0.1))],
                },
            ],
            floor: Some((1.0, "floor 1%".into())),
        };
        let svg = render("cluster & scaling", &[5, 16, 64], &[panel.clone(), panel]);
        assert!(svg.starts_with("<svg xmlns="), "{svg}");
        assert!(svg.ends_with("</svg>\n"));
        assert!(svg.contains("cluster &amp; scaling"));
        assert!(svg.contains("Erlang &lt;ticktime 1&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2, "one line per panel");
        assert_eq!(svg.matches("<circle").count(), 6);
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
    }
}
