// qpeft plot: training curves (loss, evaluation metric, learning rate) from a --metrics file, as SVG.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/file.h"
#include "train/metrics_plot.h"

namespace qpeft::cli {

namespace {

struct PlotArgs {
  std::string metrics, out, title;
  std::vector<std::string> keys;
};

void setup(CLI::App& app) {
  auto args = std::make_shared<PlotArgs>();
  auto* cmd = app.add_subcommand("plot",
                                 "Draw training curves from a `qpeft train --metrics` file as an SVG: one panel per\n"
                                 "metric against the step (default: loss, every eval_* metric present, lr).");
  cmd->add_option("--metrics", args->metrics, "the metrics file (JSON lines, as qpeft train --metrics writes)")
      ->required();
  cmd->add_option("--out", args->out, "the SVG file to write (atomically)")->required();
  cmd->add_option("--keys", args->keys, "the metrics to draw, in order (e.g. loss,eval_accuracy,lr)")->delimiter(',');
  cmd->add_option("--title", args->title, "the picture's title (default: the metrics file's name)");
  cmd->callback([args] {
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
