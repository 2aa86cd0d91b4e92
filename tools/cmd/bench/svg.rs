//! A recall-vs-latency scatter plot with its Pareto frontier, written as plain SVG text.

use std::fmt::Write;

use super::sweep::Point;

const W: f64 = 900.0;
const H: f64 = 560.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// Tick positions covering `lo..=hi`: five to eight at a 1, 2 or 5 step.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 8.0).unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-6 {
        out.push(t);
        t += step;
    }
    out
}

/// Escapes text for an SVG text node.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Draws every point (latency on x, recall on y), labels each with its settings, and joins the
/// Pareto frontier with a line.
pub fn pareto_svg(points: &[Point], title: &str, k: usize) -> String {
    let max_x = points.iter().map(|p| p.p50_ms).fold(0.0, f64::max) * 1.08;
    let max_x = if max_x > 0.0 { max_x } else { 1.0 };
    let min_y = points.iter().map(|p| p.recall).fold(1.0, f64::min);
    let min_y = ((min_y - 0.02) * 20.0).floor() / 20.0;
    let min_y = min_y.clamp(0.0, 0.95);
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let sx = |v: f64| x0 + (v / max_x) * (x1 - x0);
    let sy = |v: f64| y0 + (v - min_y) / (1.0 - min_y) * (y1 - y0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    // Grid, ticks and tick labels.
    for t in ticks(0.0, max_x) {
        let x = sx(t);
        let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#e4e4e4"/>"##);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            y0 + 16.0,
            trim(t)
        );
    }
    for t in ticks(min_y, 1.0) {
        let y = sy(t);
        let _ = writeln!(s, r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e4e4e4"/>"##);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            x0 - 6.0,
            y + 4.0,
            trim(t)
        );
    }
    // Axes and their labels.
    let _ = writeln!(s, r#"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>"#);
    let _ = writeln!(s, r#"<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">p50 latency of one query (ms)</text>"#,
        (x0 + x1) / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" font-size="13" text-anchor="middle" transform="rotate(-90 18 {:.1})">recall@{k} vs exhaustive</text>"#,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
    // The frontier, joined in latency order.
    let mut front: Vec<&Point> = points.iter().filter(|p| p.pareto).collect();
    front.sort_by(|a, b| a.p50_ms.total_cmp(&b.p50_ms));
    let path: Vec<String> =
        front.iter().map(|p| format!("{:.1},{:.1}", sx(p.p50_ms), sy(p.recall))).collect();
    if path.len() > 1 {
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#d62728" stroke-width="2"/>"##,
            path.join(" ")
        );
    }
    // Points: others first (grey), the frontier on top (red, bold labels).
    for p in points.iter().filter(|p| !p.pareto).chain(front.iter().copied()) {
        let (x, y) = (sx(p.p50_ms), sy(p.recall));
        let (fill, r, weight, size) =
            if p.pareto { ("#d62728", 4.5, "bold", 10) } else { ("#7f7f7f", 3.0, "normal", 8) };
        let label = esc(&p.label());
        let _ = writeln!(
            s,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{fill}"><title>{label}: {:.3} ms, recall {:.4}</title></circle>"#,
            p.p50_ms, p.recall
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="{size}" font-weight="{weight}" fill="{fill}">{label}</text>"#,
            x + 6.0,
            y - 4.0
        );
    }
    // Legend.
    let _ = writeln!(
        s,
        r##"<circle cx="{:.1}" cy="{:.1}" r="4.5" fill="#d62728"/><text x="{:.1}" y="{:.1}" font-size="11">Pareto frontier (nc = ncells, t = threshold, nd = ndocs)</text>"##,
        x0 + 14.0,
        y0 - 16.0,
        x0 + 24.0,
        y0 - 12.0
    );
    s.push_str("</svg>\n");
    s
}

/// A tick value without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_the_range_at_a_round_step() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.8, 1.0);
        assert!((t[0] - 0.8).abs() < 1e-9 && (t.last().unwrap() - 1.0).abs() < 1e-9, "{t:?}");
    }

    #[test]
    fn the_plot_labels_every_point_and_draws_the_frontier() {
        let mut points = vec![
            Point {
                mode: "plaid",
                ncells: Some(1),
                threshold: Some(0.5),
                ndocs: Some(64),
                nprobe: None,
                warp_rescore: None,
                p50_ms: 1.0,
                p95_ms: 1.2,
                recall: 0.8,
                pareto: false,
            },
            Point {
                mode: "plaid",
                ncells: Some(4),
                threshold: Some(0.45),
                ndocs: Some(256),
                nprobe: None,
                warp_rescore: None,
                p50_ms: 2.0,
                p95_ms: 2.5,
                recall: 0.99,
                pareto: false,
            },
            Point {
                mode: "plaid",
                ncells: Some(2),
                threshold: Some(0.4),
                ndocs: Some(128),
                nprobe: None,
                warp_rescore: None,
                p50_ms: 3.0,
                p95_ms: 3.5,
                recall: 0.9,
                pareto: false,
            },
        ];
        super::super::sweep::mark_pareto(&mut points);
        let svg = pareto_svg(&points, "a <title>", 10);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for p in &points {
            assert!(svg.contains(&p.label()), "missing label {}", p.label());
        }
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("a &lt;title&gt;"));
        assert!(svg.contains("recall@10"));
    }
}
