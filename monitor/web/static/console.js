// creator-monitor console: draws the creator page's line charts as SVG from the JSON the page
// carries in <script type="application/json" id="series-data"> (a chart's data-series names
// another, e.g. the followers' "fans-data"). No dependencies, no build step.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function fmt(v) {
    if (Math.abs(v) >= 1e6) { return (v / 1e6).toFixed(1) + "M"; }
    if (Math.abs(v) >= 1e4) { return (v / 1e3).toFixed(0) + "k"; }
    return Number.isInteger(v) ? String(v) : v.toFixed(2);
  }

  function draw(svg, dates, values, markers) {
    var W = 460, H = 160, L = 48, R = 8, T = 8, B = 22;
    var known = [];
    values.forEach(function (v, i) { if (v !== null && v !== undefined) { known.push([i, v]); } });
    if (known.length === 0) {
      // the page's own words for it ("No data" / "暂无数据"), not a lone dash
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent =
        svg.getAttribute("data-empty") || "No data";
      return;
    }
    var lo = Math.min.apply(null, known.map(function (p) { return p[1]; }));
    var hi = Math.max.apply(null, known.map(function (p) { return p[1]; }));
    if (hi === lo) { hi = lo + 1; }
    var n = Math.max(1, dates.length - 1);
    function x(i) { return L + (W - L - R) * i / n; }
    function y(v) { return T + (H - T - B) * (1 - (v - lo) / (hi - lo)); }
    el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }, svg);
    el("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }, svg);
    [lo, (lo + hi) / 2, hi].forEach(function (v) {
      el("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "tick" }, svg).textContent = fmt(v);
    });
    [0, dates.length - 1].forEach(function (i) {
      if (dates[i]) {
        el("text", { x: x(i), y: H - 6, "text-anchor": i ? "end" : "start", class: "tick" }, svg).textContent = dates[i];
      }
    });
    var d = known.map(function (p, k) { return (k ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join(" ");
    el("path", { d: d, class: "line" }, svg);
    markers.forEach(function (m) {
      var i = dates.indexOf(m.date);
      if (i < 0 || values[i] === null || values[i] === undefined) { return; }
      var dot = el("circle", { cx: x(i), cy: y(values[i]), r: 4, class: "marker" }, svg);
      el("title", {}, dot).textContent = m.label + " · " + m.date;
    });
  }

  function init() {
    var parsed = {};
    document.querySelectorAll("svg.chart").forEach(function (svg) {
      var source = svg.getAttribute("data-series") || "series-data";
      if (!(source in parsed)) {
        var data = document.getElementById(source);
        parsed[source] = data ? JSON.parse(data.textContent) : null;
      }
      var series = parsed[source];
      if (!series) { return; }
      var metric = svg.getAttribute("data-metric");
      var markers = series.markers.filter(function (m) { return !m.metric || m.metric === metric; });
      draw(svg, series.dates, series.metrics[metric] || [], markers);
      svg.setAttribute("data-drawn", "1");
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
