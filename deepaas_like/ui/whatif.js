/* What if: vary one numeric input over a range, keep the others as they are in the form,
 * send every point in one request to /infer (one tensor of N values; the other inputs as the
 * request's parameters) and draw the chosen output as an SVG line chart: a whole output at once
 * (every class's probability, one line each, with a legend) or one of its lines. "Keep to
 * compare" keeps a sweep on the chart (dashed) while the next one is drawn over it. */

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
  const keepButton = $("#what-if-keep");
  const forgetButton = $("#what-if-forget");
  let last = null;
  let kept = null;  // a sweep kept to compare the next ones with: {run}

  keepButton.addEventListener("click", () => {
    if (!last) return;
    kept = { run: last };
    forgetButton.hidden = false;
    draw(last, outputSelect.value);
  });
  forgetButton.addEventListener("click", () => {
    kept = null;
    forgetButton.hidden = true;
    if (last) draw(last, outputSelect.value);
  });

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
    if (!form.numbersOk()) return;
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
      const choices = choicesOf(series);
      outputSelect.replaceChildren(...choices.map((c) => el("option", { value: c.id, text: c.label })));
      outputSelect.value = choices.some((c) => c.id === previous) ? previous : defaultChoice(choices, series).id;
      outputBox.hidden = false;
      keepButton.hidden = false;
      draw(last, outputSelect.value);
    } catch (error) {
      errorBox.textContent = `The request failed: ${error.message}`;
    } finally {
      button.disabled = false;
      chartBox.classList.remove("busy");
    }
  });

  function draw(run, id) {
    const choices = choicesOf(seriesOf(run.outputs, run.xs.length));
    const chosen = choices.find((c) => c.id === id) || choices[0];
    const notes = run.outputs.filter((o) => o.datatype === "BYTES" && o.shape.length === 1
      && !(o.parameters || {}).content_type);  // labels, in each point's tooltip
    const lines = chosen.series.map((s) => ({ xs: run.xs, ys: s.values, name: s.key }));
    const comparable = kept && kept.run.input === run.input;
    if (comparable) {
      const keptChoice = choicesOf(seriesOf(kept.run.outputs, kept.run.xs.length)).find((c) => c.id === chosen.id);
      const summary = differences(kept.run.current, run.current);
      for (const s of (keptChoice ? keptChoice.series : [])) {
        lines.push({ xs: kept.run.xs, ys: s.values, name: `${s.key} (kept: ${summary})`, kept: true });
      }
    }
    const width = Math.max(320, Math.min(900, Math.round(chartBox.clientWidth || 720)));
    chartBox.replaceChildren(lineChart(lines, {
      xLabel: run.input, yLabel: chosen.series.length > 1 ? chosen.series[0].output : chosen.label, probability: chosen.probability, marker: run.x0, width,
      notes: run.xs.map((_, i) => notes.map((o) => `${o.name}: ${o.data[i]}`).join(", ")),
    }));
    if (kept && !comparable) errorBox.textContent = `The kept sweep varied ${kept.run.input}: not drawn here.`;
  }
}

/** What the kept sweep's other inputs were where they differ from the current one's (all of
 * them when none differs). */
function differences(kept, current) {
  const all = Object.entries(kept).map(([n, v]) => [n, v, JSON.stringify(v) !== JSON.stringify(current[n])]);
  const changed = all.filter(([, , differs]) => differs);
  return (changed.length ? changed : all).map(([n, v]) => `${n}=${v}`).join(", ") || "the same inputs";
}

/** What the Plot menu offers: each output as a whole (every class at once), then each line. */
export function choicesOf(series) {
  const groups = new Map();
  for (const s of series) {
    if (!groups.has(s.output)) groups.set(s.output, []);
    groups.get(s.output).push(s);
  }
  const choices = [];
  for (const [output, members] of groups) {
    if (members.length > 1) {
      choices.push({ id: `${output}\u0000*`, label: `${output} (all ${members.length})`, series: members,
                     probability: members.every((m) => m.probability) });
    }
  }
  for (const s of series) choices.push({ id: s.id, label: s.label, series: [s], probability: s.probability });
  return choices;
}

export function defaultChoice(choices, series) {
  const whole = choices.find((c) => c.series.length > 1 && c.probability);
  if (whole) return whole;
  const one = defaultSeries(series);
  return choices.find((c) => c.id === one.id) || choices[0];
}

/** Whether an error message names the argument ``name`` (then it is shown next to its field too). */
function namesArgument(text, name) {
  const escaped = name.replace(/\W/g, "\\$&");
  return new RegExp(`(^|[\\s'"(])${escaped}(['":)]|$)`).test(text);
}

export function defaultRange(s, current) {
  const [lo, hi] = bounds(s);
  const integer = s.type === "integer";
  const seenLo = s["x-observed-minimum"], seenHi = s["x-observed-maximum"];
  let range;
  if (lo !== null && hi !== null && hi > lo && hi - lo <= 1e6) {
    range = [lo, hi];
  } else if (typeof seenLo === "number" && typeof seenHi === "number" && seenHi > seenLo) {
    range = [seenLo, seenHi];  // what the reference dataset covers
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
      series.push({ id: output.name, label: output.name, key: output.name, output: output.name, values: output.data,
                    probability });
    } else if (output.shape.length === 2) {
      const k = output.shape[1];
      const keys = (output.parameters || {}).keys || Array.from({ length: k }, (_, j) => String(j));
      keys.forEach((key, j) => series.push({
        id: `${output.name}\u0000${key}`, label: `${output.name}: ${key}`, key: String(key), output: output.name,
        probability, values: Array.from({ length: count }, (_, i) => output.data[i * k + j]),
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

/** An SVG line chart: axes with ticks, one line per series (kept ones dashed), one circle per
 * point of the first series (data-points = its N), and a legend when there is more than one.
 * ``width``: the chart's width in the page's pixels, so that its text keeps its size on a phone. */
export function lineChart(lines, { xLabel, yLabel, probability, marker, notes, width = 720 }) {
  const W = width, H = Math.round(Math.max(260, Math.min(360, width * 0.55)));
  const left = 56, right = 16, top = 20;
  const legendRows = lines.length > 1 ? lines.length : 0;
  const bottom = 48 + legendRows * 18;
  const allX = lines.flatMap((l) => l.xs), allY = lines.flatMap((l) => l.ys);
  let xlo = Math.min(...allX), xhi = Math.max(...allX);
  if (xlo === xhi) { xlo -= 1; xhi += 1; }
  let ylo = Math.min(...allY), yhi = Math.max(...allY);
  if (probability) { ylo = 0; yhi = 1; }
  else if (ylo === yhi) { ylo -= Math.abs(ylo) / 10 || 1; yhi += Math.abs(yhi) / 10 || 1; }
  else { const pad = (yhi - ylo) * 0.08; ylo -= pad; yhi += pad; }
  const plotBottom = H + legendRows * 18 - bottom;
  const X = (x) => left + ((x - xlo) / (xhi - xlo)) * (W - left - right);
  const Y = (y) => plotBottom - ((y - ylo) / (yhi - ylo)) * (plotBottom - top);
  const height = H + legendRows * 18;
  const xs0 = lines[0].xs;
  const chart = svg("svg", { class: "what-if-chart", viewBox: `0 0 ${W} ${height}`, width: W, height, role: "img",
                             "data-points": xs0.length, "data-lines": lines.length,
                             "aria-label": `${yLabel} as ${xLabel} varies` });
  const grid = svg("g", { class: "grid" });
  const axes = svg("g", { class: "axes" });
  for (const t of ticks(xlo, xhi, Math.max(3, Math.floor(W / 90)))) {
    grid.append(svg("line", { x1: X(t), x2: X(t), y1: top, y2: plotBottom }));
    axes.append(svg("text", { x: X(t), y: plotBottom + 18, class: "tick x", text: fmt(t) }));
  }
  for (const t of ticks(ylo, yhi, 5)) {
    grid.append(svg("line", { x1: left, x2: W - right, y1: Y(t), y2: Y(t) }));
    const label = probability ? `${Math.round(t * 100)} %` : fmt(t);
    axes.append(svg("text", { x: left - 8, y: Y(t) + 4, class: "tick y", text: label }));
  }
  axes.append(svg("line", { x1: left, x2: W - right, y1: plotBottom, y2: plotBottom, class: "axis" }),
    svg("line", { x1: left, x2: left, y1: top, y2: plotBottom, class: "axis" }),
    svg("text", { x: (left + W - right) / 2, y: plotBottom + 38, class: "axis-label", text: xLabel }),
    svg("text", { x: 14, y: (top + plotBottom) / 2, class: "axis-label y",
                  transform: `rotate(-90 14 ${(top + plotBottom) / 2})`, text: yLabel }));
  chart.append(grid, axes);
  if (typeof marker === "number" && marker >= xlo && marker <= xhi) {
    chart.append(svg("g", { class: "marker" }, svg("line", { x1: X(marker), x2: X(marker), y1: top, y2: plotBottom }),
      svg("text", { x: X(marker) + 4, y: top + 12, text: `form: ${fmt(marker)}` })));
  }
  const colours = new Map();  // a kept line takes the colour of the current line of the same name
  lines.forEach((line) => {
    const base = line.kept ? line.name.replace(/ \(kept: .*\)$/, "") : line.name;
    if (!colours.has(base)) colours.set(base, colours.size % 8);
    const colour = colours.get(base);
    chart.append(svg("polyline", { class: `line series-${colour}${line.kept ? " kept" : ""}`, "data-name": line.name,
                                   points: line.xs.map((x, i) => `${X(x)},${Y(line.ys[i])}`).join(" ") }));
  });
  const points = svg("g", { class: "points" });
  xs0.forEach((x, i) => points.append(svg("circle", { cx: X(x), cy: Y(lines[0].ys[i]), r: 4, class: "point" },
    svg("title", { text: `${xLabel} = ${fmt(x)} → ${lines.map((l) => `${l.name} = ${fmt(l.ys[i])}`).filter(
      (_, j) => !lines[j].kept).join(", ")}${notes[i] ? ` (${notes[i]})` : ""}` }))));
  chart.append(points);
  if (legendRows) {
    const legend = svg("g", { class: "legend" });
    lines.forEach((line, j) => {
      const base = line.kept ? line.name.replace(/ \(kept: .*\)$/, "") : line.name;
      const y = H + j * 18 - 4;
      legend.append(svg("line", { x1: left, x2: left + 24, y1: y, y2: y,
                                  class: `line series-${colours.get(base)}${line.kept ? " kept" : ""}` }),
        svg("text", { x: left + 32, y: y + 4, class: "legend-label", text: line.name }));
    });
    chart.append(legend);
  }
  return chart;
}
