//! Bar charts drawn on the server as SVG: no script and no chart library in the browser, and
//! every bar's number is printed in the table beside it, so a chart never shows a figure the
//! page does not state.

/// A chart ready to draw: bars in a `width` x `height` box (SVG user units).
pub(crate) struct BarChart {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) bars: Vec<Bar>,
    /// The value of the tallest bar, printed at the top of the axis.
    pub(crate) top: String,
}

/// One bar: where it sits, and what it stands for.
pub(crate) struct Bar {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// E.g. `2026-12-07: 1.25 credits`, the bar's tooltip and accessible name.
    pub(crate) title: String,
}

const WIDTH: u32 = 560;
const HEIGHT: u32 = 120;
const GAP: u32 = 4;

/// Bars for `points` (label, value), scaled to the largest value; `format` prints a value.
pub(crate) fn bar_chart(points: &[(String, i64)], format: impl Fn(i64) -> String) -> BarChart {
    let max = points.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let slots = u32::try_from(points.len().max(1)).unwrap_or(u32::MAX);
    let slot = WIDTH / slots;
    let bars = points
        .iter()
        .enumerate()
        .map(|(i, (label, value))| {
            let value = (*value).max(0);
            // At least one unit tall when non-zero, so a small spend is not invisible.
            let height = u32::try_from(value.saturating_mul(i64::from(HEIGHT)) / max)
                .unwrap_or(HEIGHT)
                .max(u32::from(value > 0));
            Bar {
                x: u32::try_from(i).unwrap_or(0) * slot + GAP / 2,
                y: HEIGHT - height,
                width: slot.saturating_sub(GAP).max(1),
                height,
                title: format!("{label}: {}", format(value)),
            }
        })
        .collect();
    BarChart { width: WIDTH, height: HEIGHT, bars, top: format(max) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value_and_small_ones_stay_visible() {
        let points = vec![("a".to_owned(), 0), ("b".to_owned(), 1), ("c".to_owned(), 1_000)];
        let chart = bar_chart(&points, |v| v.to_string());
        let heights: Vec<u32> = chart.bars.iter().map(|b| b.height).collect();
        assert_eq!(heights, vec![0, 1, HEIGHT]);
        assert_eq!(chart.bars[2].y, 0);
        assert_eq!(chart.bars[1].title, "b: 1");
        assert_eq!(chart.top, "1000");
    }
}
