// Training curves from a --metrics file (one JSON object per line, as `qpeft train --metrics`
// writes) drawn as a self-contained SVG: one panel per metric, stacked, sharing the step axis.
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

}  // namespace qpeft
