/*
 * Panel "diff-summary" of a diff bundle, at the head of the change panel below the map: A -> B
 * (titles, formats, finetune / metric badges), the warnings (diff.warnings: two different
 * architectures), the pair counts by status, and the diagnosis sentences (the first three, then
 * "show all").
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el, clear = WV.clear, fmtCount = WV.fmtCount;
  var D = WV.diff;

  /** Map status -> number of pairs. */
  function statusCounts(pairs) {
    var counts = new Map();
    for (var i = 0; i < pairs.length; i++) {
      var st = String(pairs[i].status);
      counts.set(st, (counts.get(st) || 0) + 1);
    }
    return counts;
  }
  D.statusCounts = statusCounts;

  function DiffSummary(app) {
    this.app = app;
    this.model = D.of(app);
    D.changePanel();
    this.dom = {
      panel: document.getElementById("wv-changes"),
      sides: document.getElementById("wv-ct-sides"),
      summary: document.getElementById("wv-ct-summary"),
      diagnosis: document.getElementById("wv-ct-diagnosis"),
    };
    this._build();
  }

  DiffSummary.prototype._build = function () {
    var self = this;
    var d = this.dom;
    var diff = this.model.diff;
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
    if (this.model.mode === "finetune") {
      var badge = el("span", "wv-badge", "finetune of A");
      if (diff.finetune_reason) badge.title = String(diff.finetune_reason);
      d.sides.appendChild(badge);
    }
    if (this.model.metric) d.sides.appendChild(el("span", "wv-badge", "metric " + this.model.metric));
    d.sides.title = d.sides.textContent;
    // warnings first: what the rest of the panel must be read with
    var warnings = Array.isArray(diff.warnings) ? diff.warnings : [];
    var box = document.getElementById("wv-ct-warnings");
    if (!box) {
      box = WV.h("ul", { id: "wv-ct-warnings", "class": "wv-ct-warnings", role: "alert" });
      // outside the part "Hide table" collapses: a warning stays in view
      d.panel.insertBefore(box, document.getElementById("wv-ct-body-wrap"));
    }
    clear(box);
    for (var w = 0; w < warnings.length; w++) box.appendChild(el("li", null, warnings[w]));
    box.hidden = warnings.length === 0;
    // summary counts and diagnosis
    var counts = statusCounts(this.model.pairs);
    var sum = diff.summary || {};
    var keyOf = { "changed": "changed", "shape-changed": "shape_changed", "only-in-a": "only_in_a",
                  "only-in-b": "only_in_b", "identical": "identical" };
    clear(d.summary);
    d.summary.appendChild(el("b", null, fmtCount(this.model.pairs.length)));
    d.summary.appendChild(document.createTextNode(" pairs: "));
    for (var k = 0; k < D.STATUS_FILTER_ORDER.length; k++) {
      var status = D.STATUS_FILTER_ORDER[k];
      var n = typeof sum[keyOf[status]] === "number" ? sum[keyOf[status]] : counts.get(status) || 0;
      if (k) d.summary.appendChild(document.createTextNode(" \u00b7 "));
      d.summary.appendChild(el("b", null, fmtCount(n)));
      d.summary.appendChild(document.createTextNode(" " + D.statusLabel(status)));
    }
    if (typeof sum.elements_changed === "number") {
      var of = typeof sum.elements_compared === "number" ? sum.elements_compared : null;
      d.summary.appendChild(document.createTextNode(" \u2014 "));
      d.summary.appendChild(el("b", null, fmtCount(sum.elements_changed)));
      d.summary.appendChild(document.createTextNode(
        of === null ? " elements changed" :
          " of " + fmtCount(of) + " compared elements changed" + (of > 0 ? " (" + WV.fmtFraction(sum.elements_changed / of) + ")" : "")));
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
        self.app.callPanels("onLayout");
      });
      var holder = el("li", "wv-more");
      holder.appendChild(more);
      d.diagnosis.appendChild(holder);
    }
  };

  WV.panels.register("diff-summary", {
    applies: WV.diff.applies,
    create: function (app) { return new DiffSummary(app); },
  });
})();
