/*
 * weightvis viewer — a zoomable map of a model's weights, opened from file:// with no network.
 *
 * Classic scripts (no build step, no ES modules: they must load from file://), loaded in a fixed
 * order by index.html, all hanging off one global, `window.WV` (as Leaflet hangs off `L`). This
 * first file holds the namespace, small helpers and the two registries plug-ins add themselves to:
 *
 *   WV.sceneKinds.register(name, kind)   how a kind of scene is coloured and read (legend, scale)
 *   WV.panels.register(name, panel)      a side-panel section or bundle feature (readout rows,
 *                                        stats, the change table...), with optional hooks
 *
 * The core (scene model, overlay, readout, legend, search, URL hash, app) only calls the hooks;
 * it never asks what kind of bundle it shows. See WV.sceneKindOf for how a scene's kind is read
 * from the manifest.
 *
 * Coordinate planes (STYLE.md): `c` canvas pixel at the scene's max zoom, `e` element (row, col)
 * of a tensor's 2-D view, `t` tile at zoom z, `h` Hilbert index, `s` screen pixel in the map
 * container (CSS px), `ll` a Leaflet LatLng. Conversions are the small `xFromY` helpers.
 *
 * Tensor names are data: maps keyed by a name are `Map`s (a tensor may be called `constructor`
 * or `__proto__`), and every DOM node that shows one is built with createElement/textContent.
 */
(function () {
  "use strict";

  var WV = (window.WV = window.WV || {});

  WV.OVERZOOM = 3;            // zoom levels past max_zoom, drawn with image-rendering: pixelated
  WV.MIN_ZOOM_BELOW_0 = 3;    // zoom levels below the one-tile overview
  WV.MAX_RESULTS = 100;       // search results listed

  // ------------------------------------------------------------------ small helpers

  function hasOwn(obj, key) {
    return obj !== null && obj !== undefined && Object.prototype.hasOwnProperty.call(obj, key);
  }
  WV.hasOwn = hasOwn;

  /** obj[key] when obj has it as its own property, else undefined (never Object.prototype's). */
  WV.own = function (obj, key) {
    return hasOwn(obj, key) ? obj[key] : undefined;
  };

  /** A Map of an object's own properties (JSON objects keyed by names: manifest.tensors). */
  WV.mapOf = function (obj) {
    var map = new Map();
    if (!obj || typeof obj !== "object") return map;
    var keys = Object.keys(obj);
    for (var i = 0; i < keys.length; i++) map.set(keys[i], obj[keys[i]]);
    return map;
  };

  var NAME_SEPARATORS = "._/:-";

  /**
   * Let the text under `node` (a tensor or file name) wrap only after its separators: a <wbr>
   * after every ".", "_", "/", ":" or "-" (textContent is unchanged, so copying gives the name).
   * A run too long for the line still wraps inside (CSS overflow-wrap: anywhere). Returns node.
   */
  WV.wrapAtSeparators = function (node) {
    var walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
    var texts = [];
    while (walker.nextNode()) texts.push(walker.currentNode);
    for (var k = 0; k < texts.length; k++) {
      var s = texts[k].data, start = 0;
      var frag = document.createDocumentFragment();
      for (var i = 0; i < s.length - 1; i++) {
        if (NAME_SEPARATORS.indexOf(s.charAt(i)) < 0) continue;
        frag.appendChild(document.createTextNode(s.slice(start, i + 1)));
        frag.appendChild(document.createElement("wbr"));
        start = i + 1;
      }
      if (start === 0) continue;
      frag.appendChild(document.createTextNode(s.slice(start)));
      texts[k].parentNode.replaceChild(frag, texts[k]);
    }
    return node;
  };

  WV.el = function (tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };

  /**
   * An element built from code: props are attributes ("class", "id", "aria-label"...), except
   * `text` (textContent); children are nodes. Markup is never parsed from strings.
   */
  WV.h = function (tag, props, children) {
    var node = document.createElement(tag);
    var keys = props ? Object.keys(props) : [];
    for (var i = 0; i < keys.length; i++) {
      if (keys[i] === "text") node.textContent = String(props.text);
      else node.setAttribute(keys[i], String(props[keys[i]]));
    }
    for (var j = 0; children && j < children.length; j++) node.appendChild(children[j]);
    return node;
  };

  /** The last `n` UTF-16 units of `text`, without a half surrogate pair at its start. */
  WV.tailOf = function (text, n) {
    var tail = text.length > n ? text.slice(text.length - n) : text;
    var u = tail.charCodeAt(0);
    return u >= 0xdc00 && u <= 0xdfff && text.length > n ? tail.slice(1) : tail;
  };

  WV.clear = function (node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  };

  /**
   * Keys that switch scenes (`keys`: a Map of key -> scene key), with a hint under the scene
   * picker listing those present (`suffix` after them); nothing when fewer than two are.
   */
  WV.sceneKeys = function (app, keys, suffix) {
    var available = [];
    keys.forEach(function (scene, key) { if (app.sceneByKey(scene)) available.push(key); });
    if (available.length < 2) return;
    var hint = document.getElementById("wv-keys");
    WV.clear(hint);
    hint.appendChild(document.createTextNode("keys "));
    for (var i = 0; i < available.length; i++) {
      var scene = app.sceneByKey(keys.get(available[i]));
      if (i) hint.appendChild(document.createTextNode(" \u00b7 "));
      hint.appendChild(WV.el("kbd", null, available[i]));
      hint.appendChild(document.createTextNode(" " + (scene.label || scene.key)));
    }
    if (suffix) hint.appendChild(document.createTextNode(suffix));
    hint.hidden = false;
    document.addEventListener("keydown", function (e) {
      if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
      var t = e.target;
      var tag = t && t.tagName ? t.tagName.toLowerCase() : "";
      if (tag === "input" || tag === "textarea" || tag === "select" || (t && t.isContentEditable)) return;
      var k = e.key.toLowerCase();
      if (!keys.has(k) || !app.sceneByKey(keys.get(k))) return;
      e.preventDefault();
      app.switchScene(keys.get(k));
    });
  };

  WV.fmtNum = function (v) {
    if (v === null || v === undefined || typeof v !== "number" || !isFinite(v)) return "—";
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (Number.isInteger(v) && a < 1e9) return String(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential(3).replace("e+", "e");
    return String(Number(v.toPrecision(4)));
  };

  WV.fmtCount = function (v) {
    if (v === null || v === undefined) return "—";
    return Number(v).toLocaleString("en-US");
  };

  WV.fmtFraction = function (v) {
    if (v === null || v === undefined || !isFinite(v)) return "—";
    if (v === 0) return "0";
    return WV.fmtNum(100 * v) + " %";
  };

  WV.fmtShape = function (shape) {
    if (!shape) return "—";
    return "[" + shape.join(", ") + "]";
  };

  WV.numel = function (shape) {
    if (!shape) return null;
    var n = 1;
    for (var i = 0; i < shape.length; i++) n *= shape[i];
    return n;
  };

  WV.rgbCss = function (rgb) {
    return rgb ? "rgb(" + rgb[0] + "," + rgb[1] + "," + rgb[2] + ")" : "transparent";
  };

  WV.rangeOf = function (lo, n) {
    var out = [];
    for (var i = 0; i < n; i++) out.push(lo + i);
    return out;
  };

  /** A new object with the properties of `base` and then of `over` (a kind extending another). */
  WV.extend = function (base, over) {
    var out = {};
    var k;
    for (k in base) if (hasOwn(base, k)) out[k] = base[k];
    for (k in over) if (hasOwn(over, k)) out[k] = over[k];
    return out;
  };

  // ------------------------------------------------------------------ registries

  /** An ordered registry of named entries: plug-ins register, the core looks up and iterates. */
  function Registry(what) {
    this.what = what;
    this.entries = new Map();
  }
  Registry.prototype.register = function (name, entry) {
    if (this.entries.has(name)) throw new Error("weightvis: " + this.what + " " + name + " registered twice");
    entry.name = name;
    this.entries.set(name, entry);
    return entry;
  };
  Registry.prototype.get = function (name) {
    return this.entries.has(name) ? this.entries.get(name) : null;
  };
  Registry.prototype.list = function () {
    return Array.from(this.entries.values());
  };
  WV.Registry = Registry;

  /**
   * Scene kinds. A kind is {legend(app, cm), legendValues(app, s) -> text | null,
   * scaleOf(app, item) -> number | null, scaleName, readoutScaleLabel(app) -> text}; a kind
   * usually extends "values" with WV.extend. The core calls the current scene's kind.
   */
  WV.sceneKinds = new Registry("scene kind");

  /**
   * Panels (side-panel sections, bundle features). A panel is {applies(manifest) -> bool,
   * create(app) -> instance}; the instance may have the hooks onScene(model), onHover(hit),
   * stats(item, tbody) -> handled?, onSelect(name, source), and `hook` names it on the page's
   * test handle (window.weightvis[hook]). Panels are created in registration (= script) order.
   */
  WV.panels = new Registry("panel");

  /**
   * The kind of a scene, from the manifest as written (its schema does not name kinds): the
   * scene's colormap ("values", "bytes", "delta"), and "side" for the "values" scenes of a bundle
   * that compares two checkpoints (top-level "diff": scenes a and b). The one place that reads it.
   */
  WV.sceneKindOf = function (manifest, scene) {
    var cm = scene && scene.colormap ? String(scene.colormap) : "values";
    if (cm === "values" && manifest && manifest.diff && typeof manifest.diff === "object") return "side";
    return cm;
  };

  /** The registered kind of a scene; "values" when its kind has no plug-in. */
  WV.sceneKindFor = function (manifest, scene) {
    return WV.sceneKinds.get(WV.sceneKindOf(manifest, scene)) || WV.sceneKinds.get("values");
  };
})();
