// qpeft plot: training curves (loss, evaluation metric, learning rate) from a --metrics file, or a
// bar chart of results (value ± spread per row), as SVG.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "train/metrics_plot.h"

namespace qpeft::cli {

namespace {

struct PlotArgs {
  std::string metrics, bars, out, title;
  std::vector<std::string> keys;
};

void setup(CLI::App& app) {
  auto args = std::make_shared<PlotArgs>();
  auto* cmd = app.add_subcommand("plot",
                                 "Draw training curves from a `qpeft train --metrics` file as an SVG: one panel per\n"
                                 "metric against the step (default: loss, every eval_* metric present, lr).\n"
                                 "--bars draws a results file instead (label<TAB>value[<TAB>spread] per line) as bars.");
  auto* metrics = cmd->add_option("--metrics", args->metrics, "the metrics file (JSON lines, as qpeft train --metrics writes)");
  auto* bars = cmd->add_option("--bars", args->bars, "a tab-separated results file: label, value and optionally its spread");
  metrics->excludes(bars);
  bars->excludes(metrics);
  cmd->add_option("--out", args->out, "the SVG file to write (atomically)")->required();
  auto* keys = cmd->add_option("--keys", args->keys, "with --metrics: the metrics to draw, in order (e.g. loss,eval_accuracy,lr)")
                   ->delimiter(',');
  keys->excludes(bars);
  cmd->add_option("--title", args->title, "the picture's title (default: the input file's name)");
  cmd->callback([args, cmd] {
    QP_CHECK(cmd->count("--metrics") + cmd->count("--bars") == 1, "plot: give exactly one of --metrics and --bars");
    if (!args->bars.empty()) {
      const std::vector<BarRow> rows = read_bar_rows(args->bars);
      write_file_atomic(args->out, render_bar_chart_svg(rows, args->title.empty() ? args->bars : args->title));
      std::fprintf(stderr, "plot: wrote %s (%zu bars)\n", args->out.c_str(), rows.size());
      return;
    }
    const std::vector<MetricSeries> series = read_metric_series(args->metrics, args->keys);
    const std::string title = args->title.empty() ? args->metrics : args->title;
    write_file_atomic(args->out, render_metric_series_svg(series, title));
    std::string drawn;
    for (const auto& s : series) drawn += (drawn.empty() ? "" : ", ") + s.key;
    std::fprintf(stderr, "plot: wrote %s (%s)\n", args->out.c_str(), drawn.c_str());
  });
}

}  // namespace

QPEFT_COMMAND(plot, setup);

}  // namespace qpeft::cli
