// Hypernode worker dashboard: polls the local API and follows a job's log
// over its WebSocket. No dependencies; every value is set with textContent.
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const POLL = Math.max(200, Number(params.get("poll")) || 2000);
  const MAX_SAMPLES = 150;
  const samples = [];
  let selected = null, socket = null, followAuto = true;

  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  const gib = (b) => (b / 1073741824).toFixed(1) + " GiB";
  const sol = (l) => (l / 1e9).toFixed(6) + " SOL";
  const short = (k) => k.length > 12 ? k.slice(0, 6) + "…" + k.slice(-6) : k;

  async function get(path) {
    const r = await fetch(path, { cache: "no-store" });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  function setOnline(on) { const c = $("conn"); c.textContent = on ? "live" : "offline"; c.classList.toggle("on", on); }

  async function status() {
    const st = await get("/v1/status");
    const bal = st.balance_lamports != null ? " · balance " + sol(st.balance_lamports) : "";
    $("node").textContent = "node " + st.node + " · market " + short(st.market) + bal + " · " + st.active_jobs + "/" + st.slots + " slots busy";
  }

  async function specs() {
    const s = await get("/v1/specs");
    const dl = $("specs"); dl.replaceChildren();
    const row = (k, v) => { dl.append(el("dt", k), el("dd", v)); };
    row("CPU", s.cpu.model + " (" + s.cpu.cores + " cores, " + s.cpu.threads + " threads)");
    row("RAM", gib(s.ram_bytes));
    row("OS", s.os);
    row("Disk free", gib(s.disk_free_bytes) + " on " + s.disk_path);
    row("GPUs", String((s.gpus || []).length));
    const ul = $("gpus"); ul.replaceChildren();
    for (const g of s.gpus || []) ul.append(el("li", g.index + ". " + g.name + " (" + gib(g.vram_bytes) + ")"));
    for (const w of s.warnings || []) ul.append(el("li", "⚠ " + w, "muted"));
  }

  async function health() {
    const h = await get("/v1/health");
    const gpu = (h.gpus || []).map((g) => g.utilization_percent).filter((u) => u != null);
    samples.push({ cpu: h.cpu_percent, ram: h.ram_percent, gpu: gpu.length ? gpu.reduce((a, b) => a + b, 0) / gpu.length : null });
    if (samples.length > MAX_SAMPLES) samples.shift();
    $("health-now").textContent = "CPU " + h.cpu_percent.toFixed(1) + "% · RAM " + h.ram_percent.toFixed(1) + "% · disk free " + gib(h.disk_free_bytes) +
      " · " + h.active_jobs + " active · up " + Math.round(h.uptime_seconds) + " s" + (h.paused ? " · paused: " + h.paused : "");
    draw();
  }

  function draw() {
    const c = $("health-chart"), ctx = c.getContext("2d");
    const w = c.width, hgt = c.height;
    ctx.clearRect(0, 0, w, hgt);
    ctx.fillStyle = "#8b98a5"; ctx.font = "11px sans-serif";
    for (const p of [0, 50, 100]) ctx.fillText(p + "%", w - 34, hgt - (p / 100) * (hgt - 10) - 7 + (p === 100 ? 12 : 0));
    ctx.strokeStyle = "#2a3540"; ctx.lineWidth = 1;
    for (let p = 0; p <= 100; p += 25) { const y = hgt - (p / 100) * (hgt - 10) - 5; ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke(); }
    const css = getComputedStyle(document.documentElement);
    const line = (key, color) => {
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
      let started = false;
      samples.forEach((s, i) => {
        if (s[key] == null) return;
        const x = (i / (Math.max(samples.length, 30) - 1)) * w;
        const y = hgt - (Math.min(100, Math.max(0, s[key])) / 100) * (hgt - 10) - 5;
        if (!started) { ctx.moveTo(x, y); started = true; } else ctx.lineTo(x, y);
      });
      ctx.stroke();
    };
    line("cpu", css.getPropertyValue("--cpu")); line("ram", css.getPropertyValue("--ram")); line("gpu", css.getPropertyValue("--gpu"));
    c.dataset.samples = String(samples.length);
  }

  async function jobs() {
    const list = await get("/v1/jobs");
    const tb = $("jobs").querySelector("tbody"); tb.replaceChildren();
    for (const j of list.slice().reverse()) {
      const tr = el("tr", undefined, "job"); tr.dataset.job = j.job;
      if (j.job === selected) tr.classList.add("selected");
      const st = el("span", j.state, "state state-" + j.state);
      const td = el("td"); td.append(st);
      tr.append(el("td", j.job, "id"), td, el("td", j.status || j.error || ""), el("td", new Date(j.updated).toLocaleTimeString()));
      tr.addEventListener("click", () => { followAuto = false; follow(j.job); });
      tb.append(tr);
    }
    if (followAuto) {
      const running = list.filter((j) => j.state === "running").pop();
      if (running && running.job !== selected) follow(running.job);
    }
  }

  async function earnings() {
    const e = await get("/v1/earnings");
    $("earned-total").textContent = sol(e.total_lamports) + " (" + e.total_lamports + " lamports)";
    const tb = $("earnings").querySelector("tbody"); tb.replaceChildren();
    for (const j of e.jobs.slice().reverse()) {
      const tr = el("tr"); tr.dataset.job = j.job;
      tr.append(el("td", short(j.job), "id"), el("td", j.state), el("td", String(j.earned_lamports)));
      tb.append(tr);
    }
  }

  function follow(job) {
    if (socket) { socket.onclose = null; socket.close(); }
    selected = job;
    document.querySelectorAll("tr.job").forEach((tr) => tr.classList.toggle("selected", tr.dataset.job === job));
    $("log-job").textContent = job; $("log-state").textContent = "streaming"; $("log").textContent = "";
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(proto + location.host + "/v1/jobs/" + encodeURIComponent(job) + "/logs");
    let op = -1;
    socket.onmessage = (ev) => {
      const m = JSON.parse(ev.data), log = $("log");
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      if (m.op !== op && m.text) { op = m.op; log.append("── operation " + op + " ──\n"); }
      if (m.text) log.append(m.text);
      if (m.end) $("log-state").textContent = "(" + m.end + ")";
      if (atEnd) log.scrollTop = log.scrollHeight;
    };
    socket.onclose = () => { if ($("log-state").textContent === "streaming") $("log-state").textContent = "(stream closed)"; };
  }

  async function tick() {
    try {
      await Promise.all([status(), health(), jobs(), earnings()]);
      setOnline(true);
    } catch (e) {
      setOnline(false);
      console.error(e);
    }
  }

  specs().catch((e) => console.error(e));
  tick();
  setInterval(tick, POLL);
})();
