/*
 * WV.fitLabel: a tensor or group label shortened to the room it has on screen (the overlay's
 * labels; width(text) measures in the label's font).
 */
(function () {
  "use strict";

  var WV = window.WV;
  var LABEL_MAX_CHARS = 200;   // a longer label is cut to its tail before fitting
  var PART_SEP = " \u00b7 ";     // between a label's head and the rest: "block 3 · q_proj"

  /**
   * The label text shortened to fit maxWidth, or null: the full label; a label "head · rest"
   * keeps its head and shortens the rest (below), or is its head alone, or none. Else without
   * ".weight", then its trailing dotted parts ("…self_attn.q_proj"), the last part alone
   * ("q_proj"), and that part cut ("q_pr…"). A label over LABEL_MAX_CHARS is first cut to "…" and its tail: no
   * screen shows more, and every try is measured (a hostile 10,000-character name, or 5,000
   * dotted parts, would cost seconds per frame and hundreds of MB of cached widths).
   */
  WV.fitLabel = function fitLabel(width, label, maxWidth) {
    function fits(t) { return width(t) <= maxWidth; }
    if (label.length > LABEL_MAX_CHARS) label = "\u2026" + WV.tailOf(label, LABEL_MAX_CHARS - 1);
    if (fits(label)) return label;
    // "block 3 · self_attn.q_proj.weight", "rows 0–204 · weight_ih_l0", "expert 17 · gate": the
    // head tells the piece apart, so it stays and the rest is shortened ("block 3 · q_proj"),
    // or dropped ("rows 0–204"); no room for the head, no label
    var cut = label.indexOf(PART_SEP);
    if (cut > 0) {
      var head = label.slice(0, cut + PART_SEP.length);
      var rest = fitLabel(width, label.slice(head.length), maxWidth - width(head));
      if (rest) return head + rest;
      return fits(label.slice(0, cut)) ? label.slice(0, cut) : null;
    }
    var base = label.replace(/\.weight$/, "");
    if (base !== label && fits(base)) return base;
    var parts = base.split(".");
    for (var i = 1; i < parts.length - 1; i++) {
      var t = "\u2026" + parts.slice(i).join(".");
      if (fits(t)) return t;
    }
    var last = parts[parts.length - 1];
    if (fits(last)) return last;
    for (var n = last.length - 1; n >= 3; n--) {
      var u = last.slice(0, n) + "\u2026";
      if (fits(u)) return u;
    }
    return null;
  };
})();
