#include "plot_command.h"

#ifdef POSTTRAIN_WITH_PLOT
#include <plplot.h>
#endif

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace posttrain::cli {
namespace {

namespace fs = std::filesystem;

CLI::App* plot_cmd = nullptr;
std::vector<std::string> runs;
std::string metrics_arg, out_path = "plot.png";
int width = 1200, panel_height = 320;
double smoothing = 0.6;

struct Series {
  std::vector<double> steps, values;
};
using RunSeries = std::map<std::string, Series>;  // metric → points

absl::StatusOr<RunSeries> ReadRun(const std::string& dir) {
  const std::string path = fs::is_directory(dir) ? dir + "/metrics.jsonl" : dir;
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "' (a run directory holds metrics.jsonl)"));
  RunSeries out;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!row.is_object() || !row.contains("step")) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": expected a JSON object with a \"step\""));
    }
    const double step = row["step"].get<double>();
    for (const auto& [key, value] : row.items()) {
      if (key == "step" || key == "epoch" || !value.is_number()) continue;
      out[key].steps.push_back(step);
      out[key].values.push_back(value.get<double>());
    }
  }
  return out;
}

// TensorBoard's smoothing: an exponential moving average, debiased at the start.
[[maybe_unused]] std::vector<double> Smooth(const std::vector<double>& v, double weight) {  // unused without PLplot
  std::vector<double> out;
  double last = 0, debias = 0;
  for (double x : v) {
    last = last * weight + (1 - weight) * x;
    debias = debias * weight + (1 - weight);
    out.push_back(last / debias);
  }
  return out;
}

// Okabe–Ito colours: distinguishable, also for colour-blind readers.
constexpr int kPalette[][3] = {{0, 114, 178}, {213, 94, 0}, {0, 158, 115}, {204, 121, 167},
                               {230, 159, 0},  {86, 180, 233}, {0, 0, 0},   {240, 228, 66}};

absl::Status Plot() {
  std::vector<RunSeries> data;
  std::vector<std::string> names;
  for (const std::string& dir : runs) {
    absl::StatusOr<RunSeries> run = ReadRun(dir);
    if (!run.ok()) return run.status();
    data.push_back(std::move(*run));
    names.push_back(fs::path(dir).filename().string().empty() ? dir : fs::path(dir).filename().string());
  }
  std::vector<std::string> metrics;
  if (!metrics_arg.empty()) {
    metrics = absl::StrSplit(metrics_arg, ',', absl::SkipEmpty());
  } else {
    for (const char* m : {"loss", "learning_rate", "rewards/accuracies", "reward", "kl", "objective/kl", "eval_loss"}) {
      metrics.push_back(m);
    }
  }
  std::vector<std::string> present;
  for (const std::string& m : metrics) {
    const bool found = std::any_of(data.begin(), data.end(), [&](const RunSeries& r) { return r.count(m) > 0; });
    if (found) {
      present.push_back(m);
    } else if (!metrics_arg.empty()) {
      std::vector<std::string> known;
      for (const RunSeries& r : data) {
        for (const auto& [k, s] : r) known.push_back(k);
      }
      std::sort(known.begin(), known.end());
      known.erase(std::unique(known.begin(), known.end()), known.end());
      return absl::NotFoundError(absl::StrCat("no run has metric '", m, "'; they have: ", absl::StrJoin(known, ", ")));
    }
  }
  if (present.empty()) return absl::NotFoundError("none of the runs has any of the default metrics; name some with --metrics");
  std::string device;
  if (absl::EndsWith(out_path, ".png")) {
    device = "pngcairo";
  } else if (absl::EndsWith(out_path, ".svg")) {
    device = "svgcairo";
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--out '", out_path, "': write a .png or an .svg"));
  }
  const int columns = present.size() > 2 ? 2 : 1;
  const int rows = static_cast<int>((present.size() + columns - 1) / columns);
  const int height = rows * panel_height;

#ifndef POSTTRAIN_WITH_PLOT
  (void)height;
  return absl::FailedPreconditionError(
      "this posttrain was built without PLplot (-DPOSTTRAIN_WITH_PLOT=OFF): no plots; metrics.jsonl and the "
      "TensorBoard events are there to read");
#else
  plsdev(device.c_str());
  plsfnam(out_path.c_str());
  plspage(0, 0, width, height, 0, 0);
  plscol0a(0, 255, 255, 255, 1.0);  // white background
  plscol0a(1, 0, 0, 0, 1.0);        // black axes and text
  plssub(columns, rows);
  plinit();
  plfontld(1);
  for (const std::string& metric : present) {
    pladv(0);
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (const RunSeries& r : data) {
      auto it = r.find(metric);
      if (it == r.end()) continue;
      for (double x : it->second.steps) xmin = std::min(xmin, x), xmax = std::max(xmax, x);
      for (double y : it->second.values) {
        if (std::isfinite(y)) ymin = std::min(ymin, y), ymax = std::max(ymax, y);
      }
    }
    if (xmax <= xmin) xmin -= 1, xmax += 1;  // a single logged step: centred
    const double pad = ymax > ymin ? 0.05 * (ymax - ymin) : std::max(1e-6, 0.05 * std::abs(ymax) + 1e-3);
    ymin -= pad, ymax += pad;
    plvpor(0.12, 0.95, 0.16, 0.86);
    plwind(xmin, xmax, ymin, ymax);
    plcol0(1);
    plschr(0, 0.9);
    plbox("bcnst", 0, 0, "bcnstv", 0, 0);
    pllab("step", "", metric.c_str());
    std::vector<PLINT> colors, line_colors, styles, opts;
    std::vector<PLFLT> widths;
    std::vector<std::string> labels;
    for (size_t k = 0; k < data.size(); ++k) {
      auto it = data[k].find(metric);
      if (it == data[k].end()) continue;
      const int* rgb = kPalette[k % (sizeof(kPalette) / sizeof(kPalette[0]))];
      const int raw_color = 2 + 2 * static_cast<int>(k % 7), smooth_color = raw_color + 1;
      plscol0a(raw_color, rgb[0], rgb[1], rgb[2], 0.3);
      plscol0a(smooth_color, rgb[0], rgb[1], rgb[2], 1.0);
      const Series& s = it->second;
      const std::vector<double> smoothed = Smooth(s.values, smoothing);
      const auto n = static_cast<PLINT>(s.steps.size());
      plwidth(1.0);
      plcol0(raw_color);
      if (n > 1) plline(n, s.steps.data(), s.values.data());
      plwidth(2.0);
      plcol0(smooth_color);
      if (n > 1) {
        plline(n, s.steps.data(), smoothed.data());
      } else {
        plssym(0, 2.0);
        plpoin(n, s.steps.data(), s.values.data(), 4);  // one point: a circle
      }
      opts.push_back(PL_LEGEND_LINE);
      line_colors.push_back(smooth_color);
      styles.push_back(1);
      widths.push_back(2.0);
      labels.push_back(names[k]);
    }
    std::vector<const char*> texts;
    for (const std::string& l : labels) texts.push_back(l.c_str());
    std::vector<PLINT> text_colors(labels.size(), 1), zeros(labels.size(), 0);
    std::vector<PLFLT> scales(labels.size(), 1.0);
    std::vector<const char*> symbols(labels.size(), "");
    PLFLT legend_width, legend_height;
    plwidth(1.0);
    pllegend(&legend_width, &legend_height, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, PL_POSITION_RIGHT | PL_POSITION_TOP | PL_POSITION_INSIDE,
             0.01, 0.01, 0.08, 0, 1, 1, 0, 0, static_cast<PLINT>(labels.size()), opts.data(), 1.0, 0.8, 1.5, 1.0,
             text_colors.data(), texts.data(), nullptr, nullptr, nullptr, nullptr, line_colors.data(), styles.data(),
             widths.data(), zeros.data(), scales.data(), zeros.data(), symbols.data());
  }
  plend();
  std::error_code ec;
  if (!fs::exists(out_path, ec) || fs::file_size(out_path, ec) == 0) {
    return absl::InternalError(absl::StrCat("PLplot wrote nothing to '", out_path, "'"));
  }
  std::printf("wrote %s: %zu panel(s) (%s), %zu run(s), %dx%d\n", out_path.c_str(), present.size(),
              absl::StrJoin(present, ", ").c_str(), runs.size(), width, height);
  return absl::OkStatus();
#endif
}

}  // namespace

void AddPlotCommand(CLI::App& app) {
  plot_cmd = app.add_subcommand("plot", "Draw runs' metric curves (metrics.jsonl) as a PNG or SVG");
  plot_cmd->add_option("runs", runs, "Run directories (or metrics.jsonl files)")->required();
  plot_cmd->add_option("--metrics", metrics_arg, "Comma-separated metric names (default: loss, learning rate, headline metrics)");
  plot_cmd->add_option("--out", out_path, "Output .png or .svg")->capture_default_str();
  plot_cmd->add_option("--width", width, "Image width in pixels")->capture_default_str()->check(CLI::Range(200, 8000));
  plot_cmd->add_option("--panel-height", panel_height, "Height of each row of panels in pixels")
      ->capture_default_str()->check(CLI::Range(100, 4000));
  plot_cmd->add_option("--smoothing", smoothing, "Weight of TensorBoard's moving average (0: none)")
      ->capture_default_str()->check(CLI::Range(0.0, 0.999));
}

bool RunPlotCommand(const CLI::App& app, int* rc) {
  if (!app.got_subcommand(plot_cmd)) return false;
  absl::Status status = Plot();
  if (!status.ok()) std::fprintf(stderr, "posttrain: error: %s\n", std::string(status.message()).c_str());
  *rc = status.ok() ? 0 : 1;
  return true;
}

}  // namespace posttrain::cli
