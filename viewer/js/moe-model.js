/*
 * MoE bundles (manifest.moe = moe.json; scenes "moe-summary", "moe-relative", "moe-similarity"
 * whose manifest entries carry `moe`: {kind, cell, panels: {name: what the panel shows}}).
 * This file: WV.moe — the numbers behind a hovered cell, read from the manifest or, for big
 * similarity matrices, from per-layer sidecar scripts (moe/layer-<L>.js, loaded on demand with
 * a <script> element: file:// refuses fetch) — and the panel "moe" that holds the model for
 * the other MoE plug-ins (app.panel("moe").model). A sidecar's matrices are float32 (little-
 * endian, row-major, base64; NaN = no number), decoded when a cell of the layer is first
 * read, and shown as the float32 itself (its shortest decimal).
 */
(function () {
  "use strict";

  var WV = window.WV;
  var own = WV.own, hasOwn = WV.hasOwn;

  var STAT_LABELS = {
    rms: "rms", mean_abs: "mean |w|", max_over_rms: "max|w| / rms", zero_fraction: "zero fraction",
    stable_rank: "stable rank", row_norm: "router row norm", bias: "selection bias",
    freq: "routing frequency",
  };
  var METRIC_LABELS = { cka: "debiased CKA", cosine: "cosine (flattened)", coact: "co-activation" };

  // How a CKA panel's numbers were computed (bundles before round 6 have no estimator: their
  // sketched panels were two CountSketches).
  function ckaMode(info) {
    if (info.mode === "exact") return "exact";
    return info.estimator === "rows"
      ? "sampled (exact Gram rows at " + info.k + " hidden coordinates)"
      : "sketched (two CountSketches, k = " + info.k + ")";
  }

  function applies(manifest) {
    return !!manifest && !!manifest.moe && typeof manifest.moe === "object";
  }

  /** A number as stored (the shortest text that reads back to the same double). */
  function exact(v) {
    if (typeof v !== "number" || !isFinite(v)) return "—";
    return String(v).replace(/^-/, "\u2212");
  }

  /** A float32 as stored: the shortest decimal that reads back to the same float32. */
  function exact32(v) {
    if (typeof v !== "number" || !isFinite(v)) return "—";
    var text = String(v);
    for (var p = 1; p <= 9; p++) {
      var t = Number(v.toPrecision(p));
      if (Math.fround(t) === v) { text = String(t); break; }
    }
    return text.replace(/^-/, "\u2212");
  }

  // Sidecars: window.weightvisMoeSidecar(obj) is what a sidecar script calls.
  var sidecars = new Map();     // layer -> {layer, experts, encoding, similarity, coact}
  var pending = new Map();      // file -> [callbacks]
  var decoded = new Map();      // base64 text -> Float32Array (decoded once)
  window.weightvisMoeSidecar = function (obj) {
    if (obj && typeof obj.layer === "number") sidecars.set(obj.layer, obj);
  };

  /** A sidecar matrix (SIDECAR_ENCODING: float32-le-base64) as {e, data: Float32Array}. */
  function sidecarMatrix(side, text) {
    if (typeof text !== "string" || side.encoding !== "float32-le-base64") return null;
    var e = side.experts;
    var data = decoded.get(text);
    if (!data) {
      var bin = atob(text);
      var bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      var view = new DataView(bytes.buffer);
      data = new Float32Array(bytes.length >> 2);
      for (var j = 0; j < data.length; j++) data[j] = view.getFloat32(4 * j, true);
      decoded.set(text, data);
    }
    return data.length === e * e ? { e: e, data: data } : null;
  }

  /**
   * The sidecar file of MoE layer `layer`: always "moe/layer-<integer>.js", built here from the
   * number (a manifest's string never becomes a URL), or null.
   */
  function sidecarFile(layer) {
    return typeof layer === "number" && Number.isInteger(layer) && layer >= 0 ? "moe/layer-" + layer + ".js" : null;
  }

  /** Load a sidecar script once; `done()` runs when it has loaded (or failed). */
  function loadSidecar(file, done) {
    if (pending.has(file)) { pending.get(file).push(done); return; }
    pending.set(file, [done]);
    var script = document.createElement("script");
    script.setAttribute("src", file);
    script.async = true;
    function finish() {
      var calls = pending.get(file) || [];
      pending.set(file, []);
      script.dataset.loaded = "1";
      for (var i = 0; i < calls.length; i++) calls[i]();
    }
    script.onload = finish;
    script.onerror = function () { script.dataset.failed = "1"; finish(); };
    document.head.appendChild(script);
  }

  function Model(app) {
    this.app = app;
    this.moe = app.manifest.moe;
    this.panelsByScene = new Map();   // scene key -> Map(name -> panel info)
    var scenes = app.scenes;
    for (var i = 0; i < scenes.length; i++) {
      if (scenes[i].moe && scenes[i].moe.panels) this.panelsByScene.set(String(scenes[i].key), WV.mapOf(scenes[i].moe.panels));
    }
    this.layerRow = new Map();        // MoE layer id -> row of moe.json's rows x experts arrays
    var layers = this.moe.layers || [];
    for (var j = 0; j < layers.length; j++) this.layerRow.set(layers[j], j);
  }

  /** The panel info of an item of the current scene, or null. */
  Model.prototype.panel = function (name) {
    var model = this.app.model;
    var panels = model ? this.panelsByScene.get(model.key) : null;
    var info = panels ? panels.get(String(name)) : undefined;
    return info === undefined ? null : info;
  };

  /** rows x experts array of a summary statistic (null when absent). */
  Model.prototype.source = function (stat, role) {
    var moe = this.moe;
    if (stat === "row_norm") return moe.router ? moe.router.row_norm : null;
    if (stat === "bias") return moe.router ? moe.router.bias : null;
    if (stat === "freq") return moe.routing ? moe.routing.freq : null;
    var byRole = own(moe.stats || {}, stat);
    return byRole ? own(byRole, role) || null : null;
  };

  /** Is expert e of MoE row j dead in `role` (every element exactly zero: rms 0)? */
  Model.prototype.dead = function (role, j, e) {
    var rms = this.source("rms", role);
    return !!rms && !!rms[j] && rms[j][e] === 0;
  };

  /**
   * The similarity (or co-activation) matrix of a panel: {matrix} when it is in the manifest or
   * a loaded sidecar, {loading: true} while its sidecar loads (`then()` runs once it has), or
   * {matrix: null}.
   */
  Model.prototype.matrix = function (info, then) {
    var moe = this.moe;
    var key = String(info.layer);
    var entry;
    if (info.metric === "coact") entry = moe.routing ? own(moe.routing.coact || {}, key) : undefined;
    else {
      var byRole = own(moe.similarity || {}, info.metric);
      entry = byRole ? own(own(byRole, info.role) || {}, key) : undefined;
    }
    if (Array.isArray(entry)) return { matrix: entry };
    var file = sidecarFile(info.layer);
    if (!entry || file === null || entry.sidecar !== file) return { matrix: null };
    var side = sidecars.get(info.layer);
    if (side) {
      var m = info.metric === "coact" ? side.coact : own(own(side.similarity || {}, info.metric) || {}, info.role);
      return { packed: sidecarMatrix(side, m), matrix: null, sidecar: file };
    }
    loadSidecar(file, then || function () {});
    return { loading: true, sidecar: file };
  };

  /**
   * What a hit shows: {title, rows: [[label, text, cls]...], value} for a cell of an MoE panel,
   * or null. `then()` runs when numbers still loading have arrived.
   */
  Model.prototype.describe = function (hit, then) {
    if (!hit || !hit.item || hit.eRow === undefined) return null;
    var info = this.panel(hit.item.name);
    if (!info) return null;
    var r = hit.eRow, c = hit.eCol;
    var out = { title: String(info.title || hit.item.name), rows: [], value: null, status: "value" };
    function row(label, text, cls) { out.rows.push([label, text, cls || null]); }
    var kind = this.app.model.scene.moe.kind;
    if (kind === "similarity") {
      var got = this.matrix(info, then);
      var j = this.layerRow.has(info.layer) ? this.layerRow.get(info.layer) : null;
      row("layer", String(info.layer));
      row("experts", r + " and " + c);
      row("metric", (METRIC_LABELS[info.metric] || info.metric) + (info.role ? " \u00b7 " + info.role : ""));
      if (got.loading) { row("value", "loading\u2026"); out.status = "loading"; return out; }
      var v = got.matrix && got.matrix[r] ? got.matrix[r][c] : null;
      if (got.packed && r < got.packed.e && c < got.packed.e) {
        v = got.packed.data[r * got.packed.e + c];
        if (!isFinite(v)) v = null;
      }
      out.value = typeof v === "number" ? v : null;
      var deadR = info.role && j !== null && this.dead(info.role, j, r);
      var deadC = info.role && j !== null && this.dead(info.role, j, c);
      if (out.value === null && (deadR || deadC)) {
        out.status = "dead";
        row("value", "none: expert " + (deadR ? r : c) + " is dead (all zeros)", "wv-alert");
      } else {
        row("value", got.packed ? exact32(out.value) : exact(out.value));
      }
      if (info.mode) row("CKA", ckaMode(info));
      if (info.step > 1) row("cosine", "from every " + info.step + "th element");
      return out;
    }
    var layer = info.rows ? info.rows[r] : null;
    var mj = info.moe_rows ? info.moe_rows[r] : null;
    row("layer", layer === null || layer === undefined ? "—" : String(layer));
    row("expert", String(c));
    row("statistic", (STAT_LABELS[info.stat] || info.stat) + (info.role ? " \u00b7 " + info.role : ""));
    if (mj === null || mj === undefined) {
      out.status = "dense";
      row("value", "dense layer (no routed experts)", "wv-note");
      return out;
    }
    var src = this.source(info.stat, info.role);
    var raw = src && src[mj] ? src[mj][c] : null;
    out.value = typeof raw === "number" ? raw : null;
    var dead = info.role ? this.dead(info.role, mj, c) : info.stat === "freq" && raw === 0;
    if (kind === "relative") {
      var med = info.medians ? info.medians[mj] : null;
      var rel = null;
      if (typeof raw === "number" && typeof med === "number" && !dead) {
        rel = info.relative === "difference" ? raw - med : med !== 0 ? raw / med : null;
      }
      row(info.relative === "difference" ? "\u2212 median" : "\u00f7 median", exact(rel));
      row("layer median", exact(med));
      out.relative = rel;
    }
    row("value", exact(out.value));
    if (dead) {
      out.status = "dead";
      row("status", info.stat === "freq" ? "never routed" : "dead expert (all zeros)", "wv-alert");
    }
    return out;
  };

  WV.moe = {
    applies: applies,
    Model: Model,
    exact: exact,
    exact32: exact32,
    STAT_LABELS: STAT_LABELS,
    METRIC_LABELS: METRIC_LABELS,
    ckaMode: ckaMode,
    sidecars: sidecars,
    of: function (app) {
      var p = app.panel("moe");
      return p ? p.model : null;
    },
  };

  WV.panels.register("moe", {
    applies: applies,
    create: function (app) { return { model: new Model(app), hook: "moe" }; },
  });
})();
