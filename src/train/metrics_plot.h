// Training curves from a --metrics file (one JSON object per line, as `qpeft train --metrics`
// writes) drawn as a self-contained SVG: one panel per metric, stacked, sharing the step axis;
// and results (a value, optionally ± its spread over seeds, per row) as a bar chart.
#pragma once
#include <string>
#include <vector>

namespace qpeft {

struct MetricSeries {
  std::string key;                       // e.g. "loss", "eval_accuracy", "lr"
  std::vector<double> steps, values;     // same length, in file order
};

// The numeric series of `keys` (x = each line's "step"); empty `keys`: loss, every eval_* key
// present, and lr. Errors name the file and line (bad JSON, no "step") or the missing key and
// the keys the file has.
std::vector<MetricSeries> read_metric_series(const std::string& path, const std::vector<std::string>& keys);

// The SVG document: width 720, one 220-pixel panel per series with its axis ticks and labels.
std::string render_metric_series_svg(const std::vector<MetricSeries>& series, const std::string& title);

struct BarRow {
  std::string label;
  double value = 0, spread = 0;  // spread: half the whisker (e.g. the seeds' standard deviation); 0 = none
};

// Rows of a tab-separated file: `label<TAB>value[<TAB>spread]`; blank lines and lines starting
// with '#' are skipped. Errors name the file and line.
std::vector<BarRow> read_bar_rows(const std::string& path);

// Horizontal bars from zero (or from the smallest value when one is negative), one per row,
// labelled on the left, the value at the bar's end, whiskers for the spread.
std::string render_bar_chart_svg(const std::vector<BarRow>& rows, const std::string& title);

}  // namespace qpeft
