/*
 * Scene kind "xorbs" (weightvis --show-xet-xorbs): a file's bytes on a Hilbert curve, coloured by
 * the Xet xorb that stores each on the Hugging Face Hub (colormaps.xorbs: index = 1 + colour ·
 * shades + floor(byte · shades / 256)). The legend lists the xorbs of manifest.xet in order of
 * first appearance (colour, hash prefix, share of the bytes); panel "xorbs" names the xorb under
 * the cursor in the readout (from manifest.xet's byte ranges, exact, no tile needed) and binds
 * keys w (the first scene) / x (the xorbs).
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el;

  var LISTED = 32;          // xorbs listed in the legend; the readout names every one
  var PREFIX = 12;          // hex digits of a hash shown

  /** manifest.xet, checked enough to be read: {files, xorbs}, or null. */
  function xetOf(manifest) {
    var x = manifest && manifest.xet;
    if (!x || typeof x !== "object" || !Array.isArray(x.files) || !Array.isArray(x.xorbs)) return null;
    return x;
  }

  function shortHash(h) { return String(h).slice(0, PREFIX) + "\u2026"; }

  /** The brightest shade of colour c: what the legend shows for a xorb. */
  function swatchIndex(cm, c) {
    var shades = cm.shades || 12;
    return 1 + c * shades + shades - 1;
  }

  WV.xorbs = {
    /**
     * Per file name, its xorb runs sorted by start: [[start, end, xorb number], ...] (the
     * manifest's ranges are [file index, start, end) per xorb).
     */
    runsByFile: function (x) {
      var byFile = new Map();
      for (var k = 0; k < x.xorbs.length; k++) {
        var ranges = x.xorbs[k].ranges || [];
        for (var i = 0; i < ranges.length; i++) {
          var f = x.files[ranges[i][0]];
          if (!f) continue;
          var name = String(f.file);
          if (!byFile.has(name)) byFile.set(name, []);
          byFile.get(name).push([ranges[i][1], ranges[i][2], k]);
        }
      }
      byFile.forEach(function (runs) { runs.sort(function (a, b) { return a[0] - b[0]; }); });
      return byFile;
    },

    /** The run of `runs` holding byte `offset`, or null. */
    runAt: function (runs, offset) {
      var lo = 0, hi = runs.length - 1;
      while (lo <= hi) {
        var mid = (lo + hi) >> 1;
        if (runs[mid][1] <= offset) lo = mid + 1;
        else if (runs[mid][0] > offset) hi = mid - 1;
        else return runs[mid];
      }
      return null;
    },
  };

  WV.sceneKinds.register("xorbs", WV.extend(WV.sceneKinds.get("bytes"), {
    /** The colour and shade palette index `index` stands for. */
    rangeText: function (app, cm, index) {
      if (index === (cm.padding_index || 0)) return "padding (no byte)";
      var shades = cm.shades || 12;
      var c = Math.floor((index - 1) / shades), j = (index - 1) % shades;
      var b0 = Math.ceil(j * 256 / shades), b1 = Math.ceil((j + 1) * 256 / shades) - 1;
      function hex(v) { return "0x" + (v < 16 ? "0" : "") + v.toString(16).toUpperCase(); }
      return "xorb colour " + (c + 1) + ", shade of bytes " + hex(b0) + "\u2013" + hex(b1) +
        "  (index " + index + ")";
    },

    legend: function (app, cm, d) {
      var x = xetOf(app.manifest);
      d.title.textContent = "Colour \u00b7 Xet xorb";
      if (!x) {
        d.note.textContent = "no xet in the manifest";
        return;
      }
      var colours = Math.min(x.xorbs.length, cm.colours || 20);
      var shades = cm.shades || 12;
      WV.drawLegendBar(d.bar, cm.palette, WV.rangeOf(1, colours * shades));
      var shown = Math.min(x.xorbs.length, LISTED);
      for (var k = 0; k < shown; k++) {
        var xorb = x.xorbs[k];
        var label = "#" + (k + 1) + " " + shortHash(xorb.hash) + " " + WV.fmtFraction(xorb.share);
        var item = WV.swatch(label, WV.rgbCss(cm.palette[swatchIndex(cm, xorb.colour)]));
        item.classList.add("wv-xorb");
        item.title = String(xorb.hash) + "\n" + WV.fmtCount(xorb.bytes) + " bytes in " +
          (xorb.ranges || []).length + " range(s)";
        d.swatches.appendChild(item);
      }
      if (x.xorbs.length > shown) {
        d.swatches.appendChild(el("span", "wv-swatch", "\u2026 " + (x.xorbs.length - shown) +
          " more (manifest xet.xorbs)"));
      }
      d.values.textContent = "1 px = 1 byte; shade = byte value";
      d.values.classList.remove("wv-empty");
      d.note.textContent = x.xorbs.length + " xorb" + (x.xorbs.length === 1 ? "" : "s") +
        ", coloured in order of first appearance" +
        (x.xorbs.length > (cm.colours || 20) ? " (colours repeat every " + (cm.colours || 20) + ")" : "");
      if (cm.rule) d.note.title = String(cm.rule);
    },
  }));

  /** Panel "xorbs": the readout's "xorb" row; keys w / x. */
  function XorbReadout(app) {
    this.app = app;
    this.hook = "xorbs";
    this.xet = xetOf(app.manifest);
    this.runs = WV.xorbs.runsByFile(this.xet);
    this.dom = { box: WV.h("div", { id: "wv-r-xorb", "class": "wv-contents" }) };
    app.readout.addRows(this.dom.box);
    var first = app.scenes.length ? String(app.scenes[0].key) : "main";
    WV.sceneKeys(app, new Map([["w", first], ["x", String(this.xet.scene || "xorbs")]]), "");
  }

  XorbReadout.prototype.onScene = function () { this.onHover(null); };

  /** The xorb of a hovered byte: {number, hash, run}, or null. */
  XorbReadout.prototype.xorbAt = function (hit) {
    if (!hit || hit.file === undefined || !this.runs.has(String(hit.file))) return null;
    var run = WV.xorbs.runAt(this.runs.get(String(hit.file)), hit.byteOffset);
    if (!run) return null;
    var xorb = this.xet.xorbs[run[2]];
    return { number: run[2] + 1, hash: String(xorb.hash), share: xorb.share, run: run };
  };

  XorbReadout.prototype.onHover = function (hit) {
    var box = this.dom.box;
    WV.clear(box);
    var got = this.xorbAt(hit);
    box.setAttribute("data-xorb", got ? got.hash : "");
    if (!got) return false;
    box.appendChild(el("dt", null, "xorb"));
    var dd = el("dd", null, "#" + got.number + " " + shortHash(got.hash));
    dd.id = "wv-r-xorb-name";
    dd.title = got.hash;
    box.appendChild(dd);
    box.appendChild(el("dt", null, "its run"));
    box.appendChild(el("dd", null, "bytes " + WV.fmtCount(got.run[0]) + "\u2013" +
      WV.fmtCount(got.run[1] - 1) + "; the xorb holds " + WV.fmtFraction(got.share) + " of the bytes"));
    return false;
  };

  WV.panels.register("xorbs", {
    applies: function (manifest) { return xetOf(manifest) !== null; },
    create: function (app) { return new XorbReadout(app); },
  });
})();
