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
 *
 * Diff bundles (docs/diff-manifest.md: `manifest.diff`, `colormaps.delta`, scenes delta / a / b)
 * add the delta legend, a change table of `diff.pairs`, the pair's numbers in the stats panel, its
 * status and stored A / B values in the readout, and keys a / b / d to flip scenes in place.
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
      legendTitle: document.getElementById("wv-legend-title"),
      legendEnds: document.getElementById("wv-legend-ends"),
      keys: document.getElementById("wv-keys"),
      rScaleLabel: document.getElementById("wv-r-scale-label"),
      rDiff: document.getElementById("wv-r-diff"),
      rStatus: document.getElementById("wv-r-status"),
      rAb: document.getElementById("wv-r-ab"),
      rDelta: document.getElementById("wv-r-delta"),
    };
    this.diff = manifest.diff && typeof manifest.diff === "object" ? new DiffModel(manifest) : null;
    this.table = null;        // ChangeTable of a diff bundle
    this.lastPoint = null;    // last LatLng under the mouse, to refresh the readout after a scene flip
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
    if (this.diff) {
      document.body.classList.add("wv-is-diff");
      this.dom.rDiff.hidden = false;
      this.table = new ChangeTable(this, this.diff);
    }
    this._wire();
  }

  App.prototype._wire = function () {
    var self = this;
    var map = this.map;
    map.on("mousemove", function (e) { self.lastPoint = e.latlng; self.onPoint(e.latlng); });
    map.on("mouseout", function () { self.lastPoint = null; self.setHover(null, null); });
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
        self.switchScene(self.dom.scene.value);
      });
    }
    this._wireSearch();
    this._wireSceneKeys();
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
      var keep = this.model && sameGeometry(this.model.scene, scene) && this.selected ? this.selected.name : null;
      this.model = new SceneModel(this.manifest, scene);
      this.hover = null;
      this.selected = keep !== null && this.model.itemByName[keep] ? this.model.itemByName[keep] : null;
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
      this.showStats(this.selected);
      if (this.table) this.table.markSelected(this.selected ? this.selected.name : null, false);
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
    if (this.lastPoint) this.onPoint(this.lastPoint);
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
    var scale = hit && hit.item ? this.scaleOf(hit.item) : null;
    d.rScale.textContent = fmtNum(scale);
    if (this.diff) this.diffReadout(hit);
    this.updateLegendValues(scale);
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
    var pair = this.diff ? this.diff.pair(item.name) : null;
    if (pair) { this.showDiffStats(item, pair); return; }
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

  App.prototype.select = function (item, fromTable) {
    this.selected = item || null;
    this.showStats(item || (this.hover ? this.hover.item : null));
    if (this.table) this.table.markSelected(item ? item.name : null, !fromTable);
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
    d.legendEnds.hidden = true;
    d.legendTitle.textContent = "Colour";
    d.legendNote.removeAttribute("title");
    this._legendScale = undefined;
    if (!cm || !cm.palette) {
      d.legendNote.textContent = "no colormap in the manifest";
      return;
    }
    if (cm.kind === "delta") { this.buildDeltaLegend(cm); return; }
    var zero = cm.zero_index !== undefined ? cm.zero_index : 129;
    var levels = cm.levels || 125;
    var lo = zero - levels, n = 2 * levels + 1;
    drawLegendBar(d.legendBar, cm.palette, rangeOf(lo, n));
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

  App.prototype.updateLegendValues = function (scale) {
    var s = typeof scale === "number" && isFinite(scale) ? scale : null;
    if (s === this._legendScale) return;
    this._legendScale = s;
    var node = this.dom.legendValues;
    var cm = this.model ? this.model.colormap : null;
    if (cm && cm.kind === "delta") {
      if (cm.metric === "abs-log" || cm.metric === "exact") return;  // fixed text, set by the legend
      node.textContent = s === null ? "s\u0394: hover a tensor" : "s\u0394 = " + fmtNum(s) + "   s\u0394/4 = " + fmtNum(s / 4);
    } else {
      node.textContent = s === null ? "s: hover a tensor" : "s = " + fmtNum(s) + "   s/4 = " + fmtNum(s / 4);
    }
    node.classList.toggle("wv-empty", s === null);
  };

  /** The colour scale s of an item in the current scene (scale_a / scale_b in a diff's a / b scenes). */
  App.prototype.scaleOf = function (item) {
    if (!item) return null;
    var pair = this.diff ? this.diff.pair(item.name) : null;
    if (pair && this.model && (this.model.key === "a" || this.model.key === "b")) {
      var v = pair[this.model.key === "a" ? "scale_a" : "scale_b"];
      return typeof v === "number" ? v : null;
    }
    var t = item.tensor;
    return t && typeof t.scale === "number" ? t.scale : null;
  };

  // ------------------------------------------------------------------ diff bundles
  // docs/diff-manifest.md: manifest.diff.pairs (one per tensor of A and of B), colormaps.delta,
  // scenes "delta" (always) and "a" / "b" (same geometry, values colormap).

  var STATUS_ORDER = ["shape-changed", "only-in-b", "only-in-a", "changed", "identical"];
  var STATUS_FILTER_ORDER = ["changed", "shape-changed", "only-in-a", "only-in-b", "identical"];
  var STATUS_LABEL = {
    "identical": "identical", "changed": "changed", "shape-changed": "shape changed",
    "only-in-a": "only in A", "only-in-b": "only in B",
  };
  var ELEMENTS_CAP = 64;      // pairs list every changed element when there are at most this many
  var SCENE_KEYS = { a: "a", b: "b", d: "delta" };
  var CT_OVERSCAN = 12;       // table rows rendered above and below the visible ones

  function hasOwn(obj, key) { return Object.prototype.hasOwnProperty.call(obj, key); }

  function statusLabel(status) {
    return hasOwn(STATUS_LABEL, status) ? STATUS_LABEL[status] : String(status);
  }

  /** The 2-D view [rows, cols] of a shape (README "Layout"), or null. */
  function view2d(shape) {
    if (!Array.isArray(shape)) return null;
    if (shape.length === 0) return [1, 1];
    if (shape.length === 1) return [1, shape[0]];
    var cols = 1;
    for (var i = 1; i < shape.length; i++) cols *= shape[i];
    return [shape[0], cols];
  }

  /** An element value of `pair.elements`: a number, or "nan" / "inf" / "-inf" (JSON has no NaN). */
  function elementValue(v) {
    if (typeof v === "number") return v;
    if (v === "inf" || v === "+inf") return Infinity;
    if (v === "-inf") return -Infinity;
    return NaN;
  }

  /** A weight value to 7 significant digits (float32 holds about 7.2). */
  function fmtValue(v) {
    if (typeof v !== "number") return "—";
    if (isNaN(v)) return "NaN";
    if (!isFinite(v)) return v > 0 ? "+Inf" : "\u2212Inf";
    if (v === 0) return "0";
    var a = Math.abs(v);
    var t = a >= 1e6 || a < 1e-4 ? v.toExponential(6).replace(/\.?0+e/, "e").replace("e+", "e")
      : String(Number(v.toPrecision(7)));
    return t.replace(/^-/, "\u2212");
  }

  function fmtDelta(v) {
    if (typeof v === "number" && isNaN(v)) return "NaN (non-finite)";
    var t = fmtValue(v);
    return v > 0 ? "+" + t : t;
  }

  /**
   * cosine(A, B): near 1 as "1 − 2.3e−7", so that a tiny change does not read as "1"; within
   * float64 rounding of 1 (|1 − cos| < 1e-12, e.g. a tensor scaled by 1.01) it is "1".
   */
  function fmtCosine(v) {
    if (typeof v !== "number" || !isFinite(v)) return "—";
    var gap = 1 - v;
    if (Math.abs(gap) < 1e-12) return "1";
    if (gap > 0 && gap < 1e-4) return "1 \u2212 " + gap.toExponential(1).replace("e-", "e\u2212");
    return String(Number(v.toFixed(6))).replace(/^-/, "\u2212");
  }

  function fmtIndexList(info, noun) {
    if (!info || typeof info.count !== "number") return "—";
    var first = Array.isArray(info.first) ? info.first : [];
    if (info.count === 0) return "none";
    var shown = first.slice(0, 12).join(", ");
    var more = info.count > Math.min(first.length, 12) ? ", \u2026" : "";
    return fmtCount(info.count) + " " + noun + (info.count === 1 ? "" : "s") + ": " + shown + more;
  }

  /** Rows r0..r1-1 as "5" or "5–9". */
  function fmtSpan(a, b) {
    return b - a <= 1 ? String(a) : a + "\u2013" + (b - 1);
  }

  function rgbCss(rgb) {
    return rgb ? "rgb(" + rgb[0] + "," + rgb[1] + "," + rgb[2] + ")" : "transparent";
  }

  /** Scenes whose tiles share one geometry (the diff scenes): a view carries over as it is. */
  function sameGeometry(s1, s2) {
    return !!s1 && !!s2 && s1.width === s2.width && s1.height === s2.height &&
      s1.max_zoom === s2.max_zoom && (s1.layout || "arch") === (s2.layout || "arch");
  }

  function rangeOf(lo, n) {
    var out = [];
    for (var i = 0; i < n; i++) out.push(lo + i);
    return out;
  }

  /** The legend bar: one canvas pixel per palette index, stretched by CSS. */
  function drawLegendBar(canvas, palette, indices) {
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
  }

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

  /** The pairs of a diff bundle, by display name, and what can be said about one element. */
  function DiffModel(manifest) {
    var diff = manifest.diff || {};
    this.diff = diff;
    this.mode = diff.mode === "finetune" ? "finetune" : "compare";
    this.metric = diff.metric ? String(diff.metric) : null;
    this.pairs = Array.isArray(diff.pairs) ? diff.pairs : [];
    this.byName = Object.create(null);
    for (var i = 0; i < this.pairs.length; i++) {
      var p = this.pairs[i];
      p._order = i;
      this.byName[String(p.name)] = p;
    }
    this._elements = Object.create(null);   // name -> Map "row,col" -> [row, col, a, b]
  }

  DiffModel.prototype.pair = function (name) {
    var p = this.byName[String(name)];
    return p === undefined ? null : p;
  };

  /** [a, b] of element [eRow, eCol] when `elements` lists it, else null. */
  DiffModel.prototype.element = function (pair, eRow, eCol) {
    if (!Array.isArray(pair.elements)) return null;
    var map = this._elements[pair.name];
    if (!map) {
      map = new Map();
      for (var i = 0; i < pair.elements.length; i++) {
        var e = pair.elements[i];
        map.set(e[0] + "," + e[1], e);
      }
      this._elements[pair.name] = map;
    }
    var hit = map.get(eRow + "," + eCol);
    return hit ? [elementValue(hit[2]), elementValue(hit[3])] : null;
  };

  /** True when the pair's numbers prove element [eRow, eCol] unchanged without listing it. */
  DiffModel.prototype.knownUnchanged = function (pair, eRow, eCol) {
    var n = pair.numbers;
    if (!n) return false;
    if (n.changed === 0) return true;
    if (Array.isArray(pair.elements) && typeof n.changed === "number" && pair.elements.length >= n.changed) return true;
    var bb = n.bbox;
    if (Array.isArray(bb) && (eRow < bb[0] || eRow >= bb[1] || eCol < bb[2] || eCol >= bb[3])) return true;
    function complete(info) {
      return info && Array.isArray(info.first) && info.first.length >= info.count;
    }
    if (complete(n.changed_rows) && n.changed_rows.first.indexOf(eRow) < 0) return true;
    if (complete(n.changed_cols) && n.changed_cols.first.indexOf(eCol) < 0) return true;
    return false;
  };

  /** The readout of element [eRow, eCol] of a pair: {status, ab, delta, alert}. */
  DiffModel.prototype.describe = function (pair, eRow, eCol) {
    var st = pair.status;
    var out = { status: statusLabel(st), ab: "—", delta: "—", alert: st !== "identical" };
    if (st === "only-in-a") {
      out.ab = this.mode === "finetune" ? "only in A (base model)" : "only in A";
      return out;
    }
    if (st === "only-in-b") { out.ab = "only in B"; return out; }
    var va = view2d(pair.shape_a), vb = view2d(pair.shape_b);
    var inA = !va || (eRow < va[0] && eCol < va[1]);
    var inB = !vb || (eRow < vb[0] && eCol < vb[1]);
    if (!(inA && inB)) {
      out.ab = inA ? "only in A (outside B\u2019s shape)" : inB ? "only in B (outside A\u2019s shape)" : "in neither";
      return out;
    }
    if (st === "identical") { out.ab = "unchanged"; out.delta = "0"; return out; }
    var ab = this.element(pair, eRow, eCol);
    if (ab) {
      out.ab = fmtValue(ab[0]) + " \u2192 " + fmtValue(ab[1]);
      out.delta = fmtDelta(ab[1] - ab[0]);
      out.status += " \u00b7 this element changed";
      return out;
    }
    if (this.knownUnchanged(pair, eRow, eCol)) {
      out.ab = "unchanged (B = A)";
      out.delta = "0";
      return out;
    }
    out.ab = "not stored (more than " + ELEMENTS_CAP + " changes)";
    return out;
  };

  // -------------------------------------------------------------- change table

  function pairNum(p, key) {
    var n = p.numbers;
    var v = n ? n[key] : null;
    return typeof v === "number" && isFinite(v) ? v : null;
  }

  /** Columns of the change table: sort key (null sorts last), cell text, first sort direction. */
  var CT_COLUMNS = [
    { key: "name", label: "name", width: null, dir: 1, get: function (p) { return String(p.name); } },
    { key: "status", label: "status", width: 122, dir: 1,
      get: function (p) { var i = STATUS_ORDER.indexOf(p.status); return i < 0 ? STATUS_ORDER.length : i; } },
    { key: "block", label: "block", width: 58, dir: 1, num: true,
      get: function (p) { return typeof p.block === "number" ? p.block : null; },
      text: function (p) { return typeof p.block === "number" ? String(p.block) : "—"; } },
    { key: "rel", label: "\u2016\u0394\u2016/\u2016A\u2016", width: 92, dir: -1, num: true,
      get: function (p) { return pairNum(p, "rel"); },
      text: function (p) { return fmtNum(pairNum(p, "rel")); } },
    { key: "cosine", label: "cosine", width: 104, dir: 1, num: true,
      get: function (p) { return pairNum(p, "cosine"); },
      text: function (p) { return fmtCosine(pairNum(p, "cosine")); } },
    { key: "max_abs_delta", label: "max|\u0394|", width: 88, dir: -1, num: true,
      get: function (p) { return pairNum(p, "max_abs_delta"); },
      text: function (p) { return fmtNum(pairNum(p, "max_abs_delta")); } },
    { key: "changed", label: "changed elements", width: 146, dir: -1, num: true,
      get: function (p) { return pairNum(p, "changed"); },
      text: function (p) { var v = pairNum(p, "changed"); return v === null ? "—" : fmtCount(v); } },
    { key: "rank", label: "rank (99 %)", width: 92, dir: -1, num: true,
      title: "rank_99: the fewest singular values holding 99 % of \u2016\u0394\u2016\u00b2 (randomized SVD of sampled rows)",
      get: function (p) { var r = rank99(p); return r === null ? null : r.sort; },
      text: function (p) { var r = rank99(p); return r === null ? "—" : r.text; } },
  ];

  /** Elements present in both sides: numbers.compared, else the overlap of the 2-D views. */
  function comparedOf(p) {
    if (p.numbers && typeof p.numbers.compared === "number") return p.numbers.compared;
    var va = view2d(p.shape_a), vb = view2d(p.shape_b);
    return va && vb ? Math.min(va[0], vb[0]) * Math.min(va[1], vb[1]) : null;
  }

  /**
   * numbers.svd.rank_99 of a pair as {sort, text}: an integer, or above the estimate's cap (null
   * rank_99 with a low-rank estimate present; the cap is the largest top_share key), or null.
   */
  function rank99(p) {
    var s = p.numbers && p.numbers.svd;
    if (!s) return null;
    if (typeof s.rank_99 === "number") return { sort: s.rank_99, text: String(s.rank_99) };
    var cap = 0;
    for (var k in s.top_share || {}) if (hasOwn(s.top_share, k)) cap = Math.max(cap, Number(k) || 0);
    return cap ? { sort: cap + 0.5, text: "> " + cap } : null;
  }

  /**
   * The sortable, filterable table of diff.pairs in a panel below the map. Rows are rendered
   * lazily (only those in view, with spacer rows above and below), so thousands of pairs stay
   * cheap; rows are focusable (roving tabindex: arrows, Page Up/Down, Home/End, Enter).
   */
  function ChangeTable(app, diff) {
    this.app = app;
    this.diff = diff;
    this.dom = {
      panel: document.getElementById("wv-changes"),
      grip: document.getElementById("wv-ct-grip"),
      sides: document.getElementById("wv-ct-sides"),
      toggle: document.getElementById("wv-ct-toggle"),
      summary: document.getElementById("wv-ct-summary"),
      diagnosis: document.getElementById("wv-ct-diagnosis"),
      filters: document.getElementById("wv-ct-filters"),
      name: document.getElementById("wv-ct-name"),
      count: document.getElementById("wv-ct-count"),
      scroll: document.getElementById("wv-ct-scroll"),
      cols: document.getElementById("wv-ct-cols"),
      head: document.getElementById("wv-ct-headrow"),
      body: document.getElementById("wv-ct-rows"),
    };
    this.show = {};            // status -> shown
    this.sortKey = null;       // null: status, then ||Δ||/||A|| descending
    this.sortDir = 1;
    this.rows = [];            // the pairs shown, in order
    this.active = 0;           // index in rows of the row that takes the focus
    this.selectedName = null;
    this.rowH = 23;            // measured after the first render
    this._frame = 0;
    this._build();
    this.refresh();
  }

  ChangeTable.prototype._build = function () {
    var self = this;
    var d = this.dom;
    var diff = this.diff.diff;
    d.panel.hidden = false;
    // A and B
    clear(d.sides);
    function side(label, info) {
      var span = el("span");
      span.appendChild(el("b", null, label + " "));
      var title = info && (info.title || (Array.isArray(info.files) && info.files.join(", "))) || "?";
      span.appendChild(document.createTextNode(String(title)));
      if (info && info.format) span.appendChild(el("span", "wv-dim", " (" + info.format + ")"));
      return span;
    }
    d.sides.appendChild(side("A", diff.a));
    d.sides.appendChild(document.createTextNode("  \u2192  "));
    d.sides.appendChild(side("B", diff.b));
    if (this.diff.mode === "finetune") {
      var badge = el("span", "wv-badge", "finetune of A");
      if (diff.finetune_reason) badge.title = String(diff.finetune_reason);
      d.sides.appendChild(badge);
    }
    if (this.diff.metric) d.sides.appendChild(el("span", "wv-badge", "metric " + this.diff.metric));
    d.sides.title = d.sides.textContent;
    // summary counts and diagnosis
    var counts = {};
    for (var i = 0; i < this.diff.pairs.length; i++) {
      var st = this.diff.pairs[i].status;
      counts[st] = (counts[st] || 0) + 1;
    }
    this.counts = counts;
    var sum = diff.summary || {};
    var keyOf = { "changed": "changed", "shape-changed": "shape_changed", "only-in-a": "only_in_a",
                  "only-in-b": "only_in_b", "identical": "identical" };
    clear(d.summary);
    d.summary.appendChild(el("b", null, fmtCount(this.diff.pairs.length)));
    d.summary.appendChild(document.createTextNode(" pairs: "));
    for (var k = 0; k < STATUS_FILTER_ORDER.length; k++) {
      var status = STATUS_FILTER_ORDER[k];
      var n = typeof sum[keyOf[status]] === "number" ? sum[keyOf[status]] : counts[status] || 0;
      if (k) d.summary.appendChild(document.createTextNode(" \u00b7 "));
      d.summary.appendChild(el("b", null, fmtCount(n)));
      d.summary.appendChild(document.createTextNode(" " + statusLabel(status)));
    }
    if (typeof sum.elements_changed === "number") {
      var of = typeof sum.elements_compared === "number" ? sum.elements_compared : null;
      d.summary.appendChild(document.createTextNode(" \u2014 "));
      d.summary.appendChild(el("b", null, fmtCount(sum.elements_changed)));
      d.summary.appendChild(document.createTextNode(
        of === null ? " elements changed" :
          " of " + fmtCount(of) + " compared elements changed" + (of > 0 ? " (" + fmtFraction(sum.elements_changed / of) + ")" : "")));
    }
    clear(d.diagnosis);
    var sentences = Array.isArray(diff.diagnosis) ? diff.diagnosis : [];
    var SHOWN = 3;
    for (var j = 0; j < sentences.length; j++) {
      var li = el("li", null, sentences[j]);
      if (j >= SHOWN) li.hidden = true;
      d.diagnosis.appendChild(li);
    }
    if (sentences.length > SHOWN) {
      var more = el("button", "wv-link", "show all " + sentences.length);
      more.type = "button";
      more.setAttribute("aria-expanded", "false");
      more.addEventListener("click", function () {
        var open = more.getAttribute("aria-expanded") !== "true";
        var items = d.diagnosis.querySelectorAll("li");
        for (var m = SHOWN; m < items.length; m++) items[m].hidden = !open;
        more.setAttribute("aria-expanded", open ? "true" : "false");
        more.textContent = open ? "show fewer" : "show all " + sentences.length;
        self.requestRender();
      });
      var holder = el("li", "wv-more");
      holder.appendChild(more);
      d.diagnosis.appendChild(holder);
    }
    // status filters: everything but "identical" by default
    clear(d.filters);
    var seen = STATUS_FILTER_ORDER.slice();
    for (var name in counts) if (hasOwn(counts, name) && seen.indexOf(name) < 0) seen.push(name);
    for (var f = 0; f < seen.length; f++) {
      var stf = seen[f];
      this.show[stf] = stf !== "identical";
      var label = el("label");
      var box = el("input");
      box.type = "checkbox";
      box.checked = this.show[stf];
      box.value = stf;
      box.addEventListener("change", (function (s2, b2) {
        return function () { self.show[s2] = b2.checked; self.refresh(); };
      })(stf, box));
      label.appendChild(box);
      label.appendChild(document.createTextNode(statusLabel(stf)));
      label.appendChild(el("span", "wv-n", fmtCount(counts[stf] || 0)));
      d.filters.appendChild(label);
    }
    d.name.addEventListener("input", function () { self.refresh(); });
    // columns and sortable headers
    clear(d.cols);
    clear(d.head);
    for (var c = 0; c < CT_COLUMNS.length; c++) {
      var col = CT_COLUMNS[c];
      var cg = el("col");
      if (col.width) cg.style.width = col.width + "px";
      d.cols.appendChild(cg);
      var th = el("th", col.num ? "wv-num" : null);
      th.scope = "col";
      th.setAttribute("aria-sort", "none");
      var btn = el("button", null, col.label);
      btn.type = "button";
      btn.title = "Sort by " + col.label + (col.title ? "\n" + col.title : "");
      btn.addEventListener("click", (function (column) {
        return function () { self.sortBy(column.key); };
      })(col));
      th.appendChild(btn);
      d.head.appendChild(th);
    }
    // rows: click / keyboard, lazy rendering on scroll
    d.body.addEventListener("click", function (e) {
      var tr = e.target.closest ? e.target.closest("tr.wv-ct-row") : null;
      if (tr) self.activate(Number(tr.getAttribute("data-index")), true);
    });
    d.body.addEventListener("keydown", function (e) { self.onKey(e); });
    d.body.addEventListener("focusin", function (e) {
      var tr = e.target.closest ? e.target.closest("tr.wv-ct-row") : null;
      if (tr) self.active = Number(tr.getAttribute("data-index"));
    });
    d.scroll.addEventListener("scroll", function () { self.requestRender(); });
    window.addEventListener("resize", function () { self.requestRender(); });
    d.toggle.addEventListener("click", function () { self.setCollapsed(!d.panel.classList.contains("wv-collapsed")); });
    this._wireGrip();
  };

  ChangeTable.prototype.setCollapsed = function (collapsed) {
    var d = this.dom;
    d.panel.classList.toggle("wv-collapsed", collapsed);
    d.toggle.textContent = collapsed ? "Show table" : "Hide table";
    d.toggle.setAttribute("aria-expanded", collapsed ? "false" : "true");
    this.app.map.invalidateSize({ pan: false });
    this.requestRender();
  };

  /** Drag the panel's top edge to resize it. */
  ChangeTable.prototype._wireGrip = function () {
    var self = this;
    var d = this.dom;
    var dragging = false;
    d.grip.addEventListener("pointerdown", function (e) {
      dragging = true;
      d.grip.setPointerCapture(e.pointerId);
      e.preventDefault();
    });
    d.grip.addEventListener("pointermove", function (e) {
      if (!dragging) return;
      var main = d.panel.parentNode.getBoundingClientRect();
      var h = Math.max(90, Math.min(main.bottom - e.clientY, main.height - 80));
      d.panel.style.height = Math.round(h) + "px";
      self.app.map.invalidateSize({ pan: false });
      self.requestRender();
    });
    function end() { dragging = false; }
    d.grip.addEventListener("pointerup", end);
    d.grip.addEventListener("pointercancel", end);
  };

  ChangeTable.prototype.sortBy = function (key) {
    if (this.sortKey === key) this.sortDir = -this.sortDir;
    else {
      this.sortKey = key;
      for (var i = 0; i < CT_COLUMNS.length; i++) if (CT_COLUMNS[i].key === key) this.sortDir = CT_COLUMNS[i].dir;
    }
    this.refresh();
  };

  /** Filter by status and name, sort, render from the top. */
  ChangeTable.prototype.refresh = function () {
    var q = this.dom.name.value.trim().toLowerCase();
    var pairs = this.diff.pairs;
    var rows = [];
    for (var i = 0; i < pairs.length; i++) {
      var p = pairs[i];
      if (!this.show[p.status]) continue;
      if (q && String(p.name).toLowerCase().indexOf(q) < 0) continue;
      rows.push(p);
    }
    var statusCol = CT_COLUMNS[1], relCol = CT_COLUMNS[3];
    var col = null;
    for (var c = 0; c < CT_COLUMNS.length; c++) if (CT_COLUMNS[c].key === this.sortKey) col = CT_COLUMNS[c];
    var dir = this.sortDir;
    function cmpBy(column, direction, a, b) {
      var va = column.get(a), vb = column.get(b);
      if (va === null || vb === null) return va === null ? (vb === null ? 0 : 1) : -1;  // nulls last
      if (va < vb) return -direction;
      if (va > vb) return direction;
      return 0;
    }
    rows.sort(function (a, b) {
      var r = col ? cmpBy(col, dir, a, b) : 0;
      if (r === 0) r = cmpBy(statusCol, 1, a, b);
      if (r === 0) r = cmpBy(relCol, -1, a, b);
      return r !== 0 ? r : a._order - b._order;
    });
    this.rows = rows;
    this.active = 0;
    var heads = this.dom.head.children;
    for (var h = 0; h < heads.length; h++) {
      var sorted = CT_COLUMNS[h].key === this.sortKey;
      heads[h].setAttribute("aria-sort", sorted ? (dir > 0 ? "ascending" : "descending") : "none");
      heads[h].firstChild.textContent = CT_COLUMNS[h].label + (sorted ? (dir > 0 ? " \u25b4" : " \u25be") : "");
    }
    this.dom.count.textContent = "showing " + fmtCount(rows.length) + " of " + fmtCount(pairs.length);
    this.dom.scroll.scrollTop = 0;
    this.render();
  };

  ChangeTable.prototype.requestRender = function () {
    var self = this;
    if (this._frame) return;
    this._frame = requestAnimationFrame(function () { self._frame = 0; self.render(); });
  };

  /** Render the rows in view (plus CT_OVERSCAN either side) between two spacer rows. */
  ChangeTable.prototype.render = function () {
    var d = this.dom;
    var body = d.body;
    var n = this.rows.length;
    var focused = document.activeElement && body.contains(document.activeElement);
    // Read the scroll metrics before touching the rows: emptying the body first would let
    // the browser clamp scrollTop to the shorter table.
    var headH = d.head.offsetHeight || 0;
    var viewH = d.scroll.clientHeight || 300;
    var top = Math.max(0, d.scroll.scrollTop - headH);
    clear(body);
    if (n === 0) {
      var tr0 = el("tr");
      var td0 = el("td", "wv-ct-none", this.counts.identical === this.diff.pairs.length && this.diff.pairs.length
        ? "no differences: every pair is identical (tick \u201cidentical\u201d to list them)" : "no pair matches the filter");
      td0.colSpan = CT_COLUMNS.length;
      tr0.appendChild(td0);
      body.appendChild(tr0);
      return;
    }
    var first = Math.max(0, Math.floor(top / this.rowH) - CT_OVERSCAN);
    var last = Math.min(n, Math.ceil((top + viewH) / this.rowH) + CT_OVERSCAN);
    var firstVisible = Math.min(n - 1, Math.floor(top / this.rowH));
    var focusIndex = this.active >= first && this.active < last ? this.active : Math.max(first, firstVisible);
    var frag = document.createDocumentFragment();
    if (first > 0) frag.appendChild(this._spacer(first * this.rowH));
    var focusRow = null;
    for (var i = first; i < last; i++) {
      var tr = this._row(this.rows[i], i);
      tr.tabIndex = i === focusIndex ? 0 : -1;
      if (i === this.active) focusRow = tr;
      frag.appendChild(tr);
    }
    if (last < n) frag.appendChild(this._spacer((n - last) * this.rowH));
    body.appendChild(frag);
    if (focused && focusRow) focusRow.focus({ preventScroll: true });
    // measure the real row height once, then lay out again with it
    var sample = body.querySelector("tr.wv-ct-row");
    var h = sample ? sample.getBoundingClientRect().height : 0;
    if (h > 0 && Math.abs(h - this.rowH) > 0.01) {
      this.rowH = h;
      this.requestRender();
    }
  };

  ChangeTable.prototype._spacer = function (height) {
    var tr = el("tr", "wv-ct-spacer");
    tr.setAttribute("aria-hidden", "true");
    var td = el("td");
    td.colSpan = CT_COLUMNS.length;
    td.style.height = height + "px";
    tr.appendChild(td);
    return tr;
  };

  ChangeTable.prototype._row = function (p, index) {
    var tr = el("tr", "wv-ct-row");
    tr.setAttribute("data-index", String(index));
    var name = String(p.name);
    if (name === this.selectedName) {
      tr.classList.add("wv-ct-selected");
      tr.setAttribute("aria-current", "true");
    }
    var tdName = el("td", "wv-ct-name");
    tdName.appendChild(el("span", null, name));   // isolated LTR run in an RTL cell: "…q_proj.weight"
    tdName.title = name + (p.a !== null && p.a !== undefined && String(p.a) !== name ? "\nA: " + p.a : "") +
      (p.b !== null && p.b !== undefined && String(p.b) !== name ? "\nB: " + p.b : "");
    tr.appendChild(tdName);
    var tdSt = el("td");
    var pill = el("span", "wv-st wv-st-" + String(p.status).replace(/[^a-z-]/g, ""), statusLabel(p.status));
    var cm = (this.app.manifest.colormaps || {}).delta;
    if (cm && cm.palette && (p.status === "only-in-a" || p.status === "only-in-b")) {
      var idx = p.status === "only-in-b" ? cm.only_b_index : this.diff.mode === "finetune" ? cm.base_only_index : cm.only_a_index;
      if (cm.palette[idx]) pill.style.borderColor = rgbCss(cm.palette[idx]);
    }
    tdSt.appendChild(pill);
    tr.appendChild(tdSt);
    for (var c = 2; c < CT_COLUMNS.length; c++) {
      var col = CT_COLUMNS[c];
      var td = el("td", "wv-num", col.text(p));
      if (col.key === "changed" && p.numbers) {
        var total = comparedOf(p);
        if (total) td.title = fmtCount(p.numbers.changed) + " of " + fmtCount(total) + " (" + fmtFraction(p.numbers.changed / total) + ")";
      }
      tr.appendChild(td);
    }
    return tr;
  };

  ChangeTable.prototype.rowElement = function (index) {
    return this.dom.body.querySelector('tr.wv-ct-row[data-index="' + index + '"]');
  };

  /** Scroll so that row `index` is fully visible below the sticky header. */
  ChangeTable.prototype.scrollToRow = function (index) {
    var d = this.dom;
    var headH = d.head.offsetHeight || 0;
    var rowTop = headH + index * this.rowH;
    var viewH = d.scroll.clientHeight;
    if (rowTop - headH < d.scroll.scrollTop) d.scroll.scrollTop = rowTop - headH;
    else if (rowTop + this.rowH > d.scroll.scrollTop + viewH) d.scroll.scrollTop = rowTop + this.rowH - viewH;
  };

  ChangeTable.prototype.focusRow = function (index) {
    if (!this.rows.length) return;
    this.active = Math.max(0, Math.min(this.rows.length - 1, index));
    this.scrollToRow(this.active);
    this.render();
    var tr = this.rowElement(this.active);
    if (tr) tr.focus({ preventScroll: true });
  };

  ChangeTable.prototype.onKey = function (e) {
    var page = Math.max(1, Math.floor(this.dom.scroll.clientHeight / this.rowH) - 1);
    var moves = { ArrowDown: 1, ArrowUp: -1, PageDown: page, PageUp: -page };
    if (hasOwn(moves, e.key)) { e.preventDefault(); this.focusRow(this.active + moves[e.key]); }
    else if (e.key === "Home") { e.preventDefault(); this.focusRow(0); }
    else if (e.key === "End") { e.preventDefault(); this.focusRow(this.rows.length - 1); }
    else if (e.key === "Enter" || e.key === " ") { e.preventDefault(); this.activate(this.active, true); }
  };

  /** Zoom the map to row `index`'s tensor (its placements' union in this scene) and select it. */
  ChangeTable.prototype.activate = function (index, keepFocus) {
    var p = this.rows[index];
    if (!p) return;
    this.active = index;
    var app = this.app;
    var item = app.model ? app.model.itemByName[String(p.name)] : null;
    if (item) app.zoomTo(item, true);
    this.markSelected(String(p.name), false);
    if (keepFocus) {
      var tr = this.rowElement(index);
      if (tr) tr.focus({ preventScroll: true });
    }
  };

  /** Mark the selected pair's row; `reveal` scrolls it into view (selection made on the map). */
  ChangeTable.prototype.markSelected = function (name, reveal) {
    this.selectedName = name;
    var rows = this.dom.body.querySelectorAll("tr.wv-ct-row");
    for (var i = 0; i < rows.length; i++) {
      var on = name !== null && String(this.rows[Number(rows[i].getAttribute("data-index"))].name) === name;
      rows[i].classList.toggle("wv-ct-selected", on);
      if (on) rows[i].setAttribute("aria-current", "true");
      else rows[i].removeAttribute("aria-current");
    }
    if (reveal && name !== null) {
      for (var j = 0; j < this.rows.length; j++) {
        if (String(this.rows[j].name) === name) {
          this.active = j;
          this.scrollToRow(j);
          this.render();
          break;
        }
      }
    }
  };

  // -------------------------------------------------------------- diff: app parts

  /** Keys a / b / d switch to the scenes a / b / delta keeping the view. */
  App.prototype._wireSceneKeys = function () {
    var self = this;
    var available = [];
    for (var key in SCENE_KEYS) {
      if (hasOwn(SCENE_KEYS, key) && this.sceneByKey(SCENE_KEYS[key])) available.push(key);
    }
    if (available.length < 2) return;
    var hint = this.dom.keys;
    clear(hint);
    hint.appendChild(document.createTextNode("keys "));
    for (var i = 0; i < available.length; i++) {
      var scene = this.sceneByKey(SCENE_KEYS[available[i]]);
      if (i) hint.appendChild(document.createTextNode(" \u00b7 "));
      hint.appendChild(el("kbd", null, available[i]));
      hint.appendChild(document.createTextNode(" " + (scene.label || scene.key)));
    }
    hint.appendChild(document.createTextNode(" \u2014 same view"));
    hint.hidden = false;
    document.addEventListener("keydown", function (e) {
      if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
      var t = e.target;
      var tag = t && t.tagName ? t.tagName.toLowerCase() : "";
      if (tag === "input" || tag === "textarea" || tag === "select" || (t && t.isContentEditable)) return;
      var k = e.key.toLowerCase();
      if (!hasOwn(SCENE_KEYS, k) || !self.sceneByKey(SCENE_KEYS[k])) return;
      e.preventDefault();
      self.switchScene(SCENE_KEYS[k]);
    });
  };

  /** Show another scene: in the same view when both share the geometry, else fitted. */
  App.prototype.switchScene = function (key) {
    var scene = this.sceneByKey(String(key));
    if (!scene || !this.model) return;
    if (String(scene.key) === this.model.key) return;
    var view = null;
    if (sameGeometry(this.model.scene, scene)) {
      var c = this.cFromLl(this.map.getCenter());
      view = { z: this.map.getZoom(), cx: c.x, cy: c.y };
    }
    this.showScene(String(scene.key), view);
    this.writeHash();
  };

  App.prototype.diffReadout = function (hit) {
    var d = this.dom;
    d.rScaleLabel.textContent = !this.model ? "scale s" : this.model.colormap && this.model.colormap.kind === "delta"
      ? "scale s\u0394" : this.model.key === "a" ? "scale s (A)" : this.model.key === "b" ? "scale s (B)" : "scale s";
    var pair = hit && hit.item && hit.eRow !== undefined ? this.diff.pair(hit.item.name) : null;
    if (!pair) {
      d.rStatus.textContent = d.rAb.textContent = d.rDelta.textContent = "—";
      d.rStatus.classList.remove("wv-alert");
      return;
    }
    var r = this.diff.describe(pair, hit.eRow, hit.eCol);
    d.rStatus.textContent = r.status;
    d.rStatus.classList.toggle("wv-alert", r.alert);
    d.rAb.textContent = r.ab;
    d.rDelta.textContent = r.delta;
  };

  /** The stats panel of a pair: the numbers of docs/diff-manifest.md instead of value stats. */
  App.prototype.showDiffStats = function (item, pair) {
    var tbody = this.dom.sTable;
    var n = pair.numbers || null;
    var rows = [];
    function row(label, text, cls) { rows.push([label, text, cls || null]); }
    row("status", statusLabel(pair.status), pair.status === "identical" ? "wv-good" : "wv-warn");
    var t = item.tensor || {};
    row("dtype", t.dtype ? String(t.dtype) : (pair.dtype_a || "—") + "\u2192" + (pair.dtype_b || "—"));
    var sa = fmtShape(pair.shape_a), sb = fmtShape(pair.shape_b);
    if (sa === sb) row("shape", sa);
    else { row("shape A", pair.shape_a ? sa : "—"); row("shape B", pair.shape_b ? sb : "—"); }
    if (pair.a !== null && pair.b !== null && pair.a !== undefined && String(pair.a) !== String(pair.b)) {
      row("name in A", String(pair.a));
    }
    if (pair.paired_by && pair.paired_by !== "exact") row("paired by", String(pair.paired_by));
    if (pair.transform) row("transform", String(pair.transform));
    if (n) {
      row("\u2016\u0394\u2016/\u2016A\u2016", fmtNum(n.rel));
      row("cosine", fmtCosine(n.cosine));
      row("\u2016A\u2016 \u2016B\u2016", fmtNum(n.a_norm) + "  " + fmtNum(n.b_norm));
      row("\u2016\u0394\u2016", fmtNum(n.delta_norm));
      row("max|\u0394|", fmtNum(n.max_abs_delta));
      var total = comparedOf(pair);
      row("changed", typeof n.changed === "number"
        ? fmtCount(n.changed) + (total ? " of " + fmtCount(total) + " (" + fmtFraction(n.changed / total) + ")" : "") : "—",
        n.changed > 0 ? "wv-warn" : "wv-good");
      if (n.changed > 0) {
        row("rows", fmtIndexList(n.changed_rows, "row"));
        row("cols", fmtIndexList(n.changed_cols, "col"));
        var bb = n.bbox;
        row("bbox", Array.isArray(bb) ? "rows " + fmtSpan(bb[0], bb[1]) + " \u00b7 cols " + fmtSpan(bb[2], bb[3]) : "—");
      }
      row("non-finite new", fmtCount(n.nonfinite_introduced), n.nonfinite_introduced > 0 ? "wv-alert" : null);
      var rk = rank99(pair);
      if (rk) {
        var share = n.svd.top_share || {};
        var parts = [];
        var keys = Object.keys(share).sort(function (x, y) { return Number(x) - Number(y); });
        for (var k = 0; k < keys.length; k++) {
          if (keys[k] === "1" || keys[k] === "8" || k === keys.length - 1) parts.push("top " + keys[k] + " " + fmtFraction(share[keys[k]]));
        }
        row("rank (99 %)", rk.text + (parts.length ? "  (" + parts.join(", ") + ")" : ""));
      }
    }
    var s = this.scaleOf(item);
    row(this.model && this.model.colormap && this.model.colormap.kind === "delta" ? "scale s\u0394" : "scale s", fmtNum(s));
    var blocks = this.diff.diff.blocks;
    if (typeof pair.block === "number" && blocks && blocks[String(pair.block)]) {
      var b = blocks[String(pair.block)];
      row("block " + pair.block, fmtCount(b.changed_tensors) + " changed \u00b7 \u2016\u0394\u2016/\u2016A\u2016 " + fmtNum(b.rel));
    }
    for (var i = 0; i < rows.length; i++) {
      var tr = el("tr");
      tr.appendChild(el("th", null, rows[i][0]));
      tr.appendChild(el("td", rows[i][2], rows[i][1]));
      tbody.appendChild(tr);
    }
  };

  /** Legend of colormaps.delta: the gradient labelled by the metric, and the swatches. */
  App.prototype.buildDeltaLegend = function (cm) {
    var d = this.dom;
    var zero = typeof cm.zero_index === "number" ? cm.zero_index : 129;
    var levels = cm.levels || 123;
    var metric = cm.metric || (this.diff && this.diff.metric) || "rms";
    d.legendTitle.textContent = "Colour \u00b7 \u0394 = B \u2212 A (" + metric + ")";
    var ticks = [];
    var n;
    if (metric === "exact") {
      drawLegendBar(d.legendBar, cm.palette, [zero - levels, zero, zero + levels]);
      ticks = [[["shrank"], 0], [["unchanged"], 50], [["grew"], 100]];
      d.legendValues.textContent = "any change at full brightness";
      d.legendValues.classList.remove("wv-empty");
      d.legendNote.textContent = "index = " + zero + " \u00b1 " + levels + " if B \u2260 A";
    } else {
      n = 2 * levels + 1;
      drawLegendBar(d.legendBar, cm.palette, rangeOf(zero - levels, n));
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
        d.legendValues.textContent = "|\u0394| on a log scale: 1e" + lo + " \u2192 level 1, 1e" + hi + " \u2192 level " + levels +
          "; the same for every tensor";
        d.legendValues.classList.remove("wv-empty");
        d.legendNote.textContent = "index = " + zero + " \u00b1 clamp(round(" + levels + "\u00b7(log\u2081\u2080|\u0394| \u2212 (" + lo +
          "))/" + (hi - lo) + "), 1, " + levels + ") if B \u2260 A";
      } else {
        var q4 = Math.floor(levels * Math.sqrt(0.25) + 0.5);
        var sD = function (sign, tail) { return [sign + "s", ["sub", "\u0394"], tail]; };
        ticks = [[sD("\u2212", ""), 0], [sD("\u2212", "/4"), pct(-q4)], [["0"], 50], [sD("+", "/4"), pct(q4)], [sD("+", ""), 100]];
        d.legendNote.textContent = "index = " + zero + " \u00b1 max(1, round(" + levels + "\u00b7\u221amin(|\u0394|/s\u0394, 1))) if B \u2260 A";
        this.updateLegendValues(null);
      }
      d.legendEnds.hidden = false;
    }
    for (var k = 0; k < ticks.length; k++) d.legendTicks.appendChild(tickNode(ticks[k][0], ticks[k][1]));
    if (cm.rule) d.legendNote.title = String(cm.rule);
    // swatches: unchanged, non-finite, the hatches (base only replaces only-in-A in finetune mode), padding
    var finetune = this.diff && this.diff.mode === "finetune";
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
        box.style.background = rgbCss(cm.palette[sw[1]]);
      }
      box.setAttribute("data-index", String(sw[1]));
      item.appendChild(box);
      item.appendChild(document.createTextNode(sw[0]));
      d.legendSwatches.appendChild(item);
    }
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

  /** Fit the view to an item's rects (the union of its placements in this scene) and select it. */
  App.prototype.zoomTo = function (item, fromTable) {
    if (!item || !item.rects.length) return false;
    var r = cUnion(item.rects);
    this.map.fitBounds(this.llBoundsFromCRect(r), {
      padding: [24, 24], maxZoom: this.model.maxZoom + 2, animate: false,
    });
    this.select(item, fromTable);
    return true;
  };

  /** Zoom to an item, select it and show its name in the search box. */
  App.prototype.jumpTo = function (item) {
    if (!this.zoomTo(item)) return;
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
      table: app.table,
      ready: false,
    };
    app.applyHash();
    window.weightvis.ready = true;
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
