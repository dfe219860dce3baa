// The gorkheavy web page: chat with the ensemble, see why an answer won, watch the models and the latencies.
// Preact components written with htm templates (both vendored, see vendor/MANIFEST.json); Chart.js for charts.
// Every request goes to this server's own API; the bearer token, when the server wants one, is asked once,
// kept in this tab's sessionStorage and sent only in the Authorization header.
import { h, render } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import htm from "htm";

const html = htm.bind(h);
const TOKEN_KEY = "gorkheavy.token";
const SESSIONS_KEY = "gorkheavy.sessions";
const CURRENT_KEY = "gorkheavy.session";
const SESSION_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
const POLL_MS = 3000;

class AuthError extends Error {}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function headers(token, extra) {
  const out = { ...extra };
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

async function readError(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

async function getJson(path, token) {
  const response = await fetch(path, { headers: headers(token, { Accept: "application/json" }) });
  if (response.status === 401) throw new AuthError((await readError(response))?.error?.message || "refused");
  if (!response.ok) throw new ApiError(response.status, await readError(response));
  return response.json();
}

// POST /v1/chat as Server-Sent Events: calls onEvent(name, data) for each event as it arrives, data being the
// text of its data lines. Comments (the server's ": keep-alive" while the ensemble works) are skipped.
async function streamChat(body, token, onEvent) {
  const response = await fetch("v1/chat", {
    method: "POST",
    headers: headers(token, { "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
  });
  if (response.status === 401) throw new AuthError((await readError(response))?.error?.message || "refused");
  if (!response.ok) throw new ApiError(response.status, await readError(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue; // a comment (keep-alive)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) onEvent(event, data.join("\n"));
    }
  }
}

function loadSessions() {
  try {
    const list = JSON.parse(localStorage.getItem(SESSIONS_KEY) || "[]");
    if (Array.isArray(list) && list.every((s) => typeof s === "string" && SESSION_RE.test(s)) && list.length) {
      return list;
    }
  } catch {
    /* a damaged list starts afresh */
  }
  return ["default"];
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(value < 0.1 ? 1 : 0)} %`;
}

// What happened to one candidate, in the words the page uses everywhere.
function outcomeOf(candidate) {
  if (!candidate.cause) return candidate.text && candidate.text.trim() ? "ok" : "empty";
  if (candidate.cause === "timeout") return "timeout";
  if (candidate.cause === "too_long" || candidate.cause === "length") return "cut for length";
  return `error: ${candidate.cause}`;
}

const VERDICTS = {
  structured: "the judge's verdict (structured JSON)",
  parsed: "the judge's verdict (read from its free text)",
  fallback: "the fallback rule (first expert in roster order that answered)",
  single: "only one expert answered: no judge call",
  synthesized: "the judge wrote the answer from the candidates",
};

// ---- login ------------------------------------------------------------------------------------------------

function Login({ message, onToken }) {
  const [value, setValue] = useState("");
  const input = useRef(null);
  useEffect(() => input.current && input.current.focus(), [message]);
  const submit = (e) => {
    e.preventDefault();
    if (value.trim()) onToken(value.trim());
  };
  return html`<main>
    <section class="panel login" aria-labelledby="login-title">
      <h2 id="login-title">This server needs its API token</h2>
      <p class="muted small">
        The token set in the server's environment (<code>GORKHEAVY_API_TOKEN</code> by default). It stays in this
        browser tab and is sent only in the Authorization header.
      </p>
      ${message && html`<p class="notice" role="alert" id="login-error">${message}</p>`}
      <form onSubmit=${submit}>
        <label for="token">API token</label>
        <input id="token" ref=${input} type="password" autocomplete="off" spellcheck="false"
          value=${value} onInput=${(e) => setValue(e.currentTarget.value)} />
        <button class="primary" type="submit" id="token-submit">Use this token</button>
      </form>
    </section>
  </main>`;
}

// ---- chat -------------------------------------------------------------------------------------------------

function Sessions({ sessions, current, onSwitch, onCreate }) {
  const [name, setName] = useState("");
  const [problem, setProblem] = useState("");
  const create = (e) => {
    e.preventDefault();
    const wanted = name.trim() || `chat-${Math.random().toString(36).slice(2, 7)}`;
    if (!SESSION_RE.test(wanted)) {
      setProblem("Use letters, digits or . _ : @ -, starting with a letter or digit (at most 128).");
      return;
    }
    setProblem("");
    setName("");
    onCreate(wanted);
  };
  return html`<section class="panel sessions" aria-labelledby="sessions-title">
    <h2 id="sessions-title">Sessions</h2>
    <ul>
      ${sessions.map(
        (s) => html`<li key=${s}>
          <button type="button" class="session" data-session=${s} aria-current=${s === current ? "true" : "false"}
            onClick=${() => onSwitch(s)}>${s}</button>
        </li>`,
      )}
    </ul>
    <form class="row" onSubmit=${create}>
      <label class="sr-only" for="new-session">New session name</label>
      <input id="new-session" placeholder="new session" value=${name} onInput=${(e) => setName(e.currentTarget.value)} />
      <button class="plain" type="submit" id="new-session-button">New</button>
    </form>
    ${problem && html`<p class="notice small" role="alert">${problem}</p>`}
  </section>`;
}

function Memory({ memory, turns }) {
  const items = memory ? memory.exchanges : [];
  return html`<section class="panel memory" aria-labelledby="memory-title" id="memory">
    <h2 id="memory-title">Memory</h2>
    <p class="muted small">The last ${turns} exchanges of this session: what the promptimizer, the experts and the
      judge see with the next question.</p>
    ${memory === null
      ? html`<p class="muted small">Loading…</p>`
      : items.length === 0
        ? html`<p class="muted small" id="memory-empty">Nothing yet.</p>`
        : html`<ol>
            ${items.map(
              (x, i) => html`<li key=${i} class="exchange">
                <div><strong>Q:</strong> ${x.user}</div>
                <div class="muted small"><strong>A</strong> (${x.winner || "?"}): ${x.answer.slice(0, 160)}${x.answer.length > 160 ? "…" : ""}</div>
              </li>`,
            )}
          </ol>`}
  </section>`;
}

function progressOf(events) {
  const last = new Map();
  for (const e of events) last.set(`${e.stage}:${e.name}`, e);
  return [...last.values()];
}

function Progress({ events }) {
  const items = progressOf(events);
  if (!items.length) return null;
  return html`<ul class="progress" aria-label="models">
    ${items.map((e) => {
      const done = e.cause === "too_long" ? `${seconds(e.seconds)}, cut` : seconds(e.seconds);
      const label =
        e.status === "start" ? "working…" : e.status === "ok" ? done : e.status === "skipped" ? "skipped" : `${e.cause || "error"}`;
      return html`<li key=${`${e.stage}:${e.name}`} class=${`chip ${e.status}`} data-model=${e.name} data-status=${e.status}
        title=${e.detail || ""}>${e.name}: ${label}</li>`;
    })}
  </ul>`;
}

function Candidates({ candidates, winner }) {
  return html`<div class="scroll">
    <table class="candidates cards">
      <thead><tr><th scope="col">Expert</th><th scope="col">Model</th><th scope="col">Query</th>
        <th scope="col">Time</th><th scope="col">Outcome</th><th scope="col">Answer or error</th></tr></thead>
      <tbody>
        ${candidates.map((c) => {
          const outcome = outcomeOf(c);
          const cut = outcome === "cut for length";
          const cls = [c.name === winner ? "chosen" : "", outcome === "ok" ? "" : cut ? "cut" : "failed"].join(" ").trim();
          return html`<tr key=${c.name} class=${cls} data-candidate=${c.name} data-outcome=${outcome}>
            <td data-label="Expert">${c.name}${c.name === winner ? html` <span class="badge">chosen</span>` : ""}</td>
            <td data-label="Model">${c.model}</td>
            <td data-label="Query">${c.query}</td>
            <td data-label="Time">${seconds(c.seconds)}</td>
            <td data-label="Outcome" class=${`outcome ${outcome === "ok" ? "ok" : ""}`}>${outcome}</td>
            <td data-label="Answer" class="text">${cut
              ? html`${c.text}<div class="small cut-text">${c.error}</div>`
              : c.error
                ? html`<span class="failed-text">${c.error}</span>`
                : c.text}</td>
          </tr>`;
        })}
      </tbody>
    </table>
  </div>`;
}

function Why({ result }) {
  return html`<details class="why">
    <summary>Why this answer</summary>
    <dl class="facts">
      <dt>Chosen</dt><dd data-fact="winner">${result.winner}</dd>
      <dt>Decided by</dt><dd data-fact="verdict">${VERDICTS[result.verdict_source] || result.verdict_source}</dd>
      <dt>Fallback</dt><dd data-fact="fallback">${result.fallback ? "yes: the judge's choice could not be used" : "no"}</dd>
      ${result.judge_reason && html`<dt>Judge's reason</dt><dd data-fact="reason">${result.judge_reason}</dd>`}
      ${result.judge_error && html`<dt>Judge problem</dt><dd data-fact="judge-error" class="failed-text">${result.judge_error}</dd>`}
      <dt>Optimized query</dt>
      <dd data-fact="optimized">${result.optimized_query === null
        ? html`<span class="muted">none: no expert takes the promptimizer's rewrite</span>`
        : result.optimized_query}</dd>
      ${result.promptimizer_error && html`<dt>Promptimizer problem</dt><dd class="failed-text">${result.promptimizer_error}</dd>`}
      <dt>Strategy</dt><dd>${result.strategy}</dd>
      <dt>Total time</dt><dd>${seconds(result.timings && result.timings.total)}</dd>
    </dl>
    <${Candidates} candidates=${result.candidates} winner=${result.winner} />
  </details>`;
}

function Turn({ turn }) {
  const { result, error } = turn;
  // the judge's synthesis as it streams (strategy synthesize); the result's answer replaces it when it comes
  const partial = !result && turn.streamed.trim() ? turn.streamed.trimStart() : "";
  const running = turn.state === "running";
  // a synthesis that broke off midway: the fallback's answer stands instead of the streamed text
  const replaced = result && result.verdict_source === "fallback" && turn.streamed.trim();
  return html`<article class="turn" data-turn=${turn.id} data-state=${turn.state}>
    <p class="question">${turn.question}</p>
    <${Progress} events=${turn.events} />
    ${running && !partial && html`<p class="muted small" aria-live="polite">The ensemble is working…</p>`}
    ${partial &&
    html`<div class=${`answer partial${running ? " streaming" : ""}`} data-answer data-partial aria-busy=${String(running)}>${partial}</div>
      <p class="muted small" aria-live="polite" data-partial-note>${running
        ? "The judge is writing the answer…"
        : "Incomplete: the stream stopped before the judge finished this answer."}</p>`}
    ${result &&
    html`<div class="answer" data-answer>${result.answer}</div>
      ${replaced && html`<p class="small notice" data-replaced>The judge's synthesis broke off; the answer above is the
        fallback's, not the text that was streaming.</p>`}
      <p class="small muted">
        by <strong>${result.winner}</strong> · <span class="badge">${result.verdict_source}</span>
        ${result.fallback && html` <span class="badge fallback">fallback decided</span>`}
      </p>
      <${Why} result=${result} />`}
    ${error &&
    html`<p class="notice" role="alert">${error.message}</p>
      ${error.candidates && html`<${Candidates} candidates=${error.candidates} winner="" />`}`}
  </article>`;
}

function Ask({ overview, busy, onAsk }) {
  const [text, setText] = useState("");
  const [strategy, setStrategy] = useState(overview.strategy);
  const submit = (e) => {
    e.preventDefault();
    if (!text.trim() || busy) return;
    onAsk(text, strategy);
    setText("");
  };
  const keys = (e) => {
    if (e.key === "Enter" && !e.shiftKey) submit(e);
  };
  return html`<form class="ask panel" onSubmit=${submit} aria-label="ask the ensemble">
    <label for="question">Your question <span class="muted small">(Enter sends, Shift+Enter adds a line)</span></label>
    <textarea id="question" value=${text} maxlength=${overview.max_message_chars}
      onInput=${(e) => setText(e.currentTarget.value)} onKeyDown=${keys}></textarea>
    <div class="controls">
      <label for="strategy">Strategy</label>
      <select id="strategy" value=${strategy} onChange=${(e) => setStrategy(e.currentTarget.value)}>
        ${overview.strategies.map((s) => html`<option key=${s} value=${s}>${s}${s === overview.strategy ? " (default)" : ""}</option>`)}
      </select>
      <button class="primary" type="submit" id="send" disabled=${busy || !text.trim()}>Ask</button>
    </div>
  </form>`;
}

function Chat({ overview, token, onAuth }) {
  const [sessions, setSessions] = useState(loadSessions);
  const [current, setCurrent] = useState(() => {
    const saved = localStorage.getItem(CURRENT_KEY);
    return saved && loadSessions().includes(saved) ? saved : loadSessions()[0];
  });
  const [turns, setTurns] = useState({});
  const [memory, setMemory] = useState(null);
  const [problem, setProblem] = useState("");

  const refreshMemory = useCallback(
    async (session) => {
      try {
        const data = await getJson(`v1/ui/sessions/${encodeURIComponent(session)}/memory`, token);
        setMemory((old) => (session === currentRef.current ? data : old));
      } catch (e) {
        if (e instanceof AuthError) onAuth(e.message);
        else setProblem(e.message);
      }
    },
    [token],
  );
  const currentRef = useRef(current);
  useEffect(() => {
    currentRef.current = current;
    localStorage.setItem(CURRENT_KEY, current);
    setMemory(null);
    refreshMemory(current);
  }, [current]);
  useEffect(() => localStorage.setItem(SESSIONS_KEY, JSON.stringify(sessions)), [sessions]);

  const update = (session, id, change) =>
    setTurns((all) => ({
      ...all,
      [session]: (all[session] || []).map((t) => (t.id === id ? { ...t, ...change(t) } : t)),
    }));

  const ask = async (question, strategy) => {
    const session = current;
    const id = `${Date.now()}-${Math.random().toString(36).slice(2, 6)}`;
    setProblem("");
    setTurns((all) => ({
      ...all,
      [session]: [
        ...(all[session] || []),
        { id, question, state: "running", events: [], streamed: "", result: null, error: null },
      ],
    }));
    const handlers = new Map([
      ["stage", (data) => update(session, id, (t) => ({ events: [...t.events, data] }))],
      ["token", (data) => update(session, id, (t) => ({ streamed: t.streamed + (typeof data.text === "string" ? data.text : "") }))],
      ["result", (data) => update(session, id, () => ({ result: data, state: "done" }))],
      [
        "error",
        (data) =>
          update(session, id, () => ({
            state: "failed",
            error: { message: data.error ? data.error.message : "the request failed", candidates: data.candidates },
          })),
      ],
    ]);
    try {
      await streamChat({ session, message: question, strategy }, token, (event, data) => {
        const handle = handlers.get(event);
        if (handle) handle(JSON.parse(data)); // an event this page does not know (a newer server's) is skipped
      });
      update(session, id, (t) => (t.state === "running" ? { state: "failed", error: { message: "the answer stream ended early" } } : {}));
    } catch (e) {
      if (e instanceof AuthError) onAuth(e.message);
      update(session, id, () => ({
        state: "failed",
        error: { message: e.message, candidates: e.body && e.body.candidates },
      }));
    }
    if (session === currentRef.current) refreshMemory(session);
  };

  const mine = turns[current] || [];
  const busy = mine.some((t) => t.state === "running");
  const create = (name) => {
    setSessions((list) => (list.includes(name) ? list : [...list, name]));
    setCurrent(name);
  };
  return html`<div class="chat">
    <aside>
      <${Sessions} sessions=${sessions} current=${current} onSwitch=${setCurrent} onCreate=${create} />
      <div class="gap"></div>
      <${Memory} memory=${memory} turns=${overview.memory_turns} />
    </aside>
    <section class="conversation" aria-labelledby="conversation-title">
      <h2 id="conversation-title" class="sr-only">Conversation</h2>
      <p class="muted small">Session <strong id="current-session">${current}</strong>. Each model's progress shows as it
        happens. With <em>synthesize</em> the judge's answer streams in as it writes it; with <em>select</em> the chosen
        answer appears whole once the judge's verdict is in.</p>
      ${problem && html`<p class="notice" role="alert">${problem}</p>`}
      ${mine.map((t) => html`<${Turn} key=${t.id} turn=${t} />`)}
      <${Ask} overview=${overview} busy=${busy} onAsk=${ask} />
    </section>
  </div>`;
}

// ---- models -----------------------------------------------------------------------------------------------

function usePoll(path, token, onAuth) {
  const [data, setData] = useState(null);
  const [problem, setProblem] = useState("");
  useEffect(() => {
    let alive = true;
    const load = async () => {
      try {
        const value = await getJson(path, token);
        if (alive) {
          setData(value);
          setProblem("");
        }
      } catch (e) {
        if (e instanceof AuthError) onAuth(e.message);
        else if (alive) setProblem(e.message);
      }
    };
    load();
    const timer = setInterval(load, POLL_MS);
    return () => {
      alive = false;
      clearInterval(timer);
    };
  }, [path, token]);
  return [data, problem];
}

function Models({ token, onAuth }) {
  const [data, problem] = usePoll("v1/ui/models", token, onAuth);
  return html`<section class="panel" aria-labelledby="models-title" id="models">
    <h2 id="models-title">Models</h2>
    <p class="muted small">Health is what <code>gorkheavy doctor</code> checks (the server answers /api/tags and lists
      the model); loaded is Ollama's /api/ps; ${`latency and error rate cover this server's model calls of the last ${data ? seconds(data.window_seconds) : "…"}. `}
      Refreshed every ${POLL_MS / 1000} s.</p>
    ${problem && html`<p class="notice" role="alert">${problem}</p>`}
    ${data &&
    html`<div class="scroll">
        <table class="cards" id="models-table">
          <thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Model</th><th scope="col">Health</th>
            <th scope="col">Loaded</th><th scope="col">p50</th><th scope="col">p99</th><th scope="col">Calls</th>
            <th scope="col">Error rate</th></tr></thead>
          <tbody>
            ${data.backends.map((b) => {
              const r = b.recent || {};
              const causes = Object.entries(r.causes || {}).map(([k, v]) => `${k} ${v}`).join(", ");
              return html`<tr key=${b.name} data-backend=${b.name} data-health=${b.ok ? "ok" : "problem"}>
                <td data-label="Name">${b.name}</td><td data-label="Role">${b.role}</td>
                <td data-label="Model">${b.model}<div class="muted small">${b.base_url}</div></td>
                <td data-label="Health">${b.ok
                  ? html`<span class="health-ok">ok</span> <span class="muted small">${seconds(b.seconds)}</span>`
                  : html`<span class="health-bad">problem</span><div class="small">${b.problem}</div><div class="small muted">${b.fix}</div>`}</td>
                <td data-label="Loaded" data-loaded=${String(b.loaded)}>${b.loaded === null ? html`<span class="muted" title=${b.loaded_error}>unknown</span>` : b.loaded ? "yes" : "no"}</td>
                <td data-label="p50">${seconds(r.p50)}</td><td data-label="p99">${seconds(r.p99)}</td>
                <td data-label="Calls">${r.calls || 0}</td>
                <td data-label="Error rate" data-error-rate=${r.error_rate === undefined ? "" : String(r.error_rate)}>${percent(r.error_rate)}${causes && html`<div class="small muted">${causes}</div>`}</td>
              </tr>`;
            })}
          </tbody>
        </table>
      </div>
      <p class="small">Memory store: ${data.memory.ok
        ? html`<span class="health-ok">ok</span> <span class="muted">${data.memory.detail}</span>`
        : html`<span class="health-bad">${data.memory.detail}</span>`}</p>`}
  </section>`;
}

// ---- performance ------------------------------------------------------------------------------------------

function BarChart({ id, label, labels, series }) {
  const canvas = useRef(null);
  const chart = useRef(null);
  useEffect(() => {
    const Chart = window.Chart;
    chart.current = new Chart(canvas.current, {
      type: "bar",
      data: { labels: [], datasets: [] },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        plugins: { legend: { position: "bottom" } },
        scales: { y: { beginAtZero: true } },
      },
    });
    return () => chart.current.destroy();
  }, []);
  useEffect(() => {
    const palette = ["#1f5fbf", "#b42318", "#1d7a3a", "#9a5b00"];
    chart.current.data.labels = labels;
    chart.current.data.datasets = series.map((s, i) => ({ label: s.label, data: s.data, backgroundColor: palette[i % 4] }));
    chart.current.update();
  }, [JSON.stringify(labels), JSON.stringify(series)]);
  return html`<div class="chartbox"><canvas ref=${canvas} id=${id} role="img" aria-label=${label}></canvas></div>`;
}

function Performance({ token, onAuth }) {
  const [data, problem] = usePoll("v1/ui/performance", token, onAuth);
  const stages = data ? Object.entries(data.stages) : [];
  const winners = data ? Object.entries(data.winners) : [];
  return html`<section aria-labelledby="perf-title" id="performance">
    <h2 id="perf-title" class="sr-only">Performance</h2>
    <p class="muted small">
      ${`From the histograms and counters /metrics exposes, over the last ${data ? seconds(data.window_seconds) : "…"} `}
      (quantiles estimated from the buckets, as Prometheus' histogram_quantile does). Refreshed every ${POLL_MS / 1000} s.
    </p>
    ${problem && html`<p class="notice" role="alert">${problem}</p>`}
    <div class="grid2">
      <div class="panel">
        <h2>Latency per stage (seconds)</h2>
        <${BarChart} id="stage-chart" label="p50 and p99 latency per stage" labels=${stages.map(([s]) => s)}
          series=${[
            { label: "p50", data: stages.map(([, f]) => f.p50) },
            { label: "p99", data: stages.map(([, f]) => f.p99) },
          ]} />
        <div class="scroll"><table id="stage-table">
          <thead><tr><th scope="col">Stage</th><th scope="col">Requests</th><th scope="col">p50</th><th scope="col">p99</th></tr></thead>
          <tbody>${stages.map(([s, f]) => html`<tr key=${s} data-stage=${s}><td>${s}</td><td>${f.count}</td><td>${seconds(f.p50)}</td><td>${seconds(f.p99)}</td></tr>`)}</tbody>
        </table></div>
      </div>
      <div class="panel">
        <h2>Winners per model</h2>
        <${BarChart} id="winner-chart" label="answers chosen per model" labels=${winners.map(([n]) => n)}
          series=${[{ label: "answers chosen", data: winners.map(([, n]) => n) }]} />
        <div class="scroll"><table id="winner-table">
          <thead><tr><th scope="col">Model</th><th scope="col">Chosen</th></tr></thead>
          <tbody>${winners.map(([n, c]) => html`<tr key=${n} data-winner=${n}><td>${n}</td><td>${c}</td></tr>`)}</tbody>
        </table></div>
        ${data && html`<p class="small muted">Decided by: ${Object.entries(data.verdicts).map(([k, v]) => `${k} ${v}`).join(", ") || "nothing yet"}</p>`}
      </div>
    </div>
  </section>`;
}

// ---- the page ---------------------------------------------------------------------------------------------

const VIEWS = [
  ["chat", "Chat"],
  ["models", "Models"],
  ["performance", "Performance"],
];

function App() {
  const [token, setToken] = useState(() => sessionStorage.getItem(TOKEN_KEY) || "");
  const [overview, setOverview] = useState(null);
  const [auth, setAuth] = useState({ need: false, message: "" });
  const [problem, setProblem] = useState("");
  const [view, setView] = useState("chat");

  const connect = useCallback(async (candidate, refusedMessage) => {
    try {
      const data = await getJson("v1/ui/overview", candidate);
      if (candidate) sessionStorage.setItem(TOKEN_KEY, candidate);
      setToken(candidate);
      setOverview(data);
      setAuth({ need: false, message: "" });
    } catch (e) {
      if (e instanceof AuthError) {
        sessionStorage.removeItem(TOKEN_KEY);
        setToken("");
        setAuth({ need: true, message: candidate ? refusedMessage : "" });
      } else setProblem(`The server did not answer: ${e.message}`);
    }
  }, []);
  useEffect(() => {
    connect(token, "The saved token was refused; enter the current one.");
  }, []);
  const onAuth = useCallback(() => {
    sessionStorage.removeItem(TOKEN_KEY);
    setToken("");
    setAuth({ need: true, message: "The server refused the token; enter the current one." });
  }, []);

  // the tabs as one stop of the Tab key; Left/Right (Home/End) move between them, as ARIA's tab pattern says
  const tabKeys = (e) => {
    const keys = VIEWS.map(([key]) => key);
    const at = keys.indexOf(view);
    const next = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: keys.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    const key = keys[(next + keys.length) % keys.length];
    setView(key);
    document.getElementById(`tab-${key}`).focus();
  };

  if (problem) return html`<main><p class="notice" role="alert">${problem}</p></main>`;
  if (auth.need)
    return html`<${Login} message=${auth.message}
      onToken=${(t) => connect(t, "The server refused this token. Check it and try again.")} />`;
  if (!overview) return html`<p class="boot">Connecting…</p>`;
  const experts = overview.roster.filter((m) => m.role === "expert").map((m) => m.name);
  return html`<header class="top">
      <h1>gorkheavy</h1>
      <nav class="tabs" role="tablist" aria-label="views" onKeyDown=${tabKeys}>
        ${VIEWS.map(
          ([key, label]) => html`<button key=${key} type="button" role="tab" id=${`tab-${key}`} aria-selected=${view === key ? "true" : "false"}
            tabindex=${view === key ? "0" : "-1"} aria-controls="view" onClick=${() => setView(key)}>${label}</button>`,
        )}
      </nav>
      <span class="who">${experts.length} experts (${experts.join(", ")}) · judge ${overview.roster.find((m) => m.role === "judge").name}</span>
    </header>
    <main id="view" role="tabpanel" aria-labelledby=${`tab-${view}`}>
      <div hidden=${view !== "chat"}><${Chat} overview=${overview} token=${token} onAuth=${onAuth} /></div>
      ${view === "models" && html`<${Models} token=${token} onAuth=${onAuth} />`}
      ${view === "performance" && html`<${Performance} token=${token} onAuth=${onAuth} />`}
    </main>`;
}

render(html`<${App} />`, document.getElementById("app"));
