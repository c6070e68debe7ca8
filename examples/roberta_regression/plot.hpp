// Figures with gnuplot (Debian's gnuplot-nox): the per-layer learning rates of
// a run (the article's Figures 1-7) and its train/validation curves. Each
// figure is a CSV and a gnuplot script next to the PNG, so it can be redrawn
// or restyled by hand. Skipped with a note when gnuplot is not installed.
// Example code.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "trainer.hpp"

namespace roberta_regression {

/// Whether `gnuplot` runs (on PATH).
inline bool gnuplot_available() { return std::system("gnuplot -e 'exit' >/dev/null 2>&1") == 0; }

/// Writes lr_fold{k}.csv/.gp and curves_fold{k}.csv/.gp in `dir` for one
/// fold and, when `draw` (gnuplot_available()), runs gnuplot on them; returns
/// the PNG paths drawn.
inline std::vector<std::string> plot_fold(const std::string& dir, const std::string& title,
                                          const FoldResult& r, bool draw) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  const std::string stem_lr = (fs::path(dir) / fmt::format("lr_fold{}", r.fold)).string();
  const std::string stem_curves = (fs::path(dir) / fmt::format("curves_fold{}", r.fold)).string();
  {
    std::ofstream csv(stem_lr + ".csv");
    write_lr_csv_header(csv, r.lr_columns, /*with_fold=*/false);
    write_lr_csv_rows(csv, r, /*with_fold=*/false);
    std::ofstream gp(stem_lr + ".gp");
    gp << "set terminal pngcairo size 1000,600\n"
       << "set output '" << stem_lr << ".png'\n"
       << "set datafile separator ','\n"
       << "set key outside right\n"
       << "set xlabel 'training step'\nset ylabel 'learning rate'\n"
       << "set title '" << title << ", fold " << r.fold << ": learning rate per layer'\n"
       << "plot for [i=2:" << r.lr_columns.size() + 1 << "] '" << stem_lr
       << ".csv' using 1:i with lines title columnhead(i)\n";
  }
  {
    std::ofstream csv(stem_curves + ".csv");
    csv << "step,train_rmse,val_rmse,swa_val_rmse\n";
    for (const auto& p : r.curve)
      csv << fmt::format("{},{:.6g},{:.6g},{}\n", p.step, p.train_rmse, p.val_rmse,
                         p.swa_val_rmse ? fmt::format("{:.6g}", *p.swa_val_rmse) : "NaN");
    std::ofstream gp(stem_curves + ".gp");
    gp << "set terminal pngcairo size 1000,600\n"
       << "set output '" << stem_curves << ".png'\n"
       << "set datafile separator ','\n"
       << "set datafile missing 'NaN'\n"
       << "set key top right\n"
       << "set xlabel 'training step'\nset ylabel 'RMSE'\n"
       << "set title '" << title << ", fold " << r.fold << ": training and validation RMSE'\n"
       << "plot '" << stem_curves << ".csv' using 1:2 with linespoints title 'training', \\\n"
       << "     '' using 1:3 with linespoints title 'validation', \\\n"
       << "     '' using 1:4 with linespoints title 'validation, SWA weights'\n";
  }
  std::vector<std::string> drawn;
  if (!draw) return drawn;
  for (const auto& stem : {stem_lr, stem_curves}) {
    const std::string command = "gnuplot '" + stem + ".gp' 2>&1";
    if (std::system(command.c_str()) == 0) drawn.push_back(stem + ".png");
  }
  return drawn;
}

}  // namespace roberta_regression
