/*
 * WV.Search: the "Find a tensor" box. Substring search over the current scene's item names
 * (lower-cased once per scene, so a keystroke is one linear scan), best matches first (earliest
 * match, then shortest name); arrows, Enter and Escape; a result zooms to the tensor.
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el;

  function Search(app) {
    this.app = app;
    this.input = document.getElementById("wv-search");
    this.results = document.getElementById("wv-results");
    this.matches = [];        // items listed, in order
    this.active = -1;         // index in matches of the highlighted result
    this._keys = null;        // lower-cased names of the current model's items
    this._keysOf = null;
    this._wire();
  }

  Search.prototype._wire = function () {
    var self = this;
    var input = this.input;
    input.addEventListener("input", function () { self.refresh(); });
    input.addEventListener("keydown", function (e) {
      var items = self.results.querySelectorAll("li.wv-result");
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        if (!items.length) return;
        var step = e.key === "ArrowDown" ? 1 : -1;
        self.active = (self.active + step + items.length) % items.length;
        self.markActive();
      } else if (e.key === "Enter") {
        e.preventDefault();
        var i = self.active >= 0 ? self.active : 0;
        if (self.matches[i]) self.jumpTo(self.matches[i]);
      } else if (e.key === "Escape") {
        input.value = "";
        self.refresh();
      }
    });
  };

  /** The lower-cased names of the model's items (built once per scene). */
  Search.prototype._keysFor = function (model) {
    if (this._keysOf !== model) {
      var items = model.items;
      var keys = new Array(items.length);
      for (var i = 0; i < items.length; i++) keys[i] = items[i].name.toLowerCase();
      this._keys = keys;
      this._keysOf = model;
    }
    return this._keys;
  };

  /** Run the query in the box against the current scene and list the results. */
  Search.prototype.refresh = function () {
    var app = this.app;
    var list = this.results;
    WV.clear(list);
    this.matches = [];
    this.active = -1;
    if (!app.model) return;
    var q = this.input.value.trim().toLowerCase();
    if (!q) { list.hidden = true; return; }
    var items = app.model.items;
    var keys = this._keysFor(app.model);
    var found = [];
    for (var i = 0; i < keys.length; i++) {
      var pos = keys[i].indexOf(q);
      if (pos >= 0) found.push({ item: items[i], pos: pos, order: i });
    }
    found.sort(function (a, b) {
      return a.pos - b.pos || a.item.name.length - b.item.name.length || a.order - b.order;
    });
    var shown = found.slice(0, WV.MAX_RESULTS);
    var self = this;
    for (var j = 0; j < shown.length; j++) {
      var m = shown[j];
      var li = el("li", "wv-result");
      var name = m.item.name;
      li.appendChild(document.createTextNode(name.slice(0, m.pos)));
      li.appendChild(el("mark", null, name.slice(m.pos, m.pos + q.length)));
      li.appendChild(document.createTextNode(name.slice(m.pos + q.length)));
      li.title = name;
      li.addEventListener("mousedown", (function (item) {
        return function (e) { e.preventDefault(); self.jumpTo(item); };
      })(m.item));
      list.appendChild(li);
    }
    if (found.length === 0) list.appendChild(el("li", "wv-result-none", "no tensor matches"));
    else if (found.length > shown.length) {
      list.appendChild(el("li", "wv-result-none", "… " + (found.length - shown.length) + " more"));
    }
    list.hidden = false;
    this.matches = shown.map(function (x) { return x.item; });
  };

  Search.prototype.markActive = function () {
    var items = this.results.querySelectorAll("li.wv-result");
    for (var i = 0; i < items.length; i++) items[i].classList.toggle("wv-active", i === this.active);
    if (items[this.active]) items[this.active].scrollIntoView({ block: "nearest" });
  };

  /** Zoom to an item, select it and show its name in the search box. */
  Search.prototype.jumpTo = function (item) {
    if (!this.app.zoomTo(item)) return;
    this.input.value = item.name;
    WV.clear(this.results);
    this.results.hidden = true;
  };

  WV.Search = Search;
})();
