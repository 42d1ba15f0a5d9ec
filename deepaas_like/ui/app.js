/* The what-if page of deepaas_like: plain JavaScript modules, no build step, nothing from elsewhere.
 *
 * Every form is generated from /swagger.json: the predict and train operations' multipart
 * schemas give each argument's type, range, choices, default and description. The page then
 * calls the API as any client would:
 *   POST /v2/models/{name}/predict/          the Predict form (multipart, files included)
 *   POST /v2/models/{name}/infer             the what-if sweep: one tensor of N values, one request
 *   POST /v2/models/{name}/explain           Explain: a signed bar per feature (explain.js)
 *   POST /v2/models/{name}/train/            the Train form; then GET .../train/{uuid} and its /log
 *   GET  /v2/models/{name}/predictions/      the asynchronous predictions
 * With --auth, a token pasted in the header is kept in sessionStorage and sent as a Bearer token.
 * The Content-Security-Policy allows no inline script or style: everything is in these modules
 * and style.css; sizes are set through the CSSOM (element.style), which the policy allows.
 */

import { $, el, setStatus } from "./dom.js";
import { BASE, api, documentPaths, documentTags, errorText, formSchema, loadSpec, modelPath, operation, readJson,
  renderAuth } from "./api.js";
import { setUpExplain } from "./explain.js";
import { ArgumentForm } from "./forms.js";
import { setUpPredictions, setUpTraining } from "./jobs.js";
import { showAnswer } from "./results.js";
import { setUpWhatIf } from "./whatif.js";

const BODY = document.body;

// --- the model list (/ui/) -----------------------------------------------------------------

async function indexPage() {
  try {
    await loadSpec();
  } catch (error) {
    renderAuth(false);
  }
  const response = await api("/v2/models/");
  const body = await readJson(response);
  if (!response.ok) {
    setStatus(errorText(body, response), "error");
    return;
  }
  const models = body.models || [];
  setStatus(models.length ? "" : "No model is served (or none you may see: paste a token above).");
  $("#models").replaceChildren(...models.map((m) => {
    const name = m.name || m.id;
    if (m.state === "failed") {  // an installed plugin that could not be loaded: why, not a form
      return el("li", { class: "card model failed", "data-model": name },
        el("h2", { text: name }),
        el("p", { class: "error", text: `Could not be loaded: ${m.error || "unknown error"}` }),
        el("p", { class: "muted facts", text: "plugin · failed" }));
    }
    const facts = m.source === "upload"
      ? ["uploaded", [m.library, m.filetype].filter(Boolean).join(" "),
        m.current_version ? `version ${m.current_version}` : ""]
      : ["plugin", m.version ? `v${m.version}` : "", m.author || ""];
    return el("li", { class: "card model", "data-model": name },
      el("h2", {}, el("a", { href: `${BASE}/ui/models/${encodeURIComponent(name)}`, text: name })),
      el("p", { text: m.description || "" }),
      el("p", { class: "muted facts", text: facts.filter(Boolean).join(" · ") }));
  }));
}

// --- a model's page (/ui/models/{name}) ----------------------------------------------------

async function modelPage() {
  const name = BODY.dataset.model;
  try {
    await loadSpec();
  } catch (error) {
    setStatus(`Cannot read the API description: ${error.message}`, "error");
    return;
  }
  // The API description says whether the model exists and what it takes; its metadata (which
  // may need a token) only adds the description.
  if (!documentPaths().has(`/v2/models/${name}/`)) {
    const failed = await api(modelPath(name));  // a plugin that could not be loaded says why (503)
    const why = failed.status === 503 ? (await readJson(failed)).error : null;
    setStatus(why ? `“${name}” could not be loaded: ${why}` : `No model named “${name}” is served here.`, "error");
    return;
  }
  const tag = (documentTags().find((t) => t.name === name) || {}).description;
  $("#description").textContent = tag || "";
  const response = await api(modelPath(name));
  const meta = await readJson(response);
  if (response.ok) $("#description").textContent = meta.description || tag || "";
  if (response.status === 401) setStatus(`${errorText(meta, response)} Paste a token above.`, "error");
  else setStatus("");  // a token that may predict but not read metadata still predicts
  const predictOp = operation(`/v2/models/${name}/predict/`, "post");
  const trainOp = operation(`/v2/models/${name}/train/`, "post");
  const laterOp = operation(`/v2/models/${name}/predictions/`, "post");
  const inferOp = operation(`/v2/models/${name}/infer`, "post");
  const tabs = { predict: true, train: Boolean(trainOp), async: Boolean(laterOp) };
  for (const link of document.querySelectorAll("#tabs [data-tab]")) link.hidden = !tabs[link.dataset.tab];
  $("#tabs").hidden = false;

  const predictForm = predictOp ? setUpPredict(name, predictOp, Boolean(laterOp)) : null;
  if (!predictOp) {
    $("#predict-form").replaceChildren(el("p", { class: "muted", text: "This model cannot predict now: predictions "
      + "are turned off on this server, or (an uploaded model) none of its versions loads." }));
  }
  setUpWhatIf(name, predictOp, predictForm, Boolean(inferOp));
  setUpExplain(name, predictForm);
  if (trainOp) setUpTraining(name, trainOp);
  if (laterOp) setUpPredictions(name);

  const show = () => {
    let tab = (location.hash || "#predict").slice(1);
    if (tab === "what-if") tab = "predict";
    if (!tabs[tab]) tab = "predict";
    for (const section of document.querySelectorAll("section.tab")) section.hidden = section.id !== `tab-${tab}`;
    for (const link of document.querySelectorAll("#tabs [data-tab]")) {
      link.classList.toggle("active", link.dataset.tab === tab);
      link.setAttribute("aria-selected", String(link.dataset.tab === tab));
    }
    BODY.dispatchEvent(new CustomEvent("tab", { detail: tab }));
    if (location.hash === "#what-if") $("#what-if").scrollIntoView({ block: "start" });
  };
  window.addEventListener("hashchange", show);
  show();
}

function setUpPredict(name, op, canQueue) {
  const formNode = $("#predict-form");
  const form = new ArgumentForm(formNode, formSchema(op), "predict");
  const types = Object.keys(((op.responses || {})["200"] || {}).content || {});
  const acceptBox = $("#accept-choice");
  const accept = $("select", acceptBox);
  if (types.length > 1) {
    accept.replaceChildren(...types.map((t) => el("option", { value: t,
      text: t === "application/json" ? "values (JSON)" : t.startsWith("image/") ? `an image (${t})` : t })));
    acceptBox.hidden = false;
  }
  const result = $("#predict-result");
  formNode.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!form.numbersOk()) return;
    const button = $("button[type=submit]", formNode);
    button.disabled = true;
    result.classList.add("busy");
    const started = performance.now();
    try {
      const response = await api(modelPath(name, "predict/"), {
        method: "POST", body: form.formData(),
        headers: { Accept: acceptBox.hidden ? "application/json" : accept.value },
      });
      await showAnswer(result, response, started, form);
    } catch (error) {
      result.replaceChildren(el("p", { class: "notice error", text: `The request failed: ${error.message}` }));
    } finally {
      button.disabled = false;
      result.classList.remove("busy");
    }
  });
  const later = $("#predict-later");
  later.hidden = !canQueue;
  later.addEventListener("click", async () => {
    if (!form.numbersOk()) return;
    const response = await api(modelPath(name, "predictions/"), { method: "POST", body: form.formData() });
    const body = await readJson(response);
    if (response.status !== 202) {
      result.replaceChildren(el("p", { class: "notice error", text: errorText(body, response) }));
      form.showErrors(body.errors || {}, body.message);
      return;
    }
    form.clearErrors();
    location.hash = "#async";
  });
  return form;
}

// --- start ---------------------------------------------------------------------------------

const start = BODY.dataset.page === "model" ? modelPage : indexPage;
start().catch((error) => setStatus(`Something went wrong: ${error.message}`, "error"));
