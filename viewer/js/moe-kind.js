/*
 * Scene kind "sequential": grids of computed numbers (colormaps.sequential: levels
 * first_index.. on a perceptually uniform palette, each panel with its own range [lo, hi]; dense
 * layers, dead experts and cells without a number drawn with patterns no level takes). The
 * legend is the level bar with lo / hi ticks and one swatch per special cell; the hovered
 * panel's range is written by the "moe-readout" panel.
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el;

  /** A two-colour stripe swatch (the tiles' own pattern: ((x ± y) // 4) % 2). */
  function stripes(palette, on, off, back, cross) {
    var w = 20, h = 14;
    var canvas = el("canvas", "wv-swatch-hatch");
    canvas.width = w;
    canvas.height = h;
    var ctx = canvas.getContext("2d");
    var img = ctx.createImageData(w, h);
    var a = palette[on] || [255, 255, 255], b = palette[off] || [0, 0, 0];
    for (var y = 0; y < h; y++) {
      for (var x = 0; x < w; x++) {
        var rgb;
        if (cross) rgb = (x - 3 === y || w - 4 - x === y) ? b : a;
        else rgb = ((Math.floor((back ? x - y : x + y) / 4) % 2) + 2) % 2 === 0 ? a : b;
        var i = 4 * (y * w + x);
        img.data[i] = rgb[0]; img.data[i + 1] = rgb[1]; img.data[i + 2] = rgb[2]; img.data[i + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    return canvas;
  }

  WV.sceneKinds.register("sequential", WV.extend(WV.sceneKinds.get("values"), {
    scaleName: "range",

    labelsOutside: true,   // panels of cells: no label covers a cell (overlay.js)

    readoutScaleLabel: function () { return "colour range"; },

    scaleOf: function () { return null; },

    legendValues: function () { return null; },   // written by the "moe-readout" panel

    legend: function (app, cm, d) {
      var first = typeof cm.first_index === "number" ? cm.first_index : 8;
      var levels = cm.levels || 248;
      d.title.textContent = "Colour \u00b7 sequential (each panel its own range)";
      WV.drawLegendBar(d.bar, cm.palette, WV.rangeOf(first, levels));
      var ticks = [["lo", 0], ["(lo + hi) / 2", 50], ["hi", 100]];
      for (var k = 0; k < ticks.length; k++) {
        var tick = el("span", "wv-tick", ticks[k][0]);
        tick.style.left = ticks[k][1] + "%";
        d.ticks.appendChild(tick);
      }
      d.values.textContent = "hover a panel for its range";
      d.values.classList.add("wv-empty");
      var sw = [
        ["dense layer", stripes(cm.palette, cm.dense_index, cm.dense_gap_index, false, false)],
        ["dead expert", stripes(cm.palette, cm.dead_index, cm.dead_line_index, false, true)],
        ["no number", stripes(cm.palette, cm.none_index, cm.none_gap_index, true, false)],
      ];
      for (var j = 0; j < sw.length; j++) {
        sw[j][1].setAttribute("data-index", String(j));
        d.swatches.appendChild(WV.swatch(sw[j][0], null, sw[j][1]));
      }
      d.swatches.appendChild(WV.swatch("padding", WV.rgbCss(cm.palette[cm.padding_index || 0])));
      d.note.textContent = "index = " + first + " + round(" + (levels - 1) + "\u00b7clamp((v \u2212 lo)/(hi \u2212 lo), 0, 1))";
      if (cm.rule) d.note.title = String(cm.rule);
    },
  }));
})();
