/*
 * WV.SceneModel: one scene's geometry (placements or Hilbert curve segments), a spatial grid for
 * point lookups, and the canvas rects of every searchable item. Building it is linear in the
 * number of placements / segments, so a bundle of 45,000 tensors opens at once.
 */
(function () {
  "use strict";

  var WV = window.WV;

  /**
   * `tensors` is a Map name -> manifest.tensors entry (built once by the app).
   * Items are things drawn at a set of canvas rects: {name, label, rects: [[x, y, w, h]...],
   * tensor}; pieces are one rect each, for drawing and labels: {item, rect, placement|segment,
   * label} (label: the placement's own, e.g. one expert's matrix of a fused tensor, or null).
   */
  function SceneModel(manifest, scene, tensors) {
    this.manifest = manifest;
    this.scene = scene;
    this.key = String(scene.key);
    this.kind = WV.sceneKindFor(manifest, scene);
    this.maxZoom = scene.max_zoom;
    this.cWidth = scene.width;
    this.cHeight = scene.height;
    this.tensors = tensors;
    this.groups = scene.groups || [];
    var cmaps = manifest.colormaps || (manifest.colormap ? { values: manifest.colormap } : {});
    this.colormap = WV.own(cmaps, scene.colormap || "values") || WV.own(cmaps, "values") || null;
    this.tileIndex = scene.tile_index && typeof scene.tile_index === "object" ? new WV.TileIndex(scene.tile_index) : null;
    this.curve = scene.curve || null;
    this.isHilbert = scene.layout === "hilbert" && !!this.curve;
    this.items = [];
    this.itemByName = new Map();
    this.pieces = [];
    if (this.isHilbert) this._buildHilbert();
    else this._buildPlacements();
    // rects framing exactly one placement (a group there adds nothing to the tensor's label)
    this.singleRects = new Set();
    for (var i = 0; i < this.pieces.length; i++) this.singleRects.add(this.pieces[i].rect.join(","));
    this._buildGrid();
  }

  /** The item called `name` in this scene, or null. */
  SceneModel.prototype.item = function (name) {
    var item = this.itemByName.get(String(name));
    return item === undefined ? null : item;
  };

  SceneModel.prototype._item = function (name) {
    var key = String(name);
    var item = this.itemByName.get(key);
    if (!item) {
      var t = this.tensors.get(key);
      var inBlock = t && t.block !== null && t.block !== undefined && t.slot;
      // the arch layout frames each block ("block 3"); a Hilbert curve has no frames, so its
      // labels carry the block number
      var label = !inBlock ? key : this.isHilbert ? "block " + t.block + " \u00b7 " + t.slot : String(t.slot);
      item = { name: key, label: label, rects: [], tensor: t || null };
      this.itemByName.set(key, item);
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
      // a placement's own label names what it holds of its tensor ("expert 17 · gate")
      var label = typeof p.label === "string" ? p.label : null;
      this.pieces.push({ item: item, rect: p.rect, placement: p, label: label });
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
      var squares = WV.cSquaresFromHRange(this.curveN, seg.start, seg.start + seg.length);
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
   * {item, tensor, label, eRow, eCol} (element) / {item, file, byteOffset} (byte curve).
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
        var cell = p.cell || 1;   // a magnified placement: `cell` px per element edge
        return {
          item: piece.item, tensor: piece.item.tensor, label: piece.label,
          eRow: p.rows[0] + Math.floor((cy - r[1]) / cell),
          eCol: p.cols[0] + Math.floor((cx - r[0]) / cell),
        };
      }
    }
    return null;
  };

  /**
   * The labels of the scene's groups (sections, prefix groups, blocks) that contain canvas pixel
   * (cx, cy), outermost first ("embeddings", "model.embed_tokens"). Linear in the groups.
   */
  SceneModel.prototype.groupsAt = function (cx, cy) {
    var found = [];
    for (var i = 0; i < this.groups.length; i++) {
      var g = this.groups[i], r = g.rect;
      if (r && cx >= r[0] && cy >= r[1] && cx < r[0] + r[2] && cy < r[1] + r[3]) found.push(g);
    }
    found.sort(function (a, b) { return b.rect[2] * b.rect[3] - a.rect[2] * a.rect[3]; });
    return found.map(function (g) { return String(g.label); });
  };

  SceneModel.prototype._hitHilbert = function (cx, cy) {
    var n = this.curveN;
    if (cx >= n || cy >= n) return null;
    var h = WV.hFromC(n, cx, cy);
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
      return { item: this.item(seg.file), tensor: null, file: seg.file, byteOffset: offset, h: h };
    }
    var item = this.item(seg.tensor);
    var t = item.tensor;
    var viewCols = t && t.view ? t.view[1] : 1;
    return {
      item: item, tensor: t, h: h,
      eRow: Math.floor(offset / viewCols), eCol: offset % viewCols,
    };
  };

  /** Union of a set of canvas rects, [x, y, w, h]. */
  WV.cUnion = function (rects) {
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (var i = 0; i < rects.length; i++) {
      var r = rects[i];
      x0 = Math.min(x0, r[0]); y0 = Math.min(y0, r[1]);
      x1 = Math.max(x1, r[0] + r[2]); y1 = Math.max(y1, r[1] + r[3]);
    }
    return [x0, y0, x1 - x0, y1 - y0];
  };

  /** Scenes whose tiles share one geometry (e.g. the sides of a comparison): a view carries over. */
  WV.sameGeometry = function (s1, s2) {
    return !!s1 && !!s2 && s1.width === s2.width && s1.height === s2.height &&
      s1.max_zoom === s2.max_zoom && (s1.layout || "arch") === (s2.layout || "arch");
  };

  WV.SceneModel = SceneModel;
})();
