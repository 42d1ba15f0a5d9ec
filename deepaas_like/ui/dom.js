/* Small DOM and number helpers of the what-if page (no dependencies). */

const SVG = "http://www.w3.org/2000/svg";

/** An element: el("p", {class: "help", text: "..."}, child, "text", ...). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  return fill(node, attrs, children);
}

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  return fill(node, attrs, children);
}

export function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "value" || key === "checked" || key === "multiple") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function fmt(x) {
  if (typeof x !== "number" || !Number.isFinite(x)) return String(x);
  if (Number.isInteger(x) && Math.abs(x) < 1e15) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return x.toExponential(3).replace(/\.?0+e/, "e");
  return String(Number(x.toPrecision(4)));
}

/** "0:00:02.657887" (a job's duration) as "2.7 s"; "1:02:03" as "1 h 2 min 3 s". */
export function duration(text) {
  const match = /^(\d+):(\d\d):(\d\d(?:\.\d+)?)$/.exec(text || "");
  if (!match) return text || "";
  const [h, m, s] = [Number(match[1]), Number(match[2]), Number(match[3])];
  if (!h && !m) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  return [h ? `${h} h` : "", m ? `${m} min` : "", `${Math.round(s)} s`].filter(Boolean).join(" ");
}

export function decimals(step) {
  const text = String(step);
  return text.includes(".") ? text.split(".")[1].length : 0;
}

export function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
}

export function ticks(lo, hi, count = 5) {
  const step = niceStep(hi - lo, count);
  const out = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) {
    out.push(Number((k * step).toPrecision(12)));  // k * step: no sum of rounding errors (0, not 5.5e-17)
  }
  return out;
}

export function setStatus(text, kind) {
  const status = $("#status");
  if (!status) return;
  status.textContent = text || "";
  status.className = kind === "error" ? "notice error" : "muted";
  status.hidden = !text;
}
