/*
 * Tiles: WV.TileIndex (which tiles of a scene were written), WV.IndexedTileLayer (a Leaflet
 * tile layer that only requests those), and WV.tileSources: where a scene's tiles come from -
 * loose files by default; a plug-in (tiles-packed.js) registers other sources.
 */
(function () {
  "use strict";

  var WV = window.WV;

  /**
   * Which tiles of a scene exist (README "The bundle and its manifest", "tile_index"): a list of
   * per-zoom bitmaps, or (older form) {"<z>": [[tx, ty], ...]}.
   */
  function TileIndex(levels) {
    this.levels = new Map();   // z -> {cols, rows, bits}
    this.sets = null;          // older form: z -> Set of "tx,ty"
    if (!Array.isArray(levels)) {
      this.sets = new Map();
      var zs = Object.keys(levels);
      for (var z = 0; z < zs.length; z++) {
        var set = new Set();
        var list = levels[zs[z]] || [];
        for (var k = 0; k < list.length; k++) set.add(list[k][0] + "," + list[k][1]);
        this.sets.set(Number(zs[z]), set);
      }
      return;
    }
    for (var i = 0; i < levels.length; i++) {
      var lv = levels[i];
      var raw = atob(lv.bitmap || "");
      var bits = new Uint8Array(raw.length);
      for (var j = 0; j < raw.length; j++) bits[j] = raw.charCodeAt(j);
      this.levels.set(Number(lv.z), { cols: lv.cols, rows: lv.rows, bits: bits });
    }
  }

  TileIndex.prototype.has = function (z, tx, ty) {
    if (this.sets) return this.sets.has(z) && this.sets.get(z).has(tx + "," + ty);
    var lv = this.levels.get(z);
    if (!lv) return false;
    if (tx < 0 || ty < 0 || tx >= lv.cols || ty >= lv.rows) return false;
    var i = ty * lv.cols + tx;
    return ((lv.bits[i >> 3] >> (i & 7)) & 1) === 1;
  };

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
   * Tile sources other than loose files: {applies(manifest, scene) -> bool,
   * layer(manifest, scene, tileIndex, options) -> a Leaflet layer}. The core asks
   * WV.tileLayerFor and never which source a scene uses.
   */
  WV.tileSources = new WV.Registry("tile source");

  /** The tile layer of a scene: the first registered source that applies, else loose files. */
  WV.tileLayerFor = function (manifest, scene, tileIndex, options) {
    var sources = WV.tileSources.list();
    for (var i = 0; i < sources.length; i++) {
      if (sources[i].applies(manifest, scene)) return sources[i].layer(manifest, scene, tileIndex, options);
    }
    return new IndexedTileLayer(String(scene.tiles), tileIndex, options);
  };

  WV.TileIndex = TileIndex;
  WV.IndexedTileLayer = IndexedTileLayer;
})();
