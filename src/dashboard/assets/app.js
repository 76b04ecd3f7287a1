// cco dashboard: a hash-routed page over /dashboard/api/*, live through the event stream.
// Untrusted text (results, event data, file names) only ever goes through text nodes.
'use strict';

(function () {
  const main = document.getElementById('main');
  const live = document.getElementById('live');
  const REFRESH_DEBOUNCE_MS = 500;
  const TICK_MS = 10000;
  const RECONNECT_MS = 2000;
  const TREE_PAGE = 50;
  const EVENTS_PAGE = 100;
  // Live rows kept in the timeline; older ones are dropped and "load older" fetches them again.
  const MAX_EVENT_ROWS = 2000;

  // What the current view needs to redraw itself; `refresh` is called on live events.
  let current = { name: '', refresh: null, onEvent: null };
  let knownAgents = new Map();
  let refreshTimer = null;

  // ---- DOM helpers: text always becomes a text node ---------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  function na(text) { return el('span', { class: 'na' }, text || 'not available'); }
  function badge(state) { return el('span', { class: 'badge ' + String(state) }, String(state)); }
  function link(href, text) { return el('a', { href }, text); }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '–';
    if (ms < 1000) return ms + ' ms';
    const s = Math.round(ms / 1000);
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + (s % 60) + ' s';
    return Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
  }
  function fmtTime(t) {
    if (!t) return '–';
    const d = new Date(t);
    return isNaN(d) ? String(t) : d.toLocaleString();
  }
  // Cents are enough from a dollar up; below it, four places keep small requests visible.
  function fmtUsd(x) { return typeof x === 'number' ? '$' + x.toFixed(Math.abs(x) >= 1 ? 2 : 4) : '–'; }
  function fmtNum(x) { return typeof x === 'number' ? x.toLocaleString() : '–'; }
  function json(v) { return el('pre', {}, JSON.stringify(v, null, 2)); }
  function show(...nodes) { main.replaceChildren(...nodes); }

  // ---- API ------------------------------------------------------------------------------
  async function api(path) {
    let resp;
    try {
      resp = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    } catch (e) {
      return { ok: false, status: 0, error: 'the daemon does not answer' };
    }
    if (resp.status === 401) {
      loggedOut();
      return { ok: false, status: 401, error: 'not logged in' };
    }
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      const msg = body && body.error ? body.error.message : 'HTTP ' + resp.status;
      return { ok: false, status: resp.status, error: msg };
    }
    return { ok: true, status: resp.status, body };
  }
  function unavailable(r) {
    return r.status === 404 ? na('not available on this sidecar') : el('span', { class: 'error' }, r.error);
  }
  function loggedOut() {
    live.textContent = 'logged out';
    live.className = 'live off';
    show(el('div', { class: 'card' },
      el('h1', {}, 'Not logged in'),
      el('p', {}, 'The dashboard session is missing or expired. Run ', el('code', {}, 'cco dashboard'),
        ' for a fresh login link.')));
  }

  // ---- cost lookups (by agent), shared by the tree and the agent page -----------------
  async function costBy(by, issue) {
    let q = '/dashboard/api/cost?by=' + encodeURIComponent(by);
    if (issue) q += '&issue=' + encodeURIComponent(issue);
    const r = await api(q);
    if (!r.ok) return null;
    const m = new Map();
    for (const row of (r.body.rows || [])) m.set(String(row.key), row);
    return { rows: m, total: r.body.total, raw: r.body };
  }

  // ---- views ------------------------------------------------------------------------------
  let treeOffset = 0;
  async function viewTree() {
    const [r, cost] = await Promise.all([
      api('/dashboard/api/tree?offset=' + treeOffset + '&limit=' + TREE_PAGE),
      costBy('agent'),
    ]);
    if (current.name !== 'tree') return;
    if (!r.ok) { if (r.status !== 401) show(el('h1', {}, 'Agents'), unavailable(r)); return; }
    const page = r.body;
    const c = page.counts || {};
    const stats = el('div', { class: 'stats' },
      el('div', { class: 'stat' }, el('b', { id: 'count-active' }, c.active), 'active'),
      el('div', { class: 'stat' }, el('b', {}, c.completed), 'completed'),
      el('div', { class: 'stat' }, el('b', {}, c.failed), 'failed'),
      el('div', { class: 'stat' }, el('b', {}, page.total_issues), 'issues'),
      el('div', { class: 'stat' }, el('b', {}, cost && cost.total ? fmtUsd(cost.total.cost_usd) : '–'), 'spent'));
    // Sessions in the order their newest issue appears.
    const sessions = new Map();
    for (const issue of page.issues) {
      const key = issue.session_id || '';
      if (!sessions.has(key)) sessions.set(key, []);
      sessions.get(key).push(issue);
    }
    const tree = el('div', { id: 'tree' });
    for (const [sid, issues] of sessions) {
      const s = el('section', { class: 'session' },
        el('h2', {}, sid ? 'Session ' : '', sid ? el('span', { class: 'mono' }, sid) : 'No session recorded'));
      for (const issue of issues) s.append(issueCard(issue, cost));
      tree.append(s);
    }
    if (page.issues.length === 0) tree.append(el('p', { class: 'muted' }, 'No agents yet. They appear here as soon as one starts.'));
    const pager = el('div', { class: 'pager' },
      el('button', { onclick: () => { treeOffset = Math.max(0, treeOffset - TREE_PAGE); viewTree(); }, disabled: treeOffset === 0 ? 'disabled' : null }, '← newer'),
      el('span', { class: 'muted' }, 'issues ' + (page.total_issues ? treeOffset + 1 : 0) + '–' + (treeOffset + page.issues.length) + ' of ' + page.total_issues),
      el('button', { onclick: () => { treeOffset += TREE_PAGE; viewTree(); }, disabled: treeOffset + page.issues.length >= page.total_issues ? 'disabled' : null }, 'older →'));
    show(el('h1', {}, 'Agents'), stats, tree, pager);
  }

  function issueCard(issue, cost) {
    const rows = issue.agents.map((a) => {
      knownAgents.set(a.agent_id, Object.assign({ issue_id: issue.issue_id, session_id: issue.session_id }, a));
      const spend = cost ? cost.rows.get(a.agent_id) : null;
      return el('tr', { 'data-agent': a.agent_id },
        el('td', {}, link('#/agent/' + encodeURIComponent(a.agent_id), a.agent_id)),
        el('td', {}, a.agent_type),
        el('td', {}, badge(a.state)),
        el('td', {}, fmtTime(a.started_at)),
        el('td', { class: 'num' }, fmtMs(a.duration_ms)),
        el('td', { class: 'num' }, spend ? fmtNum(spend.input_tokens + spend.output_tokens) : '–'),
        el('td', { class: 'num' }, spend ? fmtUsd(spend.cost_usd) : '–'),
        el('td', {}, a.result_status ? badge(a.result_status) : '–'));
    });
    const more = issue.agents_total > issue.agents.length
      ? el('p', { class: 'muted' }, (issue.agents_total - issue.agents.length) + ' older agents not shown')
      : null;
    return el('div', { class: 'card issue' },
      el('h3', {}, 'Issue ', link('#/issue/' + encodeURIComponent(issue.issue_id), issue.issue_id), ' ',
        el('span', { class: 'muted' }, issue.active + ' active · ' + issue.completed + ' completed · ' + issue.failed + ' failed')),
      el('table', {},
        el('thead', {}, el('tr', {}, ['Agent', 'Type', 'State', 'Started', 'Duration', 'Tokens', 'Cost', 'Result']
          .map((h, i) => el('th', { class: i >= 4 && i <= 6 ? 'num' : null }, h)))),
        el('tbody', {}, rows)),
      more);
  }

  async function viewAgent(id) {
    const [r, cost] = await Promise.all([api('/dashboard/api/agents/' + encodeURIComponent(id)), costBy('agent')]);
    if (current.name !== 'agent') return;
    const known = knownAgents.get(id);
    const parts = [el('h1', {}, 'Agent ', el('span', { class: 'mono', id: 'agent-id' }, id))];
    const agent = r.ok && r.body.agent ? r.body.agent : known;
    if (agent) {
      parts.push(el('div', { class: 'card' }, el('table', { class: 'kv' }, el('tbody', {},
        kv('Type', agent.agent_type),
        kv('Issue', agent.issue_id ? link('#/issue/' + encodeURIComponent(agent.issue_id), agent.issue_id) : '–'),
        kv('State', badge(agent.status || agent.state)),
        kv('Started', fmtTime(agent.started_at)),
        kv('Updated', fmtTime(agent.updated_at || agent.ended_at))))));
    }
    parts.push(el('h2', {}, 'Cost'));
    const spend = cost ? cost.rows.get(id) : null;
    parts.push(el('div', { class: 'card', id: 'agent-cost' }, cost === null ? na('cost not available on this sidecar')
      : spend ? costTable([spend]) : na('no requests recorded for this agent')));
    parts.push(el('h2', {}, 'What it was told'));
    if (!r.ok) {
      parts.push(el('div', { class: 'card' }, unavailable(r)));
      // Without the agent view, its result is still among its issue's results.
      if (agent && agent.issue_id) {
        const issue = await api('/dashboard/api/issues/' + encodeURIComponent(agent.issue_id));
        if (current.name !== 'agent') return;
        const mine = issue.ok ? issue.body.results.find((x) => x.agent_id === id) : null;
        parts.push(el('h2', {}, 'Result'));
        parts.push(el('div', { class: 'card' }, mine ? resultBody(mine.result) : na('no result yet')));
      }
    } else {
      parts.push(told(r.body.told));
      parts.push(el('h2', {}, 'Result'));
      // The stored result (`{agent_id, …, result, stored_at}`): show what the agent produced.
      const stored = r.body.result;
      parts.push(el('div', { class: 'card' }, stored ? resultBody(stored.result !== undefined ? stored.result : stored) : na('no result yet')));
    }
    show(...parts);
  }

  function kv(k, v) { return el('tr', {}, el('td', {}, k), el('td', {}, v)); }

  function told(t) {
    if (!t) return el('div', { class: 'card', id: 'told' }, na('nothing recorded'));
    const card = el('div', { class: 'card', id: 'told' });
    const ctx = t.context;
    if (ctx) {
      card.append(el('table', { class: 'kv' }, el('tbody', {},
        kv('Context', fmtNum(ctx.bytes) + ' bytes of ' + fmtNum(ctx.budget) + (ctx.truncated ? ' (truncated)' : '')),
        kv('Hash', el('span', { class: 'mono' }, ctx.hash)),
        kv('At', fmtTime(ctx.at)))));
      if ((ctx.files || []).length) {
        card.append(el('h3', {}, 'Files'), el('table', {}, el('thead', {}, el('tr', {},
          el('th', {}, 'Path'), el('th', { class: 'num' }, 'Bytes'), el('th', {}, 'Hash'))), el('tbody', {}, ctx.files.map((f) =>
          el('tr', {}, el('td', { class: 'mono' }, f.path), el('td', { class: 'num' }, fmtNum(f.bytes)), el('td', { class: 'mono' }, f.hash))))));
      }
      if ((ctx.results || []).length) {
        card.append(el('h3', {}, 'Earlier results'), el('table', {}, el('thead', {}, el('tr', {},
          el('th', {}, 'Issue'), el('th', {}, 'Agent type'), el('th', {}, 'Hash'))), el('tbody', {}, ctx.results.map((x) =>
          el('tr', {}, el('td', {}, x.issue_id), el('td', {}, x.agent_type), el('td', { class: 'mono' }, x.hash))))));
      }
    } else {
      card.append(el('p', {}, na('no context recorded')));
    }

    if (t.note) {
      card.append(el('h3', {}, 'Note'), el('table', { class: 'kv' }, el('tbody', {},
        kv('Size', fmtNum(t.note.bytes) + ' bytes'), kv('Hash', el('span', { class: 'mono' }, t.note.hash)))));
    }
    if (!(t.inbox || []).length) {
      card.append(el('h3', {}, 'Inbox deliveries'), el('p', { class: 'muted' }, 'None delivered.'));
    } else {
      card.append(el('h3', {}, 'Inbox deliveries'), el('table', {}, el('thead', {}, el('tr', {},
        ['Seq', 'Event', 'Topic', 'Delivered', 'Via'].map((h, i) => el('th', { class: i ? null : 'num' }, h)))), el('tbody', {}, t.inbox.map((i) =>
        el('tr', {}, el('td', { class: 'num' }, i.seq), el('td', {}, i.event_type), el('td', {}, i.topic), el('td', {}, fmtTime(i.delivered_at)), el('td', {}, i.via))))));
    }
    return card;
  }

  async function viewIssue(id) {
    const [r, cost] = await Promise.all([
      api('/dashboard/api/issues/' + encodeURIComponent(id)),
      costBy('agent-type', id),
    ]);
    if (current.name !== 'issue') return;
    const parts = [el('h1', {}, 'Issue ', el('span', { class: 'mono' }, id))];
    if (!r.ok) { show(...parts, unavailable(r)); return; }
    parts.push(el('h2', {}, 'Results'));
    if (r.body.results.length === 0) parts.push(el('p', {}, na('no results yet')));
    for (const res of r.body.results) {
      parts.push(el('div', { class: 'card' },
        el('h3', {}, res.agent_type, ' ', el('span', { class: 'muted' }, 'by '),
          link('#/agent/' + encodeURIComponent(res.agent_id), res.agent_id), ' ',
          res.result && res.result.status ? badge(res.result.status) : null,
          el('span', { class: 'muted' }, ' · ' + fmtTime(res.stored_at))),
        resultBody(res.result)));
    }
    parts.push(el('h2', {}, 'Leases'));
    const leases = r.body.leases && r.body.leases.leases ? r.body.leases.leases : null;
    if (!leases) parts.push(na());
    else if (leases.length === 0) parts.push(el('p', { class: 'muted' }, 'No leases held.'));
    else parts.push(el('div', { class: 'card' }, el('table', {}, el('tbody', {}, leases.map((l) =>
      el('tr', {}, el('td', { class: 'mono' }, (l.paths || []).join(', ')), el('td', {}, l.mode || ''),
        el('td', {}, link('#/agent/' + encodeURIComponent(l.agent_id), l.agent_id)), el('td', {}, l.reason || ''),
        el('td', {}, 'until ' + fmtTime(l.expires_at))))))));
    parts.push(el('h2', {}, 'Cost by agent type'));
    parts.push(el('div', { class: 'card', id: 'issue-cost' }, cost ? costTable([...cost.rows.values()], cost.total) : na('cost not available on this sidecar')));
    const o = r.body.outcomes;
    if (o) {
      // Cost per outcome: what the agents that completed, failed or still run spent.
      const spend = (label, x) => Object.assign({ key: label + (x.agents !== undefined ? ' (' + x.agents + ')' : '') }, x);
      parts.push(el('h2', {}, 'Cost by outcome'), el('div', { class: 'card', id: 'issue-outcomes' }, costTable([
        spend('completed agents', o.completed), spend('failed agents', o.failed),
        spend('active agents', o.active), spend('orchestrator', o.orchestrator)], o.total)));
    }
    show(...parts);
  }

  // A result's summary as text when it has one, else the whole result as JSON.
  function resultBody(result) {
    return result && typeof result.summary === 'string' ? el('pre', { class: 'summary' }, result.summary) : json(result);
  }

  function costTable(rows, total) {
    if (rows.length === 0) return na('no requests recorded yet');
    const head = ['', 'Requests', 'Input', 'Output', 'Cache read', 'Cache write', 'Cost'];
    const row = (r, label, cls) => el('tr', { class: cls },
      el('td', {}, label !== undefined ? label : String(r.key)),
      el('td', { class: 'num' }, fmtNum(r.requests)),
      el('td', { class: 'num' }, fmtNum(r.input_tokens)),
      el('td', { class: 'num' }, fmtNum(r.output_tokens)),
      el('td', { class: 'num' }, fmtNum(r.cache_read_tokens)),
      el('td', { class: 'num' }, fmtNum(r.cache_creation_tokens)),
      el('td', { class: 'num' }, fmtUsd(r.cost_usd)));
    return el('table', {},
      el('thead', {}, el('tr', {}, head.map((h, i) => el('th', { class: i ? 'num' : null }, h)))),
      el('tbody', {}, rows.map((r) => row(r)), total ? row(total, 'total', 'total') : null));
  }

  async function viewCost() {
    const groups = [['issue', 'By issue'], ['agent-type', 'By agent type'], ['model', 'By model']];
    const results = await Promise.all(groups.map(([by]) => api('/dashboard/api/cost?by=' + by)));
    if (current.name !== 'cost') return;
    const parts = [el('h1', {}, 'Cost')];
    groups.forEach(([, title], i) => {
      const r = results[i];
      parts.push(el('h2', {}, title), el('div', { class: 'card', id: 'cost-' + groups[i][0] },
        r.ok ? costTable(r.body.rows || [], r.body.total) : unavailable(r)));
    });
    show(...parts);
  }

  function flatRows(obj, prefix) {
    const out = [];
    for (const [k, v] of Object.entries(obj || {})) {
      const key = prefix ? prefix + '.' + k : k;
      if (v && typeof v === 'object' && !Array.isArray(v)) out.push(...flatRows(v, key));
      else out.push(kv(key, typeof v === 'number' ? fmtNum(v) : String(v)));
    }
    return out;
  }

  async function viewHealth() {
    const [d, s] = await Promise.all([api('/status'), api('/dashboard/api/health')]);
    if (current.name !== 'health') return;
    show(el('h1', {}, 'Health'),
      el('h2', {}, 'Daemon'), el('div', { class: 'card' }, d.ok ? el('table', { class: 'kv' }, el('tbody', {}, flatRows(d.body))) : unavailable(d)),
      el('h2', {}, 'Sidecar'), el('div', { class: 'card' }, s.ok ? el('table', { class: 'kv', id: 'sidecar-health' }, el('tbody', {}, flatRows(s.body.health), flatRows(s.body.status))) : unavailable(s)));
  }

  // Events: newest first; live ones are prepended when they match the filters.
  let eventFilter = { type: '', topic: '' };
  async function viewEvents() {
    const list = el('div', { id: 'events' });
    const type = el('input', { placeholder: 'event type', value: eventFilter.type, 'aria-label': 'event type' });
    const topic = el('input', { placeholder: 'topic', value: eventFilter.topic, 'aria-label': 'topic' });
    const older = el('button', {}, 'Load older');
    const status = el('span', { class: 'muted' });
    let before = null;
    const apply = () => { eventFilter = { type: type.value.trim(), topic: topic.value.trim() }; viewEvents(); };
    const form = el('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); apply(); } },
      type, topic, el('button', { type: 'submit' }, 'Filter'));
    async function load() {
      let q = '/dashboard/api/events?limit=' + EVENTS_PAGE;
      if (before !== null) q += '&before=' + before;
      if (eventFilter.type) q += '&type=' + encodeURIComponent(eventFilter.type);
      if (eventFilter.topic) q += '&topic=' + encodeURIComponent(eventFilter.topic);
      const r = await api(q);
      if (!r.ok) { status.replaceChildren(unavailable(r)); return; }
      for (const e of r.body.events) list.append(eventRow(e, false));
      before = r.body.next_before;
      older.disabled = before === null;
      status.textContent = list.childElementCount + ' shown';
    }
    older.addEventListener('click', load);
    current.onEvent = (e) => {
      if (eventFilter.type && e.event_type !== eventFilter.type) return;
      if (eventFilter.topic && e.topic !== eventFilter.topic) return;
      list.prepend(eventRow(e, true));
      while (list.childElementCount > MAX_EVENT_ROWS) list.lastElementChild.remove();
      if (list.childElementCount === MAX_EVENT_ROWS) {
        before = Number(list.lastElementChild.dataset.seq);
        older.disabled = false;
      }
      status.textContent = list.childElementCount + ' shown';
    };
    show(el('h1', {}, 'Events'), form, list, el('div', { class: 'pager' }, older, status));
    await load();
  }

  function eventRow(e, fresh) {
    const data = e.data === undefined ? '' : JSON.stringify(e.data);
    return el('div', { class: fresh ? 'event new' : 'event', 'data-seq': e.seq },
      el('span', { class: 'mono muted' }, '#' + e.seq),
      el('span', {}, fmtTime(e.timestamp)),
      el('span', {}, el('a', { href: '#/events', title: 'show only ' + e.event_type, onclick: (ev) => {
        ev.preventDefault();
        eventFilter = { type: String(e.event_type), topic: eventFilter.topic };
        viewEvents();
      } }, badge(e.event_type))),
      el('span', { class: 'mono topic' }, e.topic),
      // One line per event; the whole data is in the tooltip.
      el('span', { class: 'mono data', title: data }, data));
  }

  // ---- routing --------------------------------------------------------------------------
  function route() {
    const hash = location.hash.replace(/^#/, '') || '/';
    const [, name, arg] = hash.match(/^\/([a-z]*)\/?(.*)$/) || [null, '', ''];
    const id = decodeURIComponent(arg || '');
    const views = {
      '': ['tree', () => viewTree()],
      events: ['events', () => viewEvents()],
      cost: ['cost', () => viewCost()],
      health: ['health', () => viewHealth()],
      agent: ['agent', () => viewAgent(id)],
      issue: ['issue', () => viewIssue(id)],
    };
    const [view, run] = views[name] || views[''];
    current = { name: view, refresh: view === 'events' ? null : run, onEvent: null };
    for (const a of document.querySelectorAll('nav a')) {
      a.classList.toggle('active', a.dataset.view === (view === 'agent' || view === 'issue' ? 'tree' : view));
    }
    run();
  }

  function scheduleRefresh() {
    if (!current.refresh || refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; if (current.refresh) current.refresh(); }, REFRESH_DEBOUNCE_MS);
  }

  // ---- live events: the proxied SSE, read with fetch so every event name arrives ---------
  let lastSeq = null;
  async function stream() {
    for (;;) {
      let resp = null;
      try {
        const q = lastSeq === null ? '' : '?since=' + lastSeq;
        resp = await fetch('/dashboard/api/events/stream' + q, { credentials: 'same-origin', headers: { Accept: 'text/event-stream' } });
      } catch (e) { resp = null; }
      if (resp && resp.status === 401) { loggedOut(); return; }
      // The cursor fell out of the journal's retention: follow from now on.
      if (resp && resp.status === 410) lastSeq = null;
      if (resp && resp.ok && resp.body) {
        live.textContent = 'live';
        live.className = 'live';
        try { await readSse(resp.body); } catch (e) { /* reconnect below */ }
      }
      live.textContent = 'reconnecting…';
      live.className = 'live off';
      await new Promise((r) => setTimeout(r, RECONNECT_MS));
    }
  }

  async function readSse(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const msg = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = msg.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (!data) continue;
        let e;
        try { e = JSON.parse(data); } catch (err) { continue; }
        if (typeof e.seq === 'number') lastSeq = e.seq;
        if (current.onEvent) current.onEvent(e);
        scheduleRefresh();
      }
    }
  }

  window.addEventListener('hashchange', route);
  setInterval(() => { if (current.name === 'tree') scheduleRefresh(); }, TICK_MS);
  route();
  stream();
})();
