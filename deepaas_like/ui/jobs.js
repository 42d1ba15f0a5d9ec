/* Trainings (a form, a live progress bar and the log) and asynchronous predictions. */

import { $, duration, el } from "./dom.js";
import { BASE, api, errorText, formSchema, modelPath, readJson } from "./api.js";
import { ArgumentForm } from "./forms.js";
import { renderValue, showAnswer } from "./results.js";

const FINAL = new Set(["done", "error", "cancelled", "interrupted"]);

function argumentsText(args) {
  return Object.entries(args || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
}

export function setUpTraining(name, op) {
  const formNode = $("#train-form");
  const form = new ArgumentForm(formNode, formSchema(op), "train");
  const box = $("#training");
  let following = null;

  formNode.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!form.numbersOk()) return;
    const button = $("button[type=submit]", formNode);
    button.disabled = true;
    try {
      const response = await api(modelPath(name, "train/"), { method: "POST", body: form.formData() });
      const job = await readJson(response);
      if (!response.ok) {
        form.showErrors(job.errors || {}, errorText(job, response));
        box.replaceChildren(el("p", { class: "notice error", text: errorText(job, response) }));
        return;
      }
      form.clearErrors();
      follow(job.uuid);
    } finally {
      button.disabled = false;
    }
  });

  function follow(uuid) {
    following = uuid;
    delete box.dataset.status;
    const bar = el("progress", { id: "train-progress", max: 1, value: 0 });
    const percent = el("span", { class: "percent", id: "train-percent", text: "0 %" });
    const state = el("span", { class: "badge", id: "train-status", text: "…" });
    const message = el("span", { class: "muted", id: "train-message" });
    const log = el("pre", { class: "log", id: "train-log" });
    const outcome = el("div", { class: "outcome" });
    const cancel = el("button", { type: "button", class: "secondary", text: "Cancel", onclick: async () => {
      await api(modelPath(name, `train/${uuid}`), { method: "DELETE" });
    } });
    box.replaceChildren(
      el("p", { class: "job-head" }, state, " ", el("code", { text: uuid.slice(0, 8) }), " ", cancel),
      el("div", { class: "progress-line" }, bar, percent), message,
      el("h3", { text: "Log" }), log, outcome);
    let logSize = 0;
    const tick = () => poll().catch((error) => {  // the server restarting, the network: try again
      message.textContent = `Cannot reach the server (${error.message}); trying again…`;
      setTimeout(tick, 1000);
    });
    const poll = async () => {
      if (following !== uuid) return;
      // The status first, then the log: once the status is final, the log read after it is whole.
      const response = await api(modelPath(name, `train/${uuid}`));
      const job = await readJson(response);
      if (!response.ok) {
        outcome.replaceChildren(el("p", { class: "notice error", text: errorText(job, response) }));
        return;
      }
      const logResponse = await api(modelPath(name, `train/${uuid}/log?offset=${logSize}`));
      if (logResponse.ok) {
        const text = await logResponse.text();
        logSize = Number(logResponse.headers.get("X-Log-Size")) || logSize + text.length;
        if (text) {
          log.append(text);
          log.scrollTop = log.scrollHeight;
        }
      }
      const progress = job.status === "done" ? 1 : Math.max(0, Math.min(1, Number(job.progress) || 0));
      bar.value = progress;
      percent.textContent = `${Math.round(progress * 100)} %`;
      state.textContent = job.status + (job.queue_position ? ` (#${job.queue_position} in the queue)` : "");
      state.className = `badge ${job.status}`;
      box.dataset.status = job.status;
      message.textContent = job.progress_message || "";
      if (!FINAL.has(job.status)) {
        setTimeout(tick, 300);
        return;
      }
      cancel.remove();
      if (job.status === "done") {
        outcome.replaceChildren(el("h3", { text: "Result" }),
          renderValue(job.result ? job.result.output : null), el("p", { class: "muted",
            text: `Took ${duration(job.duration || (job.result && job.result.duration)) || "?"}.` }));
      } else {
        outcome.replaceChildren(el("p", { class: "notice error", text: `${job.status}: ${job.message || ""}` }));
      }
      listTrainings(name, follow);
    };
    tick();
    listTrainings(name, follow);
  }

  listTrainings(name, follow);
}

export async function listTrainings(name, follow) {
  const box = $("#trainings");
  const jobs = await newestJobs(modelPath(name, "train/"));
  if (!jobs) return;
  if (!jobs.length) {
    box.replaceChildren(el("p", { class: "muted", text: "None yet." }));
    return;
  }
  box.replaceChildren(el("table", { class: "rows" },
    el("thead", {}, el("tr", {}, ["Started", "Status", "Progress", "Arguments", ""].map((h) => el("th", { text: h })))),
    el("tbody", {}, jobs.map((job) => el("tr", {},
      el("td", { text: job.date || "" }),
      el("td", {}, el("span", { class: `badge ${job.status}`, text: job.status })),
      el("td", { text: job.status === "done" ? "100 %"
        : job.progress != null ? `${Math.round(job.progress * 100)} %` : "" }),
      el("td", { class: "args", text: argumentsText(job.args) }),
      el("td", {}, el("button", { type: "button", class: "link", text: "Show", onclick: () => follow(job.uuid) })))))));
}

/** The newest jobs of a listing (it answers oldest first, with the total in X-Total-Count). */
export async function newestJobs(path, count = 25) {
  const first = await api(`${path}?limit=1`);
  if (!first.ok) return null;
  const total = Number(first.headers.get("X-Total-Count")) || 0;
  const response = await api(`${path}?limit=${count}&offset=${Math.max(0, total - count)}`);
  if (!response.ok) return null;
  return (await response.json()).reverse();
}

// --- asynchronous predictions --------------------------------------------------------------

export function setUpPredictions(name) {
  const box = $("#predictions");
  let timer = null;
  const refresh = async () => {
    clearTimeout(timer);
    const jobs = await newestJobs(modelPath(name, "predictions/"));
    if (!jobs) {
      box.replaceChildren(el("p", { class: "notice error", text: "Cannot list the predictions." }));
      return;
    }
    box.replaceChildren(jobs.length ? el("table", { class: "rows predictions" },
      el("thead", {}, el("tr", {}, ["Submitted", "Status", "Took", "Arguments", "Result"]
        .map((h) => el("th", { text: h })))),
      el("tbody", {}, jobs.map((job) => el("tr", { "data-job": job.id },
        el("td", { text: job.date || "" }),
        el("td", {}, el("span", { class: `badge ${job.status}`, text: job.status })),
        el("td", { text: duration(job.duration) }),
        el("td", { class: "args", text: argumentsText(job.args) }),
        el("td", {}, job.status === "done"
          ? el("a", { href: BASE + modelPath(name, `predictions/${job.id}/result`), class: "result-link", text: "Show",
                      onclick: (event) => { event.preventDefault(); showPrediction(name, job); } })
          : job.message ? el("span", { class: "error-text", text: job.message }) : "")))))
      : el("p", { class: "muted", text: "No asynchronous prediction yet." }));
    if (jobs.some((job) => !FINAL.has(job.status)) && location.hash === "#async") timer = setTimeout(refresh, 1000);
  };
  $("#refresh-predictions").addEventListener("click", refresh);
  document.body.addEventListener("tab", (event) => { if (event.detail === "async") refresh(); });
}

export async function showPrediction(name, job) {
  const card = $("#prediction-card");
  card.hidden = false;
  $("#prediction-id").textContent = job.id.slice(0, 8);
  const box = $("#prediction-result");
  const response = await api(modelPath(name, `predictions/${job.id}/result`));
  await showAnswer(box, response, null, null);
  card.scrollIntoView({ block: "nearest" });
}
