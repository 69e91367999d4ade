/*
 * Panel "changes" of a diff bundle: the sortable, filterable table of diff.pairs below the map.
 * Rows are rendered lazily (only those in view, between spacer rows), so thousands of pairs stay
 * cheap. Keyboard, selection and resizing: change-table-nav.js.
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el, clear = WV.clear, fmtNum = WV.fmtNum, fmtCount = WV.fmtCount;
  var D = WV.diff;
  var CT_OVERSCAN = 12;       // table rows rendered above and below the visible ones

  /** Columns of the change table: sort key (null sorts last), cell text, first sort direction. */
  var CT_COLUMNS = [
    { key: "name", label: "name", width: null, dir: 1, get: function (p) { return String(p.name); } },
    { key: "status", label: "status", width: 122, dir: 1,
      get: function (p) { var i = D.STATUS_ORDER.indexOf(p.status); return i < 0 ? D.STATUS_ORDER.length : i; } },
    { key: "block", label: "block", width: 58, dir: 1, num: true,
      get: function (p) { return typeof p.block === "number" ? p.block : null; },
      text: function (p) { return typeof p.block === "number" ? String(p.block) : "—"; } },
    { key: "rel", label: "\u2016\u0394\u2016/\u2016A\u2016", width: 92, dir: -1, num: true,
      get: function (p) { return D.pairNum(p, "rel"); },
      text: function (p) { return fmtNum(D.pairNum(p, "rel")); } },
    { key: "cosine", label: "cosine", width: 104, dir: 1, num: true,
      get: function (p) { return D.pairNum(p, "cosine"); },
      text: function (p) { return D.fmtCosine(D.pairNum(p, "cosine")); } },
    { key: "max_abs_delta", label: "max|\u0394|", width: 88, dir: -1, num: true,
      get: function (p) { return D.pairNum(p, "max_abs_delta"); },
      text: function (p) { return fmtNum(D.pairNum(p, "max_abs_delta")); } },
    { key: "changed", label: "changed elements", width: 146, dir: -1, num: true,
      get: function (p) { return D.pairNum(p, "changed"); },
      text: function (p) { var v = D.pairNum(p, "changed"); return v === null ? "—" : fmtCount(v); } },
    { key: "rank", label: "rank (99 %)", width: 92, dir: -1, num: true,
      title: "rank_99: the fewest singular values holding 99 % of \u2016\u0394\u2016\u00b2 (randomized SVD of sampled rows)",
      get: function (p) { var r = D.rank99(p); return r === null ? null : r.sort; },
      text: function (p) { var r = D.rank99(p); return r === null ? "—" : r.text; } },
  ];

  /** The table; `hook` makes it window.weightvis.table. */
  function ChangeTable(app) {
    this.app = app;
    this.model = D.of(app);
    this.hook = "table";
    D.changePanel();
    function byId(id) { return document.getElementById(id); }
    this.dom = {
      panel: byId("wv-changes"), grip: byId("wv-ct-grip"), toggle: byId("wv-ct-toggle"),
      filters: byId("wv-ct-filters"), name: byId("wv-ct-name"), count: byId("wv-ct-count"),
      scroll: byId("wv-ct-scroll"), cols: byId("wv-ct-cols"), head: byId("wv-ct-headrow"),
      body: byId("wv-ct-rows"),
    };
    this.counts = D.statusCounts(this.model.pairs);
    this.show = new Map();     // status -> shown
    this.sortKey = null;       // null: status, then ||Δ||/||A|| descending
    this.sortDir = 1;
    this.rows = [];            // the pairs shown, in order
    this.active = 0;           // index in rows of the row that takes the focus
    this.selectedName = null;
    this.rowH = 23;            // measured after the first render
    this._frame = 0;
    this._build();
    this.refresh();
  }
  ChangeTable.COLUMNS = CT_COLUMNS;

  ChangeTable.prototype._build = function () {
    var self = this;
    var d = this.dom;
    d.panel.hidden = false;
    // status filters: everything but "identical" by default
    clear(d.filters);
    var counts = this.counts;
    var seen = D.STATUS_FILTER_ORDER.slice();
    counts.forEach(function (n, name) { if (seen.indexOf(name) < 0) seen.push(name); });
    for (var f = 0; f < seen.length; f++) {
      var stf = seen[f];
      this.show.set(stf, stf !== "identical");
      var label = el("label");
      var box = el("input");
      box.type = "checkbox";
      box.checked = this.show.get(stf);
      box.value = stf;
      box.addEventListener("change", (function (s2, b2) {
        return function () { self.show.set(s2, b2.checked); self.refresh(); };
      })(stf, box));
      label.appendChild(box);
      label.appendChild(document.createTextNode(D.statusLabel(stf)));
      label.appendChild(el("span", "wv-n", fmtCount(counts.get(stf) || 0)));
      d.filters.appendChild(label);
    }
    d.name.addEventListener("input", function () { self.refresh(); });
    // columns and sortable headers
    clear(d.cols);
    clear(d.head);
    for (var c = 0; c < CT_COLUMNS.length; c++) {
      var col = CT_COLUMNS[c];
      var cg = el("col");
      if (col.width) cg.style.width = col.width + "px";
      d.cols.appendChild(cg);
      var th = el("th", col.num ? "wv-num" : null);
      th.scope = "col";
      th.setAttribute("aria-sort", "none");
      var btn = el("button", null, col.label);
      btn.type = "button";
      btn.title = "Sort by " + col.label + (col.title ? "\n" + col.title : "");
      btn.addEventListener("click", (function (column) {
        return function () { self.sortBy(column.key); };
      })(col));
      th.appendChild(btn);
      d.head.appendChild(th);
    }
    // rows: click / keyboard, lazy rendering on scroll
    d.body.addEventListener("click", function (e) {
      var tr = e.target.closest ? e.target.closest("tr.wv-ct-row") : null;
      if (tr) self.activate(Number(tr.getAttribute("data-index")), true);
    });
    d.body.addEventListener("keydown", function (e) { self.onKey(e); });
    d.body.addEventListener("focusin", function (e) {
      var tr = e.target.closest ? e.target.closest("tr.wv-ct-row") : null;
      if (tr) self.active = Number(tr.getAttribute("data-index"));
    });
    d.scroll.addEventListener("scroll", function () { self.requestRender(); });
    window.addEventListener("resize", function () { self.requestRender(); });
    d.toggle.addEventListener("click", function () { self.setCollapsed(!d.panel.classList.contains("wv-collapsed")); });
    this._wireGrip();
  };

  ChangeTable.prototype.sortBy = function (key) {
    if (this.sortKey === key) this.sortDir = -this.sortDir;
    else {
      this.sortKey = key;
      for (var i = 0; i < CT_COLUMNS.length; i++) if (CT_COLUMNS[i].key === key) this.sortDir = CT_COLUMNS[i].dir;
    }
    this.refresh();
  };

  /** Filter by status and name, sort, render from the top. */
  ChangeTable.prototype.refresh = function () {
    var q = this.dom.name.value.trim().toLowerCase();
    var pairs = this.model.pairs;
    var rows = [];
    for (var i = 0; i < pairs.length; i++) {
      var p = pairs[i];
      if (!this.show.get(String(p.status))) continue;
      if (q && String(p.name).toLowerCase().indexOf(q) < 0) continue;
      rows.push(p);
    }
    var statusCol = CT_COLUMNS[1], relCol = CT_COLUMNS[3];
    var col = null;
    for (var c = 0; c < CT_COLUMNS.length; c++) if (CT_COLUMNS[c].key === this.sortKey) col = CT_COLUMNS[c];
    var dir = this.sortDir;
    function cmpBy(column, direction, a, b) {
      var va = column.get(a), vb = column.get(b);
      if (va === null || vb === null) return va === null ? (vb === null ? 0 : 1) : -1;  // nulls last
      if (va < vb) return -direction;
      if (va > vb) return direction;
      return 0;
    }
    rows.sort(function (a, b) {
      var r = col ? cmpBy(col, dir, a, b) : 0;
      if (r === 0) r = cmpBy(statusCol, 1, a, b);
      if (r === 0) r = cmpBy(relCol, -1, a, b);
      return r !== 0 ? r : a._order - b._order;
    });
    this.rows = rows;
    this.active = 0;
    var heads = this.dom.head.children;
    for (var h = 0; h < heads.length; h++) {
      var sorted = CT_COLUMNS[h].key === this.sortKey;
      heads[h].setAttribute("aria-sort", sorted ? (dir > 0 ? "ascending" : "descending") : "none");
      heads[h].firstChild.textContent = CT_COLUMNS[h].label + (sorted ? (dir > 0 ? " \u25b4" : " \u25be") : "");
    }
    this.dom.count.textContent = "showing " + fmtCount(rows.length) + " of " + fmtCount(pairs.length);
    this.dom.scroll.scrollTop = 0;
    this.render();
  };

  ChangeTable.prototype.requestRender = function () {
    var self = this;
    if (this._frame) return;
    this._frame = requestAnimationFrame(function () { self._frame = 0; self.render(); });
  };

  /** Render the rows in view (plus CT_OVERSCAN either side) between two spacer rows. */
  ChangeTable.prototype.render = function () {
    var d = this.dom;
    var body = d.body;
    var n = this.rows.length;
    var focused = document.activeElement && body.contains(document.activeElement);
    // Read the scroll metrics before touching the rows: emptying the body first would let
    // the browser clamp scrollTop to the shorter table.
    var headH = d.head.offsetHeight || 0;
    var viewH = d.scroll.clientHeight || 300;
    var top = Math.max(0, d.scroll.scrollTop - headH);
    clear(body);
    if (n === 0) {
      var tr0 = el("tr");
      var td0 = el("td", "wv-ct-none", this.counts.get("identical") === this.model.pairs.length && this.model.pairs.length
        ? "no differences: every pair is identical (tick \u201cidentical\u201d to list them)" : "no pair matches the filter");
      td0.colSpan = CT_COLUMNS.length;
      tr0.appendChild(td0);
      body.appendChild(tr0);
      return;
    }
    var first = Math.max(0, Math.floor(top / this.rowH) - CT_OVERSCAN);
    var last = Math.min(n, Math.ceil((top + viewH) / this.rowH) + CT_OVERSCAN);
    var firstVisible = Math.min(n - 1, Math.floor(top / this.rowH));
    var focusIndex = this.active >= first && this.active < last ? this.active : Math.max(first, firstVisible);
    var frag = document.createDocumentFragment();
    if (first > 0) frag.appendChild(this._spacer(first * this.rowH));
    var focusRow = null;
    for (var i = first; i < last; i++) {
      var tr = this._row(this.rows[i], i);
      tr.tabIndex = i === focusIndex ? 0 : -1;
      if (i === this.active) focusRow = tr;
      frag.appendChild(tr);
    }
    if (last < n) frag.appendChild(this._spacer((n - last) * this.rowH));
    body.appendChild(frag);
    if (focused && focusRow) focusRow.focus({ preventScroll: true });
    // measure the real row height once, then lay out again with it
    var sample = body.querySelector("tr.wv-ct-row");
    var h = sample ? sample.getBoundingClientRect().height : 0;
    if (h > 0 && Math.abs(h - this.rowH) > 0.01) {
      this.rowH = h;
      this.requestRender();
    }
  };

  ChangeTable.prototype._spacer = function (height) {
    var tr = el("tr", "wv-ct-spacer");
    tr.setAttribute("aria-hidden", "true");
    var td = el("td");
    td.colSpan = CT_COLUMNS.length;
    td.style.height = height + "px";
    tr.appendChild(td);
    return tr;
  };

  ChangeTable.prototype._row = function (p, index) {
    var tr = el("tr", "wv-ct-row");
    tr.setAttribute("data-index", String(index));
    var name = String(p.name);
    if (name === this.selectedName) {
      tr.classList.add("wv-ct-selected");
      tr.setAttribute("aria-current", "true");
    }
    var tdName = el("td", "wv-ct-name");
    tdName.appendChild(el("span", null, name));   // isolated LTR run in an RTL cell: "…q_proj.weight"
    tdName.title = name + (p.a !== null && p.a !== undefined && String(p.a) !== name ? "\nA: " + p.a : "") +
      (p.b !== null && p.b !== undefined && String(p.b) !== name ? "\nB: " + p.b : "");
    tr.appendChild(tdName);
    var tdSt = el("td");
    var pill = el("span", "wv-st wv-st-" + String(p.status).replace(/[^a-z-]/g, ""), D.statusLabel(p.status));
    var cm = WV.own(this.app.manifest.colormaps, "delta");
    if (cm && cm.palette && (p.status === "only-in-a" || p.status === "only-in-b")) {
      var idx = p.status === "only-in-b" ? cm.only_b_index : this.model.mode === "finetune" ? cm.base_only_index : cm.only_a_index;
      if (cm.palette[idx]) pill.style.borderColor = WV.rgbCss(cm.palette[idx]);
    }
    tdSt.appendChild(pill);
    tr.appendChild(tdSt);
    for (var c = 2; c < CT_COLUMNS.length; c++) {
      var col = CT_COLUMNS[c];
      var td = el("td", "wv-num", col.text(p));
      if (col.key === "changed" && p.numbers) {
        var total = D.comparedOf(p);
        if (total) td.title = fmtCount(p.numbers.changed) + " of " + fmtCount(total) + " (" + WV.fmtFraction(p.numbers.changed / total) + ")";
      }
      tr.appendChild(td);
    }
    return tr;
  };

  WV.ChangeTable = ChangeTable;
})();
