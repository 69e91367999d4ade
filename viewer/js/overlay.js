/*
 * WV.Overlay: a canvas over the map with the outlines of tensors, the hovered / selected
 * highlight, and group and tensor labels, redrawn for every view (linear in the pieces; labels
 * are placed greedily, biggest on screen first).
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el;

  var OUTLINE_MIN_PX = 6;      // outline a placement when both its sides are at least this on screen
  var LABEL_FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  var GROUP_FONT = "bold 13px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  var LABEL_H = 16;            // label box height, CSS px
  var LABEL_PAD = 3;           // label box horizontal padding
  var MAX_LABELS = 400;
  var WIDTH_CACHE_MAX = 50000; // measured widths kept, then forgotten all at once

  /**
   * A canvas over the map (outlines, group and tensor labels), redrawn for every view; during a
   * zoom animation it is CSS-transformed like Leaflet's own panes, then redrawn.
   */
  function Overlay(app) {
    this.app = app;
    this.canvas = el("canvas", "wv-overlay leaflet-zoom-animated");
    this.ctx = this.canvas.getContext("2d");
    this.labels = [];         // last placed labels: {text, name, kind, box: [x, y, w, h]}
    this.widthCache = new Map();
    this._frame = 0;
  }

  Overlay.prototype.attach = function (map) {
    var self = this;
    map.getContainer().appendChild(this.canvas);
    map.on("move resize viewreset", function () { self.request(); });
    map.on("zoomanim", function (e) { self._animating = true; self._animate(e); });
    map.on("zoomend", function () { self._animating = false; self.request(); });
    this.resize();
  };

  Overlay.prototype.resize = function () {
    var size = this.app.map.getSize();
    var dpr = window.devicePixelRatio || 1;
    this.dpr = dpr;
    this.sw = size.x;
    this.sh = size.y;
    this.canvas.width = Math.round(size.x * dpr);
    this.canvas.height = Math.round(size.y * dpr);
    this.canvas.style.width = size.x + "px";
    this.canvas.style.height = size.y + "px";
  };

  Overlay.prototype.request = function () {
    var self = this;
    if (this._frame) return;
    this._frame = L.Util.requestAnimFrame(function () {
      self._frame = 0;
      self.draw();
    });
  };

  Overlay.prototype._animate = function (e) {
    var map = this.app.map;
    var k = map.getZoomScale(e.zoom, map.getZoom());
    var half = map.getSize().divideBy(2);
    var from = map.project(map.getCenter(), map.getZoom()).subtract(half).multiplyBy(k);
    var to = map.project(e.center, e.zoom).subtract(half);
    L.DomUtil.setTransform(this.canvas, from.subtract(to), k);
  };

  Overlay.prototype.textWidth = function (font, text) {
    var key = font + "\u0000" + text;
    var w = this.widthCache.get(key);
    if (w === undefined) {
      this.ctx.font = font;
      w = this.ctx.measureText(text).width;
      if (this.widthCache.size >= WIDTH_CACHE_MAX) this.widthCache.clear();
      this.widthCache.set(key, w);
    }
    return w;
  };

  /** Screen transform of the current view: s = origin + k * c. */
  Overlay.prototype.view = function () {
    var app = this.app;
    var map = app.map;
    var model = app.model;
    var origin = map.latLngToContainerPoint(map.unproject([0, 0], model.maxZoom));
    var k = map.getZoomScale(map.getZoom(), model.maxZoom);
    return { ox: origin.x, oy: origin.y, k: k };
  };

  Overlay.prototype.draw = function () {
    var app = this.app;
    var model = app.model;
    if (!model || this._animating) return;
    var size = app.map.getSize();
    if (size.x !== this.sw || size.y !== this.sh || (window.devicePixelRatio || 1) !== this.dpr) this.resize();
    L.DomUtil.setTransform(this.canvas, L.point(0, 0), 1);
    var ctx = this.ctx;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.clearRect(0, 0, this.sw, this.sh);
    var v = this.view();
    var sw = this.sw, sh = this.sh;
    var placed = [];
    this.labels = placed;

    // Screen rect of a canvas rect, and its visible part.
    function sRect(r) {
      return [v.ox + v.k * r[0], v.oy + v.k * r[1], v.k * r[2], v.k * r[3]];
    }
    function visible(s) {
      return s[0] < sw && s[1] < sh && s[0] + s[2] > 0 && s[1] + s[3] > 0;
    }
    // A scene kind whose pieces are panels of cells (labelsOutside) gets every label outside
    // every piece: above it, in the strip its layout leaves, or not at all.
    var outside = !!(model.kind && model.kind.labelsOutside);
    var pieceBoxes = [];
    if (outside) {
      for (var pi = 0; pi < model.pieces.length; pi++) {
        var ps = sRect(model.pieces[pi].rect);
        if (visible(ps)) pieceBoxes.push(ps);
      }
    }
    function overPiece(box) {
      for (var i = 0; i < pieceBoxes.length; i++) {
        var p = pieceBoxes[i];
        if (box[0] < p[0] + p[2] && p[0] < box[0] + box[2] && box[1] < p[1] + p[3] && p[1] < box[1] + box[3]) return true;
      }
      return false;
    }

    // Groups: a faint dashed frame (blocks, sections) and a label above (or inside) the
    // top-left corner. Block and section labels are placed before tensor labels; "prefix"
    // groups after them, and not at all when they frame a single tensor.
    var self = this;
    var g, s;
    ctx.lineWidth = 1;
    for (var gi = 0; gi < model.groups.length; gi++) {
      g = model.groups[gi];
      if (g.kind === "prefix") continue;
      s = sRect(g.rect);
      if (!visible(s) || s[2] < 24 || s[3] < 8) continue;
      ctx.strokeStyle = g.kind === "block" ? "rgba(255, 214, 120, 0.38)" : "rgba(200, 205, 215, 0.28)";
      ctx.setLineDash(g.kind === "block" ? [4, 3] : [2, 3]);
      ctx.strokeRect(Math.round(s[0]) - 2.5, Math.round(s[1]) - 2.5, Math.round(s[2]) + 5, Math.round(s[3]) + 5);
      ctx.setLineDash([]);
    }
    function placeGroupLabels(prefixes) {
      for (var gj = 0; gj < model.groups.length; gj++) {
        var grp = model.groups[gj];
        if ((grp.kind === "prefix") !== prefixes) continue;
        if (prefixes && model.singleRects.has(grp.rect.join(","))) continue;
        var gs = sRect(grp.rect);
        if (!visible(gs) || gs[2] < 40 || gs[3] < 8) continue;
        var gtext = self.fit(String(grp.label), Math.max(gs[2], 60) - 2 * LABEL_PAD, GROUP_FONT);
        if (!gtext) continue;
        var gw = Math.ceil(self.textWidth(GROUP_FONT, gtext) + 2 * LABEL_PAD);
        var gx = Math.round(Math.max(gs[0], 2));
        var above = [gx, Math.round(gs[1] - LABEL_H - 4), gw, LABEL_H];
        var inside = [gx, Math.round(Math.max(gs[1], 2)), gw, LABEL_H];
        var gbox = above[1] >= 2 && !collides(placed, above) ? above : inside;
        if (outside && (gbox !== above || overPiece(gbox))) continue;
        if (collides(placed, gbox)) continue;
        placed.push({ text: gtext, name: String(grp.label), kind: prefixes ? "prefix" : "group", box: gbox });
      }
    }
    placeGroupLabels(false);

    // Outlines of every piece big enough on screen.
    var hoverName = app.hover && app.hover.item ? app.hover.item.name : null;
    var selName = app.selected ? app.selected.name : null;
    // Outlines fade in with on-screen size (three strengths, one path each), so that a dense
    // overview is not a grid of lines hiding the data.
    var candidates = [];
    var outlines = [new Path2D(), new Path2D(), new Path2D()];
    for (var i = 0; i < model.pieces.length; i++) {
      var piece = model.pieces[i];
      s = sRect(piece.rect);
      if (!visible(s)) continue;
      var side = Math.min(s[2], s[3]);
      if (side >= OUTLINE_MIN_PX && !piece.square) {
        var strength = side < 2 * OUTLINE_MIN_PX ? 0 : side < 4 * OUTLINE_MIN_PX ? 1 : 2;
        outlines[strength].rect(Math.round(s[0]) - 0.5, Math.round(s[1]) - 0.5, Math.round(s[2]) + 1, Math.round(s[3]) + 1);
      }
      if (s[2] >= 24 && s[3] >= LABEL_H + 2) {
        if (!piece.square || piece.rect === piece.item.labelRect) candidates.push({ piece: piece, s: s });
      }
    }
    var alphas = [0.14, 0.26, 0.42];
    for (var oi = 0; oi < 3; oi++) {
      ctx.strokeStyle = "rgba(210, 216, 228, " + alphas[oi] + ")";
      ctx.stroke(outlines[oi]);
    }

    // Highlights: hovered (amber) and selected (cyan) tensor, whatever their size.
    this._highlight(ctx, model, hoverName, "rgba(255, 196, 64, 0.95)", sRect, visible);
    this._highlight(ctx, model, selName, "rgba(80, 220, 255, 0.95)", sRect, visible);

    // Tensor labels: biggest on screen first, one per tensor, greedy collision avoidance.
    candidates.sort(function (a, b) { return b.s[2] * b.s[3] - a.s[2] * a.s[3]; });
    var labelled = new Set();
    for (var ci = 0; ci < candidates.length && placed.length < MAX_LABELS; ci++) {
      var c = candidates[ci];
      var item = c.piece.item;
      // one label per tensor, or per placement label ("expert 17 · gate" of a fused tensor)
      var labelKey = c.piece.label ? item.name + "\u0000" + c.piece.label : item.name;
      if (labelled.has(labelKey)) continue;
      // The visible part of the piece; the label sits in its top-left corner.
      var vx0 = Math.max(c.s[0], 0), vy0 = Math.max(c.s[1], 0);
      var vx1 = Math.min(c.s[0] + c.s[2], sw), vy1 = Math.min(c.s[1] + c.s[3], sh);
      var room = vx1 - vx0 - 4;
      if (room < 24 || vy1 - vy0 < LABEL_H + 2) continue;
      if (outside) {
        var obox = this._labelAbove(c, vx0, vx1, placed, overPiece);
        if (obox) {
          labelled.add(labelKey);
          placed.push(obox);
        }
        continue;
      }
      var text = this.fit(c.piece.label || item.label, room - 2 * LABEL_PAD);
      if (!text) continue;
      var w = Math.ceil(this.textWidth(LABEL_FONT, text) + 2 * LABEL_PAD);
      var box = [Math.round(vx0) + 2, Math.round(vy0) + 2, w, LABEL_H];
      if (collides(placed, box)) {
        // second choice: bottom-left corner of the visible part
        box = [Math.round(vx0) + 2, Math.round(vy1) - LABEL_H - 2, w, LABEL_H];
        if (box[1] < vy0 + 2 || collides(placed, box)) continue;
      }
      labelled.add(labelKey);
      placed.push({ text: text, name: item.name, kind: "tensor", box: box });
    }

    placeGroupLabels(true);

    // Draw labels (boxes first, then text).
    ctx.textBaseline = "middle";
    for (var li = 0; li < placed.length; li++) {
      var lab = placed[li];
      var b = lab.box;
      var active = lab.name === hoverName || lab.name === selName;
      var isGroup = lab.kind !== "tensor";
      ctx.fillStyle = isGroup ? "rgba(30, 24, 8, 0.82)" : active ? "rgba(0, 0, 0, 0.9)" : "rgba(12, 14, 20, 0.72)";
      roundRect(ctx, b[0], b[1], b[2], b[3], 3);
      ctx.fill();
      ctx.font = isGroup ? GROUP_FONT : LABEL_FONT;
      ctx.fillStyle = lab.kind === "group" ? "#ffd98a" : lab.kind === "prefix" ? "#e8cf9a" : active ? "#ffe08a" : "#eef1f6";
      ctx.fillText(lab.text, b[0] + LABEL_PAD, b[1] + LABEL_H / 2 + 0.5);
    }
  };

  /**
   * The label of candidate ``c`` in the strip above its piece (a labelsOutside kind): at the
   * piece's visible left edge, or just right of the labels already there; null when the text
   * does not fit within the piece's width or the box would cover a piece.
   */
  Overlay.prototype._labelAbove = function (c, vx0, vx1, placed, overPiece) {
    var y = Math.round(c.s[1]) - LABEL_H - 3;
    if (y < 2) return null;
    var x = Math.round(vx0);
    for (var tries = 0; tries < 4; tries++) {
      var text = this.fit(c.piece.label || c.piece.item.label, vx1 - x - 2 * LABEL_PAD);
      if (!text) return null;
      var box = [x, y, Math.ceil(this.textWidth(LABEL_FONT, text) + 2 * LABEL_PAD), LABEL_H];
      var hit = null;
      for (var i = 0; i < placed.length && !hit; i++) {
        if (collides([placed[i]], box)) hit = placed[i].box;
      }
      if (!hit) return overPiece(box) ? null : { text: text, name: c.piece.item.name, kind: "tensor", box: box };
      x = hit[0] + hit[2] + 6;
    }
    return null;
  };

  Overlay.prototype._highlight = function (ctx, model, name, colour, sRect, visible) {
    if (!name) return;
    var item = model.item(name);
    if (!item) return;
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    if (item.hsegs) {
      // Hilbert range: trace its outline, no finer than a screen pixel, within the view.
      var v = this.view();
      var minSide = Math.max(1, Math.pow(2, Math.ceil(Math.log2(1 / v.k))));
      var cView = [-v.ox / v.k, -v.oy / v.k, (this.sw - v.ox) / v.k, (this.sh - v.oy) / v.k];
      for (var j = 0; j < item.hsegs.length; j++) {
        var hs = item.hsegs[j];
        var lines = WV.cOutlineOfHRange(model.curveN, hs.h0, hs.h1, hs.squares, minSide, cView, 50000);
        for (var li = 0; li < lines.length; li++) {
          var ln = lines[li];
          ctx.moveTo(Math.round(v.ox + v.k * ln[0]), Math.round(v.oy + v.k * ln[1]));
          ctx.lineTo(Math.round(v.ox + v.k * ln[2]), Math.round(v.oy + v.k * ln[3]));
        }
      }
      ctx.stroke();
      ctx.lineWidth = 1;
      return;
    }
    for (var i = 0; i < item.rects.length; i++) {
      var s = sRect(item.rects[i]);
      if (!visible(s)) continue;
      var w = Math.max(s[2], 1), h = Math.max(s[3], 1);
      ctx.rect(Math.round(s[0]) - 1, Math.round(s[1]) - 1, Math.round(w) + 2, Math.round(h) + 2);
    }
    ctx.stroke();
    ctx.lineWidth = 1;
  };

  /** The label shortened to fit maxWidth in ``font`` (default LABEL_FONT), or null (WV.fitLabel). */
  Overlay.prototype.fit = function (label, maxWidth, font) {
    var self = this;
    font = font || LABEL_FONT;
    return WV.fitLabel(function (t) { return self.textWidth(font, t); }, label, maxWidth);
  };

  function collides(placed, box) {
    for (var i = 0; i < placed.length; i++) {
      var b = placed[i].box;
      if (box[0] < b[0] + b[2] + 2 && b[0] < box[0] + box[2] + 2 &&
          box[1] < b[1] + b[3] + 1 && b[1] < box[1] + box[3] + 1) return true;
    }
    return false;
  }

  function roundRect(ctx, x, y, w, h, r) {
    ctx.beginPath();
    ctx.moveTo(x + r, y);
    ctx.arcTo(x + w, y, x + w, y + h, r);
    ctx.arcTo(x + w, y + h, x, y + h, r);
    ctx.arcTo(x, y + h, x, y, r);
    ctx.arcTo(x, y, x + w, y, r);
    ctx.closePath();
  }

  WV.Overlay = Overlay;
})();
