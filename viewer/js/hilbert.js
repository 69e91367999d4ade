/*
 * The Hilbert curve: WV.hFromC, WV.cFromH, WV.cSquaresFromHRange, WV.cOutlineOfHRange.
 */
(function () {
  "use strict";

  var WV = window.WV;

  // The classic iterative algorithm (Wikipedia, "Hilbert curve": xy2d, d2xy, rot). Canvas
  // coordinates stay below 2^26 so bitwise operations are safe on them; the index h can exceed
  // 2^32, so it is handled with plain arithmetic.

  function hilbertRot(n, xy, rx, ry) {
    if (ry === 0) {
      if (rx === 1) {
        xy[0] = n - 1 - xy[0];
        xy[1] = n - 1 - xy[1];
      }
      var t = xy[0];
      xy[0] = xy[1];
      xy[1] = t;
    }
  }

  /** Hilbert index h of canvas pixel (cx, cy) on an n x n curve (n a power of two). */
  function hFromC(n, cx, cy) {
    var xy = [cx, cy];
    var h = 0;
    for (var s = n / 2; s >= 1; s /= 2) {
      var rx = (xy[0] & s) > 0 ? 1 : 0;
      var ry = (xy[1] & s) > 0 ? 1 : 0;
      h += s * s * ((3 * rx) ^ ry);
      hilbertRot(n, xy, rx, ry);
    }
    return h;
  }

  /** Canvas pixel [cx, cy] of Hilbert index h on an n x n curve. */
  function cFromH(n, h) {
    var xy = [0, 0];
    var t = h;
    for (var s = 1; s < n; s *= 2) {
      var rx = Math.floor(t / 2) % 2;
      var ry = (t % 2) ^ rx;
      hilbertRot(s, xy, rx, ry);
      xy[0] += s * rx;
      xy[1] += s * ry;
      t = Math.floor(t / 4);
    }
    return xy;
  }

  /**
   * The Hilbert range [h0, h1) as aligned squares [cx, cy, side, side]: every run of 4^j indices
   * starting at a multiple of 4^j fills one aligned 2^j x 2^j square.
   */
  function cSquaresFromHRange(n, h0, h1) {
    var squares = [];
    var h = h0;
    while (h < h1) {
      var side = 1;
      while (side < n && h % (4 * side * side) === 0 && h + 4 * side * side <= h1) side *= 2;
      var xy = cFromH(n, h);
      squares.push([xy[0] - (xy[0] % side), xy[1] - (xy[1] % side), side, side]);
      h += side * side;
    }
    return squares;
  }

  /**
   * Outline of the Hilbert range [h0, h1) given as its aligned squares: canvas line segments
   * [x0, y0, x1, y1] where the range borders another range or the canvas edge. An edge of length
   * L is tested against the aligned L x L square across it (one contiguous index range): inside
   * [h0, h1) -> no line, disjoint -> line, else split in halves, down to minSide. Only squares
   * meeting cView [x0, y0, x1, y1] are traced; at most `budget` lines.
   */
  function cOutlineOfHRange(n, h0, h1, squares, minSide, cView, budget) {
    var lines = [];
    function edge(ex, ey, len, dir) {
      if (lines.length >= budget) return;
      var nx = dir === "L" ? ex - len : ex;
      var ny = dir === "T" ? ey - len : ey;
      var vertical = dir === "L" || dir === "R";
      var line = vertical ? [ex, ey, ex, ey + len] : [ex, ey, ex + len, ey];
      if (nx < 0 || ny < 0 || nx >= n || ny >= n) { lines.push(line); return; }
      var area = len * len;
      var h = hFromC(n, nx, ny);
      var a = h - (h % area);
      if (a >= h0 && a + area <= h1) return;
      if (a + area <= h0 || a >= h1 || len <= minSide) { lines.push(line); return; }
      var half = len / 2;
      edge(ex, ey, half, dir);
      if (vertical) edge(ex, ey + half, half, dir);
      else edge(ex + half, ey, half, dir);
    }
    for (var i = 0; i < squares.length; i++) {
      var q = squares[i];
      if (q[0] > cView[2] || q[1] > cView[3] || q[0] + q[2] < cView[0] || q[1] + q[3] < cView[1]) continue;
      edge(q[0], q[1], q[2], "L");
      edge(q[0] + q[2], q[1], q[2], "R");
      edge(q[0], q[1], q[2], "T");
      edge(q[0], q[1] + q[2], q[2], "B");
    }
    return lines;
  }

  WV.hFromC = hFromC;
  WV.cFromH = cFromH;
  WV.cSquaresFromHRange = cSquaresFromHRange;
  WV.cOutlineOfHRange = cOutlineOfHRange;
})();
