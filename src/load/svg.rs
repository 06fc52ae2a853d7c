//! The run's chart as one self-contained SVG: the fan-out latency distribution (latency
//! against percentile), watchers connected over time, and the server's RSS over time.

use std::fmt::Write;

use hdrhistogram::Histogram;

use super::report::Sample;

const WIDTH: f64 = 900.0;
const PANEL: f64 = 230.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;

/// One panel: a title, axis labels and a polyline.
struct Panel<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    points: Vec<(f64, f64)>,
    /// Tick labels along x, at data x values (empty: numeric ticks).
    x_ticks: Vec<(f64, String)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Where a panel's data lands on the page.
struct Scale {
    /// Top of the plot area.
    y0: f64,
    /// Width and height of the plot area.
    w: f64,
    h: f64,
    xmin: f64,
    xspan: f64,
    /// The top of the y axis: the largest value plus 5 %.
    ymax: f64,
}

impl Scale {
    fn of(points: &[(f64, f64)], y0: f64, w: f64, h: f64) -> Scale {
        let (xmin, xmax) = points
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &(x, _)| (a.min(x), b.max(x)));
        let ymax = points.iter().map(|&(_, y)| y).fold(0.0, f64::max).max(1e-9) * 1.05;
        Scale {
            y0,
            w,
            h,
            xmin,
            xspan: (xmax - xmin).max(1e-9),
            ymax,
        }
    }

    fn x(&self, x: f64) -> f64 {
        LEFT + (x - self.xmin) / self.xspan * self.w
    }

    fn y(&self, y: f64) -> f64 {
        self.y0 + self.h - y / self.ymax * self.h
    }
}

fn draw(out: &mut String, p: &Panel, top: f64) {
    let (w, h) = (WIDTH - LEFT - RIGHT, PANEL - 70.0);
    let y0 = top + TOP;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
        top + 18.0,
        esc(p.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##
    );
    if p.points.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">no data</text>"#,
            LEFT + 10.0,
            y0 + 20.0
        );
        return;
    }
    let scale = Scale::of(&p.points, y0, w, h);
    let pts: Vec<String> = p
        .points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", scale.x(x), scale.y(y)))
        .collect();
    let _ = writeln!(
        out,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/>"##,
        pts.join(" ")
    );
    draw_axes(out, p, &scale);
}

/// Tick labels on both axes and the axis titles.
fn draw_axes(out: &mut String, p: &Panel, s: &Scale) {
    for i in 0..=4 {
        let y = s.ymax * i as f64 / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"#,
            LEFT - 5.0,
            s.y(y) + 4.0,
            short(y)
        );
    }
    let ticks: Vec<(f64, String)> = if p.x_ticks.is_empty() {
        (0..=5)
            .map(|i| s.xmin + s.xspan * i as f64 / 5.0)
            .map(|x| (x, short(x)))
            .collect()
    } else {
        p.x_ticks.clone()
    };
    for (x, label) in ticks {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="11">{}</text>"#,
            s.x(x),
            s.y0 + s.h + 15.0,
            esc(&label)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="12">{}</text>"#,
        LEFT + s.w / 2.0,
        s.y0 + s.h + 32.0,
        esc(p.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text x="15" y="{:.1}" font-size="12" transform="rotate(-90 15 {:.1})" text-anchor="middle">{}</text>"#,
        s.y0 + s.h / 2.0,
        s.y0 + s.h / 2.0,
        esc(p.y_label)
    );
}

fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The chart: latency distribution (ns histogram), connections and RSS over time.
pub fn chart(title: &str, hist: &Histogram<u64>, timeline: &[Sample]) -> String {
    // x = log10(1 / (1 - q)): 0 at p0, 1 at p90, 2 at p99, 3 at p99.9, 4 at p99.99.
    let mut latency = Vec::new();
    if !hist.is_empty() {
        for i in 0..=400 {
            let x = i as f64 / 100.0;
            let q = 1.0 - 10f64.powf(-x);
            latency.push((x, hist.value_at_quantile(q) as f64 / 1e6));
        }
        latency.push((4.2, hist.max() as f64 / 1e6));
    }
    let ticks = ["p0", "p90", "p99", "p99.9", "p99.99"]
        .iter()
        .enumerate()
        .map(|(i, l)| (i as f64, l.to_string()))
        .collect();
    let panels = [
        Panel {
            title: "Fan-out latency, publish → watcher",
            x_label: "percentile",
            y_label: "ms",
            points: latency,
            x_ticks: ticks,
        },
        Panel {
            title: "Watchers open",
            x_label: "seconds",
            y_label: "connections",
            points: timeline.iter().map(|s| (s.t_s, s.open as f64)).collect(),
            x_ticks: Vec::new(),
        },
        Panel {
            title: "Server RSS",
            x_label: "seconds",
            y_label: "MiB",
            points: timeline
                .iter()
                .filter_map(|s| Some((s.t_s, s.rss? as f64 / 1048576.0)))
                .collect(),
            x_ticks: Vec::new(),
        },
    ];
    let height = TOP + PANEL * panels.len() as f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="20" font-size="15">{}</text>
"#,
        esc(title)
    );
    for (i, p) in panels.iter().enumerate() {
        draw(&mut out, p, TOP + PANEL * i as f64);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_well_formed_even_without_data() {
        let mut h = crate::load::stats::histogram();
        let empty = chart("t", &h, &[]);
        assert!(empty.starts_with("<svg") && empty.ends_with("</svg>\n"));
        assert_eq!(empty.matches("no data").count(), 3);
        h.record(1_000_000).unwrap();
        let s = Sample {
            t_s: 1.0,
            connected: 5,
            open: 5,
            deliveries: 0,
            rss: Some(1 << 20),
        };
        let full = chart("a < b", &h, &[s, Sample { t_s: 2.0, ..s }]);
        assert_eq!(full.matches("<polyline").count(), 3);
        assert!(full.contains("a &lt; b"));
    }
}
