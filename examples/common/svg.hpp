#pragma once
// Two self-contained SVG pictures the runners write next to report.json:
// a heatmap of per-site ratios (layers x site kinds) and a horizontal bar chart
// (trainable parameters per method). Plain SVG 1.1: renders in any browser.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace plora::runner {

namespace detail {
inline std::string escape_xml(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}
/// A sequential colour ramp from pale yellow (0) to dark blue (1).
inline std::string ramp_colour(double t) {
  t = std::clamp(t, 0.0, 1.0);
  const double stops[3][3] = {{255, 247, 188}, {65, 182, 196}, {8, 29, 88}};
  const int segment = t < 0.5 ? 0 : 1;
  const double local = t < 0.5 ? t * 2 : (t - 0.5) * 2;
  char buffer[8];
  std::snprintf(buffer, sizeof buffer, "#%02x%02x%02x",
                static_cast<int>(stops[segment][0] + local * (stops[segment + 1][0] - stops[segment][0])),
                static_cast<int>(stops[segment][1] + local * (stops[segment + 1][1] - stops[segment][1])),
                static_cast<int>(stops[segment][2] + local * (stops[segment + 1][2] - stops[segment][2])));
  return buffer;
}
}  // namespace detail

/// values[row][col] in [0, 1] (negative = missing); one labelled cell each.
inline std::string heatmap_svg(const std::string& title, const std::vector<std::string>& row_labels,
                               const std::vector<std::string>& col_labels,
                               const std::vector<std::vector<double>>& values) {
  // Cells widen to fit the longest column label (about 7 px per character at 12 px).
  std::size_t longest = 0;
  for (const auto& label : col_labels) longest = std::max(longest, label.size());
  const int cell_w = std::max(86, 7 * static_cast<int>(longest) + 12), cell_h = 26, left = 70, top = 56;
  // Wide enough for the cells and for the title (about 9 px per character at 15 px bold).
  const int width = std::max(left + cell_w * static_cast<int>(col_labels.size()) + 20,
                             left + 9 * static_cast<int>(title.size()) + 10);
  const int height = top + cell_h * static_cast<int>(row_labels.size()) + 46;
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << left << "\" y=\"20\" font-size=\"15\" font-weight=\"bold\">" << detail::escape_xml(title)
      << "</text>\n";
  for (std::size_t c = 0; c < col_labels.size(); ++c)
    svg << "<text x=\"" << left + cell_w * static_cast<int>(c) + cell_w / 2 << "\" y=\"" << top - 8
        << "\" text-anchor=\"middle\">" << detail::escape_xml(col_labels[c]) << "</text>\n";
  for (std::size_t r = 0; r < row_labels.size(); ++r) {
    const int y = top + cell_h * static_cast<int>(r);
    svg << "<text x=\"" << left - 8 << "\" y=\"" << y + cell_h / 2 + 4 << "\" text-anchor=\"end\">"
        << detail::escape_xml(row_labels[r]) << "</text>\n";
    for (std::size_t c = 0; c < col_labels.size(); ++c) {
      const double v = c < values[r].size() ? values[r][c] : -1.0;
      const int x = left + cell_w * static_cast<int>(c);
      const std::string fill = v < 0 ? "#eeeeee" : detail::ramp_colour(v);
      svg << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell_w - 2 << "\" height=\"" << cell_h - 2
          << "\" fill=\"" << fill << "\"/>\n";
      if (v >= 0) {
        char text[16];
        std::snprintf(text, sizeof text, "%.3f", v);
        svg << "<text x=\"" << x + cell_w / 2 - 1 << "\" y=\"" << y + cell_h / 2 + 4 << "\" text-anchor=\"middle\" fill=\""
            << (v > 0.55 ? "white" : "black") << "\">" << text << "</text>\n";
      }
    }
  }
  svg << "<text x=\"" << left << "\" y=\"" << height - 14
      << "\" fill=\"#555\">cell = kept density of ΔW (ratio); darker = denser</text>\n</svg>\n";
  return svg.str();
}

/// One horizontal bar per (label, value), scaled to the largest value.
inline std::string bar_chart_svg(const std::string& title, const std::vector<std::string>& labels,
                                 const std::vector<double>& values, const std::string& unit) {
  const int bar_h = 24, left = 190, top = 40, plot_w = 420;
  const int height = top + bar_h * static_cast<int>(labels.size()) + 30;
  const double largest = values.empty() ? 1.0 : std::max(1e-12, *std::max_element(values.begin(), values.end()));
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << left + plot_w + 130 << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">" << detail::escape_xml(title) << "</text>\n";
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const int y = top + bar_h * static_cast<int>(i);
    const int w = static_cast<int>(std::round(plot_w * values[i] / largest));
    svg << "<text x=\"" << left - 8 << "\" y=\"" << y + bar_h / 2 + 4 << "\" text-anchor=\"end\">"
        << detail::escape_xml(labels[i]) << "</text>\n"
        << "<rect x=\"" << left << "\" y=\"" << y + 3 << "\" width=\"" << std::max(w, 1) << "\" height=\"" << bar_h - 6
        << "\" fill=\"#2c7fb8\"/>\n"
        << "<text x=\"" << left + std::max(w, 1) + 6 << "\" y=\"" << y + bar_h / 2 + 4 << "\">"
        << static_cast<long long>(std::llround(values[i])) << ' ' << detail::escape_xml(unit) << "</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace plora::runner
