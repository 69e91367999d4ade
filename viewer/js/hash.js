/*
 * WV.Hash: the view in the URL, "#scene=<key>&z=<zoom>&x=<cx>&y=<cy>" (centre in canvas px at
 * max zoom), written on every move and read at start and on hashchange.
 */
(function () {
  "use strict";

  var WV = window.WV;

  function Hash(app) {
    var self = this;
    this.app = app;
    this.last = null;
    window.addEventListener("hashchange", function () {
      if (location.hash !== self.last) self.apply();
    });
  }

  Hash.prototype.write = function () {
    var app = this.app;
    if (!app.model) return;
    var c = app.cFromLl(app.map.getCenter());
    var params = new URLSearchParams();
    params.set("scene", app.model.key);
    params.set("z", String(Math.round(app.map.getZoom() * 1000) / 1000));
    params.set("x", String(Math.round(c.x * 100) / 100));
    params.set("y", String(Math.round(c.y * 100) / 100));
    var hash = "#" + params.toString();
    this.last = hash;
    if (hash === location.hash) return;
    try {
      history.replaceState(null, "", hash);
    } catch (err) {
      location.replace(hash);
    }
  };

  /** Open the view named by the URL hash (or fit the first scene). */
  Hash.prototype.apply = function () {
    var app = this.app;
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    var key = params.get("scene");
    var z = parseFloat(params.get("z"));
    var cx = parseFloat(params.get("x"));
    var cy = parseFloat(params.get("y"));
    var scene = key !== null ? app.sceneByKey(key) : null;
    var view = isFinite(z) && isFinite(cx) && isFinite(cy) ? { z: z, cx: cx, cy: cy } : null;
    var first = app.scenes[0] ? String(app.scenes[0].key) : null;
    app.showScene(scene ? String(scene.key) : first, view);
  };

  WV.Hash = Hash;
})();
