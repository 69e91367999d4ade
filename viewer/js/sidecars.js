/*
 * WV.Sidecars: the palette index and the values of the element under the cursor.
 *
 * A page opened from file:// cannot read its tiles' pixels (a canvas that draws a file:// image
 * is tainted) nor fetch a file; it can run a classic <script src>. A scene whose manifest entry
 * has `sidecars` ({tiles, zoom, values}) has beside each max-zoom tile a script that calls
 * WV.sidecar({scene, z, x, y, size, index, values}) (README "Values under the cursor";
 * weightvis/sidecars.py writes them). When the cursor rests REST_MS on a tile, its script is
 * added to the page; its zlib streams are inflated with DecompressionStream("deflate") and kept
 * (the last CACHE tiles). sample(key, cx, cy) answers from what is loaded, and asks the app to
 * refresh the readout once a tile arrives.
 */
(function () {
  "use strict";

  var WV = window.WV;

  var REST_MS = 90;     // the cursor rests this long on a tile before its sidecar is loaded
  var CACHE = 16;       // decoded tiles kept (each at most ~2.3 MB)
  var WIDTH = { bf16: 2, f16: 2, f32: 4, u8: 1 };
  // a sidecar's URL: the template a render writes, nothing else (no scheme, no "..")
  var TEMPLATE = /^tiles\/[A-Za-z0-9_-]+\/\{z\}\/\{x\}\/\{y\}\.js$/;

  function bytesOf(b64) {
    var s = atob(b64);
    var out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  /** Inflate a zlib stream (Promise of a Uint8Array). */
  function inflate(bytes) {
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buf) { return new Uint8Array(buf); });
  }

  /** Rows of `width` bytes, each prefixed with PNG filter byte 0, without the filter bytes. */
  function unfilter(raw, width) {
    var rows = raw.length / (width + 1);
    if (rows !== Math.floor(rows)) throw new Error("sidecar: stream is not whole rows");
    var out = new Uint8Array(rows * width);
    for (var r = 0; r < rows; r++) {
      var at = r * (width + 1);
      if (raw[at] !== 0) throw new Error("sidecar: row filter " + raw[at] + " (only 0 is written)");
      out.set(raw.subarray(at + 1, at + 1 + width), r * width);
    }
    return out;
  }

  /** IEEE half-precision bits -> number. */
  function halfToNumber(h) {
    var sign = h & 0x8000 ? -1 : 1;
    var e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e === 0) return sign * m * Math.pow(2, -24);
    if (e === 31) return m ? NaN : sign * Infinity;
    return sign * (1 + m / 1024) * Math.pow(2, e - 15);
  }

  /**
   * The values of one side from byte planes (plane j = byte j of every little-endian element),
   * XORed with `base`'s bit patterns when given (side B of a pair), as a Float32Array (a
   * Uint8Array for file bytes) and the raw bit patterns (for the XOR of the next side).
   */
  function sideValues(planes, dtype, n, side, base) {
    var k = WIDTH[dtype];
    var bits = k === 4 ? new Uint32Array(n) : k === 2 ? new Uint16Array(n) : new Uint8Array(n);
    var first = side * k * n;
    for (var i = 0; i < n; i++) {
      var v = 0;
      for (var j = k - 1; j >= 0; j--) v = v * 256 + planes[first + j * n + i];
      bits[i] = base ? v ^ base[i] : v;
    }
    if (dtype === "u8") return { values: bits, bits: bits };
    var f = new Float32Array(n);
    if (dtype === "f32") f = new Float32Array(bits.buffer.slice(0));
    else if (dtype === "bf16") {
      var u = new Uint32Array(f.buffer);
      for (var a = 0; a < n; a++) u[a] = bits[a] << 16;
    } else {
      for (var b = 0; b < n; b++) f[b] = halfToNumber(bits[b]);
    }
    return { values: f, bits: bits };
  }

  /** Decode a sidecar document: Promise of {size, index, dtype, a, b}. */
  function decode(doc) {
    var size = doc.size;
    var n = size * size;
    var jobs = [inflate(bytesOf(String(doc.index)))];
    var vals = doc.values && typeof doc.values === "object" ? doc.values : null;
    if (vals) {
      if (!WV.hasOwn(WIDTH, vals.dtype) || (vals.sides !== 1 && vals.sides !== 2)) {
        return Promise.reject(new Error("sidecar: unknown values " + vals.dtype + " x" + vals.sides));
      }
      jobs.push(inflate(bytesOf(String(vals.data))));
    }
    return Promise.all(jobs).then(function (got) {
      var index = unfilter(got[0], size);
      if (index.length !== n) throw new Error("sidecar: index of " + index.length + " bytes");
      var out = { size: size, index: index, dtype: null, a: null, b: null };
      if (vals) {
        var planes = unfilter(got[1], size);
        if (planes.length !== n * WIDTH[vals.dtype] * vals.sides) throw new Error("sidecar: values size");
        var a = sideValues(planes, vals.dtype, n, 0, null);
        out.dtype = String(vals.dtype);
        out.a = a.values;
        if (vals.sides === 2) out.b = sideValues(planes, vals.dtype, n, 1, a.bits).values;
      }
      return out;
    });
  }

  function Sidecars(app) {
    this.app = app;
    this.entries = new Map();   // "key|z|x|y" -> {state: loading|decoding|ready|error, data, error}
    this.indexes = new Map();   // scene key -> WV.TileIndex
    this.wanted = new Map();    // id -> {url, since}: tiles the current hover asked for, not loaded
    this.polling = false;
    var self = this;
    WV.sidecar = function (doc) { self.receive(doc); };
  }

  Sidecars.supported = typeof DecompressionStream === "function" && typeof Response === "function";

  Sidecars.prototype._tileIndex = function (scene) {
    var key = String(scene.key);
    if (!this.indexes.has(key)) {
      this.indexes.set(key, scene.tile_index ? new WV.TileIndex(scene.tile_index) : null);
    }
    return this.indexes.get(key);
  };

  /** A new hover: tiles asked for by the previous one and not by this one are no longer wanted. */
  Sidecars.prototype.beginHover = function () {
    this.previous = this.wanted;
    this.wanted = new Map();
  };

  /**
   * What the sidecar of scene `key` says of canvas pixel (cx, cy): {state} with state "none"
   * (the scene has no sidecars there), "unsupported", "loading", "error", or "ready" with
   * index, and value / a, b (numbers) when the sidecar holds values.
   */
  Sidecars.prototype.sample = function (key, cx, cy) {
    var scene = this.app.sceneByKey(String(key));
    var sc = scene && scene.sidecars && typeof scene.sidecars === "object" ? scene.sidecars : null;
    if (!sc || !TEMPLATE.test(String(sc.tiles)) || cx < 0 || cy < 0) return { state: "none" };
    if (!Sidecars.supported) return { state: "unsupported" };
    var ts = this.app.manifest.tile_size || 512;
    var z = Number(sc.zoom);
    var tx = Math.floor(cx / ts), ty = Math.floor(cy / ts);
    var index = this._tileIndex(scene);
    if (index && !index.has(z, tx, ty)) return { state: "none" };
    var id = scene.key + "|" + z + "|" + tx + "|" + ty;
    var entry = this.entries.get(id);
    if (!entry) {
      this._want(id, String(sc.tiles).replace("{z}", z).replace("{x}", tx).replace("{y}", ty));
      return { state: "loading" };
    }
    if (entry.state !== "ready") return { state: entry.state };
    this.entries.delete(id);          // most recently used last
    this.entries.set(id, entry);
    var d = entry.data;
    var i = (cy % ts) * d.size + (cx % ts);
    var out = { state: "ready", index: d.index[i], dtype: d.dtype };
    if (d.a) out.value = out.a = d.a[i];
    if (d.b) out.b = d.b[i];
    return out;
  };

  /** The cursor is on tile `id`: load its sidecar once the cursor has rested on it REST_MS. */
  Sidecars.prototype._want = function (id, url) {
    var before = this.previous ? this.previous.get(id) : undefined;
    if (!this.wanted.has(id)) this.wanted.set(id, { url: url, since: before ? before.since : performance.now() });
    if (this.polling) return;
    this.polling = true;
    var self = this;
    function poll() {
      var now = performance.now();
      var waiting = false;
      self.wanted.forEach(function (w, wid) {
        if (self.entries.has(wid)) return;
        if (now - w.since >= REST_MS) self._load(wid, w.url);
        else waiting = true;
      });
      if (waiting) L.Util.requestAnimFrame(poll);
      else self.polling = false;
    }
    L.Util.requestAnimFrame(poll);
  };

  Sidecars.prototype._load = function (id, url) {
    var self = this;
    var entry = { state: "loading", data: null };
    this.entries.set(id, entry);
    var script = document.createElement("script");
    script.async = true;
    script.addEventListener("load", function () {
      script.remove();
      if (entry.state === "loading") self._fail(entry, "the sidecar did not call WV.sidecar");
    });
    script.addEventListener("error", function () {
      script.remove();
      self._fail(entry, "the sidecar could not be loaded");
    });
    script.setAttribute("src", url);
    document.head.appendChild(script);
    this._evict();
  };

  Sidecars.prototype._fail = function (entry, why) {
    entry.state = "error";
    entry.error = why;
    this.app.refreshHover();
  };

  /** WV.sidecar(doc): a sidecar script has run. */
  Sidecars.prototype.receive = function (doc) {
    if (!doc || typeof doc !== "object") return;
    var id = String(doc.scene) + "|" + doc.z + "|" + doc.x + "|" + doc.y;
    var entry = this.entries.get(id);
    if (!entry || entry.state !== "loading") return;
    var size = Number(doc.size);
    if (!(size > 0 && size <= 4096 && size === Math.floor(size))) {
      this._fail(entry, "bad sidecar size");
      return;
    }
    entry.state = "decoding";
    var self = this;
    decode(doc).then(function (data) {
      entry.state = "ready";
      entry.data = data;
      self.app.refreshHover();
    }, function (err) {
      self._fail(entry, String(err && err.message ? err.message : err));
    });
  };

  Sidecars.prototype._evict = function () {
    var stale = [];
    var extra = this.entries.size - CACHE;
    this.entries.forEach(function (e, k) {   // oldest first; tiles on their way stay
      if (stale.length < extra && e.state !== "loading" && e.state !== "decoding") stale.push(k);
    });
    for (var i = 0; i < stale.length; i++) this.entries.delete(stale[i]);
  };

  // ------------------------------------------------------------------ formatting

  /** A value as the shortest decimal that reads back as the same stored value (bf16 / f32). */
  WV.fmtExact = function (v, dtype) {
    if (typeof v !== "number") return "\u2014";
    if (isNaN(v)) return "NaN";
    if (!isFinite(v)) return v > 0 ? "+Inf" : "\u2212Inf";
    if (v === 0) return Object.is(v, -0) ? "\u22120" : "0";
    var same = dtype === "bf16" ? function (x) { return bf16Round(x) === v; }
      : function (x) { return Math.fround(x) === v; };
    var text = String(v);
    for (var p = 1; p <= 17; p++) {
      var t = v.toPrecision(p);
      if (same(Number(t))) { text = t; break; }
    }
    var num = Number(text);
    var a = Math.abs(num);
    text = a >= 1e6 || a < 1e-4 ? num.toExponential().replace("e+", "e") : String(num);
    return text.replace(/^-/, "\u2212");
  };

  var F32 = new Float32Array(1), U32 = new Uint32Array(F32.buffer);
  function bf16Round(x) {
    F32[0] = x;
    var u = U32[0];
    U32[0] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16;
    return F32[0];
  }

  /** An interval edge to 6 significant digits. */
  WV.fmtEdge = function (v) {
    if (v === 0) return "0";
    var a = Math.abs(v);
    var t = a >= 1e5 || a < 1e-3 ? v.toExponential(5).replace(/\.?0+e/, "e").replace("e+", "e")
      : String(Number(v.toPrecision(6)));
    return t.replace(/^-/, "\u2212");
  };

  /**
   * The interval of values a level q of a colour rule stands for, as text: with `levels` levels
   * and transfer "sqrt" (|v| = s·(q/levels)^2) or "linear" (|v| = s·q/levels), level q covers
   * [edge(q − ½), edge(q + ½)); the top level has no upper edge; `minLevel` (1 for deltas) takes
   * everything below its upper edge. `name` names the quantity ("v", "Δ").
   */
  WV.levelInterval = function (q, sign, s, levels, transfer, minLevel, name) {
    function edge(x) {
      var f = Math.max(0, Math.min(1, x / levels));
      return s * (transfer === "linear" ? f : f * f);
    }
    var lo = q <= minLevel ? 0 : edge(q - 0.5);
    var hi = q >= levels ? null : edge(q + 0.5);
    if (q === 0) return "|" + name + "| < " + WV.fmtEdge(hi);
    if (sign > 0) {
      if (hi === null) return name + " \u2265 " + WV.fmtEdge(lo);
      return (lo === 0 ? "0 < " + name : WV.fmtEdge(lo) + " \u2264 " + name) + " < " + WV.fmtEdge(hi);
    }
    if (hi === null) return name + " \u2264 " + WV.fmtEdge(-lo);
    return WV.fmtEdge(-hi) + " < " + name + (lo === 0 ? " < 0" : " \u2264 " + WV.fmtEdge(-lo));
  };

  WV.Sidecars = Sidecars;
})();
