/*
 * Scene kind "bytes": a file's raw bytes on a Hilbert curve (colormaps.bytes: index =
 * byte_to_index[byte]). The legend is the 256 byte values in file order and one swatch per byte
 * class; there is no colour scale.
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el;

  // byte classes of colormaps.bytes ("rule"), each shown by one representative byte
  var CLASSES = [
    ["0x00", 0x00], ["0xFF", 0xff], ["printable ASCII", 0x41], ["other control", 0x01],
    ["0x80\u20130xFE", 0xc0],
  ];
  var TICKS = [["00", 0x00], ["80", 0x80], ["FF", 0xff]];

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
      function hex(v) { return "0x" + (v < 16 ? "0" : "") + v.toString(16).toUpperCase(); }
      var parts = runs.map(function (r) { return r[0] === r[1] ? hex(r[0]) : hex(r[0]) + "\u2013" + hex(r[1]); });
      return (parts.length ? "byte " + parts.join(", ") : "no byte") + "  (index " + index + ")";
    },

    legend: function (app, cm, d) {
      var lut = Array.isArray(cm.byte_to_index) ? cm.byte_to_index : null;
      d.title.textContent = "Colour \u00b7 byte value";
      if (!lut || lut.length !== 256) {
        d.note.textContent = "no byte_to_index in colormaps.bytes";
        return;
      }
      WV.drawLegendBar(d.bar, cm.palette, lut);
      for (var k = 0; k < TICKS.length; k++) {
        var tick = el("span", "wv-tick", TICKS[k][0]);
        tick.style.left = (100 * (TICKS[k][1] + 0.5) / 256).toFixed(2) + "%";
        d.ticks.appendChild(tick);
      }
      for (var j = 0; j < CLASSES.length; j++) {
        d.swatches.appendChild(WV.swatch(CLASSES[j][0], WV.rgbCss(cm.palette[lut[CLASSES[j][1]]])));
      }
      if (cm.palette[cm.padding_index || 0]) {
        d.swatches.appendChild(WV.swatch("padding", WV.rgbCss(cm.palette[cm.padding_index || 0])));
      }
      d.values.textContent = "1 px = 1 byte, in file order";
      d.values.classList.remove("wv-empty");
      d.note.textContent = "index = byte_to_index[byte]";
      if (cm.rule) d.note.title = String(cm.rule);
    },
  }));
})();
