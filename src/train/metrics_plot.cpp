#include "train/metrics_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "core/lines.h"
#include "io/json_reader.h"

namespace qpeft {

namespace {

std::string join(const std::set<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s.empty() ? "none" : s;
}

std::string xml_escaped(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// The document's opening: size, white background, the title centred on top.
std::string svg_start(double width, double height, int font_size, const std::string& title) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0:.0f}\" height=\"{1:.0f}\" viewBox=\"0 0 {0:.0f} {1:.0f}\" "
      "font-family=\"sans-serif\" font-size=\"{2}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{3:.0f}\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">{4}</text>\n",
      width, height, font_size, width / 2, xml_escaped(title));
}

// Tick marks at 1, 2 or 5 times a power of ten, about `target` of them across [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int target) {
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double unit = raw / mag < 1.5 ? 1 : raw / mag < 3.5 ? 2 : raw / mag < 7.5 ? 5 : 10;
  const double step = unit * mag;
  std::vector<double> ticks;
  const double first = std::ceil(lo / step - 1e-9);
  for (int i = 0;; ++i) {
    const double t = (first + i) * step;
    if (t > hi + step * 1e-9) break;
    ticks.push_back(t == 0 ? 0.0 : t);  // never "-0"
  }
  return ticks;
}

// The value range of a panel, widened when flat so the line sits mid-panel.
std::pair<double, double> padded_range(const std::vector<double>& v) {
  auto [mn, mx] = std::minmax_element(v.begin(), v.end());
  double lo = *mn, hi = *mx;
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {
    const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.05;
    return {lo - pad, hi + pad};
  }
  const double pad = (hi - lo) * 0.05;
  return {lo - pad, hi + pad};
}

}  // namespace

std::vector<MetricSeries> read_metric_series(const std::string& path, const std::vector<std::string>& keys) {
  const std::string text = read_text_file(path);
  std::map<std::string, MetricSeries> by_key;
  std::set<std::string> present;
  std::string_view line;
  int64_t line_no = 0;
  for (LineCursor lines(text); lines.next(&line, &line_no);) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = fmt::format("{}:{}", path, line_no);
    const nlohmann::json rec = parse_json(line, where);
    QP_CHECK(rec.is_object(), "{}: expected one JSON object per line (a qpeft train --metrics file), found {}", where,
             describe_json(rec));
    const auto step = rec.find("step");
    QP_CHECK(step != rec.end() && step->is_number(),
             "{}: no numeric \"step\": is this a qpeft train --metrics file?", where);
    for (const auto& [k, v] : rec.items()) {
      if (k == "step" || !v.is_number()) continue;
      present.insert(k);
      const double x = v.get<double>();
      if (!std::isfinite(x)) continue;
      MetricSeries& s = by_key[k];
      s.key = k;
      s.steps.push_back(step->get<double>());
      s.values.push_back(x);
    }
  }
  QP_CHECK(!present.empty(), "{}: no metrics in it (empty file?)", path);
  std::vector<std::string> wanted = keys;
  if (wanted.empty()) {
    if (present.count("loss")) wanted.push_back("loss");
    for (const auto& k : present)
      if (k.rfind("eval_", 0) == 0) wanted.push_back(k);
    if (present.count("lr")) wanted.push_back("lr");
    QP_CHECK(!wanted.empty(), "{}: none of loss, eval_*, lr in it; name the metrics with --keys (it has: {})", path,
             join(present));
  }
  std::vector<MetricSeries> out;
  for (const auto& k : wanted) {
    QP_CHECK(present.count(k), "--keys: \"{}\" is not in {} (it has: {})", k, path, join(present));
    QP_CHECK(by_key.count(k), "--keys: \"{}\" in {} has no finite value to draw", k, path);
    out.push_back(by_key[k]);
  }
  return out;
}

std::string render_metric_series_svg(const std::vector<MetricSeries>& series, const std::string& title) {
  QP_CHECK(!series.empty(), "nothing to plot: no series");
  constexpr double kWidth = 720, kPanel = 220, kTop = 40, kLeft = 80, kRight = 20, kPlotTop = 28, kPlotH = 150;
  const double height = kTop + kPanel * double(series.size());
  const double plot_w = kWidth - kLeft - kRight;
  double x_lo = series[0].steps.front(), x_hi = x_lo;
  for (const auto& s : series)
    for (double x : s.steps) x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x);
  if (x_hi == x_lo) x_hi = x_lo + 1;
  const auto x_px = [&](double x) { return kLeft + (x - x_lo) / (x_hi - x_lo) * plot_w; };

  std::string svg = svg_start(kWidth, height, 11, title);
  const std::vector<double> x_ticks = nice_ticks(x_lo, x_hi, 8);
  for (size_t p = 0; p < series.size(); ++p) {
    const MetricSeries& s = series[p];
    const double top = kTop + kPanel * double(p) + kPlotTop, bottom = top + kPlotH;
    // Named copies, not a structured binding: clang does not let lambdas capture those.
    const std::pair<double, double> y_range = padded_range(s.values);
    const double y_lo = y_range.first, y_hi = y_range.second;
    const auto y_px = [&](double y) { return bottom - (y - y_lo) / (y_hi - y_lo) * kPlotH; };
    svg += fmt::format("<g>\n<text x=\"{:.0f}\" y=\"{:.1f}\" font-size=\"13\" font-weight=\"bold\">{}</text>\n", kLeft,
                       top - 8, xml_escaped(s.key));
    svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"none\" "
                       "stroke=\"#444\"/>\n", kLeft, top, plot_w, kPlotH);
    for (double t : nice_ticks(y_lo, y_hi, 4)) {
      const double y = y_px(t);
      svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>"
                         "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{:.4g}</text>\n",
                         kLeft, y, kLeft + plot_w, y, kLeft - 6, y + 4, t);
    }
    for (double t : x_ticks) {
      const double x = x_px(t);
      svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#444\"/>"
                         "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:.6g}</text>\n",
                         x, bottom, x, bottom + 4, x, bottom + 16, t);
    }
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\" fill=\"#666\">step</text>\n",
                       kLeft + plot_w, bottom + 30);
    // Few points (evaluations): markers too, so a single evaluation still shows.
    std::string points;
    for (size_t i = 0; i < s.steps.size(); ++i)
      points += fmt::format("{}{:.1f},{:.1f}", i ? " " : "", x_px(s.steps[i]), y_px(s.values[i]));
    svg += fmt::format("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>\n", points);
    if (s.steps.size() <= 40)
      for (size_t i = 0; i < s.steps.size(); ++i)
        svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"#1f77b4\"/>\n", x_px(s.steps[i]),
                           y_px(s.values[i]));
    svg += "</g>\n";
  }
  svg += "</svg>\n";
  return svg;
}

std::vector<BarRow> read_bar_rows(const std::string& path) {
  const std::string text = read_text_file(path);
  std::vector<BarRow> rows;
  std::string_view raw_line;
  int64_t line_no = 0;
  const auto number = [&](const std::string& field, const std::string& where, const char* what) {
    char* end = nullptr;
    const double v = std::strtod(field.c_str(), &end);
    QP_CHECK(!field.empty() && *end == 0 && std::isfinite(v), "{}: the {} \"{}\" is not a finite number", where, what,
             field);
    return v;
  };
  for (LineCursor lines(text); lines.next(&raw_line, &line_no);) {
    std::string line(raw_line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[0] == '#') continue;
    const std::string where = fmt::format("{}:{}", path, line_no);
    std::vector<std::string> fields;
    for (size_t a = 0;;) {
      const size_t tab = line.find('\t', a);
      fields.push_back(line.substr(a, tab == std::string::npos ? std::string::npos : tab - a));
      if (tab == std::string::npos) break;
      a = tab + 1;
    }
    QP_CHECK(fields.size() == 2 || fields.size() == 3,
             "{}: expected label<TAB>value or label<TAB>value<TAB>spread, found {} tab-separated fields", where,
             fields.size());
    BarRow r{fields[0], number(fields[1], where, "value"), 0};
    if (fields.size() == 3) r.spread = number(fields[2], where, "spread");
    QP_CHECK(r.spread >= 0, "{}: the spread {} is negative", where, r.spread);
    rows.push_back(r);
  }
  QP_CHECK(!rows.empty(), "{}: no rows (label<TAB>value[<TAB>spread] per line)", path);
  return rows;
}

std::string render_bar_chart_svg(const std::vector<BarRow>& rows, const std::string& title) {
  QP_CHECK(!rows.empty(), "nothing to plot: no rows");
  constexpr double kWidth = 720, kTop = 44, kLeft = 300, kRight = 110, kRow = 26, kBar = 16;
  const double plot_w = kWidth - kLeft - kRight, height = kTop + kRow * double(rows.size()) + 30;
  double lo = 0, hi = 0;
  for (const auto& r : rows) lo = std::min(lo, r.value - r.spread), hi = std::max(hi, r.value + r.spread);
  if (hi == lo) hi = lo + 1;
  const auto x_px = [&](double v) { return kLeft + (v - lo) / (hi - lo) * plot_w; };
  std::string svg = svg_start(kWidth, height, 12, title);
  const double axis_y = kTop + kRow * double(rows.size());
  for (double t : nice_ticks(lo, hi, 6)) {
    const double x = x_px(t);
    svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>"
                       "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:.4g}</text>\n",
                       x, kTop - 4, x, axis_y, x, axis_y + 16, t);
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const BarRow& r = rows[i];
    const double y = kTop + kRow * double(i) + (kRow - kBar) / 2, mid = y + kBar / 2;
    const double x0 = x_px(std::min(0.0, r.value)), x1 = x_px(std::max(0.0, r.value));
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", kLeft - 8, mid + 4,
                       xml_escaped(r.label));
    svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"#1f77b4\"/>\n", x0, y,
                       std::max(0.5, x1 - x0), kBar);
    if (r.spread > 0)
      svg += fmt::format("<path d=\"M{0:.1f} {2:.1f}H{1:.1f}M{0:.1f} {3:.1f}V{4:.1f}M{1:.1f} {3:.1f}V{4:.1f}\" "
                         "stroke=\"black\"/>\n",
                         x_px(r.value - r.spread), x_px(r.value + r.spread), mid, mid - 5, mid + 5);
    const std::string value = r.spread > 0 ? fmt::format("{:.4g} ± {:.2g}", r.value, r.spread) : fmt::format("{:.4g}", r.value);
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", x_px(r.value + r.spread) + 4, mid + 4, value);
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace qpeft
