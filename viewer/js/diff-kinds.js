/*
 * Scene kinds of a diff bundle: "delta" (colormaps.delta: B − A by the bundle's metric, hatches
 * for elements on one side only) and "side" (the "values" scenes a and b of the two checkpoints,
 * coloured by each pair's scale_a / scale_b).
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el, fmtNum = WV.fmtNum;
  var values = WV.sceneKinds.get("values");

  /**
   * A hatch swatch drawn by the tiles' own rule (docs/diff-manifest.md): index `kind` where
   * ((x + y) // 4) % 2 == 0 ("/"; only in B: x - y, "\"), else the gap index.
   */
  function hatchSwatch(palette, kind, gapIndex, backslash) {
    var w = 20, h = 14;
    var canvas = el("canvas", "wv-swatch-hatch");
    canvas.width = w;
    canvas.height = h;
    var ctx = canvas.getContext("2d");
    var img = ctx.createImageData(w, h);
    var on = palette[kind] || [255, 255, 255], off = palette[gapIndex] || [0, 0, 0];
    for (var y = 0; y < h; y++) {
      for (var x = 0; x < w; x++) {
        var k = Math.floor((backslash ? x - y : x + y) / 4);
        var rgb = ((k % 2) + 2) % 2 === 0 ? on : off;
        var i = 4 * (y * w + x);
        img.data[i] = rgb[0]; img.data[i + 1] = rgb[1]; img.data[i + 2] = rgb[2]; img.data[i + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    return canvas;
  }

  /** A legend tick whose label is text parts and ["sub"|"sup", text] pieces. */
  function tickNode(parts, leftPct) {
    var tick = el("span", "wv-tick");
    for (var i = 0; i < parts.length; i++) {
      var part = parts[i];
      if (typeof part === "string") tick.appendChild(document.createTextNode(part));
      else tick.appendChild(el(part[0], null, part[1]));
    }
    tick.style.left = leftPct.toFixed(2) + "%";
    return tick;
  }

  WV.sceneKinds.register("delta", WV.extend(values, {
    scaleName: "scale s\u0394",

    /** Δ = B − A (float64, as the tiles compute it) of a sample holding both sides. */
    valueText: function (app, sample) {
      var cm = app.model.colormap || {};
      var oneSided = [cm.padding_index, cm.only_a_index, cm.only_b_index, cm.base_only_index, cm.hatch_gap_index];
      if (oneSided.indexOf(sample.index) >= 0) return "\u2014";
      if (sample.a === undefined || sample.b === undefined) return "not stored (interval below)";
      var a = sample.a, b = sample.b;
      if (a === b || (isNaN(a) && isNaN(b))) return "0 (unchanged)";
      return WV.diff.fmtDelta(b - a);
    },

    /** The Δ interval palette index `index` stands for (colormaps.delta's rule and metric). */
    rangeText: function (app, cm, index, s) {
      var special = [[cm.padding_index, "padding (no element)"], [cm.nonfinite_index, "non-finite \u0394"],
                     [cm.only_a_index, "one side only"], [cm.only_b_index, "one side only"],
                     [cm.base_only_index, "one side only"], [cm.hatch_gap_index, "one side only"]];
      for (var i = 0; i < special.length; i++) if (index === special[i][0]) return special[i][1];
      var zero = typeof cm.zero_index === "number" ? cm.zero_index : 129;
      var levels = cm.levels || 123;
      var q = index - zero, sign = Math.sign(q), aq = Math.abs(q);
      var tail = "  (index " + index + ")";
      if (q === 0) return "\u0394 = 0 (unchanged)" + tail;
      if (aq > levels) return "index " + index;
      var metric = cm.metric || "rms";
      if (metric === "exact") return (sign > 0 ? "\u0394 > 0" : "\u0394 < 0") + tail;
      if (metric === "abs-log") {
        var dec = Array.isArray(cm.abs_log_decades) ? cm.abs_log_decades : [-8, 0];
        var edge = function (x) { return Math.pow(10, dec[0] + (dec[1] - dec[0]) * x / levels); };
        var lo = aq <= 1 ? 0 : edge(aq - 0.5), hi = aq >= levels ? null : edge(aq + 0.5);
        var lt = lo === 0 ? "0 < |\u0394|" : WV.fmtEdge(lo) + " \u2264 |\u0394|";
        return (sign > 0 ? "\u0394 > 0, " : "\u0394 < 0, ") + (hi === null ? "|\u0394| \u2265 " + WV.fmtEdge(lo) : lt + " < " + WV.fmtEdge(hi)) + tail;
      }
      if (typeof s !== "number" || !(s > 0)) return "index " + index;
      return WV.levelInterval(aq, sign, s, levels, "sqrt", 1, "\u0394") + tail;
    },

    legendValues: function (app, s) {
      var cm = app.model.colormap;
      if (cm.metric === "abs-log" || cm.metric === "exact") return null;  // fixed text, set by the legend
      return s === null ? "s\u0394: hover a tensor" : "s\u0394 = " + fmtNum(s) + "   s\u0394/4 = " + fmtNum(s / 4);
    },

    /** Legend of colormaps.delta: the gradient labelled by the metric, and the swatches. */
    legend: function (app, cm, d) {
      var diff = WV.diff.of(app);
      var zero = typeof cm.zero_index === "number" ? cm.zero_index : 129;
      var levels = cm.levels || 123;
      var metric = cm.metric || (diff && diff.metric) || "rms";
      d.title.textContent = "Colour \u00b7 \u0394 = B \u2212 A (" + metric + ")";
      var ticks = [];
      var n;
      if (metric === "exact") {
        WV.drawLegendBar(d.bar, cm.palette, [zero - levels, zero, zero + levels]);
        ticks = [[["shrank"], 0], [["unchanged"], 50], [["grew"], 100]];
        d.values.textContent = "any change at full brightness";
        d.values.classList.remove("wv-empty");
        d.note.textContent = "index = " + zero + " \u00b1 " + levels + " if B \u2260 A";
      } else {
        n = 2 * levels + 1;
        WV.drawLegendBar(d.bar, cm.palette, WV.rangeOf(zero - levels, n));
        var pct = function (q) { return 100 * (levels + q + 0.5) / n; };
        if (metric === "abs-log") {
          var dec = Array.isArray(cm.abs_log_decades) ? cm.abs_log_decades : [-8, 0];
          var lo = dec[0], hi = dec[1], mid = Math.round((lo + hi) / 2);
          var qOfDecade = function (e) {
            return Math.max(1, Math.min(levels, Math.floor(levels * (e - lo) / (hi - lo) + 0.5)));
          };
          var pow = function (sign, e) { return e === 0 ? [sign + "1"] : [sign + "10", ["sup", String(e).replace("-", "\u2212")]]; };
          ticks = [[pow("\u2212", hi), 0], [pow("\u2212", mid), pct(-qOfDecade(mid))], [["0"], 50],
                   [pow("+", mid), pct(qOfDecade(mid))], [pow("+", hi), 100]];
          d.values.textContent = "|\u0394| on a log scale: 1e" + lo + " \u2192 level 1, 1e" + hi + " \u2192 level " + levels +
            "; the same for every tensor";
          d.values.classList.remove("wv-empty");
          d.note.textContent = "index = " + zero + " \u00b1 clamp(round(" + levels + "\u00b7(log\u2081\u2080|\u0394| \u2212 (" + lo +
            "))/" + (hi - lo) + "), 1, " + levels + ") if B \u2260 A";
        } else {
          var q4 = Math.floor(levels * Math.sqrt(0.25) + 0.5);
          var sD = function (sign, tail) { return [sign + "s", ["sub", "\u0394"], tail]; };
          ticks = [[sD("\u2212", ""), 0], [sD("\u2212", "/4"), pct(-q4)], [["0"], 50], [sD("+", "/4"), pct(q4)], [sD("+", ""), 100]];
          d.note.textContent = "index = " + zero + " \u00b1 max(1, round(" + levels + "\u00b7\u221amin(|\u0394|/s\u0394, 1))) if B \u2260 A";
          app.legend.values(null);
        }
        d.low.textContent = "\u25c2 shrank (B < A)";
      d.high.textContent = "grew (B > A) \u25b8";
      d.ends.hidden = false;
      }
      for (var k = 0; k < ticks.length; k++) d.ticks.appendChild(tickNode(ticks[k][0], ticks[k][1]));
      if (cm.rule) d.note.title = String(cm.rule);
      // swatches: unchanged, non-finite, the hatches (base only replaces only-in-A in finetune mode), padding
      var finetune = !!diff && diff.mode === "finetune";
      var gap = typeof cm.hatch_gap_index === "number" ? cm.hatch_gap_index : 5;
      var swatches = [
        ["unchanged", zero, null], ["non-finite \u0394", cm.nonfinite_index, null],
        finetune ? ["base only (A)", cm.base_only_index, "/"] : ["only in A", cm.only_a_index, "/"],
        ["only in B", cm.only_b_index, "\\"], ["padding", cm.padding_index, null],
      ];
      for (var j = 0; j < swatches.length; j++) {
        var sw = swatches[j];
        if (typeof sw[1] !== "number" || !cm.palette[sw[1]]) continue;
        var item = el("span", "wv-swatch");
        var box;
        if (sw[2]) box = hatchSwatch(cm.palette, sw[1], gap, sw[2] === "\\");
        else {
          box = el("span", "wv-swatch-box");
          box.style.background = WV.rgbCss(cm.palette[sw[1]]);
        }
        box.setAttribute("data-index", String(sw[1]));
        item.appendChild(box);
        item.appendChild(document.createTextNode(sw[0]));
        d.swatches.appendChild(item);
      }
    },
  }));

  WV.sceneKinds.register("side", WV.extend(values, {
    readoutScaleLabel: function (app) {
      var key = app.model ? app.model.key : null;
      return key === "a" ? "scale s (A)" : key === "b" ? "scale s (B)" : "scale s";
    },

    /** The scale of the pair's side shown (scale_a / scale_b), else the tensor's. */
    scaleOf: function (app, item) {
      var key = app.model.key;
      var model = WV.diff.of(app);
      var pair = model && (key === "a" || key === "b") ? model.pair(item.name) : null;
      if (pair) {
        var v = pair[key === "a" ? "scale_a" : "scale_b"];
        return typeof v === "number" ? v : null;
      }
      return values.scaleOf(app, item);
    },
  }));
})();
