/*
 * Panel "scene-keys" of a diff bundle: keys a / b / d switch to the scenes a / b / delta in the
 * same view (they share one geometry), with a hint under the scene picker.
 */
(function () {
  "use strict";

  var WV = window.WV;

  var SCENE_KEYS = new Map([["a", "a"], ["b", "b"], ["d", "delta"]]);

  function SceneKeys(app) {
    WV.sceneKeys(app, SCENE_KEYS, " \u2014 same view");
  }

  WV.panels.register("scene-keys", {
    applies: WV.diff.applies,
    create: function (app) { return new SceneKeys(app); },
  });
})();
