/* Explain, beside Predict: why the model answers what it does, a signed bar per feature.
 *   POST /v2/models/{name}/explain     the Predict form's arguments (multipart), maxExplanations
 * The strengths are the server's (shap, in the model's workers, against the model's
 * explanations initialization); a model without one answers 409 naming the route to make it. */

import { $, el, fmt } from "./dom.js";
import { api, errorText, modelPath, operation, readJson } from "./api.js";

const SHOWN = 20;  // features asked for: the page shows every one a tabular model usually has

export function setUpExplain(name, form) {
  const button = $("#explain");
  const box = $("#explain-result");
  if (!form || !operation(`/v2/models/${name}/explain`, "post")) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    if (!form.numbersOk()) return;
    const body = form.formData();
    body.append("maxExplanations", String(SHOWN));
    button.disabled = true;
    box.hidden = false;
    box.classList.add("busy");
    try {
      const response = await api(modelPath(name, "explain"), { method: "POST", body });
      const answer = await readJson(response);
      if (!response.ok) {
        box.replaceChildren(el("p", { class: "notice error", "data-status": response.status,
                                      text: errorText(answer, response) }));
        if (answer.errors) form.showErrors(answer.errors, answer.message);
        return;
      }
      form.clearErrors();
      box.replaceChildren(...answer.data.map(explanationBars));
    } catch (error) {
      box.replaceChildren(el("p", { class: "notice error", text: `The request failed: ${error.message}` }));
    } finally {
      button.disabled = false;
      box.classList.remove("busy");
    }
  });
}

/** One row's explanations: a bar per feature, right (pushes the answer up) or left (down). */
export function explanationBars(row) {
  const items = row.predictionExplanations || [];
  const largest = Math.max(...items.map((e) => Math.abs(e.strength)), 1e-300);
  const what = row.explainedClass !== undefined ? `p(${row.explainedClass})` : "the prediction";
  return el("div", { class: "explanation", "data-prediction": row.prediction },
    el("h3", { text: `Why ${fmt(row.prediction)}` }),
    el("p", { class: "muted", text: `Each feature's push on ${what} from the average answer `
      + `${fmt(row.expectedValue)} over the background rows (Shapley values).` }),
    el("div", { class: "bars signed" }, items.map((e) => {
      const half = el("span", { class: e.strength >= 0 ? "fill up" : "fill down" });
      half.style.width = `${((Math.abs(e.strength) / largest) * 50).toFixed(2)}%`;
      half.style.marginLeft = e.strength >= 0 ? "50%" : `${(50 - (Math.abs(e.strength) / largest) * 50).toFixed(2)}%`;
      return el("div", { class: "bar-row", "data-feature": e.feature, "data-strength": e.strength },
        el("span", { class: "bar-label", text: `${e.feature} = ${fmt(e.featureValue)}` }),
        el("span", { class: "bar" }, half),
        el("span", { class: "bar-value", text: `${e.strength >= 0 ? "+" : ""}${fmt(e.strength)} ${e.qualitativeStrength}` }));
    })),
    items.length ? null : el("p", { class: "muted", text: "Not explained: the prediction is outside the thresholds." }));
}
