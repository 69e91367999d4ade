/*
 * Start: read the inlined manifest, build the app once the page is parsed. Loaded last, after
 * every plug-in has registered. Publishes a small handle for tests and the console:
 * window.weightvis (app, manifest, labels(), Hilbert helpers, `ready`; panels with a `hook`
 * name appear under it) and window.weightvisMap (the Leaflet map).
 */
(function () {
  "use strict";

  var WV = window.WV;

  function readManifest() {
    var node = document.getElementById("weightvis-manifest");
    return JSON.parse(node.textContent);
  }

  function start() {
    var manifest = readManifest();
    WV.wrapAtSeparators(document.getElementById("wv-title"));
    var app = new WV.App(manifest);
    WV.app = app;
    var handle = {
      app: app,
      manifest: manifest,
      hFromC: WV.hFromC,
      cFromH: WV.cFromH,
      cSquaresFromHRange: WV.cSquaresFromHRange,
      labels: function () {
        return app.overlay.labels.map(function (l) {
          return { text: l.text, name: l.name, kind: l.kind, box: l.box.slice() };
        });
      },
      llFromC: function (cx, cy) { return app.llFromC(cx, cy); },
      ready: false,
    };
    for (var i = 0; i < app.panels.length; i++) {
      var hook = app.panels[i].hook;
      if (typeof hook === "string" && !WV.hasOwn(handle, hook)) handle[hook] = app.panels[i];
    }
    window.weightvis = handle;
    window.weightvisMap = app.map;
    app.hash.apply();
    handle.ready = true;
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
