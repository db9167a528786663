//! The evaluation's figures, as SVG: the ROC curves (the paper's Figure 13) and the histogram of
//! minutes to 100 predicted connections (Figure 14).

use std::path::Path;

use plotters::prelude::*;

use super::{mode_name, EvalReport, Role, MODES};

pub type Plot = Result<(), Box<dyn std::error::Error>>;

const SIZE: (u32, u32) = (720, 540);
const COLOURS: [RGBColor; 4] = [RED, BLUE, RGBColor(0, 150, 0), BLACK];

/// TPR against FPR, one curve per mode, a point per threshold.
pub fn roc_svg(report: &EvalReport, path: &Path) -> Plot {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Scan detection: BitTorrent hosts vs scanners, thresholds per point",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.02f64..1.02f64, -0.02f64..1.02f64)?;
    chart
        .configure_mesh()
        .x_desc("false positive rate (BitTorrent hosts flagged)")
        .y_desc("true positive rate (scanners flagged)")
        .draw()?;
    for (mode, colour) in MODES.map(mode_name).into_iter().zip(COLOURS) {
        let points: Vec<(f64, f64, u64)> = report
            .roc
            .iter()
            .filter(|r| r.mode == mode)
            .map(|r| (r.fpr, r.tpr, r.threshold))
            .collect();
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), colour))?
            .label(mode)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart.draw_series(points.iter().map(|&(x, y, t)| {
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 3, colour.filled())
                + Text::new(t.to_string(), (5, -12), ("sans-serif", 11).into_font())
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// BitTorrent hosts by minutes from their first to their 100th predicted connection, in
/// 15-minute bins; hosts that never made 100 are counted in the caption.
pub fn time_to_100_svg(report: &EvalReport, path: &Path) -> Plot {
    const BIN: f64 = 15.0;
    let bittorrent = report
        .hosts
        .iter()
        .filter(|h| h.label.role == Role::Bittorrent);
    let minutes: Vec<f64> = bittorrent
        .clone()
        .filter_map(|h| h.minutes_to_100_predicted)
        .collect();
    let never = bittorrent.count() - minutes.len();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    // minutes ≥ 0, far below 2^32 bins
    let bin_of = |m: f64| (m / BIN).floor() as u32;
    let bins = minutes.iter().map(|&m| bin_of(m)).max().unwrap_or(0) + 1;
    let tallest = (0..bins)
        .map(|b| minutes.iter().filter(|&&m| bin_of(m) == b).count())
        .max()
        .unwrap_or(0);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "Minutes from first to 100th predicted connection ({} hosts; {never} never reached 100)",
        minutes.len()
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(50)
        .build_cartesian_2d(
            (0u32..bins).into_segmented(),
            0u32..u32::try_from(tallest + 1)?,
        )?;
    chart
        .configure_mesh()
        .x_desc("15-minute bin (0 = first 15 minutes)")
        .y_desc("BitTorrent hosts")
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(BLUE.filled())
            .margin(8)
            .data(minutes.iter().map(|&m| (bin_of(m), 1))),
    )?;
    root.present()?;
    Ok(())
}
