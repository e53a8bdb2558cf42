// mahavishnu-dlq console: small progressive enhancements (ES2020, no framework).
// Every page works without this file; with it: the theme toggle, the overview's
// auto-refresh, confirmation dialogs, row selection, live job progress and
// relative times that keep moving. Data is only ever set with textContent.
(() => {
  "use strict";

  const root = document.documentElement;
  const THEME_KEY = "mahavishnu-dlq.theme";
  const PAUSE_KEY = "mahavishnu-dlq.refresh-paused";
  const THEMES = ["auto", "light", "dark"];
  const FINAL_STATES = new Set(["done", "cancelled", "failed"]);

  const stored = (storage, key, fallback) => {
    try {
      return storage.getItem(key) ?? fallback;
    } catch {
      return fallback; // storage disabled
    }
  };
  const store = (storage, key, value) => {
    try {
      storage.setItem(key, value);
    } catch {
      // storage disabled: the choice lasts for this page only
    }
  };

  const applyTheme = (theme) => {
    root.dataset.theme = THEMES.includes(theme) ? theme : "auto";
  };
  applyTheme(stored(window.localStorage, THEME_KEY, "auto")); // before the body paints

  // -- theme toggle: auto -> light -> dark -> auto ---------------------------------------
  const setupTheme = () => {
    const button = document.querySelector("[data-theme-toggle]");
    if (!button) return;
    const label = button.querySelector("[data-theme-label]");
    const show = () => {
      const theme = root.dataset.theme;
      const next = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
      if (label) label.textContent = `Theme: ${theme}`;
      button.setAttribute("aria-label", `Colour theme: ${theme}. Switch to ${next}.`);
      button.title = `Switch to the ${next} theme`;
    };
    button.addEventListener("click", () => {
      const next = THEMES[(THEMES.indexOf(root.dataset.theme) + 1) % THEMES.length];
      applyTheme(next);
      store(window.localStorage, THEME_KEY, next);
      show();
    });
    button.hidden = false;
    show();
  };

  // -- overview auto-refresh: reload while the tab is visible, unless paused ---------------
  const setupRefresh = () => {
    const main = document.querySelector("main[data-refresh-seconds]");
    const period = main ? Number(main.dataset.refreshSeconds) : 0;
    const control = document.querySelector("[data-refresh-control]");
    if (!main || !(period > 0) || !control) return;
    const toggle = control.querySelector("[data-refresh-toggle]");
    const status = control.querySelector("[data-refresh-status]");
    let paused = stored(window.sessionStorage, PAUSE_KEY, "0") === "1";
    let due = Date.now() + period * 1000;
    const show = () => {
      toggle.setAttribute("aria-pressed", String(paused));
      toggle.textContent = paused ? "Resume refresh" : "Pause refresh";
      status.textContent = paused ? "Auto-refresh paused" : `Refreshes every ${period} s`;
    };
    toggle.addEventListener("click", () => {
      paused = !paused;
      store(window.sessionStorage, PAUSE_KEY, paused ? "1" : "0");
      due = Date.now() + period * 1000;
      show();
    });
    const tick = () => {
      if (paused || document.visibilityState !== "visible") return;
      if (document.querySelector("dialog[open]")) return;
      if (Date.now() >= due) window.location.reload();
    };
    document.addEventListener("visibilitychange", tick);
    window.setInterval(tick, 1000);
    control.hidden = false;
    show();
  };

  // -- confirmation dialogs: the link opens the dialog; without JS it opens a page ----------
  const setupDialogs = () => {
    for (const link of document.querySelectorAll("a[data-dialog]")) {
      const dialog = document.getElementById(link.dataset.dialog);
      if (!dialog || typeof dialog.showModal !== "function") continue;
      link.addEventListener("click", (event) => {
        event.preventDefault();
        dialog.showModal();
        const first = dialog.querySelector("button[type=submit]");
        if (first) first.focus();
      });
      for (const close of dialog.querySelectorAll("[data-dialog-close]")) {
        close.addEventListener("click", (event) => {
          event.preventDefault();
          dialog.close();
          link.focus();
        });
      }
    }
  };

  // -- row selection: select all, a count, buttons enabled only with a selection ------------
  const setupSelection = () => {
    const form = document.querySelector("form[data-action=selection]");
    if (!form) return;
    const all = form.querySelector("[data-select-all]");
    const rows = [...form.querySelectorAll("[data-row-select]")];
    const count = form.querySelector("[data-selected-count]");
    const buttons = [...form.querySelectorAll("[data-selection-action]")];
    const update = () => {
      const chosen = rows.filter((row) => row.checked).length;
      if (count) count.textContent = chosen ? `${chosen} selected` : "Select tasks to act on them";
      for (const button of buttons) button.disabled = chosen === 0;
      if (all) {
        all.checked = chosen > 0 && chosen === rows.length;
        all.indeterminate = chosen > 0 && chosen < rows.length;
      }
    };
    if (all) {
      all.hidden = rows.length === 0;
      all.addEventListener("change", () => {
        for (const row of rows) row.checked = all.checked;
        update();
      });
    }
    for (const row of rows) row.addEventListener("change", update);
    update();
  };

  // -- live job progress: poll the JSON API every second until the job is final -----------
  const setupJob = () => {
    const box = document.querySelector("[data-job-api]");
    if (!box || box.dataset.jobFinal === "true") return;
    const url = box.dataset.jobApi;
    const bar = box.querySelector("[data-job-progress]");
    const live = box.querySelector("[data-job-live]");
    const initial = box.dataset.jobState;
    const format = new Intl.NumberFormat("en-US");
    if (live) live.hidden = false;
    const set = (name, text) => {
      for (const el of box.querySelectorAll(`[data-job-field="${name}"]`)) el.textContent = text;
    };
    const poll = async () => {
      let job;
      try {
        const answer = await fetch(url, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
          cache: "no-store",
        });
        if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
        job = await answer.json();
      } catch (error) {
        if (live) live.textContent = "Live updates paused: the server did not answer; retrying.";
        window.setTimeout(poll, 3000);
        return;
      }
      const processed = job.done + job.skipped + job.failed;
      for (const name of ["matched", "done", "skipped", "failed"]) set(name, format.format(job[name]));
      set("state", String(job.state));
      const state = box.querySelector('[data-job-field="state"]');
      if (state) state.className = `badge state-${String(job.state).replace(/[^a-z_]/g, "")}`;
      if (bar) {
        bar.max = job.matched || 1;
        bar.value = job.matched ? processed : FINAL_STATES.has(job.state) ? 1 : 0;
      }
      const percent = job.progress == null ? (FINAL_STATES.has(job.state) ? 1 : null) : job.progress;
      set("percent", percent == null ? "—" : `${(percent * 100).toFixed(1)}%`);
      box.dataset.jobState = String(job.state);
      if (live) live.textContent = "Updating live.";
      if (FINAL_STATES.has(job.state) || (job.state === "paused" && initial !== "paused")) {
        // the counts are shown; reload once for the failures list and the right buttons
        window.setTimeout(() => window.location.reload(), 600);
        return;
      }
      window.setTimeout(poll, 1000);
    };
    window.setTimeout(poll, 1000);
  };

  // -- relative times: keep "5m ago" moving on a page left open -----------------------------
  const setupRelativeTimes = () => {
    const serverNow = Date.parse(root.dataset.now || "");
    if (Number.isNaN(serverNow)) return;
    const loaded = Date.now();
    const words = (seconds) => {
      const abs = Math.abs(seconds);
      if (abs < 5) return "just now";
      const units = [[86400, "d"], [3600, "h"], [60, "m"], [1, "s"]];
      let text = `${Math.floor(abs)}s`;
      for (const [size, unit] of units) {
        if (abs >= size) {
          text = `${Math.floor(abs / size)}${unit}`;
          break;
        }
      }
      return seconds > 0 ? `${text} ago` : `in ${text}`;
    };
    const update = () => {
      const now = serverNow + (Date.now() - loaded); // the server's clock, moved on
      for (const el of document.querySelectorAll("time[data-rel]")) {
        const at = Date.parse(el.getAttribute("datetime") || "");
        if (!Number.isNaN(at)) el.textContent = words((now - at) / 1000);
      }
    };
    window.setInterval(update, 30000);
  };

  const start = () => {
    setupTheme();
    setupRefresh();
    setupDialogs();
    setupSelection();
    setupJob();
    setupRelativeTimes();
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
