/*
 * Diff bundles (docs/diff-manifest.md: manifest.diff.pairs, one per tensor of A and of B;
 * colormaps.delta; scenes "delta" and "a" / "b" sharing one geometry). This file: WV.diff, the
 * pairs by name (WV.diff.Model) and their formatting, and the panel "diff" that holds the model
 * for the other diff plug-ins (app.panel("diff").model).
 */
(function () {
  "use strict";

  var WV = window.WV;
  var fmtCount = WV.fmtCount, hasOwn = WV.hasOwn;

  var STATUS_ORDER = ["shape-changed", "only-in-b", "only-in-a", "changed", "identical"];
  var STATUS_FILTER_ORDER = ["changed", "shape-changed", "only-in-a", "only-in-b", "identical"];
  var STATUS_LABEL = {
    "identical": "identical", "changed": "changed", "shape-changed": "shape changed",
    "only-in-a": "only in A", "only-in-b": "only in B",
  };
  var ELEMENTS_CAP = 64;      // pairs list every changed element when there are at most this many

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

  /** The pairs of a diff bundle, by display name, and what can be said about one element. */
  function Model(manifest) {
    var diff = manifest.diff || {};
    this.diff = diff;
    this.mode = diff.mode === "finetune" ? "finetune" : "compare";
    this.metric = diff.metric ? String(diff.metric) : null;
    this.pairs = Array.isArray(diff.pairs) ? diff.pairs : [];
    this.byName = new Map();
    for (var i = 0; i < this.pairs.length; i++) {
      var p = this.pairs[i];
      p._order = i;
      this.byName.set(String(p.name), p);
    }
    this._elements = new Map();   // name -> Map "row,col" -> [row, col, a, b]
  }

  Model.prototype.pair = function (name) {
    var p = this.byName.get(String(name));
    return p === undefined ? null : p;
  };

  /** [a, b] of element [eRow, eCol] when `elements` lists it, else null. */
  Model.prototype.element = function (pair, eRow, eCol) {
    if (!Array.isArray(pair.elements)) return null;
    var map = this._elements.get(String(pair.name));
    if (!map) {
      map = new Map();
      for (var i = 0; i < pair.elements.length; i++) {
        var e = pair.elements[i];
        map.set(e[0] + "," + e[1], e);
      }
      this._elements.set(String(pair.name), map);
    }
    var hit = map.get(eRow + "," + eCol);
    return hit ? [elementValue(hit[2]), elementValue(hit[3])] : null;
  };

  /** True when the pair's numbers prove element [eRow, eCol] unchanged without listing it. */
  Model.prototype.knownUnchanged = function (pair, eRow, eCol) {
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

  /**
   * The readout of element [eRow, eCol] of a pair: {status, ab, delta, alert}. `sample`: what
   * the delta scene's sidecar says of the element (WV.Sidecars.sample; A and B when it holds
   * values), or null.
   */
  Model.prototype.describe = function (pair, eRow, eCol, sample) {
    var st = pair.status;
    var out = { status: statusLabel(st), ab: "—", delta: "—", alert: st !== "identical" };
    if (st === "only-in-a") {
      out.ab = this.mode === "finetune" ? "only in A (base model)" : "only in A";
      return out;
    }
    if (st === "only-in-b") { out.ab = "only in B"; return out; }
    // the same shape: the same view, and the element is on both sides (a fused expert
    // tensor's view is not the one view2d gives: README "Layout")
    var same = JSON.stringify(pair.shape_a) === JSON.stringify(pair.shape_b);
    var va = view2d(pair.shape_a), vb = view2d(pair.shape_b);
    var inA = same || !va || (eRow < va[0] && eCol < va[1]);
    var inB = same || !vb || (eRow < vb[0] && eCol < vb[1]);
    if (!(inA && inB)) {
      out.ab = inA ? "only in A (outside B\u2019s shape)" : inB ? "only in B (outside A\u2019s shape)" : "in neither";
      return out;
    }
    if (pair.compared === false) { out.ab = "not compared (different architectures)"; return out; }
    if (sample && sample.state === "ready" && sample.a !== undefined && sample.b !== undefined) {
      var same = sample.a === sample.b || (isNaN(sample.a) && isNaN(sample.b));
      var exact = WV.fmtExact || fmtValue;
      out.ab = same ? "unchanged: " + exact(sample.a, sample.dtype)
        : exact(sample.a, sample.dtype) + " \u2192 " + exact(sample.b, sample.dtype);
      out.delta = same ? "0" : fmtDelta(sample.b - sample.a);
      if (!same) out.status += " \u00b7 this element changed";
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
    // (a sidecar being fetched or decoded: its values come)
    out.ab = sample && (sample.state === "loading" || sample.state === "decoding") ? "loading\u2026"
      : "not stored (more than " + ELEMENTS_CAP + " changes)";
    return out;
  };

  function pairNum(p, key) {
    var n = p.numbers;
    var v = n ? n[key] : null;
    return typeof v === "number" && isFinite(v) ? v : null;
  }

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
   * The change panel below the map (A -> B, summary, diagnosis, filters, the table), built once
   * for diff-summary.js and change-table.js; its parts are found by id.
   */
  function changePanel() {
    var panel = document.getElementById("wv-changes");
    if (panel) return panel;
    var h = WV.h;
    panel = h("section", { id: "wv-changes", "aria-label": "Changes between A and B" }, [
      h("div", { "class": "wv-ct-grip", id: "wv-ct-grip", title: "Drag to resize" }),
      h("div", { "class": "wv-ct-head" }, [
        h("h2", { text: "Changes" }),
        h("div", { id: "wv-ct-sides", "class": "wv-ct-sides" }),
        h("button", { id: "wv-ct-toggle", type: "button", "aria-expanded": "true",
                      "aria-controls": "wv-ct-body-wrap", text: "Hide table" }),
      ]),
      h("div", { id: "wv-ct-body-wrap", "class": "wv-ct-body-wrap" }, [
        h("div", { id: "wv-ct-summary", "class": "wv-ct-summary" }),
        h("ul", { id: "wv-ct-diagnosis", "class": "wv-ct-diagnosis" }),
        h("div", { "class": "wv-ct-controls" }, [
          h("div", { id: "wv-ct-filters", "class": "wv-ct-filters", role: "group",
                     "aria-label": "Show pairs with status" }),
          h("input", { id: "wv-ct-name", type: "search", placeholder: "Filter names\u2026",
                       autocomplete: "off", spellcheck: "false", "aria-label": "Filter the table by name" }),
          h("span", { id: "wv-ct-count", "class": "wv-ct-count", "aria-live": "polite" }),
        ]),
        h("div", { id: "wv-ct-scroll", "class": "wv-ct-scroll" }, [
          h("table", { id: "wv-ct-table", "aria-label": "Tensor pairs" }, [
            h("colgroup", { id: "wv-ct-cols" }),
            h("thead", null, [h("tr", { id: "wv-ct-headrow" })]),
            h("tbody", { id: "wv-ct-rows" }),
          ]),
        ]),
      ]),
    ]);
    document.getElementById("wv-main").appendChild(panel);
    return panel;
  }

  WV.diff = {
    changePanel: changePanel,
    STATUS_ORDER: STATUS_ORDER,
    STATUS_FILTER_ORDER: STATUS_FILTER_ORDER,
    Model: Model,
    statusLabel: statusLabel,
    view2d: view2d,
    fmtValue: fmtValue,
    fmtDelta: fmtDelta,
    fmtCosine: fmtCosine,
    fmtIndexList: fmtIndexList,
    fmtSpan: fmtSpan,
    pairNum: pairNum,
    comparedOf: comparedOf,
    rank99: rank99,
    /** Whether a manifest compares two checkpoints (the diff panels apply). */
    applies: function (manifest) { return !!manifest.diff && typeof manifest.diff === "object"; },
    /** The diff model of the app's bundle, or null. */
    of: function (app) {
      var holder = app.panel("diff");
      return holder ? holder.model : null;
    },
  };

  WV.panels.register("diff", {
    applies: WV.diff.applies,
    create: function (app) {
      document.body.classList.add("wv-is-diff");
      var model = new Model(app.manifest);
      return {
        model: model,
        /** The search box also finds a pair by its tensor's name in A and in B. */
        searchNames: function (name) {
          var p = model.pair(name);
          return p ? [["A", p.a], ["B", p.b]] : [];
        },
      };
    },
  });
})();
