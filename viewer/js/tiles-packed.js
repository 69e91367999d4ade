/*
 * Packed tiles (weightvis/hub/pack.py; README "Publishing"): a bundle published over the Hub's
 * file limits keeps each scene's tiles in a few archive shards, read here with HTTP Range
 * requests - a shard's directory once, then each tile's bytes, shown through an object URL (the
 * idea of PMTiles, protomaps/PMTiles). Registers the tile source "packed" for scenes with a
 * `pack`. Works over http(s) only: browsers refuse fetch() from file://.
 */
(function () {
  "use strict";

  var WV = window.WV;
  var FORMAT = "weightvis-pack-1";
  var HEAD = 16;   // "WVPACK01", u32 count, u32 0
  var ENTRY = 16;  // u32 z, u32 t_x, u32 t_y, u32 length (little-endian)
  // weightvis writes PNG tiles; avif: bundles written while AVIF was an option still show
  var MIME = { png: "image/png", avif: "image/avif" };

  /** Bytes a..b (inclusive) of `url`; a server that ignores Range still works (sliced). */
  function fetchRange(url, a, b) {
    return fetch(url, { headers: { Range: "bytes=" + a + "-" + b } }).then(function (resp) {
      if (resp.status === 206) return resp.arrayBuffer();
      if (resp.status === 200) return resp.arrayBuffer().then(function (buf) { return buf.slice(a, b + 1); });
      throw new Error("weightvis: " + url + " answered HTTP " + resp.status + " to a Range request");
    });
  }

  /** The tiles of one packed scene: which shard holds a tile, and its bytes. */
  function PackReader(manifest, scene) {
    var pack = scene.pack;
    this.split = Number(pack.split_zoom);
    this.mime = MIME[String(manifest.tile_format || "png")] || "application/octet-stream";
    var levels = Array.isArray(scene.tile_index) ? scene.tile_index : [];
    var cols = 1;
    for (var i = 0; i < levels.length; i++) if (Number(levels[i].z) === this.split) cols = Number(levels[i].cols);
    this.cols = cols;
    this.top = null;       // the shard of zooms < split
    this.keyed = [];       // the other shards by the row-major key of their first ancestor
    for (var k = 0; k < pack.shards.length; k++) {
      var sh = pack.shards[k];
      var shard = { file: String(sh.file), dirBytes: Number(sh.directory_bytes), dir: null };
      if (sh.first === null) this.top = shard;
      else {
        shard.key = Number(sh.first[1]) * cols + Number(sh.first[0]);
        this.keyed.push(shard);
      }
    }
    this.keyed.sort(function (a, b) { return a.key - b.key; });
  }

  PackReader.prototype.shardOf = function (z, tx, ty) {
    if (z < this.split) return this.top;
    var f = Math.pow(2, z - this.split);
    var key = Math.floor(ty / f) * this.cols + Math.floor(tx / f);
    var lo = 0, hi = this.keyed.length - 1, found = null;
    while (lo <= hi) {  // the last shard whose first key is <= key
      var mid = (lo + hi) >> 1;
      if (this.keyed[mid].key <= key) { found = this.keyed[mid]; lo = mid + 1; } else hi = mid - 1;
    }
    return found;
  };

  /** A shard's directory: Map "z/x/y" -> [offset, length]. */
  PackReader.prototype.directory = function (shard) {
    if (!shard.dir) {
      shard.dir = fetchRange(shard.file, 0, shard.dirBytes - 1).then(function (buf) {
        var view = new DataView(buf);
        var magic = String.fromCharCode.apply(null, new Uint8Array(buf, 0, 8));
        if (magic !== "WVPACK01") throw new Error("weightvis: " + shard.file + " is not a weightvis pack");
        var count = view.getUint32(8, true);
        var dir = new Map();
        var offset = HEAD + ENTRY * count;
        for (var i = 0; i < count; i++) {
          var at = HEAD + ENTRY * i;
          var n = view.getUint32(at + 12, true);
          dir.set(view.getUint32(at, true) + "/" + view.getUint32(at + 4, true) + "/" + view.getUint32(at + 8, true), [offset, n]);
          offset += n;
        }
        return dir;
      });
      shard.dir.catch(function () { shard.dir = null; });  // a failed read may be retried
    }
    return shard.dir;
  };

  /** Promise of the tile's bytes as a Blob (rejected when the pack does not hold it). */
  PackReader.prototype.tile = function (z, tx, ty) {
    var shard = this.shardOf(z, tx, ty);
    var mime = this.mime;
    if (!shard) return Promise.reject(new Error("weightvis: no pack shard holds tile " + z + "/" + tx + "/" + ty));
    return this.directory(shard).then(function (dir) {
      var e = dir.get(z + "/" + tx + "/" + ty);
      if (!e) throw new Error("weightvis: " + shard.file + " lacks tile " + z + "/" + tx + "/" + ty);
      return fetchRange(shard.file, e[0], e[0] + e[1] - 1);
    }).then(function (buf) { return new Blob([buf], { type: mime }); });
  };

  /** The indexed tile layer, its images filled from the pack. */
  var PackedTileLayer = WV.IndexedTileLayer.extend({
    initialize: function (reader, tileIndex, options) {
      WV.IndexedTileLayer.prototype.initialize.call(this, "", tileIndex, options);
      this._wvPack = reader;
    },
    createTile: function (coords, done) {
      if (this._wvIndex && !this._wvIndex.has(coords.z, coords.x, coords.y)) {
        return WV.IndexedTileLayer.prototype.createTile.call(this, coords, done);
      }
      var img = document.createElement("img");
      img.alt = "";
      var url = null;
      L.DomEvent.on(img, "load", function () {
        if (url) URL.revokeObjectURL(url);
        this._tileOnLoad(done, img);
      }, this);
      L.DomEvent.on(img, "error", function (e) { this._tileOnError(done, img, e); }, this);
      this._wvPack.tile(coords.z, coords.x, coords.y).then(function (blob) {
        url = URL.createObjectURL(blob);
        img.src = url;
      }, function (err) { done(err, img); });
      return img;
    },
  });

  function fileNotice(app) {
    var note = WV.el("div", "wv-pack-note", "This bundle's tiles are packed for the web: open it " +
      "over http(s) (its Hugging Face Space), or render it locally for file://.");
    app.appendChild(note);
  }

  WV.PackReader = PackReader;
  WV.tileSources.register("packed", {
    applies: function (manifest, scene) {
      return !!(scene && scene.pack && scene.pack.format === FORMAT);
    },
    layer: function (manifest, scene, tileIndex, options) {
      if (window.location.protocol === "file:") {  // fetch() cannot read files: say so, draw none
        fileNotice(document.getElementById("wv-map"));
        return L.layerGroup();
      }
      return new PackedTileLayer(new PackReader(manifest, scene), tileIndex, options);
    },
  });
})();
