/*
 * The change table's keyboard (roving tabindex: arrows, Page Up/Down, Home/End, Enter), its
 * selection in step with the map, the resize grip and the hide / show toggle; registers the
 * panel "changes" (hooks onSelect, onScene, onLayout).
 */
(function () {
  "use strict";

  var WV = window.WV;
  var ChangeTable = WV.ChangeTable;


  ChangeTable.prototype.setCollapsed = function (collapsed) {
    var d = this.dom;
    d.panel.classList.toggle("wv-collapsed", collapsed);
    d.toggle.textContent = collapsed ? "Show table" : "Hide table";
    d.toggle.setAttribute("aria-expanded", collapsed ? "false" : "true");
    this.app.map.invalidateSize({ pan: false });
    this.requestRender();
  };

  /** Drag the panel's top edge to resize it. */
  ChangeTable.prototype._wireGrip = function () {
    var self = this;
    var d = this.dom;
    var dragging = false;
    d.grip.addEventListener("pointerdown", function (e) {
      dragging = true;
      d.grip.setPointerCapture(e.pointerId);
      e.preventDefault();
    });
    d.grip.addEventListener("pointermove", function (e) {
      if (!dragging) return;
      var main = d.panel.parentNode.getBoundingClientRect();
      var h = Math.max(90, Math.min(main.bottom - e.clientY, main.height - 80));
      d.panel.style.height = Math.round(h) + "px";
      self.app.map.invalidateSize({ pan: false });
      self.requestRender();
    });
    function end() { dragging = false; }
    d.grip.addEventListener("pointerup", end);
    d.grip.addEventListener("pointercancel", end);
  };


  ChangeTable.prototype.rowElement = function (index) {
    return this.dom.body.querySelector('tr.wv-ct-row[data-index="' + index + '"]');
  };

  /** Scroll so that row `index` is fully visible below the sticky header. */
  ChangeTable.prototype.scrollToRow = function (index) {
    var d = this.dom;
    var headH = d.head.offsetHeight || 0;
    var rowTop = headH + index * this.rowH;
    var viewH = d.scroll.clientHeight;
    if (rowTop - headH < d.scroll.scrollTop) d.scroll.scrollTop = rowTop - headH;
    else if (rowTop + this.rowH > d.scroll.scrollTop + viewH) d.scroll.scrollTop = rowTop + this.rowH - viewH;
  };

  ChangeTable.prototype.focusRow = function (index) {
    if (!this.rows.length) return;
    this.active = Math.max(0, Math.min(this.rows.length - 1, index));
    this.scrollToRow(this.active);
    this.render();
    var tr = this.rowElement(this.active);
    if (tr) tr.focus({ preventScroll: true });
  };

  ChangeTable.prototype.onKey = function (e) {
    var page = Math.max(1, Math.floor(this.dom.scroll.clientHeight / this.rowH) - 1);
    var moves = { ArrowDown: 1, ArrowUp: -1, PageDown: page, PageUp: -page };
    if (WV.hasOwn(moves, e.key)) { e.preventDefault(); this.focusRow(this.active + moves[e.key]); }
    else if (e.key === "Home") { e.preventDefault(); this.focusRow(0); }
    else if (e.key === "End") { e.preventDefault(); this.focusRow(this.rows.length - 1); }
    else if (e.key === "Enter" || e.key === " ") { e.preventDefault(); this.activate(this.active, true); }
  };

  /** Zoom the map to row `index`'s tensor (its placements' union in this scene) and select it. */
  ChangeTable.prototype.activate = function (index, keepFocus) {
    var p = this.rows[index];
    if (!p) return;
    this.active = index;
    var app = this.app;
    var item = app.model ? app.model.item(p.name) : null;
    if (item) app.zoomTo(item, this);
    this.markSelected(String(p.name), false);
    if (keepFocus) {
      var tr = this.rowElement(index);
      if (tr) tr.focus({ preventScroll: true });
    }
  };

  /** Mark the selected pair's row; `reveal` scrolls it into view (selection made on the map). */
  ChangeTable.prototype.markSelected = function (name, reveal) {
    this.selectedName = name;
    var rows = this.dom.body.querySelectorAll("tr.wv-ct-row");
    for (var i = 0; i < rows.length; i++) {
      var on = name !== null && String(this.rows[Number(rows[i].getAttribute("data-index"))].name) === name;
      rows[i].classList.toggle("wv-ct-selected", on);
      if (on) rows[i].setAttribute("aria-current", "true");
      else rows[i].removeAttribute("aria-current");
    }
    if (reveal && name !== null) {
      for (var j = 0; j < this.rows.length; j++) {
        if (String(this.rows[j].name) === name) {
          this.active = j;
          this.scrollToRow(j);
          this.render();
          break;
        }
      }
    }
  };

  ChangeTable.prototype.onSelect = function (name, source) {
    this.markSelected(name, source !== this);
    return false;
  };

  ChangeTable.prototype.onScene = function () {
    this.markSelected(this.app.selected ? this.app.selected.name : null, false);
    return false;
  };

  ChangeTable.prototype.onLayout = function () {
    this.requestRender();
    return false;
  };

  WV.panels.register("changes", {
    applies: WV.diff.applies,
    create: function (app) { return new ChangeTable(app); },
  });
})();
