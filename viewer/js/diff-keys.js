/*
 * Panel "scene-keys" of a diff bundle: keys a / b / d switch to the scenes a / b / delta in the
 * same view (they share one geometry), with a hint under the scene picker.
 */
(function () {
  "use strict";

  var WV = window.WV;
  var el = WV.el;

  var SCENE_KEYS = new Map([["a", "a"], ["b", "b"], ["d", "delta"]]);

  function SceneKeys(app) {
    var available = [];
    SCENE_KEYS.forEach(function (scene, key) { if (app.sceneByKey(scene)) available.push(key); });
    if (available.length < 2) return;
    var hint = document.getElementById("wv-keys");
    WV.clear(hint);
    hint.appendChild(document.createTextNode("keys "));
    for (var i = 0; i < available.length; i++) {
      var scene = app.sceneByKey(SCENE_KEYS.get(available[i]));
      if (i) hint.appendChild(document.createTextNode(" \u00b7 "));
      hint.appendChild(el("kbd", null, available[i]));
      hint.appendChild(document.createTextNode(" " + (scene.label || scene.key)));
    }
    hint.appendChild(document.createTextNode(" \u2014 same view"));
    hint.hidden = false;
    document.addEventListener("keydown", function (e) {
      if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
      var t = e.target;
      var tag = t && t.tagName ? t.tagName.toLowerCase() : "";
      if (tag === "input" || tag === "textarea" || tag === "select" || (t && t.isContentEditable)) return;
      var k = e.key.toLowerCase();
      if (!SCENE_KEYS.has(k) || !app.sceneByKey(SCENE_KEYS.get(k))) return;
      e.preventDefault();
      app.switchScene(SCENE_KEYS.get(k));
    });
  }

  WV.panels.register("scene-keys", {
    applies: WV.diff.applies,
    create: function (app) { return new SceneKeys(app); },
  });
})();
