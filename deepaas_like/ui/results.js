/* A model's answer for a person: values and tables, class probabilities as bars, numbers as
 * columns, images inline, other files as downloads, errors next to their fields. */

import { el, fmt, svg } from "./dom.js";
import { errorText, readJson } from "./api.js";

export function isProbabilities(value, key) {
  const entries = Object.entries(value);
  if (!entries.length || entries.length > 100) return false;
  if (!entries.every(([, v]) => typeof v === "number" && v >= 0 && v <= 1)) return false;
  const sum = entries.reduce((total, [, v]) => total + v, 0);
  return /prob|score|confidence|likelihood/i.test(key || "") || (entries.length > 1 && Math.abs(sum - 1) < 0.01);
}

export function probabilityBars(value) {
  const entries = Object.entries(value).sort((a, b) => b[1] - a[1]);
  return el("div", { class: "bars", "data-kind": "probabilities" }, entries.map(([label, p], index) => {
    const fillBar = el("span", { class: index === 0 ? "fill best" : "fill" });
    fillBar.style.width = `${(p * 100).toFixed(2)}%`;
    return el("div", { class: "bar-row", "data-label": label },
      el("span", { class: "bar-label", text: label }),
      el("span", { class: "bar" }, fillBar),
      el("span", { class: "bar-value", text: `${(p * 100).toFixed(1)} %` }));
  }));
}

export function numberColumns(values) {
  const top = Math.max(...values.map(Math.abs), 1e-300);
  const width = 16 * values.length;
  const chart = svg("svg", { class: "columns-chart", viewBox: `0 0 ${width} 60`, width: Math.min(width * 1.5, 360),
                             height: 60, role: "img", "aria-label": "values as columns" });
  values.forEach((v, i) => {
    const h = Math.max((Math.abs(v) / top) * 56, v ? 1 : 0);
    chart.append(svg("rect", { x: i * 16 + 2, y: 58 - h, width: 12, height: h, class: "column" },
      svg("title", { text: `${i + 1}: ${fmt(v)}` })));
  });
  return chart;
}

export function renderValue(value, key) {
  if (value === null || value === undefined) return el("span", { class: "muted", text: "—" });
  if (typeof value === "number") return el("span", { class: "num", text: fmt(value) });
  if (typeof value === "boolean") return el("span", { class: `bool ${value}`, text: value ? "yes" : "no" });
  if (typeof value === "string") return el("span", { class: "str", text: value });
  if (Array.isArray(value)) {
    if (!value.length) return el("span", { class: "muted", text: "(empty)" });
    if (value.every((v) => typeof v === "number")) {
      return el("div", { class: "numbers" }, value.length >= 4 && value.length <= 64 ? numberColumns(value) : null,
        el("div", { class: "number-list", text: value.map(fmt).join("  ·  ") }));
    }
    if (value.every((v) => v && typeof v === "object" && !Array.isArray(v))) return table(value);
    return el("ol", { class: "plain" }, value.map((v) => el("li", {}, renderValue(v))));
  }
  if (isProbabilities(value, key)) return probabilityBars(value);
  return el("table", { class: "kv" }, el("tbody", {}, Object.entries(value).map(([k, v]) =>
    el("tr", { "data-key": k }, el("th", { text: k }), el("td", {}, renderValue(v, k))))));
}

export function table(rows) {
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  return el("table", { class: "rows" },
    el("thead", {}, el("tr", {}, el("th", { text: "#" }), columns.map((c) => el("th", { text: c })))),
    el("tbody", {}, rows.map((row, i) => el("tr", {}, el("td", { class: "muted", text: String(i + 1) }),
      columns.map((c) => el("td", {}, renderValue(row[c], c)))))));
}

export function headline(value) {
  if (!value || typeof value !== "object" || Array.isArray(value)) return null;
  for (const key of ["label", "prediction", "class", "value"]) {
    if (key in value && (typeof value[key] === "string" || typeof value[key] === "number")) {
      return el("p", { class: "headline" }, el("span", { class: "muted", text: `${key} ` }),
        el("strong", { text: typeof value[key] === "number" ? fmt(value[key]) : value[key] }));
    }
  }
  return null;
}

export function filename(response, type) {
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(response.headers.get("Content-Disposition") || "");
  if (match) return decodeURIComponent(match[1]);
  const ext = (type.split("/")[1] || "bin").split(/[;+]/)[0];
  return `result.${ext}`;
}

/** A prediction's answer in ``box``: values and tables, bars, an image, or a download. */
export async function showAnswer(box, response, started, form) {
  const type = (response.headers.get("Content-Type") || "").split(";")[0].trim();
  const took = started ? ` · ${Math.round(performance.now() - started)} ms` : "";
  const status = el("p", { class: `http-status ${response.ok ? "ok" : "failed"}`, "data-status": response.status,
                           text: `${response.status} ${response.statusText || ""}${took}` });
  box.replaceChildren(status);
  box.dataset.answers = String(Number(box.dataset.answers || 0) + 1);  // a new answer, for whoever waits
  if (type.includes("json")) {
    const body = await readJson(response);
    if (!response.ok) {
      box.append(el("p", { class: "notice error", text: errorText(body, response) }));
      if (form) {
        if (body.errors) form.showErrors(body.errors, body.message);
        else form.showErrors({}, body.message);
      }
      return body;
    }
    if (form) form.clearErrors();
    const wrapped = body && typeof body === "object" && "predictions" in body && "status" in body;
    const value = wrapped ? body.predictions : body;
    box.append(el("div", { class: "answer" }, headline(value), renderValue(value)),
      el("details", { class: "raw" }, el("summary", { text: "The answer as JSON" }),
        el("pre", { text: JSON.stringify(body, null, 2) })));
    return body;
  }
  if (form) form.clearErrors();
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const name = filename(response, type || "application/octet-stream");
  if (type.startsWith("image/")) {
    box.append(el("figure", { class: "image" }, el("img", { src: url, alt: `the model's answer (${type})` }),
      el("figcaption", {}, `${type}, ${blob.size} bytes · `,
        el("a", { href: url, download: name, text: "download" }))));
  } else if (type.startsWith("text/")) {
    box.append(el("pre", { class: "text", text: await blob.text() }));
  } else {
    box.append(el("p", { class: "download" }, el("a", { href: url, download: name, class: "button",
                                                        text: `Download ${name}` }),
      ` ${type || "binary"}, ${blob.size} bytes`));
  }
  return null;
}
