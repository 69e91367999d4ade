/*
 * Panel "moe-readout" of an MoE bundle: in the readout, the hovered cell's panel, layer,
 * expert(s), statistic or metric and its exact number (hook onHover); in the stats box, what a
 * panel shows (hook stats); the hovered panel's colour range in the legend; keys w / s / r / c
 * switch to the weights, summary, relative summary and similarity scenes (each keeps its view).
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el, exact = function (v) { return WV.moe.exact(v); };

  var SCENE_KEYS = new Map([["w", "main"], ["s", "moe-summary"], ["r", "moe-relative"], ["c", "moe-similarity"]]);

  function MoeReadout(app) {
    this.app = app;
    this.model = WV.moe.of(app);
    this.dom = { box: WV.h("div", { id: "wv-r-moe", "class": "wv-contents" }) };
    app.readout.addRows(this.dom.box);
    this.lastHit = null;
    this._keys(app);
  }

  MoeReadout.prototype._keys = function (app) {
    WV.sceneKeys(app, SCENE_KEYS, "");
  };

  MoeReadout.prototype.onScene = function () {
    this.onHover(null);
  };

  MoeReadout.prototype.onHover = function (hit) {
    var self = this;
    var box = this.dom.box;
    WV.clear(box);
    this.lastHit = hit;
    var got = this.model.describe(hit, function () {
      if (self.lastHit === hit) self.onHover(hit);   // a sidecar arrived: show its number
    });
    box.setAttribute("data-status", got ? got.status : "none");
    if (!got) return false;
    box.appendChild(el("dt", null, "panel"));
    box.appendChild(el("dd", null, got.title));
    for (var i = 0; i < got.rows.length; i++) {
      box.appendChild(el("dt", null, got.rows[i][0]));
      var dd = el("dd", got.rows[i][2], got.rows[i][1]);
      if (got.rows[i][0] === "value") dd.id = "wv-r-moe-value";
      box.appendChild(dd);
    }
    var info = this.model.panel(hit.item.name);
    var values = this.app.legend.dom.values;
    if (info && typeof info.lo === "number" && typeof info.hi === "number") {
      values.textContent = got.title + ": lo " + exact(info.lo) + "  hi " + exact(info.hi);
      values.classList.remove("wv-empty");
    }
    return false;
  };

  /** The stats box of a panel: what it shows and its colour range. */
  MoeReadout.prototype.stats = function (item, tbody) {
    var info = this.model.panel(item.name);
    if (!info) return false;
    var rows = [];
    if (info.stat) rows.push(["statistic", WV.moe.STAT_LABELS[info.stat] || info.stat]);
    if (info.metric) rows.push(["metric", WV.moe.METRIC_LABELS[info.metric] || info.metric]);
    if (info.role) rows.push(["role", info.role]);
    if (info.layer !== undefined && info.layer !== null) rows.push(["layer", String(info.layer)]);
    if (info.relative) rows.push(["relative", info.relative === "ratio" ? "v \u00f7 layer median" : "v \u2212 layer median"]);
    rows.push(["colour lo", exact(info.lo)]);
    rows.push(["colour hi", exact(info.hi)]);
    if (info.mode) rows.push(["CKA", WV.moe.ckaMode(info)]);
    if (Array.isArray(info.rows)) rows.push(["rows", info.rows.length + " layers (dense striped)"]);
    for (var i = 0; i < rows.length; i++) {
      var tr = el("tr");
      tr.appendChild(el("th", null, rows[i][0]));
      tr.appendChild(el("td", null, rows[i][1]));
      tbody.appendChild(tr);
    }
    return true;
  };

  WV.panels.register("moe-readout", {
    applies: WV.moe.applies,
    create: function (app) { return new MoeReadout(app); },
  });
})();
