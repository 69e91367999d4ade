/*
 * weightvis viewer — a zoomable map of a model's weights, opened from file:// with no network.
 *
 * The manifest (README "The bundle and its manifest") is inlined in <script type="application/json"
 * id="weightvis-manifest">; Leaflet (CRS.Simple) shows the 512-px tile pyramid of one scene.
 *
 * Coordinate planes (STYLE.md): `c` canvas pixel at the scene's max zoom, `e` element (row, col)
 * of a tensor's 2-D view, `t` tile at zoom z, `h` Hilbert index, `s` screen pixel in the map
 * container (CSS px), `ll` a Leaflet LatLng. Conversions are the small `xFromY` helpers.
 *
 * Tensor names are data: every DOM node that shows one is built with createElement/textContent,
 * and canvas text cannot become markup. No innerHTML anywhere.
 */
(function () {
  "use strict";

  var OVERZOOM = 3;            // zoom levels past max_zoom, drawn with image-rendering: pixelated
  var MIN_ZOOM_BELOW_0 = 3;    // zoom levels below the one-tile overview
  var OUTLINE_MIN_PX = 6;      // outline a placement when both its sides are at least this on screen
  var LABEL_FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  var GROUP_FONT = "bold 13px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  var LABEL_H = 16;            // label box height, CSS px
  var LABEL_PAD = 3;           // label box horizontal padding
  var MAX_LABELS = 400;
  var MAX_RESULTS = 100;

  // ------------------------------------------------------------------ small helpers

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function fmtNum(v) {
    if (v === null || v === undefined || typeof v !== "number" || !isFinite(v)) return "—";
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (Number.isInteger(v) && a < 1e9) return String(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential(3).replace("e+", "e");
    return String(Number(v.toPrecision(4)));
  }

  function fmtSigned(v) {
    var t = fmtNum(v);
    return v > 0 ? "+" + t : t.replace(/^-/, "\u2212");
  }

  function fmtCount(v) {
    if (v === null || v === undefined) return "—";
    return Number(v).toLocaleString("en-US");
  }

  function fmtFraction(v) {
    if (v === null || v === undefined || !isFinite(v)) return "—";
    if (v === 0) return "0";
    return fmtNum(100 * v) + " %";
  }

  function fmtShape(shape) {
    if (!shape) return "—";
    return "[" + shape.join(", ") + "]";
  }

  // ------------------------------------------------------------------ Hilbert curve
  // The classic iterative algorithm (Wikipedia, "Hilbert curve": xy2d, d2xy, rot). Canvas
  // coordinates stay below 2^26 so bitwise operations are safe on them; the index h can exceed
  // 2^32, so it is handled with plain arithmetic.

  function hilbertRot(n, xy, rx, ry) {
    if (ry === 0) {
      if (rx === 1) {
        xy[0] = n - 1 - xy[0];
        xy[1] = n - 1 - xy[1];
      }
      var t = xy[0];
      xy[0] = xy[1];
      xy[1] = t;
    }
  }

  /** Hilbert index h of canvas pixel (cx, cy) on an n x n curve (n a power of two). */
  function hFromC(n, cx, cy) {
    var xy = [cx, cy];
    var h = 0;
    for (var s = n / 2; s >= 1; s /= 2) {
      var rx = (xy[0] & s) > 0 ? 1 : 0;
      var ry = (xy[1] & s) > 0 ? 1 : 0;
      h += s * s * ((3 * rx) ^ ry);
      hilbertRot(n, xy, rx, ry);
    }
    return h;
  }

  /** Canvas pixel [cx, cy] of Hilbert index h on an n x n curve. */
  function cFromH(n, h) {
    var xy = [0, 0];
    var t = h;
    for (var s = 1; s < n; s *= 2) {
      var rx = Math.floor(t / 2) % 2;
      var ry = (t % 2) ^ rx;
      hilbertRot(s, xy, rx, ry);
      xy[0] += s * rx;
      xy[1] += s * ry;
      t = Math.floor(t / 4);
    }
    return xy;
  }

  /**
   * The Hilbert range [h0, h1) as aligned squares [cx, cy, side, side]: every run of 4^j indices
   * starting at a multiple of 4^j fills one aligned 2^j x 2^j square.
   */
  function cSquaresFromHRange(n, h0, h1) {
    var squares = [];
    var h = h0;
    while (h < h1) {
      var side = 1;
      while (side < n && h % (4 * side * side) === 0 && h + 4 * side * side <= h1) side *= 2;
      var xy = cFromH(n, h);
      squares.push([xy[0] - (xy[0] % side), xy[1] - (xy[1] % side), side, side]);
      h += side * side;
    }
    return squares;
  }

  /**
   * Outline of the Hilbert range [h0, h1) given as its aligned squares: canvas line segments
   * [x0, y0, x1, y1] where the range borders another range or the canvas edge. An edge of length
   * L is tested against the aligned L x L square across it (one contiguous index range): inside
   * [h0, h1) -> no line, disjoint -> line, else split in halves, down to minSide. Only squares
   * meeting cView [x0, y0, x1, y1] are traced; at most `budget` lines.
   */
  function cOutlineOfHRange(n, h0, h1, squares, minSide, cView, budget) {
    var lines = [];
    function edge(ex, ey, len, dir) {
      if (lines.length >= budget) return;
      var nx = dir === "L" ? ex - len : ex;
      var ny = dir === "T" ? ey - len : ey;
      var vertical = dir === "L" || dir === "R";
      var line = vertical ? [ex, ey, ex, ey + len] : [ex, ey, ex + len, ey];
      if (nx < 0 || ny < 0 || nx >= n || ny >= n) { lines.push(line); return; }
      var area = len * len;
      var h = hFromC(n, nx, ny);
      var a = h - (h % area);
      if (a >= h0 && a + area <= h1) return;
      if (a + area <= h0 || a >= h1 || len <= minSide) { lines.push(line); return; }
      var half = len / 2;
      edge(ex, ey, half, dir);
      if (vertical) edge(ex, ey + half, half, dir);
      else edge(ex + half, ey, half, dir);
    }
    for (var i = 0; i < squares.length; i++) {
      var q = squares[i];
      if (q[0] > cView[2] || q[1] > cView[3] || q[0] + q[2] < cView[0] || q[1] + q[3] < cView[1]) continue;
      edge(q[0], q[1], q[2], "L");
      edge(q[0] + q[2], q[1], q[2], "R");
      edge(q[0], q[1], q[2], "T");
      edge(q[0], q[1] + q[2], q[2], "B");
    }
    return lines;
  }

  // ------------------------------------------------------------------ tile index

  /**
   * Which tiles of a scene exist (README "The bundle and its manifest", "tile_index"): a list of per-zoom bitmaps,
   * or (older form) {"<z>": [[tx, ty], ...]}.
   */
  function TileIndex(levels) {
    this.levels = {};
    this.sets = null;
    if (!Array.isArray(levels)) {
      this.sets = {};
      for (var z in levels) {
        if (!Object.prototype.hasOwnProperty.call(levels, z)) continue;
        var set = new Set();
        var list = levels[z] || [];
        for (var k = 0; k < list.length; k++) set.add(list[k][0] + "," + list[k][1]);
        this.sets[z] = set;
      }
      return;
    }
    for (var i = 0; i < levels.length; i++) {
      var lv = levels[i];
      var raw = atob(lv.bitmap || "");
      var bits = new Uint8Array(raw.length);
      for (var j = 0; j < raw.length; j++) bits[j] = raw.charCodeAt(j);
      this.levels[lv.z] = { cols: lv.cols, rows: lv.rows, bits: bits };
    }
  }
  TileIndex.prototype.has = function (z, tx, ty) {
    if (this.sets) return !!this.sets[z] && this.sets[z].has(tx + "," + ty);
    var lv = this.levels[z];
    if (!lv) return false;
    if (tx < 0 || ty < 0 || tx >= lv.cols || ty >= lv.rows) return false;
    var i = ty * lv.cols + tx;
    return ((lv.bits[i >> 3] >> (i & 7)) & 1) === 1;
  };

  // ------------------------------------------------------------------ scene model

  /**
   * One scene's geometry: placements (arch) or curve segments (hilbert), a spatial grid for
   * point lookups, and the canvas rects of every searchable item.
   */
  function SceneModel(manifest, scene) {
    this.manifest = manifest;
    this.scene = scene;
    this.key = String(scene.key);
    this.maxZoom = scene.max_zoom;
    this.cWidth = scene.width;
    this.cHeight = scene.height;
    this.tensors = manifest.tensors || {};
    this.groups = scene.groups || [];
    var cmaps = manifest.colormaps || (manifest.colormap ? { values: manifest.colormap } : {});
    this.colormap = cmaps[scene.colormap || "values"] || cmaps.values || null;
    this.tileIndex = scene.tile_index && typeof scene.tile_index === "object" ? new TileIndex(scene.tile_index) : null;
    this.curve = scene.curve || null;
    this.isHilbert = scene.layout === "hilbert" && !!this.curve;
    // items: things drawn at a set of canvas rects: {name, label, rects: [[x, y, w, h]...]}
    this.items = [];
    this.itemByName = {};
    // pieces: one rect each, for drawing/labels: {item, rect, placement|segment}
    this.pieces = [];
    if (this.isHilbert) this._buildHilbert();
    else this._buildPlacements();
    // rects framing exactly one placement (a group there adds nothing to the tensor's label)
    this.singleRects = {};
    for (var i = 0; i < this.pieces.length; i++) this.singleRects[this.pieces[i].rect.join(",")] = true;
    this._buildGrid();
  }

  SceneModel.prototype._item = function (name) {
    var item = this.itemByName[name];
    if (!item) {
      var t = this.tensors[name];
      var label = t && t.block !== null && t.block !== undefined && t.slot ? String(t.slot) : String(name);
      item = { name: String(name), label: label, rects: [], tensor: t || null };
      this.itemByName[name] = item;
      this.items.push(item);
    }
    return item;
  };

  SceneModel.prototype._buildPlacements = function () {
    var placements = this.scene.placements || [];
    for (var i = 0; i < placements.length; i++) {
      var p = placements[i];
      var item = this._item(p.tensor);
      item.rects.push(p.rect);
      this.pieces.push({ item: item, rect: p.rect, placement: p });
    }
  };

  SceneModel.prototype._buildHilbert = function () {
    var curve = this.curve;
    this.curveN = Math.pow(2, curve.order);
    this.curveUnit = curve.unit || "element";
    var segs = (curve.segments || []).slice();
    segs.sort(function (a, b) { return a.start - b.start; });
    this.segments = segs;
    for (var i = 0; i < segs.length; i++) {
      var seg = segs[i];
      var name = this.curveUnit === "byte" ? seg.file : seg.tensor;
      var item = this._item(name);
      if (this.curveUnit === "byte") item.label = String(name).split("/").pop();
      var squares = cSquaresFromHRange(this.curveN, seg.start, seg.start + seg.length);
      var biggest = null;
      for (var j = 0; j < squares.length; j++) {
        item.rects.push(squares[j]);
        if (!biggest || squares[j][2] > biggest[2]) biggest = squares[j];
        this.pieces.push({ item: item, rect: squares[j], segment: seg, square: true });
      }
      item.labelRect = biggest;
      (item.hsegs || (item.hsegs = [])).push({ h0: seg.start, h1: seg.start + seg.length, squares: squares });
    }
  };

  SceneModel.prototype._buildGrid = function () {
    // Uniform grid of cells (c px) -> piece indices; at most ~65k cells.
    var area = Math.max(1, this.cWidth * this.cHeight);
    var cell = Math.max(64, Math.ceil(Math.sqrt(area / 65536)));
    this.gridCell = cell;
    this.gridCols = Math.max(1, Math.ceil(this.cWidth / cell));
    this.gridRows = Math.max(1, Math.ceil(this.cHeight / cell));
    this.grid = new Array(this.gridCols * this.gridRows);
    if (this.isHilbert) return; // hilbert lookups go through the curve
    for (var i = 0; i < this.pieces.length; i++) {
      var r = this.pieces[i].rect;
      var gx0 = Math.max(0, Math.floor(r[0] / cell));
      var gy0 = Math.max(0, Math.floor(r[1] / cell));
      var gx1 = Math.min(this.gridCols - 1, Math.floor((r[0] + r[2] - 1) / cell));
      var gy1 = Math.min(this.gridRows - 1, Math.floor((r[1] + r[3] - 1) / cell));
      for (var gy = gy0; gy <= gy1; gy++) {
        for (var gx = gx0; gx <= gx1; gx++) {
          var k = gy * this.gridCols + gx;
          (this.grid[k] || (this.grid[k] = [])).push(i);
        }
      }
    }
  };

  /**
   * What is at integer canvas pixel (cx, cy): null, or
   * {item, tensor, eRow, eCol, index} (element) / {item, file, byteOffset} (byte curve).
   */
  SceneModel.prototype.hitAt = function (cx, cy) {
    if (cx < 0 || cy < 0 || cx >= this.cWidth || cy >= this.cHeight) return null;
    if (this.isHilbert) return this._hitHilbert(cx, cy);
    var k = Math.floor(cy / this.gridCell) * this.gridCols + Math.floor(cx / this.gridCell);
    var list = this.grid[k];
    if (!list) return null;
    for (var i = 0; i < list.length; i++) {
      var piece = this.pieces[list[i]];
      var r = piece.rect;
      if (cx >= r[0] && cy >= r[1] && cx < r[0] + r[2] && cy < r[1] + r[3]) {
        var p = piece.placement;
        return {
          item: piece.item, tensor: piece.item.tensor,
          eRow: p.rows[0] + (cy - r[1]), eCol: p.cols[0] + (cx - r[0]),
        };
      }
    }
    return null;
  };

  SceneModel.prototype._hitHilbert = function (cx, cy) {
    var n = this.curveN;
    if (cx >= n || cy >= n) return null;
    var h = hFromC(n, cx, cy);
    var segs = this.segments;
    var lo = 0, hi = segs.length - 1, found = -1;
    while (lo <= hi) {           // last segment with start <= h
      var mid = (lo + hi) >> 1;
      if (segs[mid].start <= h) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    if (found < 0) return null;
    var seg = segs[found];
    if (h >= seg.start + seg.length) return null;
    var offset = h - seg.start;
    if (this.curveUnit === "byte") {
      return { item: this.itemByName[seg.file], tensor: null, file: seg.file, byteOffset: offset, h: h };
    }
    var item = this.itemByName[seg.tensor];
    var t = item.tensor;
    var viewCols = t && t.view ? t.view[1] : 1;
    return {
      item: item, tensor: t, h: h,
      eRow: Math.floor(offset / viewCols), eCol: offset % viewCols,
    };
  };

  /** Union of a set of canvas rects, [x, y, w, h]. */
  function cUnion(rects) {
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (var i = 0; i < rects.length; i++) {
      var r = rects[i];
      x0 = Math.min(x0, r[0]); y0 = Math.min(y0, r[1]);
      x1 = Math.max(x1, r[0] + r[2]); y1 = Math.max(y1, r[1] + r[3]);
    }
    return [x0, y0, x1 - x0, y1 - y0];
  }

  // ------------------------------------------------------------------ Leaflet layers

  /** Tile layer that only creates <img> for tiles listed in the scene's tile index. */
  var IndexedTileLayer = L.TileLayer.extend({
    initialize: function (url, tileIndex, options) {
      L.TileLayer.prototype.initialize.call(this, url, options);
      this._wvIndex = tileIndex;
    },
    createTile: function (coords, done) {
      if (this._wvIndex && !this._wvIndex.has(coords.z, coords.x, coords.y)) {
        var empty = document.createElement("div");
        empty.className = "wv-empty-tile";
        L.Util.requestAnimFrame(function () { done(null, empty); });
        return empty;
      }
      var img = L.TileLayer.prototype.createTile.call(this, coords, done);
      img.alt = "";
      return img;
    },
  });

  /**
   * A canvas over the map (outlines, group and tensor labels), redrawn for every view; during a
   * zoom animation it is CSS-transformed like Leaflet's own panes, then redrawn.
   */
  function Overlay(app) {
    this.app = app;
    this.canvas = el("canvas", "wv-overlay leaflet-zoom-animated");
    this.ctx = this.canvas.getContext("2d");
    this.labels = [];         // last placed labels: {text, name, kind, box: [x, y, w, h]}
    this.widthCache = {};
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
    var w = this.widthCache[key];
    if (w === undefined) {
      this.ctx.font = font;
      w = this.ctx.measureText(text).width;
      this.widthCache[key] = w;
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
        if (prefixes && model.singleRects[grp.rect.join(",")]) continue;
        var gs = sRect(grp.rect);
        if (!visible(gs) || gs[2] < 40 || gs[3] < 8) continue;
        var gtext = self.fit(String(grp.label), Math.max(gs[2], 60) - 2 * LABEL_PAD, GROUP_FONT);
        if (!gtext) continue;
        var gw = Math.ceil(self.textWidth(GROUP_FONT, gtext) + 2 * LABEL_PAD);
        var gx = Math.round(Math.max(gs[0], 2));
        var above = [gx, Math.round(gs[1] - LABEL_H - 4), gw, LABEL_H];
        var inside = [gx, Math.round(Math.max(gs[1], 2)), gw, LABEL_H];
        var gbox = above[1] >= 2 && !collides(placed, above) ? above : inside;
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
    var labelled = {};
    for (var ci = 0; ci < candidates.length && placed.length < MAX_LABELS; ci++) {
      var c = candidates[ci];
      var item = c.piece.item;
      if (labelled[item.name]) continue;
      // The visible part of the piece; the label sits in its top-left corner.
      var vx0 = Math.max(c.s[0], 0), vy0 = Math.max(c.s[1], 0);
      var vx1 = Math.min(c.s[0] + c.s[2], sw), vy1 = Math.min(c.s[1] + c.s[3], sh);
      var room = vx1 - vx0 - 4;
      if (room < 24 || vy1 - vy0 < LABEL_H + 2) continue;
      var text = this.fit(item.label, room - 2 * LABEL_PAD);
      if (!text) continue;
      var w = Math.ceil(this.textWidth(LABEL_FONT, text) + 2 * LABEL_PAD);
      var box = [Math.round(vx0) + 2, Math.round(vy0) + 2, w, LABEL_H];
      if (collides(placed, box)) {
        // second choice: bottom-left corner of the visible part
        box = [Math.round(vx0) + 2, Math.round(vy1) - LABEL_H - 2, w, LABEL_H];
        if (box[1] < vy0 + 2 || collides(placed, box)) continue;
      }
      labelled[item.name] = true;
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

  Overlay.prototype._highlight = function (ctx, model, name, colour, sRect, visible) {
    if (!name) return;
    var item = model.itemByName[name];
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
        var lines = cOutlineOfHRange(model.curveN, hs.h0, hs.h1, hs.squares, minSide, cView, 50000);
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

  /**
   * The label text shortened to fit maxWidth, or null: the full label, then without ".weight",
   * then its trailing dotted parts ("…self_attn.q_proj"), the last part alone ("q_proj"), and
   * that part cut ("q_pr…").
   */
  Overlay.prototype.fit = function (label, maxWidth, font) {
    var self = this;
    font = font || LABEL_FONT;
    function fits(t) { return self.textWidth(font, t) <= maxWidth; }
    if (fits(label)) return label;
    var base = label.replace(/\.weight$/, "");
    if (base !== label && fits(base)) return base;
    var parts = base.split(".");
    for (var i = 1; i < parts.length - 1; i++) {
      var t = "\u2026" + parts.slice(i).join(".");
      if (fits(t)) return t;
    }
    var last = parts[parts.length - 1];
    if (fits(last)) return last;
    for (var n = last.length - 1; n >= 3; n--) {
      var u = last.slice(0, n) + "\u2026";
      if (fits(u)) return u;
    }
    return null;
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

  // ------------------------------------------------------------------ the app

  function App(manifest) {
    this.manifest = manifest;
    this.scenes = manifest.scenes || [];
    this.model = null;
    this.tiles = null;
    this.hover = null;      // hit under the cursor
    this.selected = null;   // pinned item (click or search)
    this.lastHash = null;
    this.dom = {
      map: document.getElementById("wv-map"),
      sceneRow: document.getElementById("wv-scene-row"),
      scene: document.getElementById("wv-scene"),
      search: document.getElementById("wv-search"),
      results: document.getElementById("wv-results"),
      rName: document.getElementById("wv-r-name"),
      rGroup: document.getElementById("wv-r-group"),
      rElement: document.getElementById("wv-r-element"),
      rIndex: document.getElementById("wv-r-index"),
      rDtype: document.getElementById("wv-r-dtype"),
      rShape: document.getElementById("wv-r-shape"),
      rScale: document.getElementById("wv-r-scale"),
      rCanvas: document.getElementById("wv-r-canvas"),
      sTitle: document.getElementById("wv-s-title"),
      sName: document.getElementById("wv-s-name"),
      sTable: document.getElementById("wv-s-table"),
      legendBar: document.getElementById("wv-legend-bar"),
      legendTicks: document.getElementById("wv-legend-ticks"),
      legendValues: document.getElementById("wv-legend-values"),
      legendSwatches: document.getElementById("wv-legend-swatches"),
      legendNote: document.getElementById("wv-legend-note"),
    };
    this.map = L.map(this.dom.map, {
      crs: L.CRS.Simple,
      zoomSnap: 0.25,
      zoomDelta: 0.5,
      wheelPxPerZoomLevel: 90,
      zoomControl: false,
      attributionControl: true,
      boxZoom: true,
      fadeAnimation: false,
    });
    L.control.zoom({ position: "bottomright" }).addTo(this.map);
    this.map.attributionControl.setPrefix("");
    this.map.attributionControl.addAttribution("Leaflet");
    this.overlay = new Overlay(this);
    this.overlay.attach(this.map);
    this._wire();
  }

  App.prototype._wire = function () {
    var self = this;
    var map = this.map;
    map.on("mousemove", function (e) { self.onPoint(e.latlng); });
    map.on("mouseout", function () { self.setHover(null, null); });
    map.on("click", function (e) {
      var hit = self.hitAtLatLng(e.latlng);
      self.select(hit ? hit.item : null);
    });
    map.on("moveend", function () { self.writeHash(); });
    window.addEventListener("hashchange", function () {
      if (location.hash !== self.lastHash) self.applyHash(true);
    });
    if (this.scenes.length > 1) {
      this.dom.sceneRow.hidden = false;
      for (var i = 0; i < this.scenes.length; i++) {
        var opt = el("option", null, this.scenes[i].label || this.scenes[i].key);
        opt.value = String(this.scenes[i].key);
        this.dom.scene.appendChild(opt);
      }
      this.dom.scene.addEventListener("change", function () {
        self.showScene(self.dom.scene.value, null);
      });
    }
    this._wireSearch();
  };

  App.prototype.sceneByKey = function (key) {
    for (var i = 0; i < this.scenes.length; i++) {
      if (String(this.scenes[i].key) === key) return this.scenes[i];
    }
    return null;
  };

  /** Canvas-pixel <-> LatLng for the current scene. */
  App.prototype.llFromC = function (cx, cy) {
    return this.map.unproject([cx, cy], this.model.maxZoom);
  };
  App.prototype.cFromLl = function (ll) {
    return this.map.project(ll, this.model.maxZoom);
  };
  App.prototype.llBoundsFromCRect = function (r) {
    return L.latLngBounds(this.llFromC(r[0], r[1] + r[3]), this.llFromC(r[0] + r[2], r[1]));
  };

  /** Show a scene; view = {z, cx, cy} or null to fit the content. */
  App.prototype.showScene = function (key, view) {
    var scene = this.sceneByKey(key) || this.scenes[0];
    if (!scene) return;
    if (!this.model || this.model.key !== String(scene.key)) {
      if (this.tiles) this.map.removeLayer(this.tiles);
      this.model = new SceneModel(this.manifest, scene);
      this.hover = null;
      this.selected = null;
      var mz = this.model.maxZoom;
      var bounds = this.llBoundsFromCRect([0, 0, this.model.cWidth, this.model.cHeight]);
      this.contentBounds = bounds;
      // Limits are set without Leaflet's setters (which pan/zoom to obey them, animated) and
      // enforced once the new view is set below.
      this.map.setMaxBounds(null);
      this.map.options.minZoom = -MIN_ZOOM_BELOW_0;
      this.map.options.maxZoom = mz + OVERZOOM;
      this.sceneChanged = true;
      this.tiles = new IndexedTileLayer(String(scene.tiles), this.model.tileIndex, {
        tileSize: this.manifest.tile_size || 512,
        minZoom: -MIN_ZOOM_BELOW_0,
        maxZoom: mz + OVERZOOM,
        minNativeZoom: 0,
        maxNativeZoom: mz,
        bounds: bounds,
        noWrap: true,
        keepBuffer: 2,
        className: "wv-tiles",
      });
      this.tiles.on("tileerror", function (e) { e.tile.style.visibility = "hidden"; });
      this.tiles.addTo(this.map);
      this.dom.map.style.background = this.paddingCss();
      if (this.dom.scene.options.length) this.dom.scene.value = String(scene.key);
      this.buildLegend();
      this.refreshSearch();
      this.setHover(null, null);
      this.showStats(null);
    }
    if (view) {
      var z = Math.min(Math.max(view.z, this.map.getMinZoom()), this.map.getMaxZoom());
      this.map.setView(this.llFromC(view.cx, view.cy), z, { animate: false });
    } else {
      this.map.fitBounds(this.contentBounds, { padding: [16, 16], animate: false });
    }
    if (this.sceneChanged) {
      this.sceneChanged = false;
      this.map.setMaxBounds(this.contentBounds.pad(0.5));
      this.map.fire("zoomlevelschange");
    }
    this.overlay.request();
  };

  App.prototype.paddingCss = function () {
    var cm = this.model.colormap;
    if (!cm || !cm.palette) return "#000";
    var rgb = cm.palette[cm.padding_index || 0];
    return "rgb(" + rgb[0] + "," + rgb[1] + "," + rgb[2] + ")";
  };

  // -------------------------------------------------------------- readout and stats

  App.prototype.hitAtLatLng = function (ll) {
    if (!this.model) return null;
    var c = this.cFromLl(ll);
    return this.model.hitAt(Math.floor(c.x), Math.floor(c.y));
  };

  App.prototype.onPoint = function (ll) {
    var c = this.cFromLl(ll);
    var cx = Math.floor(c.x), cy = Math.floor(c.y);
    this.setHover(this.model.hitAt(cx, cy), [cx, cy]);
  };

  App.prototype.setHover = function (hit, cxy) {
    var prevName = this.hover && this.hover.item ? this.hover.item.name : null;
    this.hover = hit;
    var d = this.dom;
    var name = hit && hit.item ? hit.item.name : null;
    d.rName.textContent = name === null ? "—" : name;
    d.rName.classList.toggle("wv-empty", name === null);
    d.rCanvas.textContent = cxy ? "(" + cxy[0] + ", " + cxy[1] + ")" + (hit && hit.h !== undefined ? "  h " + hit.h : "") : "—";
    var t = hit ? hit.tensor : null;
    if (hit && hit.file !== undefined) {
      d.rElement.textContent = "byte " + fmtCount(hit.byteOffset);
      d.rIndex.textContent = "—";
      d.rGroup.textContent = "—";
    } else if (hit) {
      d.rElement.textContent = "[" + hit.eRow + ", " + hit.eCol + "]";
      d.rIndex.textContent = t ? this.ndIndex(t, hit.eRow, hit.eCol) : "—";
      d.rGroup.textContent = t && t.block !== null && t.block !== undefined ? "block " + t.block : "—";
    } else {
      d.rElement.textContent = "—";
      d.rIndex.textContent = "—";
      d.rGroup.textContent = "—";
    }
    d.rDtype.textContent = t && t.dtype ? String(t.dtype) : "—";
    d.rShape.textContent = t ? fmtShape(t.shape) : "—";
    d.rScale.textContent = t ? fmtNum(t.scale) : "—";
    this.updateLegendValues(t);
    if (name !== prevName) {
      if (!this.selected) this.showStats(hit ? hit.item : null);
      this.overlay.request();
    }
  };

  /** The element's index in the tensor's own shape (the 2-D view flattens dims 1..). */
  App.prototype.ndIndex = function (t, eRow, eCol) {
    var shape = t.shape || [];
    if (shape.length === 0) return "[]";
    if (shape.length === 1) return "[" + eCol + "]";
    var idx = [];
    var rest = eCol;
    for (var i = shape.length - 1; i >= 1; i--) {
      idx.unshift(rest % shape[i]);
      rest = Math.floor(rest / shape[i]);
    }
    idx.unshift(eRow);
    return "[" + idx.join(", ") + "]";
  };

  App.prototype.showStats = function (item) {
    var d = this.dom;
    clear(d.sTable);
    d.sTitle.textContent = this.selected ? "Selected tensor" : "Tensor under cursor";
    if (!item) {
      d.sName.textContent = this.selected ? "—" : "hover or click a tensor";
      d.sName.classList.add("wv-empty");
      return;
    }
    d.sName.textContent = item.name;
    d.sName.classList.remove("wv-empty");
    var t = item.tensor;
    if (!t) return;
    var st = t.stats || {};
    var rows = [
      ["min", fmtNum(st.min)], ["max", fmtNum(st.max)],
      ["mean", fmtNum(st.mean)], ["std", fmtNum(st.std)],
      ["rms", fmtNum(st.rms)], ["zeros", fmtFraction(st.zero_fraction)],
      ["NaN", fmtCount(st.nan_count)], ["±Inf", fmtCount(st.inf_count)],
      ["scale s", fmtNum(t.scale)], ["elements", fmtCount(numel(t.shape))],
    ];
    for (var i = 0; i < rows.length; i++) {
      var tr = el("tr");
      tr.appendChild(el("th", null, rows[i][0]));
      var td = el("td", null, rows[i][1]);
      if ((rows[i][0] === "NaN" || rows[i][0] === "±Inf") && st[rows[i][0] === "NaN" ? "nan_count" : "inf_count"] > 0) {
        td.className = "wv-alert";
      }
      tr.appendChild(td);
      d.sTable.appendChild(tr);
    }
  };

  function numel(shape) {
    if (!shape) return null;
    var n = 1;
    for (var i = 0; i < shape.length; i++) n *= shape[i];
    return n;
  }

  App.prototype.select = function (item) {
    this.selected = item || null;
    this.showStats(item || (this.hover ? this.hover.item : null));
    this.overlay.request();
  };

  // -------------------------------------------------------------- legend

  /** Palette index of v/s = a in [0, 1] (README "The bundle and its manifest", "colormap"). */
  function qOf(cm, a) {
    var levels = cm.levels || 125;
    if (cm.transfer === "linear") return Math.floor(levels * a + 0.5);
    return Math.floor(levels * Math.sqrt(a) + 0.5);
  }

  App.prototype.buildLegend = function () {
    var d = this.dom;
    var cm = this.model.colormap;
    clear(d.legendTicks);
    clear(d.legendSwatches);
    if (!cm || !cm.palette) {
      d.legendNote.textContent = "no colormap in the manifest";
      return;
    }
    var zero = cm.zero_index !== undefined ? cm.zero_index : 129;
    var levels = cm.levels || 125;
    var lo = zero - levels, n = 2 * levels + 1;
    var canvas = d.legendBar;
    canvas.width = n;
    canvas.height = 1;
    var ctx = canvas.getContext("2d");
    var img = ctx.createImageData(n, 1);
    for (var i = 0; i < n; i++) {
      var rgb = cm.palette[lo + i] || [0, 0, 0];
      img.data[4 * i] = rgb[0]; img.data[4 * i + 1] = rgb[1];
      img.data[4 * i + 2] = rgb[2]; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    var q4 = qOf(cm, 0.25);
    this.legendTicks = [
      { label: "\u2212s", index: zero - levels, f: -1 },
      { label: "\u2212s/4", index: zero - q4, f: -0.25 },
      { label: "0", index: zero, f: 0 },
      { label: "+s/4", index: zero + q4, f: 0.25 },
      { label: "+s", index: zero + levels, f: 1 },
    ];
    for (var k = 0; k < this.legendTicks.length; k++) {
      var tk = this.legendTicks[k];
      var left = (100 * (tk.index - lo + 0.5) / n).toFixed(2) + "%";
      var tick = el("span", "wv-tick", tk.label);
      tick.style.left = left;
      d.legendTicks.appendChild(tick);
    }
    this._legendScale = undefined;
    var swatches = [
      ["padding", cm.padding_index], ["NaN", cm.nan_index],
      ["+Inf", cm.posinf_index], ["\u2212Inf", cm.neginf_index],
    ];
    for (var j = 0; j < swatches.length; j++) {
      if (swatches[j][1] === undefined || !cm.palette[swatches[j][1]]) continue;
      var c = cm.palette[swatches[j][1]];
      var item = el("span", "wv-swatch");
      var box = el("span", "wv-swatch-box");
      box.style.background = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
      item.appendChild(box);
      item.appendChild(document.createTextNode(swatches[j][0]));
      d.legendSwatches.appendChild(item);
    }
    d.legendNote.textContent = "index = " + zero + " ± round(" + levels + "·" +
      (cm.transfer === "linear" ? "" : "√") + "min(|v|/s, 1))";
    this.updateLegendValues(null);
  };

  App.prototype.updateLegendValues = function (t) {
    var s = t && typeof t.scale === "number" ? t.scale : null;
    if (s === this._legendScale) return;
    this._legendScale = s;
    var node = this.dom.legendValues;
    node.textContent = s === null ? "s: hover a tensor" : "s = " + fmtNum(s) + "   s/4 = " + fmtNum(s / 4);
    node.classList.toggle("wv-empty", s === null);
  };

  // -------------------------------------------------------------- search

  App.prototype._wireSearch = function () {
    var self = this;
    var input = this.dom.search;
    input.addEventListener("input", function () { self.refreshSearch(); });
    input.addEventListener("keydown", function (e) {
      var items = self.dom.results.querySelectorAll("li.wv-result");
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        if (!items.length) return;
        var step = e.key === "ArrowDown" ? 1 : -1;
        self.activeResult = (self.activeResult + step + items.length) % items.length;
        self.markActive();
      } else if (e.key === "Enter") {
        e.preventDefault();
        var i = self.activeResult >= 0 ? self.activeResult : 0;
        if (self.matches && self.matches[i]) self.jumpTo(self.matches[i]);
      } else if (e.key === "Escape") {
        input.value = "";
        self.refreshSearch();
      }
    });
  };

  App.prototype.refreshSearch = function () {
    var d = this.dom;
    clear(d.results);
    this.matches = [];
    this.activeResult = -1;
    if (!this.model) return;
    var q = d.search.value.trim().toLowerCase();
    if (!q) { d.results.hidden = true; return; }
    var items = this.model.items;
    var total = 0;
    for (var i = 0; i < items.length; i++) {
      var pos = items[i].name.toLowerCase().indexOf(q);
      if (pos < 0) continue;
      total++;
      if (this.matches.length < MAX_RESULTS) this.matches.push({ item: items[i], pos: pos });
    }
    this.matches.sort(function (a, b) { return a.pos - b.pos || a.item.name.length - b.item.name.length; });
    var self = this;
    for (var j = 0; j < this.matches.length; j++) {
      var m = this.matches[j];
      var li = el("li", "wv-result");
      var name = m.item.name;
      li.appendChild(document.createTextNode(name.slice(0, m.pos)));
      li.appendChild(el("mark", null, name.slice(m.pos, m.pos + q.length)));
      li.appendChild(document.createTextNode(name.slice(m.pos + q.length)));
      li.title = name;
      li.addEventListener("mousedown", (function (match) {
        return function (e) { e.preventDefault(); self.jumpTo(match.item); };
      })(m));
      d.results.appendChild(li);
    }
    if (total === 0) d.results.appendChild(el("li", "wv-result-none", "no tensor matches"));
    else if (total > this.matches.length) {
      d.results.appendChild(el("li", "wv-result-none", "… " + (total - this.matches.length) + " more"));
    }
    d.results.hidden = false;
    this.matches = this.matches.map(function (m) { return m.item; });
  };

  App.prototype.markActive = function () {
    var items = this.dom.results.querySelectorAll("li.wv-result");
    for (var i = 0; i < items.length; i++) items[i].classList.toggle("wv-active", i === this.activeResult);
    if (items[this.activeResult]) items[this.activeResult].scrollIntoView({ block: "nearest" });
  };

  /** Fit the view to an item's rects and select it. */
  App.prototype.jumpTo = function (item) {
    if (!item || !item.rects.length) return;
    var r = cUnion(item.rects);
    this.map.fitBounds(this.llBoundsFromCRect(r), {
      padding: [24, 24], maxZoom: this.model.maxZoom + 2, animate: false,
    });
    this.select(item);
    this.dom.search.value = item.name;
    clear(this.dom.results);
    this.dom.results.hidden = true;
  };

  // -------------------------------------------------------------- URL hash

  /** "#scene=<key>&z=<zoom>&x=<cx>&y=<cy>": the view, centre in canvas px at max zoom. */
  App.prototype.writeHash = function () {
    if (!this.model) return;
    var c = this.cFromLl(this.map.getCenter());
    var params = new URLSearchParams();
    params.set("scene", this.model.key);
    params.set("z", String(Math.round(this.map.getZoom() * 1000) / 1000));
    params.set("x", String(Math.round(c.x * 100) / 100));
    params.set("y", String(Math.round(c.y * 100) / 100));
    var hash = "#" + params.toString();
    if (hash === location.hash) { this.lastHash = hash; return; }
    this.lastHash = hash;
    try {
      history.replaceState(null, "", hash);
    } catch (err) {
      location.replace(hash);
    }
  };

  /** Open the view named by the URL hash (or fit the first scene). */
  App.prototype.applyHash = function () {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    var key = params.get("scene");
    var z = parseFloat(params.get("z"));
    var cx = parseFloat(params.get("x"));
    var cy = parseFloat(params.get("y"));
    var scene = key !== null ? this.sceneByKey(key) : null;
    var view = isFinite(z) && isFinite(cx) && isFinite(cy) ? { z: z, cx: cx, cy: cy } : null;
    this.showScene(scene ? String(scene.key) : (this.scenes[0] && String(this.scenes[0].key)), view);
  };

  // -------------------------------------------------------------- start

  function readManifest() {
    var node = document.getElementById("weightvis-manifest");
    return JSON.parse(node.textContent);
  }

  function start() {
    var manifest = readManifest();
    var app = new App(manifest);
    window.weightvisMap = app.map;
    window.weightvis = {
      app: app,
      manifest: manifest,
      hFromC: hFromC,
      cFromH: cFromH,
      cSquaresFromHRange: cSquaresFromHRange,
      labels: function () { return app.overlay.labels.map(function (l) { return { text: l.text, name: l.name, kind: l.kind, box: l.box.slice() }; }); },
      llFromC: function (cx, cy) { return app.llFromC(cx, cy); },
      ready: false,
    };
    app.applyHash();
    window.weightvis.ready = true;
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
