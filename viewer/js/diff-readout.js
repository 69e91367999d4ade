/*
 * Panel "diff-readout" of a diff bundle: the readout's status, A → B and Δ rows for the element
 * under the cursor (hook onHover), and the pair's numbers in the stats box (hook stats).
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el, fmtNum = WV.fmtNum, fmtCount = WV.fmtCount;
  var D = WV.diff;

  function DiffReadout(app) {
    this.app = app;
    this.model = D.of(app);
    var h = WV.h;
    this.dom = {
      status: h("dd", { id: "wv-r-status", text: "—" }),
      ab: h("dd", { id: "wv-r-ab", text: "—" }),
      delta: h("dd", { id: "wv-r-delta", text: "—" }),
    };
    app.readout.addRows(h("div", { id: "wv-r-diff", "class": "wv-contents" }, [
      h("dt", { text: "status" }), this.dom.status,
      h("dt", { text: "A \u2192 B" }), this.dom.ab,
      h("dt", { text: "\u0394 = B \u2212 A" }), this.dom.delta,
    ]));
  }

  /**
   * The delta scene's sidecar sample at the hovered pixel (it holds A and B): the hover's own
   * in the delta scene; in scenes a / b (the same geometry), asked for here.
   */
  DiffReadout.prototype.pairSample = function (info) {
    var app = this.app;
    if (!info || !info.cxy) return null;
    if (app.model.key === "delta") return info.sample;
    var delta = app.sceneByKey("delta");
    if (!delta || !WV.sameGeometry(app.model.scene, delta)) return null;
    return app.sidecars.sample("delta", info.cxy[0], info.cxy[1]);
  };

  DiffReadout.prototype.onHover = function (hit, info) {
    var d = this.dom;
    var pair = hit && hit.item && hit.eRow !== undefined ? this.model.pair(hit.item.name) : null;
    if (!pair) {
      d.status.textContent = d.ab.textContent = d.delta.textContent = "—";
      d.status.classList.remove("wv-alert");
      return false;
    }
    var r = this.model.describe(pair, hit.eRow, hit.eCol, this.pairSample(info));
    d.status.textContent = r.status;
    d.status.classList.toggle("wv-alert", r.alert);
    d.ab.textContent = r.ab;
    d.delta.textContent = r.delta;
    return false;
  };

  /** The stats box of a pair: the numbers of docs/diff-manifest.md instead of value stats. */
  DiffReadout.prototype.stats = function (item, tbody) {
    var pair = this.model.pair(item.name);
    if (!pair) return false;
    var app = this.app;
    var n = pair.numbers || null;
    var rows = [];
    function row(label, text, cls) { rows.push([label, text, cls || null]); }
    row("status", D.statusLabel(pair.status), pair.status === "identical" ? "wv-good" : "wv-warn");
    var t = item.tensor || {};
    row("dtype", t.dtype ? String(t.dtype) : (pair.dtype_a || "—") + "\u2192" + (pair.dtype_b || "—"));
    var sa = WV.fmtShape(pair.shape_a), sb = WV.fmtShape(pair.shape_b);
    if (sa === sb) row("shape", sa);
    else { row("shape A", pair.shape_a ? sa : "—"); row("shape B", pair.shape_b ? sb : "—"); }
    if (pair.a !== null && pair.b !== null && pair.a !== undefined && String(pair.a) !== String(pair.b)) {
      row("name in A", String(pair.a));
    }
    if (pair.paired_by && pair.paired_by !== "exact") row("paired by", String(pair.paired_by));
    if (pair.transform) row("transform", String(pair.transform));
    if (n) {
      row("\u2016\u0394\u2016/\u2016A\u2016", fmtNum(n.rel));
      row("cosine", D.fmtCosine(n.cosine));
      row("\u2016A\u2016 \u2016B\u2016", fmtNum(n.a_norm) + "  " + fmtNum(n.b_norm));
      row("\u2016\u0394\u2016", fmtNum(n.delta_norm));
      row("max|\u0394|", fmtNum(n.max_abs_delta));
      var total = D.comparedOf(pair);
      row("changed", typeof n.changed === "number"
        ? fmtCount(n.changed) + (total ? " of " + fmtCount(total) + " (" + WV.fmtFraction(n.changed / total) + ")" : "") : "—",
        n.changed > 0 ? "wv-warn" : "wv-good");
      if (n.changed > 0) {
        row("rows", D.fmtIndexList(n.changed_rows, "row"));
        row("cols", D.fmtIndexList(n.changed_cols, "col"));
        var bb = n.bbox;
        row("bbox", Array.isArray(bb) ? "rows " + D.fmtSpan(bb[0], bb[1]) + " \u00b7 cols " + D.fmtSpan(bb[2], bb[3]) : "—");
      }
      row("non-finite new", fmtCount(n.nonfinite_introduced), n.nonfinite_introduced > 0 ? "wv-alert" : null);
      var rk = D.rank99(pair);
      if (rk) {
        var share = n.svd.top_share || {};
        var parts = [];
        var keys = Object.keys(share).sort(function (x, y) { return Number(x) - Number(y); });
        for (var k = 0; k < keys.length; k++) {
          if (keys[k] === "1" || keys[k] === "8" || k === keys.length - 1) parts.push("top " + keys[k] + " " + WV.fmtFraction(share[keys[k]]));
        }
        row("rank (99 %)", rk.text + (parts.length ? "  (" + parts.join(", ") + ")" : ""));
      }
    }
    var s = app.scaleOf(item);
    row(app.model.kind.scaleName, fmtNum(s));
    var b = typeof pair.block === "number" ? WV.own(this.model.diff.blocks, String(pair.block)) : null;
    if (b) {
      row("block " + pair.block, fmtCount(b.changed_tensors) + " changed \u00b7 \u2016\u0394\u2016/\u2016A\u2016 " + fmtNum(b.rel));
    }
    for (var i = 0; i < rows.length; i++) {
      var tr = el("tr");
      tr.appendChild(el("th", null, rows[i][0]));
      tr.appendChild(el("td", rows[i][2], rows[i][1]));
      tbody.appendChild(tr);
    }
    return true;
  };

  WV.panels.register("diff-readout", {
    applies: WV.diff.applies,
    create: function (app) { return new DiffReadout(app); },
  });
})();
