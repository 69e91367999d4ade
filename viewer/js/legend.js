/*
 * WV.Legend: the "Colour" box. The core clears it and hands it to the current scene's kind
 * (kind.legend, kind.legendValues); helpers for kinds: WV.drawLegendBar, WV.qOf.
 */
(function () {
  "use strict";

  var WV = window.WV;

  function Legend(app) {
    this.app = app;
    function byId(id) { return document.getElementById(id); }
    this.dom = {
      bar: byId("wv-legend-bar"), ticks: byId("wv-legend-ticks"), values: byId("wv-legend-values"),
      swatches: byId("wv-legend-swatches"), note: byId("wv-legend-note"),
      title: byId("wv-legend-title"), ends: byId("wv-legend-ends"),
      low: byId("wv-legend-low"), high: byId("wv-legend-high"),
    };
    this._scale = undefined;
  }

  /** Rebuild the legend for the current scene. */
  Legend.prototype.build = function () {
    var d = this.dom;
    var model = this.app.model;
    var cm = model.colormap;
    WV.clear(d.ticks);
    WV.clear(d.swatches);
    d.ends.hidden = true;
    d.bar.hidden = false;
    d.low.textContent = d.high.textContent = "";
    d.title.textContent = "Colour";
    d.note.removeAttribute("title");
    this._scale = undefined;
    if (!cm || !cm.palette) {
      d.note.textContent = "no colormap in the manifest";
      return;
    }
    model.kind.legend(this.app, cm, d);
  };

  /** The scale of the hovered tensor (null: none), shown as the kind says. */
  Legend.prototype.values = function (scale) {
    var s = typeof scale === "number" && isFinite(scale) ? scale : null;
    if (s === this._scale) return;
    this._scale = s;
    var model = this.app.model;
    if (!model || !model.colormap || !model.colormap.palette) return;
    var text = model.kind.legendValues(this.app, s);
    if (text === null) return;   // fixed text, set by the legend
    this.dom.values.textContent = text;
    this.dom.values.classList.toggle("wv-empty", s === null);
  };

  /** Palette index of v/s = a in [0, 1] (README "The bundle and its manifest", "colormap"). */
  WV.qOf = function (cm, a) {
    var levels = cm.levels || 125;
    if (cm.transfer === "linear") return Math.floor(levels * a + 0.5);
    return Math.floor(levels * Math.sqrt(a) + 0.5);
  };

  /** The legend bar: one canvas pixel per palette index, stretched by CSS. */
  WV.drawLegendBar = function (canvas, palette, indices) {
    var n = indices.length;
    canvas.width = n;
    canvas.height = 1;
    var ctx = canvas.getContext("2d");
    var img = ctx.createImageData(n, 1);
    for (var i = 0; i < n; i++) {
      var rgb = palette[indices[i]] || [0, 0, 0];
      img.data[4 * i] = rgb[0]; img.data[4 * i + 1] = rgb[1];
      img.data[4 * i + 2] = rgb[2]; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  };

  /** A legend swatch: a box of `css` colour (or the node `box`) and a text label. */
  WV.swatch = function (label, css, box) {
    var item = WV.el("span", "wv-swatch");
    if (!box) {
      box = WV.el("span", "wv-swatch-box");
      box.style.background = css;
    }
    item.appendChild(box);
    item.appendChild(document.createTextNode(label));
    return item;
  };

  WV.Legend = Legend;
})();
