/*
 * WV.Readout: the "Under the cursor" box (name, element, index in the tensor's own shape, dtype,
 * shape, scale, group, canvas pixel) and the stats box of the hovered or selected tensor. Panels
 * add rows to the readout (hook onHover) and may take over the stats box (hook stats).
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el, fmtNum = WV.fmtNum, fmtCount = WV.fmtCount;

  function Readout(app) {
    this.app = app;
    function byId(id) { return document.getElementById(id); }
    this.dom = {
      name: byId("wv-r-name"), group: byId("wv-r-group"), element: byId("wv-r-element"),
      index: byId("wv-r-index"), dtype: byId("wv-r-dtype"), shape: byId("wv-r-shape"),
      scale: byId("wv-r-scale"), scaleLabel: byId("wv-r-scale-label"), canvas: byId("wv-r-canvas"),
      value: byId("wv-r-value"), range: byId("wv-r-range"),
      sTitle: byId("wv-s-title"), sName: byId("wv-s-name"), sTable: byId("wv-s-table"),
    };
  }

  /** Add rows (dt / dd pairs, or a node holding them) to the readout, above "group". */
  Readout.prototype.addRows = function (node) {
    var before = this.dom.group.previousElementSibling;
    before.parentNode.insertBefore(node, before);
  };

  /** A new scene: the scale row says which scale the scene's colours use. */
  Readout.prototype.onScene = function (model) {
    this.dom.scaleLabel.textContent = model.kind.readoutScaleLabel(this.app);
  };

  /**
   * The element index in the tensor's own shape. The 2-D view is a row-major reshape: its
   * columns are the last dims (dims 1.., or 2.. for a fused expert tensor, whose experts'
   * matrices are stacked: README "Layout"), its rows the dims before them.
   */
  Readout.prototype.ndIndex = function (t, eRow, eCol) {
    var shape = t.shape || [];
    if (shape.length === 0) return "[]";
    if (shape.length === 1) return "[" + eCol + "]";
    var k = 1;                   // the first dim of the columns
    if (t.view) {
      var cols = 1;
      k = shape.length;
      while (k > 1 && cols < t.view[1]) cols *= shape[--k];
      if (cols !== t.view[1]) k = 1;
    }
    var idx = [];
    for (var i = shape.length - 1; i >= 1; i--) {
      var n = shape[i];
      if (i >= k) { idx.unshift(eCol % n); eCol = Math.floor(eCol / n); }
      else { idx.unshift(eRow % n); eRow = Math.floor(eRow / n); }
    }
    idx.unshift(eRow);
    return "[" + idx.join(", ") + "]";
  };

  /**
   * Show a hit (or null) at canvas pixel cxy = [cx, cy]; `scale` is its colour scale, `sample`
   * what the scene's sidecar says of the pixel (WV.Sidecars.sample).
   */
  Readout.prototype.show = function (hit, cxy, scale, sample) {
    this.showValue(hit, sample || { state: "none" }, scale);
    var d = this.dom;
    var name = hit && hit.item ? hit.item.name : null;
    d.name.textContent = name === null ? "—" : name;
    WV.wrapAtSeparators(d.name);
    d.name.classList.toggle("wv-empty", name === null);
    d.canvas.textContent = cxy ? "(" + cxy[0] + ", " + cxy[1] + ")" + (hit && hit.h !== undefined ? "  h " + hit.h : "") : "—";
    var t = hit ? hit.tensor : null;
    if (hit && hit.file !== undefined) {
      d.element.textContent = "byte " + fmtCount(hit.byteOffset);
      d.index.textContent = "—";
      d.group.textContent = "—";
    } else if (hit) {
      d.element.textContent = "[" + hit.eRow + ", " + hit.eCol + "]";
      d.index.textContent = t ? this.ndIndex(t, hit.eRow, hit.eCol) : "—";
      // a block's tensor: its block; any other: the groups framing it ("embeddings · lm_head")
      var group = t && t.block !== null && t.block !== undefined ? "block " + t.block
        : cxy ? this.app.model.groupsAt(cxy[0], cxy[1]).join(" \u00b7 ") || "—" : "—";
      d.group.textContent = hit.label ? (group === "—" ? "" : group + " \u00b7 ") + hit.label : group;
      WV.wrapAtSeparators(d.group);
    } else {
      d.element.textContent = "—";
      d.index.textContent = "—";
      d.group.textContent = "—";
    }
    d.dtype.textContent = t && t.dtype ? String(t.dtype) : "—";
    d.shape.textContent = t ? WV.fmtShape(t.shape) : "—";
    d.scale.textContent = fmtNum(scale);
  };

  var WAITING = {
    loading: "loading\u2026", error: "not available (sidecar missing or broken)",
    unsupported: "needs DecompressionStream (a 2023+ browser)", none: "\u2014",
  };

  /** The value rows: the stored value and the interval its colour stands for (the scene kind's words). */
  Readout.prototype.showValue = function (hit, sample, scale) {
    var d = this.dom;
    if (!d.value || !d.range) return;
    var model = this.app.model;
    var st = hit ? sample.state : "none";
    if (st === "ready") {
      d.value.textContent = model.kind.valueText(this.app, sample, hit);
      d.range.textContent = model.kind.rangeText(this.app, model.colormap || {}, sample.index, scale, hit);
    } else {
      d.value.textContent = d.range.textContent = WV.hasOwn(WAITING, st) ? WAITING[st] : "\u2014";
    }
  };

  /** The stats box of an item (null: none); a panel's `stats` hook may fill it instead. */
  Readout.prototype.stats = function (item) {
    var d = this.dom;
    var app = this.app;
    WV.clear(d.sTable);
    d.sTitle.textContent = app.selected ? "Selected tensor" : "Tensor under cursor";
    if (!item) {
      d.sName.textContent = app.selected ? "—" : "hover or click a tensor";
      d.sName.classList.add("wv-empty");
      return;
    }
    d.sName.textContent = item.name;
    WV.wrapAtSeparators(d.sName);
    d.sName.classList.remove("wv-empty");
    if (app.callPanels("stats", item, d.sTable)) return;
    var t = item.tensor;
    if (!t) return;
    var st = t.stats || {};
    var rows = [
      ["min", fmtNum(st.min)], ["max", fmtNum(st.max)],
      ["mean", fmtNum(st.mean)], ["std", fmtNum(st.std)],
      ["rms", fmtNum(st.rms)], ["zeros", WV.fmtFraction(st.zero_fraction)],
      ["NaN", fmtCount(st.nan_count), st.nan_count > 0], ["±Inf", fmtCount(st.inf_count), st.inf_count > 0],
      ["scale s", fmtNum(t.scale)], ["elements", fmtCount(WV.numel(t.shape))],
    ];
    for (var i = 0; i < rows.length; i++) {
      var tr = el("tr");
      tr.appendChild(el("th", null, rows[i][0]));
      tr.appendChild(el("td", rows[i][2] ? "wv-alert" : null, rows[i][1]));
      d.sTable.appendChild(tr);
    }
  };

  WV.Readout = Readout;
})();
