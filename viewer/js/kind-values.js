/*
 * Scene kind "values": weights on the diverging palette, per-tensor scale s. Other kinds extend
 * it (WV.extend(WV.sceneKinds.get("values"), {...})).
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el, fmtNum = WV.fmtNum;

  var values = {
    scaleName: "scale s",

    /** The readout's label of the scale row. */
    readoutScaleLabel: function () { return this.scaleName; },

    /** The colour scale s of an item (the tensor's). */
    scaleOf: function (app, item) {
      var t = item.tensor;
      return t && typeof t.scale === "number" ? t.scale : null;
    },

    /** The readout's value of a sidecar sample (WV.Sidecars.sample, state "ready"). */
    valueText: function (app, sample) {
      return sample.value === undefined ? "not stored (interval below)" : WV.fmtExact(sample.value, sample.dtype);
    },

    /**
     * The values palette index `index` stands for, by the colour rule (README "Colour"): level
     * q = |index − zero| covers s·((q − ½)/levels)² ≤ |v| < s·((q + ½)/levels)², the top level
     * everything above; the zero index also every |v| below s·(½/levels)².
     */
    rangeText: function (app, cm, index, s) {
      var special = [[cm.padding_index, "padding (no element)"], [cm.nan_index, "NaN"],
                     [cm.posinf_index, "+Inf"], [cm.neginf_index, "\u2212Inf"]];
      for (var i = 0; i < special.length; i++) if (index === special[i][0]) return special[i][1];
      var zero = typeof cm.zero_index === "number" ? cm.zero_index : 129;
      var levels = cm.levels || 125;
      var q = index - zero;
      if (typeof s !== "number" || !(s > 0) || Math.abs(q) > levels) return "index " + index;
      return WV.levelInterval(Math.abs(q), Math.sign(q), s, levels, cm.transfer, 0, "v") + "  (index " + index + ")";
    },

    /** The legend's line for the hovered scale s (null: none); null keeps the text as it is. */
    legendValues: function (app, s) {
      return s === null ? "s: hover a tensor" : "s = " + fmtNum(s) + "   s/4 = " + fmtNum(s / 4);
    },

    /** Fill the legend (cleared by WV.Legend) for colormap `cm`; d = the legend's nodes. */
    legend: function (app, cm, d) {
      var zero = cm.zero_index !== undefined ? cm.zero_index : 129;
      var levels = cm.levels || 125;
      var lo = zero - levels, n = 2 * levels + 1;
      WV.drawLegendBar(d.bar, cm.palette, WV.rangeOf(lo, n));
      var q4 = WV.qOf(cm, 0.25);
      var ticks = [
        { label: "\u2212s", index: zero - levels },
        { label: "\u2212s/4", index: zero - q4 },
        { label: "0", index: zero },
        { label: "+s/4", index: zero + q4 },
        { label: "+s", index: zero + levels },
      ];
      for (var k = 0; k < ticks.length; k++) {
        var tick = el("span", "wv-tick", ticks[k].label);
        tick.style.left = (100 * (ticks[k].index - lo + 0.5) / n).toFixed(2) + "%";
        d.ticks.appendChild(tick);
      }
      var swatches = [
        ["padding", cm.padding_index], ["NaN", cm.nan_index],
        ["+Inf", cm.posinf_index], ["\u2212Inf", cm.neginf_index],
      ];
      for (var j = 0; j < swatches.length; j++) {
        if (swatches[j][1] === undefined || !cm.palette[swatches[j][1]]) continue;
        d.swatches.appendChild(WV.swatch(swatches[j][0], WV.rgbCss(cm.palette[swatches[j][1]])));
      }
      d.note.textContent = "index = " + zero + " ± round(" + levels + "·" +
        (cm.transfer === "linear" ? "" : "√") + "min(|v|/s, 1))";
      app.legend.values(null);
    },
  };

  WV.sceneKinds.register("values", values);
})();
