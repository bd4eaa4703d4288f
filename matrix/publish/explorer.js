/* forkwise's results explorer: filters, sorting, a throughput against p99 chart and each cell's evidence,
   over the JSON results.html embeds (#fw-data, made by forkwise.matrix.publish.explorer). It decides
   nothing: every text, verdict, number and mark comes from the report's analysis; this file only
   filters, sorts and plots. Plain JavaScript, no framework, no network. */
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("fw-data").textContent);
  const SVG_NS = "http://www.w3.org/2000/svg";
  // Okabe-Ito: told apart with any common colour-vision deficiency (a ninth value repeats a colour,
  // drawn with a dashed outline); every point's verdict is also its shape, its cell its tooltip.
  const PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"];
  const SHAPES = {
    OK: "circle", HANG: [[0, 1.2], [-1.1, -0.8], [1.1, -0.8]], ERROR: [[-1, -1], [1, -1], [1, 1], [-1, 1]],
    WRONG: [[0, -1.3], [1.3, 0], [0, 1.3], [-1.3, 0]], LOST: [[0, -1.2], [1.1, 0.8], [-1.1, 0.8]],
    CRASH: [[-1, -0.6], [-0.6, -1], [0, -0.4], [0.6, -1], [1, -0.6], [0.4, 0], [1, 0.6], [0.6, 1], [0, 0.4],
      [-0.6, 1], [-1, 0.6], [-0.4, 0]],
    BOOT: [[-0.35, -1.1], [0.35, -1.1], [0.35, -0.35], [1.1, -0.35], [1.1, 0.35], [0.35, 0.35], [0.35, 1.1],
      [-0.35, 1.1], [-0.35, 0.35], [-1.1, 0.35], [-1.1, -0.35], [-0.35, -0.35]],
  };
  const DEFAULT_SHAPE = [[-0.9, -0.9], [0.9, -0.9], [0.9, 0.9], [-0.9, 0.9]];
  const RESULT_SIGN = {met: "✓ ", missed: "✗ "};
  const merged = DATA.hosts.length > 0;
  const state = {filters: {}, sortKey: null, sortDir: 1, colourBy: DATA.colour_by, openRow: null};
  const ui = {};

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    (children || []).forEach((c) => node.append(c));
    return node;
  }
  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    return node;
  }
  function setAttrs(node, attrs) {
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (k === "text") node.textContent = v;
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
    });
  }
  function cellText(id) {  // a cell id that wraps at its slashes
    const parts = [];
    id.split("/").forEach((part, i) => { if (i) parts.push("/", el("wbr")); parts.push(part); });
    return parts;
  }
  function dimension(key) { return DATA.dimensions.find((d) => d.key === key); }
  function hostPrefix(host) { return merged && host ? host + ": " : ""; }

  // --- filters ------------------------------------------------------------------------------------
  function buildFilters() {
    const box = el("form", {class: "fw-filters", "aria-label": "filters"}, [el("h2", {text: "Filters"})]);
    box.addEventListener("submit", (e) => e.preventDefault());
    DATA.dimensions.forEach((dim) => {
      state.filters[dim.key] = new Set(dim.values.map((v) => v[0]));
      const set = el("fieldset", {"data-dimension": dim.key}, [el("legend", {text: dim.label})]);
      if (dim.values.length > 1) {
        set.append(miniButton("all", "show every " + dim.label, () => setDimension(dim, set, true)),
          miniButton("none", "hide every " + dim.label, () => setDimension(dim, set, false)), el("br"));
      }
      dim.values.forEach(([value, count]) => {
        const box = el("input", {type: "checkbox", checked: true, value: value, "data-dimension": dim.key});
        box.addEventListener("change", () => {
          state.filters[dim.key][box.checked ? "add" : "delete"](value);
          render();
        });
        set.append(el("label", {}, [box, " " + value + " ", el("span", {class: "fw-count", text: "(" + count + ")"})]));
      });
      box.append(set);
    });
    const reset = el("button", {type: "button", text: "Show every row"});
    reset.addEventListener("click", () => {
      DATA.dimensions.forEach((dim) => setDimension(dim, box.querySelector(`fieldset[data-dimension="${dim.key}"]`), true));
    });
    box.append(reset);
    return box;
  }
  function miniButton(text, label, action) {
    const b = el("button", {type: "button", class: "fw-mini", text: text, "aria-label": label});
    b.addEventListener("click", action);
    return b;
  }
  function setDimension(dim, set, on) {
    state.filters[dim.key] = new Set(on ? dim.values.map((v) => v[0]) : []);
    set.querySelectorAll("input").forEach((b) => { b.checked = on; });
    render();
  }
  function visibleRows() {
    const rows = DATA.rows.map((r, i) => [r, i]).filter(([r]) =>
      DATA.dimensions.every((d) => state.filters[d.key].has(r.t[d.key])));
    if (state.sortKey === null) return rows;
    const key = state.sortKey, dir = state.sortDir;
    return rows.sort(([a, ia], [b, ib]) => {
      const x = a.v[key], y = b.v[key];
      if (x === null || y === null) return x === y ? ia - ib : (x === null ? 1 : -1);  // missing: last
      const c = (typeof x === "number" && typeof y === "number") ? x - y
        : String(x).localeCompare(String(y), undefined, {numeric: true});
      return c === 0 ? ia - ib : c * dir;
    });
  }

  // --- the verdict matrix: strategy x server of the rows shown ------------------------------------
  function buildMatrix() {
    ui.matrix = el("section", {class: "fw-matrix", "aria-label": "verdict matrix"});
    return ui.matrix;
  }
  function ordered(key, names) {  // the filter's order (the report's), for the names present
    const dim = dimension(key);
    return dim ? dim.values.map((v) => v[0]).filter((n) => names.has(n)) : [...names];
  }
  function renderMatrix(rows) {
    const cells = new Map(), seen = new Set(), strategyNames = new Set(), serverNames = new Set();
    rows.forEach(([r]) => {
      if (seen.has(r.cell)) return;  // one verdict per cell, whatever its levels
      seen.add(r.cell);
      strategyNames.add(r.t.strategy);
      serverNames.add(r.t.server);
      const key = r.t.strategy + "\u0000" + r.t.server;
      if (!cells.has(key)) cells.set(key, []);
      cells.get(key).push(r.t.verdict);
    });
    const strategies = ordered("strategy", strategyNames), servers = ordered("server", serverNames);
    const head = el("tr", {}, [el("th", {scope: "col", text: "strategy"}), ...servers.map((s) => el("th", {scope: "col", text: s}))]);
    const body = strategies.map((st) => el("tr", {}, [el("th", {scope: "row", text: st}), ...servers.map((sv) => {
      const verdicts = cells.get(st + "\u0000" + sv) || [];
      const distinct = [...new Set(verdicts)];
      const text = distinct.length ? distinct.join(" / ") + (verdicts.length > 1 ? " (" + verdicts.length + " cells)" : "") : "-";
      return el("td", {class: distinct.length === 1 ? "v-" + distinct[0] : null, text: text});
    })]));
    ui.matrix.replaceChildren(el("h2", {text: "Verdict matrix of the rows shown"}),
      el("table", {class: "fw-matrix-table"}, [el("thead", {}, [head]), el("tbody", {}, body)]));
  }

  // --- the table ----------------------------------------------------------------------------------
  function buildTable() {
    const head = el("tr");
    DATA.columns.forEach((col) => {
      const button = el("button", {type: "button", "data-key": col.key}, [col.title, el("span", {"aria-hidden": "true", class: "fw-arrow"})]);
      button.addEventListener("click", () => sortBy(col.key));
      head.append(el("th", {scope: "col", "aria-sort": "none", "data-key": col.key}, [button]));
    });
    ui.tbody = el("tbody");
    ui.tbody.addEventListener("click", (e) => { const tr = e.target.closest("tr"); if (tr) openRow(tr); });
    ui.tbody.addEventListener("keydown", rowKey);
    ui.tbody.addEventListener("focusin", (e) => highlight(e.target.closest("tr"), true));
    ui.tbody.addEventListener("focusout", (e) => highlight(e.target.closest("tr"), false));
    ui.tbody.addEventListener("mouseover", (e) => highlight(e.target.closest("tr"), true));
    ui.tbody.addEventListener("mouseout", (e) => highlight(e.target.closest("tr"), false));
    ui.thead = el("thead", {}, [head]);
    const caption = el("caption", {text: "One row per cell and concurrency level (a cell without load: one row). " +
      "Sort by a column with its header; open a row (click, or Enter) for its cell's evidence."});
    const same = DATA.same.length ? el("p", {class: "fw-same", text: "Same in every row: " +
      DATA.same.map(([k, v]) => k + " " + v).join(", ") + "."}) : "";
    return el("section", {class: "fw-table-wrap", "aria-label": "cells"}, [el("h2", {text: "Cells"}), same,
      el("table", {class: "fw-table", id: "fw-table"}, [caption, ui.thead, ui.tbody])]);
  }
  function sortBy(key) {
    state.sortDir = state.sortKey === key ? -state.sortDir : 1;
    state.sortKey = key;
    ui.thead.querySelectorAll("th").forEach((th) => {
      const on = th.dataset.key === key;
      th.setAttribute("aria-sort", on ? (state.sortDir > 0 ? "ascending" : "descending") : "none");
      th.querySelector(".fw-arrow").textContent = on ? (state.sortDir > 0 ? " ▲" : " ▼") : "";
    });
    render();
  }
  function renderTable(rows) {
    ui.tbody.replaceChildren(...rows.map(([r, i]) => {
      const tr = el("tr", {tabindex: "0", "data-row": i, "data-point": r.point ? "1" : "0",
        class: (r.rec ? "fw-rec" : "") + (state.openRow === i ? " fw-open" : "")});
      DATA.columns.forEach((col) => {
        const cls = col.key === "verdict" ? "v-" + r.t.verdict : col.key === "marks" ? "fw-marks" : col.numeric ? "fw-num" : null;
        tr.append(el("td", {class: cls, "data-key": col.key}, col.key === "cell_id" ? cellText(r.t.cell_id) : [r.t[col.key]]));
      });
      return tr;
    }));
  }
  function rowKey(e) {
    const tr = e.target.closest("tr");
    if (!tr) return;
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openRow(tr); }
    else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      const next = e.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
      if (next) { e.preventDefault(); next.focus(); }
    }
  }
  function highlight(tr, on) {
    if (!tr || !ui.svg) return;
    ui.svg.querySelectorAll(`.fw-point[data-row="${tr.dataset.row}"]`).forEach((p) => p.classList.toggle("fw-hl", on));
  }

  // --- the chart: throughput against p99 ------------------------------------------------------------
  function buildChart() {
    ui.svg = svgEl("svg", {id: "fw-chart-svg", viewBox: "0 0 760 420", role: "img", "aria-labelledby": "fw-chart-title"});
    ui.svg.addEventListener("click", (e) => {
      const p = e.target.closest(".fw-point");
      const tr = p && ui.tbody.querySelector(`tr[data-row="${p.dataset.row}"]`);
      if (tr) { openRow(tr); }
    });
    const select = el("select", {id: "fw-colour-by"});
    DATA.dimensions.filter((d) => d.values.length > 1 || d.key === state.colourBy).forEach((d) =>
      select.append(el("option", {value: d.key, text: d.label, selected: d.key === state.colourBy})));
    select.addEventListener("change", () => { state.colourBy = select.value; render(); });
    ui.legend = el("ul", {class: "fw-legend", "aria-label": "legend"});
    return el("section", {class: "fw-chart", "aria-label": "chart"}, [
      el("h2", {id: "fw-chart-title", text: "Throughput against p99 latency of the rows shown"}),
      el("label", {}, ["Colour by ", select]), ui.svg, ui.legend]);
  }
  function niceTicks(lo, hi, n) {
    const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) ticks.push(+t.toPrecision(12));
    return ticks;
  }
  function logTicks(lo, hi) {
    const ticks = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      [1, 2, 5].forEach((m) => { const t = m * Math.pow(10, e); if (t >= lo && t <= hi) ticks.push(t); });
    }
    return ticks;
  }
  function shapePath(verdict, x, y, s) {
    const shape = SHAPES[verdict] || DEFAULT_SHAPE;
    if (shape === "circle") return `M${x - s},${y}a${s},${s} 0 1,0 ${2 * s},0a${s},${s} 0 1,0 ${-2 * s},0Z`;
    return "M" + shape.map(([dx, dy]) => `${(x + dx * s).toFixed(1)},${(y + dy * s).toFixed(1)}`).join("L") + "Z";
  }
  function colourOf(text) {
    const i = dimension(state.colourBy).values.findIndex((v) => v[0] === text);
    return {fill: PALETTE[i % PALETTE.length], second: i >= PALETTE.length};
  }
  function renderChart(rows) {
    const svg = ui.svg, W = 760, H = 420, m = {l: 70, r: 20, t: 16, b: 50};
    svg.replaceChildren(svgEl("title", {text: "Throughput against p99 latency; one point per row shown"}));
    const pts = rows.filter(([r]) => r.point);
    if (!pts.length) {
      svg.append(svgEl("text", {x: W / 2, y: H / 2, "text-anchor": "middle", text: "No row shown has a throughput and a p99."}));
      return renderLegend(pts);
    }
    const budgets = DATA.budgets.map((b) => b.p99_ms);
    const xs = pts.map(([r]) => r.v.p99_ms).concat(budgets), ys = pts.map(([r]) => r.v.rps);
    const x0 = Math.log10(Math.min(...xs) / 1.25), x1 = Math.log10(Math.max(...xs) * 1.25);
    const y1 = Math.max(...ys) * 1.08 || 1;
    const X = (v) => m.l + (Math.log10(v) - x0) / (x1 - x0) * (W - m.l - m.r);
    const Y = (v) => H - m.b - v / y1 * (H - m.t - m.b);
    logTicks(Math.pow(10, x0), Math.pow(10, x1)).forEach((t) => {
      svg.append(svgEl("line", {class: "fw-grid", x1: X(t), x2: X(t), y1: m.t, y2: H - m.b}),
        svgEl("text", {class: "fw-tick", x: X(t), y: H - m.b + 16, "text-anchor": "middle", text: String(t)}));
    });
    niceTicks(0, y1, 6).forEach((t) => {
      svg.append(svgEl("line", {class: "fw-grid", x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t)}),
        svgEl("text", {class: "fw-tick", x: m.l - 6, y: Y(t) + 4, "text-anchor": "end", text: t.toLocaleString("en")}));
    });
    svg.append(svgEl("line", {class: "fw-axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b}),
      svgEl("line", {class: "fw-axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b}),
      svgEl("text", {x: (W + m.l) / 2, y: H - 10, "text-anchor": "middle", text: "p99 latency, ms (log scale)"}),
      svgEl("text", {x: 16, y: (H - m.b) / 2, transform: `rotate(-90 16 ${(H - m.b) / 2})`, "text-anchor": "middle", text: "requests/s"}));
    DATA.budgets.forEach((b) => {
      const line = svgEl("line", {class: "fw-budget", x1: X(b.p99_ms), x2: X(b.p99_ms), y1: m.t, y2: H - m.b});
      line.append(svgEl("title", {text: hostPrefix(b.host) + "p99 budget " + b.p99_ms + " ms"}));
      svg.append(line);
    });
    drawCellLines(svg, pts, X, Y);
    pts.forEach(([r, i]) => {
      const x = X(r.v.p99_ms), y = Y(r.v.rps), colour = colourOf(r.t[state.colourBy]);
      const p = svgEl("path", {class: "fw-point" + (colour.second ? " fw-second" : ""), d: shapePath(r.t.verdict, x, y, 5.5),
        fill: colour.fill, "data-row": i});
      p.append(svgEl("title", {text: hostPrefix(r.t.host) + r.t.cell_id + " at concurrency " + r.t.concurrency + ": " +
        r.t.rps + " req/s, p99 " + r.t.p99_ms + " ms, " + r.t.verdict + (r.t.marks !== "-" ? " (" + r.t.marks + ")" : "")}));
      svg.append(p);
      if (r.rec) svg.append(svgEl("circle", {class: "fw-ring", cx: x, cy: y, r: 10}));
    });
    renderLegend(pts);
  }
  function drawCellLines(svg, pts, X, Y) {
    const byCell = new Map();
    pts.forEach(([r]) => { if (!byCell.has(r.cell)) byCell.set(r.cell, []); byCell.get(r.cell).push(r); });
    byCell.forEach((rs) => {
      if (rs.length < 2) return;
      rs.sort((a, b) => a.v.concurrency - b.v.concurrency);
      svg.append(svgEl("polyline", {class: "fw-line", stroke: colourOf(rs[0].t[state.colourBy]).fill,
        points: rs.map((r) => X(r.v.p99_ms).toFixed(1) + "," + Y(r.v.rps).toFixed(1)).join(" ")}));
    });
  }
  function swatch(verdict, fill, second, ring) {
    const s = svgEl("svg", {viewBox: "0 0 16 16", "aria-hidden": "true"});
    if (ring) s.append(svgEl("circle", {class: "fw-ring", cx: 8, cy: 8, r: 6.5, fill: "none", stroke: "#000", "stroke-width": 2}));
    else s.append(svgEl("path", {d: shapePath(verdict, 8, 8, 5), fill: fill, stroke: "#000",
      "stroke-width": second ? 1.5 : 0.8, "stroke-dasharray": second ? "2 1.5" : null}));
    return s;
  }
  function renderLegend(pts) {
    const shown = (key) => new Set(pts.map(([r]) => r.t[key]));
    const colours = shown(state.colourBy), verdicts = shown("verdict");
    const items = dimension(state.colourBy).values.filter(([v]) => colours.has(v)).map(([v]) => {
      const c = colourOf(v);
      return el("li", {}, [swatch("OK", c.fill, c.second), " " + v]);
    });
    dimension("verdict").values.filter(([v]) => verdicts.has(v)).forEach(([v]) =>
      items.push(el("li", {}, [swatch(v, "#fff"), " verdict " + v])));
    items.push(el("li", {}, [swatch("OK", null, false, true), " recommended (ring)"]),
      el("li", {text: "dashed line: the p99 budget; faint lines join a cell's levels"}));
    ui.legend.replaceChildren(...items);
  }

  // --- the recommendation and the goals -----------------------------------------------------------
  function buildHighlights() {
    const rec = el("section", {"aria-label": "recommendation"}, [el("h2", {text: "Recommendation"})]);
    DATA.budgets.forEach((b) => rec.append(el("p", {text: hostPrefix(b.host) + "the most throughput with " + b.text + "."})));
    DATA.recommendations.forEach((r) => {
      rec.append(el("p", {}, [el("strong", {text: hostPrefix(r.host) + (r.question ? r.question + ": " : "")}), r.answer]));
      if (!r.set.length) return;
      const body = el("tbody");
      r.set.forEach((item) => {
        const open = el("button", {type: "button", class: "fw-mini"}, [item.best ? "★ " : "", ...cellText(item.row[0])]);
        open.addEventListener("click", () => openCell(item.cell, null));
        body.append(el("tr", {}, [el("td", {}, [open]), ...item.row.slice(1).map((t) => el("td", {text: t}))]));
      });
      rec.append(el("table", {}, [el("thead", {}, [el("tr", {}, DATA.recommendation_headers.map((h) => el("th", {text: h})))]), body]));
    });
    const goals = el("section", {"aria-label": "performance goals"}, [el("h2", {text: "Performance goals"})]);
    const body = el("tbody");
    DATA.goals.forEach((g) => body.append(el("tr", {}, [el("td", {text: hostPrefix(g.host) + g.number}),
      el("td", {class: g.met === true ? "fw-met v-OK" : g.met === false ? "fw-met v-HANG" : "", text: (RESULT_SIGN[g.result] || "– ") + g.result}),
      el("td", {text: g.goal}), el("td", {text: g.measured + " (" + (g.ratio !== "-" ? "ratio " + g.ratio + ", " : "") + "target " + g.target + ")"})])));
    goals.append(el("table", {}, [el("thead", {}, [el("tr", {}, ["#", "result", "goal", "measured"].map((h) => el("th", {text: h})))]), body]));
    return el("div", {class: "fw-highlights", tabindex: "0", "aria-label": "the recommendation and the goals"}, [rec, goals]);
  }

  // --- a cell's evidence --------------------------------------------------------------------------
  function buildEvidence() {
    ui.evidence = el("aside", {class: "fw-evidence", id: "fw-evidence", role: "dialog", "aria-modal": "false",
      "aria-labelledby": "fw-evidence-title", hidden: true});
    ui.evidence.addEventListener("keydown", (e) => { if (e.key === "Escape") closeEvidence(); });
    return ui.evidence;
  }
  function openRow(tr) {
    state.openRow = Number(tr.dataset.row);
    ui.tbody.querySelectorAll("tr.fw-open").forEach((t) => t.classList.remove("fw-open"));
    tr.classList.add("fw-open");
    openCell(DATA.rows[state.openRow].cell, tr);
  }
  function section(title, children) {
    return [el("h3", {text: title}), ...children];
  }
  function openCell(index, tr) {
    const c = DATA.cells[index];
    ui.returnTo = tr || document.activeElement;
    const close = el("button", {type: "button", class: "fw-close", text: "Close (Esc)"});
    close.addEventListener("click", closeEvidence);
    const facts = el("table", {}, [el("tbody", {}, c.facts.map(([k, v]) => el("tr", {}, [el("th", {scope: "row", text: k}), el("td", {text: v})])))]);
    const pre = (text) => el("pre", {text: text});
    const parts = [close, el("h2", {id: "fw-evidence-title", tabindex: "-1"}, [hostPrefix(c.host), ...cellText(c.id), ": " + c.verdict]), facts];
    parts.push(...section("Findings", c.findings.length ? [el("ul", {}, c.findings.map((f) => el("li", {text: f})))] : [el("p", {text: "No findings recorded."})]));
    if (c.timings.length) parts.push(...section("Timings (s)", [el("table", {}, [el("tbody", {}, c.timings.map(([k, v]) => el("tr", {}, [el("th", {scope: "row", text: k}), el("td", {class: "fw-num", text: v})])))])]));
    if (c.highlights.length) parts.push(...section("Telling lines of the server log", [pre(c.highlights.join("\n"))]));
    if (c.stacks.length) parts.push(...section("Stacks: where each process was stuck (py-spy dump)", c.stacks.map(pre)));
    if (c.db_log.length) parts.push(...section("The database server's log", [pre(c.db_log.join("\n"))]));
    parts.push(...section("Log tail", [c.tail ? pre(c.tail) : el("p", {text: "No server log recorded."})]));
    ui.evidence.replaceChildren(...parts);
    ui.evidence.hidden = false;
    ui.evidence.querySelector("h2").focus();
  }
  function closeEvidence() {
    ui.evidence.hidden = true;
    if (ui.returnTo && ui.returnTo.isConnected) ui.returnTo.focus();
  }

  // --- the page -----------------------------------------------------------------------------------
  function render() {
    const rows = visibleRows();
    const points = rows.filter(([r]) => r.point).length;
    ui.summary.textContent = `Showing ${rows.length} of ${DATA.rows.length} rows; ${points} in the chart.`;
    renderMatrix(rows);
    renderTable(rows);
    renderChart(rows);
  }
  ui.summary = el("p", {class: "fw-summary", id: "fw-summary", "aria-live": "polite"});
  const main = document.getElementById("explorer");
  main.append(buildFilters(), ui.summary, buildMatrix(), el("div", {class: "fw-top"}, [buildChart(), buildHighlights()]),
    buildTable(), buildEvidence());
  render();
}());
