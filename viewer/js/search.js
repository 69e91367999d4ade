/*
 * WV.Search: the "Find a tensor" box. Substring search over every name of the current scene's
 * items: the name in the file, the Hugging Face name (manifest `canonical`), the GGUF name
 * (`gguf`), and the names panels add (hook `searchNames(name)` -> [[label, name]...]: a diff's
 * A and B names). Lower-cased once per scene, so a keystroke is one linear scan; best matches
 * first (earliest match, a match in the item's own name before one in another name, then the
 * shortest name); arrows, Enter and Escape; a click or Enter zooms to the tensor. A result found
 * by another name shows that name, labelled, under the item's.
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
    this._keys = null;        // per item of the current model: [[label, name, lower-cased]...]
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

  /** Another name of a tensor, labelled ("HF", "GGUF", "A"...), unless it is the name itself. */
  function addName(out, label, name, own) {
    if (typeof name !== "string" || !name || name === own) return;
    for (var i = 0; i < out.length; i++) if (out[i][1] === name) return;
    out.push([label, name, name.toLowerCase()]);
  }

  /** Every searchable name of the model's items (built once per scene). */
  Search.prototype._keysFor = function (model) {
    if (this._keysOf !== model) {
      var items = model.items;
      var panels = this.app.panels || [];
      var keys = new Array(items.length);
      for (var i = 0; i < items.length; i++) {
        var name = items[i].name;
        var names = [["", name, name.toLowerCase()]];
        var t = items[i].tensor;
        if (t) {
          addName(names, "HF", WV.own(t, "canonical"), name);
          addName(names, "GGUF", WV.own(t, "gguf"), name);
        }
        for (var k = 0; k < panels.length; k++) {
          if (typeof panels[k].searchNames !== "function") continue;
          var more = panels[k].searchNames(name) || [];
          for (var m = 0; m < more.length; m++) addName(names, more[m][0], more[m][1], name);
        }
        keys[i] = names;
      }
      this._keys = keys;
      this._keysOf = model;
    }
    return this._keys;
  };

  /** `text` with [pos, pos + n) marked, appended to `node`. */
  function appendMarked(node, text, pos, n) {
    node.appendChild(document.createTextNode(text.slice(0, pos)));
    node.appendChild(el("mark", null, text.slice(pos, pos + n)));
    node.appendChild(document.createTextNode(text.slice(pos + n)));
  }

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
      var names = keys[i];
      var best = -1, bestPos = -1;
      for (var j = 0; j < names.length; j++) {
        var pos = names[j][2].indexOf(q);
        if (pos >= 0 && (best < 0 || pos < bestPos)) { best = j; bestPos = pos; }
      }
      if (best >= 0) found.push({ item: items[i], pos: bestPos, key: names[best], own: best === 0, order: i });
    }
    found.sort(function (a, b) {
      return a.pos - b.pos || (b.own - a.own) || a.item.name.length - b.item.name.length ||
        a.order - b.order;
    });
    var shown = found.slice(0, WV.MAX_RESULTS);
    var self = this;
    for (var r = 0; r < shown.length; r++) {
      var hit = shown[r];
      var li = el("li", "wv-result");
      var name = hit.item.name;
      if (hit.own) {
        appendMarked(li, name, hit.pos, q.length);
      } else {
        li.appendChild(el("span", "wv-result-name", name));
        var alias = el("span", "wv-result-alias");
        alias.appendChild(el("span", "wv-result-label", hit.key[0]));
        appendMarked(alias, hit.key[1], hit.pos, q.length);
        li.appendChild(alias);
      }
      WV.wrapAtSeparators(li);
      li.title = name;
      li.addEventListener("mousedown", (function (item) {
        return function (e) { e.preventDefault(); self.jumpTo(item); };
      })(hit.item));
      list.appendChild(li);
    }
    if (found.length === 0) list.appendChild(el("li", "wv-result-none", "no tensor matches"));
    else if (found.length > shown.length) {
      list.appendChild(el("li", "wv-result-none", "\u2026 " + (found.length - shown.length) + " more"));
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
