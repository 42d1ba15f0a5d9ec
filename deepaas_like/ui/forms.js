/* Forms generated from an operation's multipart schema: one field per argument, with its
 * type, range (a slider when bounded), choices, default and description; errors per field. */

import { $, decimals, el, fmt, niceStep } from "./dom.js";
import { resolve } from "./api.js";

export function isFile(s) {
  return s.type === "string" && s.format === "binary";
}

export function kindOf(s) {
  if (isFile(s)) return "file";
  if (s.type === "array") return isFile(resolve(s.items)) ? "files" : "list";
  if (Array.isArray(s.enum)) return "choice";
  if (s.type === "boolean") return "boolean";
  if (s.type === "integer" || s.type === "number") return "number";
  if (s.type === "object") return "json";
  return "text";
}

export function bounds(s) {
  const lo = typeof s.minimum === "number" ? s.minimum : null;
  const hi = typeof s.maximum === "number" ? s.maximum : null;
  return [lo, hi];
}

export function sliderStep(s, lo, hi) {
  if (s.type === "integer") return 1;
  return niceStep(hi - lo, 100);
}

export function describe(s, required) {
  const kind = kindOf(s);
  const parts = [];
  const [lo, hi] = bounds(s);
  const range = lo !== null && hi !== null ? `${fmt(lo)} – ${fmt(hi)}` : lo !== null ? `≥ ${fmt(lo)}`
    : hi !== null ? `≤ ${fmt(hi)}` : "";
  if (kind === "list") {
    const items = resolve(s.items);
    parts.push(`list of ${items.type === "integer" ? "integers" : items.type === "number" ? "numbers" : "values"}`);
    const [ilo, ihi] = bounds(items);
    if (ilo !== null && ihi !== null && ihi - ilo < 1e6) parts.push(`each ${fmt(ilo)} – ${fmt(ihi)}`);
    if (s.minItems || s.maxItems) parts.push(`${s.minItems || 0} – ${s.maxItems || "∞"} items`);
  } else if (kind === "file" || kind === "files") parts.push(kind === "files" ? "files" : "file");
  else if (kind === "choice") parts.push("one of the choices");
  else parts.push(s.type === "integer" ? "integer" : s.type || "value");
  if (range && kind === "number") parts.push(range);
  if (s.default !== undefined && kind !== "list") {
    parts.push(`default ${typeof s.default === "number" ? fmt(s.default) : JSON.stringify(s.default)}`);
  }
  if (required) parts.push("required");
  return parts.join(" · ");
}

/** One form: a field per argument of ``schema``; reads values, shows errors per field. */
export class ArgumentForm {
  constructor(form, schema, prefix) {
    this.form = form;
    this.schema = schema;
    this.prefix = prefix;
    this.required = new Set(schema.required || []);
    this.properties = schema.properties || {};
    form.addEventListener("reset", (event) => {
      event.preventDefault();
      this.build();
    });
    this.build();
  }

  build() {
    const fields = $(".fields", this.form);
    fields.replaceChildren();
    const names = Object.keys(this.properties);
    if (!names.length) fields.append(el("p", { class: "muted", text: "This model takes no arguments." }));
    for (const name of names) fields.append(this.field(name, resolve(this.properties[name])));
    this.clearErrors();
  }

  field(name, s) {
    const id = `${this.prefix}-${name}`;
    const required = this.required.has(name);
    const kind = kindOf(s);
    const label = el("label", { for: id }, el("span", { class: "name", text: name }),
      el("span", { class: "type", text: describe(s, required) }));
    return el("div", { class: `field kind-${kind}${required ? " required" : ""}`, "data-field": name },
      label, el("div", { class: "control" }, this.control(name, s, id, kind)),
      s.description ? el("p", { class: "help", text: s.description }) : null,
      el("p", { class: "error", "data-error-for": name, role: "alert" }));
  }

  control(name, s, id, kind) {
    if (kind === "file" || kind === "files") {
      return el("input", { type: "file", id, name, multiple: kind === "files" });
    }
    if (kind === "list") return this.list(name, s, id);
    if (kind === "choice") {
      const select = el("select", { id, name });
      if (!this.required.has(name) && s.default === undefined) {
        select.append(el("option", { value: "", text: "— not set —" }));
      }
      for (const choice of s.enum) {
        select.append(el("option", { value: String(choice), text: String(choice) }));
      }
      if (s.default !== undefined) select.value = String(s.default);
      return select;
    }
    if (kind === "boolean") {
      const box = el("input", { type: "checkbox", id, name, checked: s.default === true });
      return el("label", { class: "check" }, box, el("span", { text: "yes" }));
    }
    if (kind === "number") return this.number(name, s, id, s.default);
    if (kind === "json") {
      return el("textarea", { id, name, rows: 3, placeholder: "JSON",
                              value: s.default !== undefined ? JSON.stringify(s.default) : "" });
    }
    return el("input", { type: "text", id, name, value: s.default !== undefined ? String(s.default) : "" });
  }

  number(name, s, id, value) {
    const [lo, hi] = bounds(s);
    const input = el("input", { type: "number", id, name, step: s.type === "integer" ? 1 : "any",
                                min: lo ?? null, max: hi ?? null,
                                value: value !== undefined && value !== null ? String(value) : "" });
    if (lo === null || hi === null || !(hi - lo > 0) || hi - lo > 1e6) return input;
    const step = sliderStep(s, lo, hi);
    const slider = el("input", { type: "range", min: lo, max: hi, step, tabindex: -1, "aria-hidden": "true",
                                 class: "slider", "data-slider-for": name });
    slider.value = input.value === "" ? String(lo) : input.value;
    slider.addEventListener("input", () => {
      input.value = String(Number(Number(slider.value).toFixed(decimals(step))));
    });
    input.addEventListener("input", () => {
      if (input.value !== "") slider.value = input.value;
    });
    return el("div", { class: "number-with-slider" }, input, slider);
  }

  list(name, s, id) {
    const items = resolve(s.items);
    const box = el("div", { class: "list", id });
    const add = (value) => {
      const itemKind = kindOf(items);
      const input = itemKind === "number" ? this.numberItem(name, items, value)
        : itemKind === "choice"
          ? el("select", { name }, items.enum.map((c) => el("option", { value: String(c), text: String(c) })))
          : el("input", { type: "text", name, value: value ?? "" });
      if (itemKind === "choice" && value !== undefined) input.value = String(value);
      const row = el("div", { class: "list-item" }, input,
        el("button", { type: "button", class: "remove", title: "Remove", "aria-label": "Remove", text: "×",
                       onclick: () => row.remove() }));
      rows.append(row);
    };
    const rows = el("div", { class: "list-items" });
    box.append(rows, el("button", { type: "button", class: "link add", text: "+ Add a value",
                                    onclick: () => add(undefined) }));
    const defaults = Array.isArray(s.default) ? s.default : [undefined];
    defaults.forEach((value) => add(value));
    return box;
  }

  numberItem(name, s, value) {
    const [lo, hi] = bounds(s);
    return el("input", { type: "number", name, step: s.type === "integer" ? 1 : "any", min: lo ?? null,
                         max: hi ?? null, value: value !== undefined ? String(value) : "" });
  }

  /** Whether every number field holds a number; if not, says so next to each field that does
   * not (a browser gives text typed in a number field as empty: the server would then say
   * "missing", which is not what went wrong). */
  numbersOk() {
    const bad = {};
    for (const input of this.form.querySelectorAll("input[type=number]")) {
      if (input.validity.badInput) bad[input.name] = ["Not a number."];
    }
    if (!Object.keys(bad).length) return true;
    this.showErrors(bad);
    return false;
  }

  /** The form as multipart data: empty optional fields are left out (their defaults apply). */
  formData() {
    const data = new FormData();
    for (const [name, raw] of Object.entries(this.properties)) {
      const s = resolve(raw);
      const kind = kindOf(s);
      const field = this.fieldNode(name);
      if (kind === "file" || kind === "files") {
        for (const file of $("input[type=file]", field).files) data.append(name, file, file.name);
      } else if (kind === "list") {
        for (const input of field.querySelectorAll(".list-item input, .list-item select")) {
          if (input.value.trim() !== "") data.append(name, input.value.trim());
        }
      } else if (kind === "boolean") {
        const box = $("input[type=checkbox]", field);
        if (box.checked || s.default !== undefined || this.required.has(name)) data.append(name, String(box.checked));
      } else {
        const input = $(`[name="${CSS.escape(name)}"]`, field);
        if (input.value.trim() !== "") data.append(name, input.value.trim());
      }
    }
    return data;
  }

  /** The scalar arguments' current values, typed (for the what-if request's parameters). */
  scalarValues() {
    const values = {};
    for (const [name, raw] of Object.entries(this.properties)) {
      const s = resolve(raw);
      const kind = kindOf(s);
      const field = this.fieldNode(name);
      if (kind === "boolean") {
        values[name] = $("input[type=checkbox]", field).checked;
      } else if (kind === "number" || kind === "choice" || kind === "text") {
        const text = $(`[name="${CSS.escape(name)}"]`, field).value.trim();
        if (text === "") continue;
        values[name] = kind === "number" || (kind === "choice" && typeof s.enum[0] === "number") ? Number(text) : text;
      }
    }
    return values;
  }

  fieldNode(name) {
    return this.form.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
  }

  clearErrors() {
    for (const node of this.form.querySelectorAll("[data-error-for]")) node.textContent = "";
    for (const node of this.form.querySelectorAll(".field.invalid")) node.classList.remove("invalid");
  }

  /** A 422's ``errors`` ({argument: [messages]}) next to their fields; the rest under the form. */
  showErrors(errors, message) {
    this.clearErrors();
    const unplaced = [];
    let first = null;
    for (const [name, detail] of Object.entries(errors || {})) {
      const field = this.fieldNode(name);
      const text = flattenMessages(detail).join(" ");
      if (!field) {
        unplaced.push(`${name}: ${text}`);
        continue;
      }
      field.classList.add("invalid");
      $(`[data-error-for="${CSS.escape(name)}"]`, field).textContent = text;
      first = first || field;
    }
    const general = this.form.querySelector('.form-error[data-error-for=""]');
    if (general) general.textContent = unplaced.length ? unplaced.join(" ") : first ? "" : message || "";
    if (first) {
      first.scrollIntoView({ block: "center", behavior: "instant" });
      const control = $("input, select, textarea", first);
      if (control) control.focus({ preventScroll: true });
    }
  }
}

export function flattenMessages(detail, prefix = "") {
  if (typeof detail === "string") return [prefix + detail];
  if (Array.isArray(detail)) return detail.flatMap((d) => flattenMessages(d, prefix));
  if (detail && typeof detail === "object") {
    return Object.entries(detail).flatMap(([key, d]) =>
      flattenMessages(d, /^\d+$/.test(key) ? `value ${Number(key) + 1}: ` : `${key}: `));
  }
  return [prefix + String(detail)];
}
