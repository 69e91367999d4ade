/*
 * WV.App: the core. It owns the Leaflet map, the current scene (a WV.SceneModel), the tile
 * layer, the hovered hit and the selected item, and wires the parts: overlay, readout, legend,
 * search, URL hash, and the registered panels (WV.panels). It knows no kind of bundle: what
 * differs between scene kinds is asked of model.kind (WV.sceneKinds), and what a bundle adds
 * to the page comes from the panels' hooks.
 */
(function () {
  "use strict";

  var WV = window.WV;

  function App(manifest) {
    this.manifest = manifest;
    this.scenes = manifest.scenes || [];
    this.tensors = WV.mapOf(manifest.tensors);   // name -> manifest.tensors entry
    this.model = null;
    this.tiles = null;
    this.hover = null;        // hit under the cursor
    this.selected = null;     // pinned item (click, search, a panel)
    this.lastPoint = null;    // last LatLng under the mouse, to refresh the readout after a scene flip
    this.lastContainer = null;  // the mouse in map-container pixels: the readout follows zooms under it
    this.dom = {
      map: document.getElementById("wv-map"),
      sceneRow: document.getElementById("wv-scene-row"),
      scene: document.getElementById("wv-scene"),
      sub: document.querySelector(".wv-sub"),
    };
    this.map = L.map(this.dom.map, {
      crs: L.CRS.Simple,
      zoomSnap: 0.25,
      zoomDelta: 0.5,
      wheelPxPerZoomLevel: 90,
      zoomControl: false,
      attributionControl: true,
      boxZoom: true,
      fadeAnimation: false,
    });
    L.control.zoom({ position: "bottomright" }).addTo(this.map);
    this.map.attributionControl.setPrefix("");
    this.map.attributionControl.addAttribution("Leaflet");
    this.overlay = new WV.Overlay(this);
    this.readout = new WV.Readout(this);
    this.legend = new WV.Legend(this);
    this.search = new WV.Search(this);
    this.hash = new WV.Hash(this);
    this.sidecars = new WV.Sidecars(this);
    // the registered panels that apply to this bundle, in registration order
    this.panels = [];
    this.panelByName = new Map();
    var specs = WV.panels.list();
    for (var i = 0; i < specs.length; i++) {
      var spec = specs[i];
      if (spec.applies && !spec.applies(manifest)) continue;
      var panel = spec.create(this);
      this.panels.push(panel);
      this.panelByName.set(spec.name, panel);
    }
    // Only now that panels have laid out the page (the change table below the map) may the map's
    // size be read: Leaflet keeps the first size it reads (the overlay reads it) until the map is
    // loaded, and a stale one puts the view's centre under the change table.
    this.overlay.attach(this.map);
    this._wire();
  }

  /** The panel instance registered as `name`, or null. */
  App.prototype.panel = function (name) {
    return this.panelByName.has(name) ? this.panelByName.get(name) : null;
  };

  /** Call hook `name` of every panel that has it; the first truthy result stops and is returned. */
  App.prototype.callPanels = function (name, a, b) {
    for (var i = 0; i < this.panels.length; i++) {
      var fn = this.panels[i][name];
      if (typeof fn === "function" && fn.call(this.panels[i], a, b)) return true;
    }
    return false;
  };

  App.prototype._wire = function () {
    var self = this;
    var map = this.map;
    map.on("mousemove", function (e) {
      self.lastContainer = e.containerPoint;
      self.lastPoint = e.latlng;
      self.onPoint(e.latlng);
    });
    map.on("mouseout", function () {
      self.lastPoint = self.lastContainer = null;
      self.setHover(null, null);
    });
    // a zoom (wheel, keys, buttons) or a pan moves the map under a still cursor
    map.on("zoomend moveend", function () { self.refreshHover(); });
    map.on("click", function (e) {
      var hit = self.hitAtLatLng(e.latlng);
      self.select(hit ? hit.item : null);
    });
    map.on("moveend", function () { self.hash.write(); });
    if (this.scenes.length > 1) {
      this.dom.sceneRow.hidden = false;
      for (var i = 0; i < this.scenes.length; i++) {
        var opt = WV.el("option", null, this.scenes[i].label || this.scenes[i].key);
        opt.value = String(this.scenes[i].key);
        this.dom.scene.appendChild(opt);
      }
      this.dom.scene.addEventListener("change", function () {
        self.switchScene(self.dom.scene.value);
      });
    }
  };

  App.prototype.sceneByKey = function (key) {
    for (var i = 0; i < this.scenes.length; i++) {
      if (String(this.scenes[i].key) === key) return this.scenes[i];
    }
    return null;
  };

  /** Canvas-pixel <-> LatLng for the current scene. */
  App.prototype.llFromC = function (cx, cy) {
    return this.map.unproject([cx, cy], this.model.maxZoom);
  };
  App.prototype.cFromLl = function (ll) {
    return this.map.project(ll, this.model.maxZoom);
  };
  App.prototype.llBoundsFromCRect = function (r) {
    return L.latLngBounds(this.llFromC(r[0], r[1] + r[3]), this.llFromC(r[0] + r[2], r[1]));
  };

  /** Show a scene; view = {z, cx, cy} or null to fit the content. */
  App.prototype.showScene = function (key, view) {
    var scene = this.sceneByKey(key) || this.scenes[0];
    if (!scene) return;
    var sceneChanged = false;
    if (!this.model || this.model.key !== String(scene.key)) {
      sceneChanged = true;
      if (this.tiles) this.map.removeLayer(this.tiles);
      var keep = this.model && WV.sameGeometry(this.model.scene, scene) && this.selected ? this.selected.name : null;
      this.model = new WV.SceneModel(this.manifest, scene, this.tensors);
      this.hover = null;
      this.selected = keep !== null ? this.model.item(keep) : null;
      var mz = this.model.maxZoom;
      var bounds = this.llBoundsFromCRect([0, 0, this.model.cWidth, this.model.cHeight]);
      this.contentBounds = bounds;
      // Limits are set without Leaflet's setters (which pan/zoom to obey them, animated) and
      // enforced once the new view is set below.
      this.map.setMaxBounds(null);
      this.map.options.minZoom = -WV.MIN_ZOOM_BELOW_0;
      this.map.options.maxZoom = mz + WV.OVERZOOM;
      this.tiles = WV.tileLayerFor(this.manifest, scene, this.model.tileIndex, {
        tileSize: this.manifest.tile_size || 512,
        minZoom: -WV.MIN_ZOOM_BELOW_0,
        maxZoom: mz + WV.OVERZOOM,
        minNativeZoom: 0,
        maxNativeZoom: mz,
        bounds: bounds,
        noWrap: true,
        keepBuffer: 2,
        className: "wv-tiles",
      });
      this.tiles.on("tileerror", function (e) { e.tile.style.visibility = "hidden"; });
      this.tiles.addTo(this.map);
      this.dom.map.style.background = this.paddingCss();
      if (this.dom.sub) {
        // what one pixel is at full zoom, for this scene (a byte curve, a panel of numbers)
        var unit = this.model.curveUnit === "byte" ? "byte" : scene.layout === "panels" ? "number" : "element";
        this.dom.sub.textContent = "weightvis · 1 px = 1 " + unit + " at full zoom";
      }
      if (this.dom.scene.options.length) this.dom.scene.value = String(scene.key);
      this.legend.build();
      this.readout.onScene(this.model);
      this.search.refresh();
      this.setHover(null, null);
      this.showStats(this.selected);
      this.callPanels("onScene", this.model);
    }
    if (view) {
      var z = Math.min(Math.max(view.z, this.map.getMinZoom()), this.map.getMaxZoom());
      this.map.setView(this.llFromC(view.cx, view.cy), z, { animate: false });
    } else {
      this.map.fitBounds(this.contentBounds, { padding: [16, 16], animate: false });
    }
    if (sceneChanged) {
      this.map.setMaxBounds(this.contentBounds.pad(0.5));
      this.map.fire("zoomlevelschange");
    }
    this.refreshHover();
    this.overlay.request();
  };

  /** Read the element under the (still) cursor again: after a zoom, a pan, a sidecar's arrival. */
  App.prototype.refreshHover = function () {
    if (!this.model) return;
    if (this.lastContainer) this.lastPoint = this.map.containerPointToLatLng(this.lastContainer);
    if (this.lastPoint) this.onPoint(this.lastPoint);
  };

  /**
   * Show another scene: in the same view when both share the geometry, else in the view it
   * had when it was last shown, else fitted.
   */
  App.prototype.switchScene = function (key) {
    var scene = this.sceneByKey(String(key));
    if (!scene || !this.model) return;
    if (String(scene.key) === this.model.key) return;
    var c = this.cFromLl(this.map.getCenter());
    var here = { z: this.map.getZoom(), cx: c.x, cy: c.y };
    if (!this.views) this.views = new Map();   // scene key -> its last view
    this.views.set(this.model.key, here);
    var view = WV.sameGeometry(this.model.scene, scene) ? here
      : this.views.has(String(scene.key)) ? this.views.get(String(scene.key)) : null;
    this.showScene(String(scene.key), view);
    this.hash.write();
  };

  App.prototype.paddingCss = function () {
    var cm = this.model.colormap;
    if (!cm || !cm.palette) return "#000";
    return WV.rgbCss(cm.palette[cm.padding_index || 0]);
  };

  /** The colour scale s of an item in the current scene (the scene kind decides). */
  App.prototype.scaleOf = function (item) {
    if (!item || !this.model) return null;
    return this.model.kind.scaleOf(this, item);
  };

  App.prototype.hitAtLatLng = function (ll) {
    if (!this.model) return null;
    var c = this.cFromLl(ll);
    return this.model.hitAt(Math.floor(c.x), Math.floor(c.y));
  };

  App.prototype.onPoint = function (ll) {
    var c = this.cFromLl(ll);
    var cx = Math.floor(c.x), cy = Math.floor(c.y);
    this.setHover(this.model.hitAt(cx, cy), [cx, cy]);
  };

  App.prototype.setHover = function (hit, cxy) {
    var prevName = this.hover && this.hover.item ? this.hover.item.name : null;
    this.hover = hit;
    var name = hit && hit.item ? hit.item.name : null;
    var scale = hit && hit.item ? this.scaleOf(hit.item) : null;
    this.sidecars.beginHover();
    var sample = hit && cxy ? this.sidecars.sample(this.model.key, cxy[0], cxy[1]) : { state: "none" };
    this.readout.show(hit, cxy, scale, sample);
    this.callPanels("onHover", hit, { cxy: cxy, sample: sample });
    this.legend.values(scale);
    if (name !== prevName) {
      if (!this.selected) this.showStats(hit ? hit.item : null);
      this.overlay.request();
    }
  };

  App.prototype.showStats = function (item) {
    this.readout.stats(item);
  };

  /** Select an item (null: none). `source` is the panel that made the selection, if any. */
  App.prototype.select = function (item, source) {
    this.selected = item || null;
    this.showStats(item || (this.hover ? this.hover.item : null));
    this.callPanels("onSelect", item ? item.name : null, source || null);
    this.overlay.request();
  };

  /** Fit the view to an item's rects (the union of its placements in this scene) and select it. */
  App.prototype.zoomTo = function (item, source) {
    if (!item || !item.rects.length) return false;
    var r = WV.cUnion(item.rects);
    this.map.fitBounds(this.llBoundsFromCRect(r), {
      padding: [24, 24], maxZoom: this.model.maxZoom + 2, animate: false,
    });
    this.select(item, source);
    return true;
  };

  WV.App = App;
})();
