/*
 * Scene kind "bytes": a file's raw bytes on a Hilbert curve (colormaps.bytes: index =
 * byte_to_index[byte]). The legend lists the byte classes of colormaps.bytes ("classes": label,
 * byte runs, palette index range): one row each, its shades darkest to brightest; there is no
 * colour scale. A manifest without "classes" shows the 256 byte values' colours in a bar.
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el;

  var TICKS = [["00", 0x00], ["80", 0x80], ["FF", 0xff]];

  function hex(v) { return "0x" + (v < 16 ? "0" : "") + v.toString(16).toUpperCase(); }

  /** Inclusive byte runs [[first, last], ...] as "0x01\u20130x1F, 0x7F". */
  function runsText(runs) {
    return runs.map(function (r) { return r[0] === r[1] ? hex(r[0]) : hex(r[0]) + "\u2013" + hex(r[1]); }).join(", ");
  }

  /** A legend row of one byte class: its shades (darkest to brightest), label and bytes. */
  function classRow(cm, cls) {
    var lo = cls.index[0], hi = cls.index[1];
    var box = el("span", "wv-swatch-box wv-class-box");
    box.style.background = lo === hi ? WV.rgbCss(cm.palette[lo])
      : "linear-gradient(to right, " + WV.rgbCss(cm.palette[lo]) + ", " + WV.rgbCss(cm.palette[hi]) + ")";
    var row = WV.swatch(String(cls.label), null, box);
    row.classList.add("wv-class");
    var bytes = runsText(cls.bytes || []);
    if (bytes !== String(cls.label)) row.appendChild(el("span", "wv-class-bytes", bytes));
    row.title = (hi - lo + 1) + " shade" + (hi > lo ? "s" : "") + ", palette index " + lo + (hi > lo ? "\u2013" + hi : "");
    return row;
  }

  WV.sceneKinds.register("bytes", WV.extend(WV.sceneKinds.get("values"), {
    scaleName: "scale",

    scaleOf: function () { return null; },

    legendValues: function () { return null; },   // fixed text, set by the legend

    valueText: function (app, sample) {
      if (sample.value === undefined) return "not stored";
      var b = sample.value;
      var hex = "0x" + (b < 16 ? "0" : "") + b.toString(16).toUpperCase();
      return b >= 0x20 && b < 0x7f ? hex + " ('" + String.fromCharCode(b) + "')" : hex;
    },

    /** The bytes whose colour is palette index `index` (byte_to_index), as ranges. */
    rangeText: function (app, cm, index) {
      if (index === (cm.padding_index || 0)) return "padding (no byte)";
      var lut = Array.isArray(cm.byte_to_index) ? cm.byte_to_index : [];
      var runs = [];
      for (var b = 0; b < lut.length; b++) {
        if (lut[b] !== index) continue;
        var last = runs[runs.length - 1];
        if (last && last[1] === b - 1) last[1] = b;
        else runs.push([b, b]);
      }
      var cls = (Array.isArray(cm.classes) ? cm.classes : []).filter(function (c) {
        return index >= c.index[0] && index <= c.index[1];
      })[0];
      return (runs.length ? "byte " + runsText(runs) : "no byte") + (cls ? " \u00b7 " + cls.label : "") +
        "  (index " + index + ")";
    },

    legend: function (app, cm, d) {
      var lut = Array.isArray(cm.byte_to_index) ? cm.byte_to_index : null;
      d.title.textContent = "Colour \u00b7 byte class";
      if (!lut || lut.length !== 256) {
        d.note.textContent = "no byte_to_index in colormaps.bytes";
        return;
      }
      if (Array.isArray(cm.classes) && cm.classes.length) {
        d.bar.hidden = true;
        for (var j = 0; j < cm.classes.length; j++) d.swatches.appendChild(classRow(cm, cm.classes[j]));
      } else {                   // an older manifest: the colour of every byte value, in order
        WV.drawLegendBar(d.bar, cm.palette, lut);
        for (var k = 0; k < TICKS.length; k++) {
          var tick = el("span", "wv-tick", TICKS[k][0]);
          tick.style.left = (100 * (TICKS[k][1] + 0.5) / 256).toFixed(2) + "%";
          d.ticks.appendChild(tick);
        }
      }
      if (cm.palette[cm.padding_index || 0]) {
        var pad = WV.swatch("padding", WV.rgbCss(cm.palette[cm.padding_index || 0]));
        if (d.bar.hidden) pad.classList.add("wv-class");
        d.swatches.appendChild(pad);
      }
      d.values.textContent = "1 px = 1 byte, in file order";
      d.values.classList.remove("wv-empty");
      d.note.textContent = "index = byte_to_index[byte]";
      if (cm.rule) d.note.title = String(cm.rule);
    },
  }));
})();
