// sidetrace console: plain JavaScript, no framework, no network access
// beyond this backend (the page's Content-Security-Policy enforces it).
// All alert data is inserted with textContent, never as HTML.
'use strict';

const PRIORITIES = ['Emergency', 'Alert', 'Critical', 'Error', 'Warning', 'Notice', 'Informational', 'Debug'];
const PALETTE = ['#ff5c7a', '#ffb020', '#4db5ff', '#b58cff', '#3ddc97', '#ff8a4d', '#f06bd2', '#9ad14b', '#5ce1e6', '#c7a26b'];
const $ = (id) => document.getElementById(id);
const state = { events: [], byUuid: new Map(), cursor: null, selected: -1, ruleColors: new Map(), page: 'events' };

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
// Falco's evt.time is an int64 of ns, beyond a double's exact range: long
// integers are kept as strings so that they show exactly.
function parseJson(text) {
  try {
    return JSON.parse(text.replace(/([:\[,]\s*)(-?\d{16,})(?=\s*[,\]}])/g, '$1"$2"'));
  } catch (e) {
    return JSON.parse(text);  // the pattern matched inside a string: plain parse
  }
}
function prioIndex(p) { const i = PRIORITIES.indexOf(p); return i < 0 ? 7 : i; }
function badge(p) { const b = el('span', 'badge p-' + String(p).toLowerCase(), p); return b; }
function fmtTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  const frac = (iso.match(/\.(\d{1,9})/) || [, '0'])[1].padEnd(3, '0').slice(0, 3);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${frac}`;
}
function ago(iso) {
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 60) return Math.round(s) + 's ago';
  if (s < 3600) return Math.round(s / 60) + 'm ago';
  if (s < 86400) return Math.round(s / 3600) + 'h ago';
  return Math.round(s / 86400) + 'd ago';
}
function shortTask(arn) { if (!arn) return ''; const i = arn.lastIndexOf('/'); return i >= 0 ? arn.slice(i + 1) : arn; }
function ruleColor(rule) {
  if (!state.ruleColors.has(rule)) state.ruleColors.set(rule, PALETTE[state.ruleColors.size % PALETTE.length]);
  return state.ruleColors.get(rule);
}

// ---- filters ---------------------------------------------------------------
function filterParams() {
  const p = new URLSearchParams();
  if ($('f-priority').value) p.set('min_priority', $('f-priority').value);
  if ($('f-rule').value) p.set('rule', $('f-rule').value);
  if ($('f-q').value.trim()) p.set('q', $('f-q').value.trim());
  return p;
}
function matches(ev) {
  const minp = $('f-priority').value, rule = $('f-rule').value, q = $('f-q').value.trim().toLowerCase();
  if (minp && prioIndex(ev.priority) > prioIndex(minp)) return false;
  if (rule && ev.rule !== rule) return false;
  if (q && !JSON.stringify(ev).toLowerCase().includes(q)) return false;
  return true;
}

// ---- events table ------------------------------------------------------------
function rowFor(ev) {
  const f = ev.output_fields || {};
  const tr = el('tr');
  tr.tabIndex = -1;
  tr.dataset.uuid = ev.uuid;
  tr.className = 'row prio-' + String(ev.priority).toLowerCase();
  const t = el('td', 'c-time mono', fmtTime(ev.time)); t.title = ev.time; tr.append(t);
  const p = el('td', 'c-prio'); p.append(badge(ev.priority)); tr.append(p);
  const r = el('td', 'c-rule'); const dot = el('span', 'rule-dot'); dot.style.background = ruleColor(ev.rule); r.append(dot, el('span', '', ev.rule)); tr.append(r);
  const o = el('td', 'c-out'); o.append(el('div', 'out', ev.output || '')); tr.append(o);
  const c = el('td', 'c-ctr');
  c.append(el('div', 'mono', (f['container.name'] || '') + (f['container.id'] ? ' · ' + String(f['container.id']).slice(0, 12) : '') || '—'));
  const task = shortTask(f['aws.ecs.task.arn']);
  if (task) { const d = el('div', 'sub mono', 'task ' + task); d.title = f['aws.ecs.task.arn']; c.append(d); }
  else if (ev.hostname) c.append(el('div', 'sub', ev.hostname));
  tr.append(c);
  tr.addEventListener('click', () => { select(state.events.indexOf(ev)); openDetail(ev); });
  return tr;
}
function renderRows() {
  const body = $('rows');
  body.replaceChildren(...state.events.map(rowFor));
  $('empty').hidden = state.events.length > 0;
  $('more').hidden = !state.cursor;
  if (state.selected >= state.events.length) state.selected = state.events.length - 1;
  markSelected();
}
async function loadEvents(append) {
  const p = filterParams();
  p.set('limit', '100');
  if (append && state.cursor) p.set('cursor', state.cursor);
  const res = await fetch('/api/events?' + p);
  if (!res.ok) return;
  const data = parseJson(await res.text());
  if (!append) { state.events = []; state.byUuid.clear(); state.selected = -1; }
  for (const ev of data.events) if (!state.byUuid.has(ev.uuid)) { state.byUuid.set(ev.uuid, ev); state.events.push(ev); }
  state.cursor = data.next_cursor;
  renderRows();
}
function addLive(ev) {
  if (state.byUuid.has(ev.uuid) || !matches(ev)) return;
  state.byUuid.set(ev.uuid, ev);
  // Keep newest first even when alerts arrive out of order.
  let i = 0;
  while (i < state.events.length && state.events[i].time > ev.time) i++;
  state.events.splice(i, 0, ev);
  if (state.selected >= i) state.selected++;
  const tr = rowFor(ev);
  tr.classList.add('fresh');
  const body = $('rows');
  body.insertBefore(tr, body.children[i] || null);
  $('empty').hidden = true;
}
function markSelected() {
  const rows = $('rows').children;
  for (let i = 0; i < rows.length; i++) rows[i].classList.toggle('sel', i === state.selected);
}
function select(i) {
  if (!state.events.length) return;
  state.selected = Math.max(0, Math.min(i, state.events.length - 1));
  markSelected();
  const row = $('rows').children[state.selected];
  if (row) { row.focus({ preventScroll: true }); row.scrollIntoView({ block: 'nearest' }); }
  if (!$('detail').hidden) openDetail(state.events[state.selected]);
}

// ---- detail panel ----------------------------------------------------------
function openDetail(ev) {
  $('d-prio').replaceWith(Object.assign(badge(ev.priority), { id: 'd-prio' }));
  $('d-rule').textContent = ev.rule;
  $('d-time').textContent = fmtTime(ev.time) + '  (' + ev.time + ')';
  $('d-host').textContent = ev.hostname || '—';
  $('d-source').textContent = ev.source || 'syscall';
  $('d-uuid').textContent = ev.uuid;
  $('d-output').textContent = ev.output || '';
  $('d-tags').replaceChildren(...(ev.tags || []).map((t) => el('span', 'tag', t)));
  const fields = ev.output_fields || {};
  $('d-fields').replaceChildren(...Object.keys(fields).sort().map((k) => {
    const tr = el('tr');
    tr.append(el('th', 'mono', k), el('td', 'mono', fields[k] === null ? '<NA>' : (typeof fields[k] === 'object' ? JSON.stringify(fields[k]) : fields[k])));
    return tr;
  }));
  $('d-json').textContent = JSON.stringify(ev, null, 2);
  $('detail').hidden = false;
  document.body.classList.add('with-detail');
}
function closeDetail() {
  $('detail').hidden = true;
  document.body.classList.remove('with-detail');
  const row = $('rows').children[state.selected];
  if (row) row.focus();
}

// ---- summary, counters and chart -----------------------------------------
function svg(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}
function renderChart(sum) {
  const box = $('chart');
  const W = Math.max(box.clientWidth || 900, 300), H = 180, padL = 36, padB = 22, padT = 8;
  const rules = Object.keys(sum.timeline || {});
  const n = rules.length ? sum.timeline[rules[0]].length : 60;
  const totals = new Array(n).fill(0);
  for (const r of rules) sum.timeline[r].forEach((v, i) => { totals[i] += v; });
  const max = Math.max(1, ...totals);
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: '100%', height: H, 'aria-hidden': 'true' });
  const plotW = W - padL - 8, plotH = H - padB - padT, bw = plotW / n;
  for (let g = 0; g <= 4; g++) {
    const y = padT + plotH - (plotH * g) / 4;
    s.append(svg('line', { x1: padL, x2: W - 8, y1: y, y2: y, class: 'grid' }));
    const t = svg('text', { x: padL - 6, y: y + 4, 'text-anchor': 'end', class: 'axis' }); t.textContent = Math.round((max * g) / 4); s.append(t);
  }
  const base = new Array(n).fill(0);
  for (const r of rules) {
    const color = ruleColor(r);
    sum.timeline[r].forEach((v, i) => {
      if (!v) return;
      const h = (v / max) * plotH, y = padT + plotH - base[i] - h;
      const rect = svg('rect', { x: padL + i * bw + 1, y, width: Math.max(1, bw - 2), height: h, fill: color, rx: 1.5 });
      const tip = svg('title', {}); tip.textContent = `${r}: ${v}`; rect.append(tip);
      s.append(rect);
      base[i] += h;
    });
  }
  const since = new Date(sum.since).getTime(), until = new Date(sum.until).getTime();
  for (let g = 0; g <= 4; g++) {
    const x = padL + (plotW * g) / 4, d = new Date(since + ((until - since) * g) / 4);
    const t = svg('text', { x, y: H - 6, 'text-anchor': g === 0 ? 'start' : g === 4 ? 'end' : 'middle', class: 'axis' });
    t.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    s.append(t);
  }
  box.replaceChildren(s);
  $('legend').replaceChildren(...(sum.by_rule || []).map((r) => {
    const li = el('li');
    const sw = el('span', 'swatch'); sw.style.background = ruleColor(r.rule);
    li.append(sw, el('span', '', r.rule), el('b', '', r.count));
    return li;
  }));
}
async function loadSummary() {
  const res = await fetch('/api/summary?buckets=60&since=' + encodeURIComponent($('window').value));
  if (!res.ok) return;
  const sum = await res.json();
  for (const r of sum.by_rule || []) ruleColor(r.rule);
  const bp = sum.by_priority || {};
  const crit = ['Emergency', 'Alert', 'Critical'].reduce((a, k) => a + (bp[k] || 0), 0);
  $('c-total').textContent = sum.total;
  $('c-crit').textContent = crit;
  $('c-warn').textContent = (bp.Error || 0) + (bp.Warning || 0);
  $('c-rules').textContent = (sum.by_rule || []).length;
  $('c-agents').textContent = (sum.agents || []).length;
  const sel = $('f-rule'), cur = sel.value;
  const names = new Set((sum.by_rule || []).map((r) => r.rule));
  if (cur) names.add(cur);
  sel.replaceChildren(el('option', '', 'All rules'), ...[...names].sort().map((n) => { const o = el('option', '', n); o.value = n; return o; }));
  sel.options[0].value = '';
  sel.value = cur;
  renderChart(sum);
  renderAgents(sum.agents || []);
}

// ---- agents page -------------------------------------------------------------
function renderAgents(agents) {
  $('agents-count').textContent = agents.length + (agents.length === 1 ? ' agent' : ' agents');
  $('agents-empty').hidden = agents.length > 0;
  $('agent-rows').replaceChildren(...agents.map((a) => {
    const tr = el('tr');
    tr.tabIndex = 0;
    const stale = Date.now() - new Date(a.last_seen).getTime() > 5 * 60 * 1000;
    const id = el('td', 'mono'); id.append(el('span', 'status ' + (stale ? 'stale' : 'ok')), el('span', '', a.id)); tr.append(id);
    const host = el('td'); host.append(el('div', '', a.hostname || '—'));
    if (a['aws.ecs.task.arn']) { const t = el('div', 'sub mono', 'task ' + shortTask(a['aws.ecs.task.arn'])); t.title = a['aws.ecs.task.arn']; host.append(t); }
    tr.append(host);
    tr.append(el('td', 'mono', [a['container.name'], String(a['container.id'] || '').slice(0, 12)].filter(Boolean).join(' · ') || '—'));
    tr.append(el('td', 'mono', shortTask(a['aws.ecs.cluster']) || '—'));
    const seen = el('td', '', ago(a.last_seen)); seen.title = a.last_seen; tr.append(seen);
    const num = (v, cls) => el('td', 'num ' + (cls || ''), v === null || v === undefined ? '—' : Number(v).toLocaleString());
    tr.append(num(a.events_seen), num(a.alerts), num(a.alerts_stored), num(a.drops, a.drops > 0 ? 'bad' : ''));
    return tr;
  }));
}

// ---- live stream --------------------------------------------------------------
let summaryTimer = null;
function scheduleSummary() { if (!summaryTimer) summaryTimer = setTimeout(() => { summaryTimer = null; loadSummary(); }, 1000); }
function connectStream() {
  const live = $('live');
  const es = new EventSource('/api/stream');
  es.onopen = () => { live.className = 'live on'; live.querySelector('.label').textContent = 'Live'; };
  es.onerror = () => { live.className = 'live off'; live.querySelector('.label').textContent = 'Reconnecting…'; };
  es.addEventListener('alert', (m) => {
    try { addLive(parseJson(m.data)); } catch (e) { /* a malformed message is skipped */ }
    scheduleSummary();
  });
  es.addEventListener('agents', scheduleSummary);
}

// ---- navigation and keyboard --------------------------------------------------
function showPage(name) {
  state.page = name === 'agents' ? 'agents' : 'events';
  $('page-events').hidden = state.page !== 'events';
  $('page-agents').hidden = state.page !== 'agents';
  $('tab-events').setAttribute('aria-selected', String(state.page === 'events'));
  $('tab-agents').setAttribute('aria-selected', String(state.page === 'agents'));
  if (state.page === 'agents') closeDetail();
}
window.addEventListener('hashchange', () => showPage(location.hash.slice(1)));
document.addEventListener('keydown', (e) => {
  const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName);
  if (e.key === 'Escape') {
    if (typing) { e.target.blur(); return; }
    if (!$('detail').hidden) { closeDetail(); e.preventDefault(); }
    return;
  }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === '/') { e.preventDefault(); showPage('events'); location.hash = 'events'; $('f-q').focus(); }
  else if (e.key === 'e') location.hash = 'events';
  else if (e.key === 'a') location.hash = 'agents';
  else if (e.key === '?') $('help').showModal();
  else if (state.page === 'events' && (e.key === 'ArrowDown' || e.key === 'j')) { e.preventDefault(); select(state.selected + 1); }
  else if (state.page === 'events' && (e.key === 'ArrowUp' || e.key === 'k')) { e.preventDefault(); select(state.selected - 1); }
  else if (state.page === 'events' && e.key === 'Enter' && state.selected >= 0) { e.preventDefault(); openDetail(state.events[state.selected]); }
});
let qTimer = null;
$('f-q').addEventListener('input', () => { clearTimeout(qTimer); qTimer = setTimeout(() => loadEvents(false), 250); });
$('f-priority').addEventListener('change', () => loadEvents(false));
$('f-rule').addEventListener('change', () => loadEvents(false));
$('f-clear').addEventListener('click', () => { $('f-priority').value = ''; $('f-rule').value = ''; $('f-q').value = ''; loadEvents(false); });
$('more').addEventListener('click', () => loadEvents(true));
$('d-close').addEventListener('click', closeDetail);
$('help-btn').addEventListener('click', () => $('help').showModal());
$('window').addEventListener('change', loadSummary);
window.addEventListener('resize', () => { clearTimeout(state.rz); state.rz = setTimeout(loadSummary, 200); });

showPage(location.hash.slice(1));
loadEvents(false).then(() => { if (new URLSearchParams(location.search).has('open') && state.events.length) { select(0); openDetail(state.events[0]); } });
loadSummary();
connectStream();
setInterval(loadSummary, 30000);
