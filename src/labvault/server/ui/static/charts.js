// labvault metric charts: SVG line charts over steps, drawn from the page's #chart-data JSON
// (already downsampled by the server). Drag across a chart to zoom into steps, "reset zoom" or a
// double-click to zoom out; "log scale" and "smoothing" (an exponential moving average) redraw it.
// Labels are set with textContent only: run names never become markup.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var W = 560, H = 260, L = 56, R = 12, T = 10, B = 30;

  function el(name, attrs) {
    var node = document.createElementNS(SVG, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    return node;
  }

  function smooth(points, alpha) {
    if (!alpha) return points;
    var out = [], last = null;
    for (var i = 0; i < points.length; i++) {
      var v = points[i][1];
      if (v === null) { out.push(points[i]); continue; }
      last = last === null ? v : alpha * last + (1 - alpha) * v;
      out.push([points[i][0], last]);
    }
    return out;
  }

  function fmt(v) {
    if (v === 0) return "0";
    var a = Math.abs(v);
    return a >= 1e4 || a < 1e-3 ? v.toExponential(1) : String(Number(v.toPrecision(3)));
  }

  function draw(fig, chart) {
    var plot = fig.querySelector(".chart-plot");
    var log = fig.querySelector(".chart-log").checked;
    var alpha = parseFloat(fig.querySelector(".chart-smooth").value) || 0;
    var zoom = fig._zoom || null;
    var series = chart.series.map(function (s) {
      var pts = smooth(s.points, alpha).filter(function (p) {
        return p[1] !== null && (!log || p[1] > 0) && (!zoom || (p[0] >= zoom[0] && p[0] <= zoom[1]));
      });
      return { label: s.label, points: pts };
    });
    var xs = [], ys = [];
    series.forEach(function (s) { s.points.forEach(function (p) { xs.push(p[0]); ys.push(log ? Math.log10(p[1]) : p[1]); }); });
    plot.textContent = "";
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", "class": "chart-svg", focusable: "false" });
    plot.appendChild(svg);
    if (!xs.length) {
      var empty = el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "axis" });
      empty.textContent = "no finite values" + (log ? " above 0" : "");
      svg.appendChild(empty);
      return;
    }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    var sx = function (x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
    var sy = function (y) { return T + (1 - (y - y0) / (y1 - y0)) * (H - T - B); };
    svg.appendChild(el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, "class": "frame" }));
    for (var i = 0; i <= 4; i++) {
      var yv = y0 + (y1 - y0) * i / 4, xv = x0 + (x1 - x0) * i / 4;
      var ty = el("text", { x: L - 4, y: sy(yv) + 4, "text-anchor": "end", "class": "axis" });
      ty.textContent = fmt(log ? Math.pow(10, yv) : yv);
      svg.appendChild(ty);
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: sy(yv), y2: sy(yv), "class": "grid" }));
      var tx = el("text", { x: sx(xv), y: H - B + 16, "text-anchor": "middle", "class": "axis" });
      tx.textContent = fmt(Math.round(xv));
      svg.appendChild(tx);
    }
    series.forEach(function (s, n) {
      if (!s.points.length) return;
      var d = s.points.map(function (p, j) {
        return (j ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(log ? Math.log10(p[1]) : p[1]).toFixed(1);
      }).join("");
      var path = el("path", { d: d, fill: "none", stroke: COLORS[n % COLORS.length], "stroke-width": 1.5, "class": "series" });
      path.setAttribute("data-points", String(s.points.length));
      var title = el("title", {});
      title.textContent = s.label;
      path.appendChild(title);
      svg.appendChild(path);
      if (s.points.length === 1) {  // one point draws no line: show it as a dot
        var p0 = s.points[0];
        svg.appendChild(el("circle", { cx: sx(p0[0]), cy: sy(log ? Math.log10(p0[1]) : p0[1]), r: 3, fill: COLORS[n % COLORS.length] }));
      }
    });
    if (series.length > 1) {
      var legend = document.createElement("ul");
      legend.className = "legend";
      series.forEach(function (s, n) {
        var li = document.createElement("li");
        var sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = COLORS[n % COLORS.length];
        li.appendChild(sw);
        li.appendChild(document.createTextNode(s.label));
        legend.appendChild(li);
      });
      plot.appendChild(legend);
    }
    // Drag to zoom on steps.
    var band = null, start = null;
    var toStep = function (evt) {
      var box = svg.getBoundingClientRect();
      var px = (evt.clientX - box.left) / box.width * W;
      return x0 + (Math.min(Math.max(px, L), W - R) - L) / (W - L - R) * (x1 - x0);
    };
    svg.addEventListener("mousedown", function (evt) {
      start = toStep(evt);
      band = el("rect", { x: sx(start), y: T, width: 0, height: H - T - B, "class": "zoom-band" });
      svg.appendChild(band);
    });
    svg.addEventListener("mousemove", function (evt) {
      if (start === null) return;
      var now = toStep(evt);
      band.setAttribute("x", sx(Math.min(start, now)));
      band.setAttribute("width", Math.abs(sx(now) - sx(start)));
    });
    svg.addEventListener("mouseup", function (evt) {
      if (start === null) return;
      var end = toStep(evt), a = Math.min(start, end), b = Math.max(start, end);
      start = null;
      if (b - a > (x1 - x0) / 200) { fig._zoom = [a, b]; draw(fig, chart); } else if (band) { band.remove(); }
    });
    svg.addEventListener("dblclick", function () { fig._zoom = null; draw(fig, chart); });
  }

  function init() {
    var only = document.getElementById("only-differs");
    if (only) {
      only.addEventListener("change", function () {
        document.querySelectorAll("table.compare tr.same").forEach(function (row) { row.hidden = only.checked; });
      });
    }
    var data = document.getElementById("chart-data");
    if (!data) return;
    var charts = JSON.parse(data.textContent);
    document.querySelectorAll("figure.chart").forEach(function (fig) {
      var chart = charts[Number(fig.getAttribute("data-chart"))];
      if (!chart) return;
      var redraw = function () { draw(fig, chart); };
      fig.querySelector(".chart-log").addEventListener("change", redraw);
      fig.querySelector(".chart-smooth").addEventListener("input", redraw);
      fig.querySelector(".chart-reset").addEventListener("click", function () { fig._zoom = null; redraw(); });
      redraw();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
