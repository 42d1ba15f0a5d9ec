/* The API as the page calls it: the base path, the user's token, /swagger.json. */

import { $, el } from "./dom.js";

export const BASE = document.body.dataset.base || "";
const TOKEN_KEY = "deepaas_like.token";
let SPEC = { paths: {} };

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  const response = await fetch(BASE + path, { ...options, headers });
  if (response.status === 401) renderAuth(true);
  return response;
}

export async function readJson(response) {
  try {
    return await response.json();
  } catch (error) {
    return { message: `${response.status} ${response.statusText}: the answer is not JSON` };
  }
}

export function errorText(body, response) {
  return (body && (body.message || body.error)) || `${response.status} ${response.statusText}`;
}

export function modelPath(name, rest = "") {
  return `/v2/models/${encodeURIComponent(name)}/${rest}`;
}

export function renderAuth(needed) {
  const box = $("#auth");
  if (!box) return;
  box.replaceChildren();
  if (token()) {
    box.append(el("span", { class: "token-set", text: "Token in use" }),
      el("button", { type: "button", class: "link", text: "Forget", onclick: () => {
        sessionStorage.removeItem(TOKEN_KEY);
        location.reload();
      } }));
    return;
  }
  if (!needed) return;
  const input = el("input", { type: "password", name: "token", placeholder: "Paste an API token", autocomplete: "off",
                              "aria-label": "API token" });
  box.append(el("form", { class: "token-form", onsubmit: (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    location.reload();
  } }, input, el("button", { type: "submit", class: "secondary", text: "Use token" })));
}

export async function loadSpec() {
  const response = await fetch(`${BASE}/swagger.json`);
  if (!response.ok) throw new Error(`/swagger.json answered ${response.status}`);
  SPEC = await response.json();
  renderAuth(Boolean(SPEC.components && SPEC.components.securitySchemes));
}

export function resolve(schema) {
  let s = schema || {};
  for (let depth = 0; s && s.$ref && depth < 10; depth++) {
    s = s.$ref.replace(/^#\//, "").split("/").reduce((node, key) => (node || {})[key], SPEC);
  }
  return s || {};
}

/** The paths of the API description (without the base path, as the document writes them). */
export function documentPaths() {
  return new Set(Object.keys(SPEC.paths || {}));
}

export function documentTags() {
  return SPEC.tags || [];
}

export function operation(path, method) {
  const item = (SPEC.paths || {})[path];
  return item ? item[method] || null : null;
}

export function formSchema(op) {
  const content = (op && op.requestBody && op.requestBody.content) || {};
  const media = content["multipart/form-data"] || content["application/x-www-form-urlencoded"];
  return media ? resolve(media.schema) : { type: "object", properties: {} };
}
