/* What if: vary one numeric input over a range, keep the others as they are in the form,
 * send every point in one request to /infer (one tensor of N values; the other inputs as the
 * request's parameters) and draw the chosen output as an SVG line chart. */

import { $, el, fmt, svg, ticks } from "./dom.js";
import { api, errorText, readJson, resolve } from "./api.js";
import { bounds, kindOf } from "./forms.js";

export function setUpWhatIf(name, op, form, canInfer) {
  const why = $("#what-if-why");
  const controls = $("#what-if-form");
  if (!op || !form) {
    why.textContent = "Predictions are turned off on this server.";
    return;
  }
  const properties = form.properties;
  const notScalar = Object.entries(properties).map(([n, raw]) => [n, kindOf(resolve(raw))])
    .filter(([, kind]) => !["number", "boolean", "choice", "text"].includes(kind));
  const numeric = Object.keys(properties).filter((n) => kindOf(resolve(properties[n])) === "number");
  if (!canInfer) {
    why.textContent = "The inference endpoint (/infer) is not served for this model.";
    return;
  }
  if (notScalar.length || !numeric.length) {
    const what = { list: "a list", files: "files", file: "a file", json: "an object" };
    why.textContent = !numeric.length ? `${name} takes no numeric input to vary.`
      : "A what-if sweep sends each input as one value per point, so it needs every input to be a single value; "
        + `${name} also takes ${notScalar.map(([n, kind]) => `${n} (${what[kind]})`).join(" and ")}. `
        + "Use the form above instead.";
    $("#what-if").classList.add("unavailable");
    return;
  }
  why.textContent = "Vary one input over a range, keep the others as they are in the form, and see how the answer "
    + "moves: one request to /infer with every point.";
  controls.hidden = false;
  const inputSelect = $("select[name=input]", controls);
  inputSelect.replaceChildren(...numeric.map((n) => el("option", { value: n, text: n })));
  const fromInput = $("input[name=from]", controls);
  const toInput = $("input[name=to]", controls);
  const pointsInput = $("input[name=points]", controls);
  const outputBox = $("#what-if-output");
  const outputSelect = $("select", outputBox);
  const errorBox = $("#what-if-error");
  const chartBox = $("#what-if-chart");
  let last = null;

  // The range follows the varied input's value in the form until the user sets one.
  let rangeSetByUser = false;
  const pickRange = () => {
    const input = inputSelect.value;
    const [lo, hi] = defaultRange(resolve(properties[input]), form.scalarValues()[input]);
    fromInput.value = String(lo);
    toInput.value = String(hi);
  };
  inputSelect.addEventListener("change", () => {
    rangeSetByUser = false;
    pickRange();
  });
  for (const node of [fromInput, toInput]) node.addEventListener("input", () => { rangeSetByUser = true; });
  form.form.addEventListener("input", (event) => {
    const name = event.target.name || event.target.dataset.sliderFor;
    if (!rangeSetByUser && name === inputSelect.value) pickRange();
  });
  pickRange();

  outputSelect.addEventListener("change", () => last && draw(last, outputSelect.value));

  controls.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.textContent = "";
    form.clearErrors();
    const input = inputSelect.value;
    const s = resolve(properties[input]);
    const integer = s.type === "integer";
    const lo = Number(fromInput.value);
    const hi = Number(toInput.value);
    const count = Math.round(Number(pointsInput.value));
    if (!Number.isFinite(lo) || !Number.isFinite(hi) || lo === hi) {
      errorBox.textContent = "Give a range: two different numbers.";
      return;
    }
    if (!(count >= 2 && count <= 500)) {
      errorBox.textContent = "Points: between 2 and 500.";
      return;
    }
    const values = form.scalarValues();
    const missing = Object.keys(properties).filter((n) => form.required.has(n) && n !== input && !(n in values));
    if (missing.length) {
      form.showErrors(Object.fromEntries(missing.map((n) => [n, ["Needed for the what-if: fill it in."]])));
      errorBox.textContent = `Fill in ${missing.join(", ")} in the form first.`;
      return;
    }
    const xs = Array.from({ length: count }, (_, i) => {
      const x = lo + ((hi - lo) * i) / (count - 1);
      return integer ? Math.round(x) : Number(x.toPrecision(12));
    });
    delete values[input];
    const request = {
      inputs: [{ name: input, shape: [count], datatype: integer ? "INT64" : "FP64", data: xs }],
      parameters: values,
    };
    const button = $("button[type=submit]", controls);
    button.disabled = true;
    chartBox.classList.add("busy");
    try {
      const response = await api(`/v2/models/${encodeURIComponent(name)}/infer`, {
        method: "POST", body: JSON.stringify(request), headers: { "Content-Type": "application/json" },
      });
      const body = await readJson(response);
      if (!response.ok) {
        errorBox.textContent = errorText(body, response);
        const field = Object.keys(properties).find((n) => namesArgument(errorBox.textContent, n));
        if (field && field !== input) form.showErrors({ [field]: [errorBox.textContent] });
        chartBox.replaceChildren();
        return;
      }
      last = { input, xs, outputs: body.outputs || [], current: values, x0: form.scalarValues()[input] };
      const series = seriesOf(last.outputs, count);
      if (!series.length) {
        errorBox.textContent = "The model answered no numeric output to draw.";
        return;
      }
      const previous = outputSelect.value;
      outputSelect.replaceChildren(...series.map((s) => el("option", { value: s.id, text: s.label })));
      outputSelect.value = series.some((s) => s.id === previous) ? previous : defaultSeries(series).id;
      outputBox.hidden = false;
      draw(last, outputSelect.value);
    } catch (error) {
      errorBox.textContent = `The request failed: ${error.message}`;
    } finally {
      button.disabled = false;
      chartBox.classList.remove("busy");
    }
  });

  function draw(run, id) {
    const series = seriesOf(run.outputs, run.xs.length);
    const chosen = series.find((s) => s.id === id) || series[0];
    const notes = run.outputs.filter((o) => o.datatype === "BYTES" && o.shape.length === 1
      && !(o.parameters || {}).content_type);  // labels, in each point's tooltip
    chartBox.replaceChildren(lineChart(run.xs, chosen.values, {
      xLabel: run.input, yLabel: chosen.label, probability: chosen.probability, marker: run.x0,
      notes: run.xs.map((_, i) => notes.map((o) => `${o.name}: ${o.data[i]}`).join(", ")),
    }));
  }
}

/** Whether an error message names the argument ``name`` (then it is shown next to its field too). */
function namesArgument(text, name) {
  const escaped = name.replace(/\W/g, "\\$&");
  return new RegExp(`(^|[\\s'"(])${escaped}(['":)]|$)`).test(text);
}

export function defaultRange(s, current) {
  const [lo, hi] = bounds(s);
  const integer = s.type === "integer";
  let range;
  if (lo !== null && hi !== null && hi > lo && hi - lo <= 1e6) {
    range = [lo, hi];
  } else {
    const v = typeof current === "number" && Number.isFinite(current) ? current
      : typeof s.default === "number" ? s.default : lo !== null ? lo : 0;
    range = v === 0 ? [-1, 1] : [v - Math.abs(v) / 2, v + Math.abs(v) / 2];
    if (lo !== null) range[0] = Math.max(range[0], lo);
    if (hi !== null) range[1] = Math.min(range[1], hi);
    if (range[1] <= range[0]) range[1] = range[0] + 1;
  }
  if (integer) range = [Math.ceil(range[0]), Math.max(Math.floor(range[1]), Math.ceil(range[0]) + 1)];
  return range.map((x) => Number(x.toPrecision(6)));
}

/** Every numeric output as one line: a [N] tensor, or each key (class) of an [N, k] one. */
export function seriesOf(outputs, count) {
  const series = [];
  for (const output of outputs) {
    if (!/^(FP|INT|UINT)/.test(output.datatype) || output.shape[0] !== count) continue;
    const probability = /prob/i.test(output.name);
    if (output.shape.length === 1) {
      series.push({ id: output.name, label: output.name, values: output.data, probability });
    } else if (output.shape.length === 2) {
      const k = output.shape[1];
      const keys = (output.parameters || {}).keys || Array.from({ length: k }, (_, j) => String(j));
      keys.forEach((key, j) => series.push({
        id: `${output.name}\u0000${key}`, label: `${output.name}: ${key}`, probability,
        values: Array.from({ length: count }, (_, i) => output.data[i * k + j]),
      }));
    }
  }
  return series;
}

export function defaultSeries(series) {
  const spread = (s) => Math.max(...s.values) - Math.min(...s.values);
  const probabilities = series.filter((s) => s.probability);
  if (probabilities.length) return probabilities.reduce((a, b) => (spread(b) > spread(a) ? b : a));
  return series.find((s) => s.id === "value") || series[0];
}

/** An SVG line chart: axes with ticks, a line, one circle per point (data-points = N). */
export function lineChart(xs, ys, { xLabel, yLabel, probability, marker, notes }) {
  const W = 720, H = 360, left = 64, right = 24, top = 20, bottom = 56;
  let xlo = Math.min(...xs), xhi = Math.max(...xs);
  if (xlo === xhi) { xlo -= 1; xhi += 1; }
  let ylo = Math.min(...ys), yhi = Math.max(...ys);
  if (probability) { ylo = 0; yhi = 1; }
  else if (ylo === yhi) { ylo -= Math.abs(ylo) / 10 || 1; yhi += Math.abs(yhi) / 10 || 1; }
  else { const pad = (yhi - ylo) * 0.08; ylo -= pad; yhi += pad; }
  const X = (x) => left + ((x - xlo) / (xhi - xlo)) * (W - left - right);
  const Y = (y) => H - bottom - ((y - ylo) / (yhi - ylo)) * (H - top - bottom);
  const chart = svg("svg", { class: "what-if-chart", viewBox: `0 0 ${W} ${H}`, role: "img",
                             "data-points": xs.length, "aria-label": `${yLabel} as ${xLabel} varies` });
  const grid = svg("g", { class: "grid" });
  const axes = svg("g", { class: "axes" });
  for (const t of ticks(xlo, xhi, 8)) {
    grid.append(svg("line", { x1: X(t), x2: X(t), y1: top, y2: H - bottom }));
    axes.append(svg("text", { x: X(t), y: H - bottom + 18, class: "tick x", text: fmt(t) }));
  }
  for (const t of ticks(ylo, yhi, 5)) {
    grid.append(svg("line", { x1: left, x2: W - right, y1: Y(t), y2: Y(t) }));
    const label = probability ? `${Math.round(t * 100)} %` : fmt(t);
    axes.append(svg("text", { x: left - 8, y: Y(t) + 4, class: "tick y", text: label }));
  }
  axes.append(svg("line", { x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, class: "axis" }),
    svg("line", { x1: left, x2: left, y1: top, y2: H - bottom, class: "axis" }),
    svg("text", { x: (left + W - right) / 2, y: H - 12, class: "axis-label", text: xLabel }),
    svg("text", { x: 16, y: (top + H - bottom) / 2, class: "axis-label y",
                  transform: `rotate(-90 16 ${(top + H - bottom) / 2})`, text: yLabel }));
  chart.append(grid, axes);
  if (typeof marker === "number" && marker >= xlo && marker <= xhi) {
    chart.append(svg("g", { class: "marker" }, svg("line", { x1: X(marker), x2: X(marker), y1: top, y2: H - bottom }),
      svg("text", { x: X(marker) + 4, y: top + 12, text: `form: ${fmt(marker)}` })));
  }
  chart.append(svg("polyline", { class: "line", points: xs.map((x, i) => `${X(x)},${Y(ys[i])}`).join(" ") }));
  const points = svg("g", { class: "points" });
  xs.forEach((x, i) => points.append(svg("circle", { cx: X(x), cy: Y(ys[i]), r: 4, class: "point" },
    svg("title", { text: `${xLabel} = ${fmt(x)} → ${yLabel} = ${fmt(ys[i])}${notes[i] ? ` (${notes[i]})` : ""}` }))));
  chart.append(points);
  return chart;
}
