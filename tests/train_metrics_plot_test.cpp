// The metrics-file reader and SVG renderer behind `qpeft plot`.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "test_util.h"
#include "train/metrics_plot.h"

namespace qpeft {
namespace {

using namespace qpeft::testing;

size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(MetricsPlot, ReadsDefaultSeriesInOrderAndSkipsNonFinite) {
  TempDir tmp("metrics_plot");
  write_file(tmp / "m.jsonl",
             "{\"step\":1,\"loss\":3.5,\"lr\":0.001,\"tokens_per_s\":900}\n"
             "\n"
             "{\"step\":2,\"loss\":null,\"lr\":0.002}\n"
             "{\"step\":3,\"loss\":2.5,\"lr\":0.002,\"eval_accuracy\":0.75}\n");
  const std::vector<MetricSeries> s = read_metric_series(tmp / "m.jsonl", {});
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].key, "loss");
  EXPECT_EQ(s[1].key, "eval_accuracy");
  EXPECT_EQ(s[2].key, "lr");
  EXPECT_EQ(s[0].steps, (std::vector<double>{1, 3}));  // null is not drawn
  EXPECT_EQ(s[0].values, (std::vector<double>{3.5, 2.5}));
  EXPECT_EQ(s[1].steps, (std::vector<double>{3}));
  EXPECT_EQ(s[2].values, (std::vector<double>{0.001, 0.002, 0.002}));

  const std::vector<MetricSeries> chosen = read_metric_series(tmp / "m.jsonl", {"tokens_per_s"});
  ASSERT_EQ(chosen.size(), 1u);
  EXPECT_EQ(chosen[0].values, (std::vector<double>{900}));
}

TEST(MetricsPlot, RendersOnePanelPerSeriesWithTicks) {
  MetricSeries loss{"loss", {0, 50, 100}, {4.0, 3.0, 2.0}};
  MetricSeries flat{"eval_accuracy", {100}, {0.5}};
  const std::string svg = render_metric_series_svg({loss, flat}, "run <1> & co");
  EXPECT_EQ(svg.rfind("<svg xmlns=", 0), 0u);
  EXPECT_NE(svg.find("height=\"480\""), std::string::npos);  // 40 + 2 panels of 220
  EXPECT_EQ(count_of(svg, "<polyline"), 2u);
  EXPECT_NE(svg.find("run &lt;1&gt; &amp; co"), std::string::npos);
  EXPECT_EQ(svg.find("run <1>"), std::string::npos);
  // Step ticks at nice numbers on both panels; the loss panel's values get labels too.
  EXPECT_EQ(count_of(svg, ">50</text>"), 2u);
  EXPECT_NE(svg.find(">3</text>"), std::string::npos);
  EXPECT_EQ(count_of(svg, "<circle"), 4u);  // markers: few points
  // A line spans the plot: the first point at the left edge, the last at the right.
  EXPECT_NE(svg.find("points=\"80.0,"), std::string::npos);
  EXPECT_NE(svg.find(" 700.0,"), std::string::npos);
}

TEST(MetricsPlot, ErrorsNameTheFileLineAndKey) {
  TempDir tmp("metrics_plot_errors");
  write_file(tmp / "bad.jsonl", "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":\n");
  EXPECT_NE(error_of([&] { read_metric_series(tmp / "bad.jsonl", {}); }).find(tmp / "bad.jsonl:2"),
            std::string::npos);
  write_file(tmp / "nostep.jsonl", "{\"loss\":2}\n");
  EXPECT_NE(error_of([&] { read_metric_series(tmp / "nostep.jsonl", {}); }).find("nostep.jsonl:1: no numeric \"step\""),
            std::string::npos);
  write_file(tmp / "ok.jsonl", "{\"step\":1,\"loss\":2,\"lr\":0.1}\n");
  const std::string missing = error_of([&] { read_metric_series(tmp / "ok.jsonl", {"eval_loss"}); });
  EXPECT_NE(missing.find("\"eval_loss\" is not in"), std::string::npos) << missing;
  EXPECT_NE(missing.find("(it has: loss, lr)"), std::string::npos) << missing;
  write_file(tmp / "empty.jsonl", "\n");
  EXPECT_NE(error_of([&] { read_metric_series(tmp / "empty.jsonl", {}); }).find("no metrics in it"), std::string::npos);
  EXPECT_NE(error_of([&] { read_metric_series(tmp / "absent.jsonl", {}); }).find("absent.jsonl"), std::string::npos);
}

TEST(MetricsPlot, BarsReadValuesAndSpreadsAndDrawWhiskers) {
  TempDir tmp("metrics_bars");
  write_file(tmp / "r.tsv", "# method\tmean\tspread\nbase <nf4>\t0.5\nQLoRA\t0.9\t0.02\r\n\n");
  const std::vector<BarRow> rows = read_bar_rows(tmp / "r.tsv");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].label, "base <nf4>");
  EXPECT_EQ(rows[0].spread, 0);
  EXPECT_EQ(rows[1].value, 0.9);
  EXPECT_EQ(rows[1].spread, 0.02);
  const std::string svg = render_bar_chart_svg(rows, "test accuracy");
  EXPECT_EQ(count_of(svg, "fill=\"#1f77b4\""), 2u);
  EXPECT_EQ(count_of(svg, "<path"), 1u);  // one whisker: the row with a spread
  EXPECT_NE(svg.find("base &lt;nf4&gt;"), std::string::npos);
  EXPECT_NE(svg.find(">0.9 ± 0.02</text>"), std::string::npos);
  // The axis runs from 0 to the largest whisker end (0.92): the 0.9 bar is 0.9/0.92 of 310 px wide.
  EXPECT_NE(svg.find("width=\"303.3\""), std::string::npos) << svg;

  write_file(tmp / "bad.tsv", "a\t1\nb\tx\n");
  EXPECT_NE(error_of([&] { read_bar_rows(tmp / "bad.tsv"); }).find("bad.tsv:2: the value \"x\" is not a finite number"),
            std::string::npos);
  write_file(tmp / "cols.tsv", "a 1\n");
  EXPECT_NE(error_of([&] { read_bar_rows(tmp / "cols.tsv"); }).find("cols.tsv:1: expected label<TAB>value"),
            std::string::npos);
  write_file(tmp / "neg.tsv", "a\t1\t-2\n");
  EXPECT_NE(error_of([&] { read_bar_rows(tmp / "neg.tsv"); }).find("spread -2 is negative"), std::string::npos);
}

}  // namespace
}  // namespace qpeft
