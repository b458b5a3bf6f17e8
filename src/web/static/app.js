// roadedge management page: one hand-written script, no framework, nothing loaded from outside.
// Views are rendered with DOM calls only (no HTML strings from data), so nothing a device sends
// can run as script. Live data comes from one server-sent event stream per tab.
'use strict';

const S = { session: null, overview: null, history: null, events: null, view: null, actions: [], timers: [] };

// ---------- small DOM helpers ----------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (k === 'style') el.style.cssText = v; // through the CSSOM: the CSP forbids style attributes
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const $ = (sel, root) => (root || document).querySelector(sel);
function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
function badge(text, kind) { return h('span', { class: 'badge ' + (kind || '') }, text); }
function linkBadge(state) { return badge(state === 'up' ? 'up' : 'down', state === 'up' ? 'ok' : 'bad'); }

// ---------- formatting ----------
function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']; let i = 0; n = Number(n);
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)) + ' ' + u[i];
}
function fmtNum(n) { return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'); }
function fmtAge(s) {
  if (s === null || s === undefined) return '–';
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
}
function pad2(n) { return String(n).padStart(2, '0'); }
function fmtTime(t) {
  if (!t) return '–';
  const d = new Date(t);
  if (isNaN(d)) return String(t);
  return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
}
// A terminal's BCD time YYMMDDhhmmss (its own clock, as sent) as text.
function fmtBcdTime(t) {
  const m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)$/.exec(t || '');
  return m ? '20' + m[1] + '-' + m[2] + '-' + m[3] + ' ' + m[4] + ':' + m[5] + ':' + m[6] : (t || '–');
}
function sentence(text) { text = String(text || ''); return text ? text[0].toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? '' : '.') : text; }
function since(t) { if (!t) return '–'; const d = new Date(t); return isNaN(d) ? t : fmtAge((Date.now() - d) / 1000) + ' ago'; }
function fmtDeg(v) { return v === null || v === undefined ? '–' : Number(v).toFixed(5); }

// ---------- API ----------
class ApiError extends Error {
  constructor(status, error, hint) { super(error); this.status = status; this.hint = hint; }
}
async function api(method, path, body, opts) {
  const headers = { 'Accept': 'application/json' };
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) { payload = body; headers['Content-Type'] = 'application/octet-stream'; }
  else if (body !== undefined) { payload = JSON.stringify(body); headers['Content-Type'] = 'application/json'; }
  if (method !== 'GET' && S.session) headers['X-CSRF-Token'] = S.session.csrf_token;
  let r;
  try {
    r = await fetch(path, { method, headers, body: payload, credentials: 'same-origin', cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'the appliance does not answer', 'check the cable or Wi-Fi to the cabinet; the page retries by itself');
  }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 && !(opts && opts.login)) { showLogin('Your session has ended. Log in again.'); throw new ApiError(401, 'not logged in', 'log in again'); }
  if (!r.ok && r.status !== 202) {
    throw new ApiError(r.status, (data && data.error) || ('HTTP ' + r.status), (data && data.hint) || 'try again');
  }
  return { status: r.status, data };
}
function errorBox(e) {
  return h('div', { class: 'notice bad', role: 'alert' }, sentence(e.message || String(e)), e.hint ? h('span', { class: 'hint' }, 'What to do: ' + sentence(e.hint)) : null);
}
function toast(kind, text, hint) {
  let box = $('.toasts');
  if (!box) { box = h('div', { class: 'toasts' }); document.body.append(box); }
  // A success supersedes the errors before it: a stale "fix the marked lines" beside "Applied"
  // would tell the technician two things at once.
  if (kind === 'ok') box.querySelectorAll('.notice.bad').forEach((old) => old.remove());
  const n = h('div', { class: 'notice ' + kind, role: kind === 'bad' ? 'alert' : 'status' }, text, hint ? h('span', { class: 'hint' }, hint) : null);
  box.append(n);
  setTimeout(() => n.remove(), kind === 'bad' ? 9000 : 4000);
}
function isAdmin() { return S.session && S.session.role === 'admin'; }

// ---------- confirmation dialog ----------
function confirmDialog(title, text, okLabel) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { 'aria-labelledby': 'dlg-title' },
      h('h2', { id: 'dlg-title' }, title), h('p', {}, text),
      h('div', { class: 'actions' },
        h('button', { type: 'button', onclick: () => { dlg.close(); resolve(false); } }, 'Cancel'),
        h('button', { type: 'button', class: 'danger', onclick: () => { dlg.close(); resolve(true); } }, okLabel || 'Yes')));
    dlg.addEventListener('close', () => { dlg.remove(); resolve(false); });
    document.body.append(dlg);
    dlg.showModal();
    $('button', dlg).focus();
  });
}

// ---------- jobs: every write, with progress until its result ----------
// `into` receives a panel that shows the action's progress and then its result.
async function runCommand(into, label, method, path, body) {
  const t0 = Date.now();
  const bar = h('div', { class: 'progress' }, h('span'));
  const clock = h('span', { class: 't' }, '0 s');
  const state = badge('running', 'warn');
  const out = h('div');
  const panel = h('div', { class: 'job', role: 'status' }, h('div', { class: 'head' }, state, h('strong', {}, label), clock), bar, out);
  if (into) { into.prepend(panel); while (into.children.length > 4) into.lastChild.remove(); }
  const tick = setInterval(() => { clock.textContent = Math.round((Date.now() - t0) / 1000) + ' s'; }, 500);
  const finish = (job) => {
    clearInterval(tick);
    bar.remove();
    clock.textContent = Math.round((Date.now() - t0) / 1000) + ' s';
    if (job.ok) {
      state.replaceWith(badge('done', 'ok'));
      if (job.answer !== undefined && job.answer !== null) out.append(h('pre', {}, JSON.stringify(job.answer, null, 2)));
    } else {
      state.replaceWith(badge(job.result || 'failed', 'bad'));
      out.append(h('div', { class: 'notice bad' }, sentence(job.error || 'failed'), job.hint ? h('span', { class: 'hint' }, 'What to do: ' + sentence(job.hint)) : null));
    }
    return job;
  };
  try {
    let { data } = await api(method, path, body);
    while (data && data.state === 'running') {
      out.textContent = 'Waiting for the device\u2019s answer\u2026';
      await new Promise((r) => setTimeout(r, 1000));
      data = (await api('GET', '/api/jobs/' + data.id)).data;
      out.textContent = '';
    }
    return finish(data || { ok: false, error: 'no answer' });
  } catch (e) {
    clearInterval(tick);
    bar.remove();
    state.replaceWith(badge('failed', 'bad'));
    out.append(errorBox(e));
    return { ok: false, error: e.message };
  }
}

// ---------- login ----------
function showLogin(message) {
  stopEvents();
  S.session = null;
  const err = h('div');
  const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username', required: true, value: 'admin' });
  const pass = h('input', { id: 'login-pass', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', {
    class: 'login', onsubmit: async (ev) => {
      ev.preventDefault(); clear(err);
      const btn = $('button', form); btn.disabled = true; btn.textContent = 'Checking\u2026';
      try {
        const { data } = await api('POST', '/api/login', { username: user.value, password: pass.value }, { login: true });
        S.session = data;
        S.session = (await api('GET', '/api/session')).data;
        await start();
      } catch (e) {
        err.append(errorBox(e));
        btn.disabled = false; btn.textContent = 'Log in';
        pass.select();
      }
    },
  },
    h('div', { class: 'brand' }, h('img', { src: '/favicon.svg', alt: '' }), 'roadedge'),
    h('p', {}, 'Roadside edge appliance \u2014 local management'),
    message ? h('div', { class: 'notice info' }, message) : null,
    h('label', { for: 'login-user' }, 'User name'), user,
    h('label', { for: 'login-pass' }, 'Password'), pass,
    err,
    h('button', { type: 'submit', class: 'primary' }, 'Log in'));
  const app = clear($('#app'));
  app.append(h('main', { id: 'main' }, form));
  (user.value ? pass : user).focus();
}

// ---------- layout and routing ----------
const NAV = [
  { id: 'dashboard', label: 'Dashboard', icon: '\u25A6' },
  { id: 'readers', label: 'Readers', icon: '\u25CE' },
  { id: 'vehicles', label: 'Vehicles', icon: '\u25B8' },
  { id: 'registry', label: 'Registry', icon: '\u2263' },
  { id: 'passages', label: 'Passages', icon: '\u21C4' },
  { id: 'update', label: 'Update', icon: '\u21E7' },
  { id: 'config', label: 'Configuration', icon: '\u2699' },
  { id: 'activity', label: 'Activity', icon: '\u2630' },
  { id: 'logs', label: 'Logs', icon: '\u2261' },
];

function layout() {
  const app = clear($('#app'));
  const nav = h('nav', { class: 'side', 'aria-label': 'Sections' },
    NAV.map((n) => h('a', { href: '#/' + n.id, 'data-view': n.id }, h('span', { 'aria-hidden': 'true' }, n.icon), n.label,
      n.id === 'dashboard' ? h('span', { class: 'count', id: 'alarm-count', hidden: true }) : null)),
    h('div', { class: 'foot' }, 'roadedge ', S.session.version, h('br'), 'Everything on this page is served by the appliance itself.'));
  const top = h('header', { class: 'topbar' },
    h('div', { class: 'brand' }, h('img', { src: '/favicon.svg', alt: '' }), 'roadedge'),
    h('span', { class: 'edge' }, 'Edge ', h('strong', {}, S.session.edge_id)),
    h('span', { id: 'top-uplink' }),
    h('span', { class: 'spacer' }),
    h('span', { class: 'user' }, S.session.user, ' (', S.session.role, ')'),
    h('button', { type: 'button', id: 'logout', onclick: logout }, 'Log out'));
  app.append(h('div', { class: 'layout' }, top, nav, h('main', { id: 'main', tabindex: '-1' })));
}

async function logout() {
  try { await api('POST', '/api/logout'); } catch (e) { /* the session may be gone already */ }
  showLogin('You are logged out.');
}

function route() {
  if (!S.session) return;
  const parts = (location.hash || '#/dashboard').slice(2).split('/');
  const name = VIEWS[parts[0]] ? parts[0] : 'dashboard';
  for (const a of document.querySelectorAll('nav.side a')) {
    if (a.dataset.view === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (S.view && S.view.destroy) S.view.destroy();
  S.timers.forEach(clearInterval); S.timers = [];
  const main = clear($('#main'));
  S.view = VIEWS[name](main, parts.slice(1).map(decodeURIComponent)) || {};
  document.title = 'roadedge \u2013 ' + (NAV.find((n) => n.id === name) || { label: name }).label;
  openEvents(S.view.topics || 'status', S.view.query || '');
  if (S.overview && S.view.update) S.view.update(S.overview);
}

// ---------- live events ----------
function stopEvents() { if (S.events) { S.events.close(); S.events = null; } }
function openEvents(topics, query) {
  const url = '/api/events?topics=' + encodeURIComponent(topics) + (query ? '&' + query : '');
  if (S.events && S.events.url.endsWith(url)) return;
  stopEvents();
  const es = new EventSource(url);
  S.events = es;
  es.addEventListener('status', (ev) => {
    const o = JSON.parse(ev.data);
    S.overview = o;
    if (o.sample && S.history && (!S.history.t.length || o.sample.t > S.history.t[S.history.t.length - 1])) {
      for (const k of ['t', 'ingest', 'publish', 'backlog_rows', 'cpu']) {
        S.history[k].push(o.sample[k]);
        if (S.history[k].length > 720) S.history[k].shift();
      }
    }
    updateTop(o);
    if (S.view && S.view.update) S.view.update(o);
  });
  es.addEventListener('logs', (ev) => { if (S.view && S.view.logs) S.view.logs(JSON.parse(ev.data).lines); });
  es.addEventListener('session', () => { es.close(); showLogin('Your session has ended. Log in again.'); });
  es.onerror = () => {
    const u = $('#top-uplink'); if (u && es.readyState !== 1) { clear(u).append(badge('page offline: reconnecting\u2026', 'warn')); }
    // An answer other than the stream (e.g. 503 while the services restart) closes an EventSource
    // for good: open a new one a moment later.
    if (es.readyState === 2) setTimeout(() => { if (S.events === es) { S.events = null; openEvents(topics, query); } }, 2000);
  };
}
function updateTop(o) {
  const u = $('#top-uplink');
  if (u) clear(u).append(o.status.uplink.connected ? badge('cloud uplink connected', 'ok') : badge('cloud uplink DOWN', 'bad'));
  const n = $('#alarm-count');
  if (n) { const c = o.alarms.length; n.hidden = c === 0; n.textContent = c; n.title = c + ' active alarm(s)'; }
}

// ---------- charts (canvas, no library) ----------
function drawChart(canvas, t, series, opts) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, hgt = canvas.clientHeight;
  if (!w || !hgt) return;
  canvas.width = w * dpr; canvas.height = hgt * dpr;
  const c = canvas.getContext('2d'); c.scale(dpr, dpr);
  c.clearRect(0, 0, w, hgt);
  const left = 52, right = 8, top = 8, bottom = 20;
  // The window grows with the data: 10 minutes at first, up to the hour the appliance keeps.
  const now = Date.now();
  const span = Math.min(3600e3, Math.max(600e3, t.length ? now - t[0] : 0));
  const t0 = now - span;
  let max = opts.min || 1;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  max = opts.max ? Math.min(opts.max, max * 1.1) : max * 1.1;
  c.font = '11px system-ui, sans-serif'; c.fillStyle = '#5d6b7c'; c.strokeStyle = '#e3e8ee'; c.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + (hgt - top - bottom) * (i / 4);
    c.beginPath(); c.moveTo(left, y); c.lineTo(w - right, y); c.stroke();
    const v = max * (1 - i / 4);
    c.fillText(opts.fmt ? opts.fmt(v) : (v >= 100 ? Math.round(v) : v.toFixed(1)), 4, y + 4);
  }
  const minutes = span / 60e3;
  const step = minutes <= 10 ? 2 : minutes <= 30 ? 5 : 15;
  for (let ago = 0; ago <= minutes; ago += step) {
    const x = w - right - (w - left - right) * (ago / minutes);
    c.fillText(ago === 0 ? 'now' : '-' + ago + ' min', Math.min(x - 12, w - 34), hgt - 4);
  }
  const xOf = (tt) => left + (w - left - right) * ((tt - t0) / span);
  const yOf = (v) => top + (hgt - top - bottom) * (1 - v / max);
  for (const s of series) {
    c.strokeStyle = s.color; c.lineWidth = 2; c.beginPath();
    let started = false;
    for (let i = 0; i < t.length; i++) {
      const v = s.values[i];
      if (v === null || v === undefined || t[i] < t0) { started = false; continue; }
      const x = xOf(t[i]), y = yOf(v);
      if (!started) { c.moveTo(x, y); started = true; } else c.lineTo(x, y);
    }
    c.stroke();
  }
  if (!t.length) { c.fillStyle = '#5d6b7c'; c.fillText('collecting data (a point every 5 s)\u2026', left + 10, top + 30); }
}
function chartPanel(title, series) {
  const canvas = h('canvas', { class: 'chart', role: 'img', 'aria-label': title + ' over the last hour' });
  return {
    el: h('section', { class: 'panel' }, h('h2', {}, title, h('span', { class: 'right' }, 'up to the last hour')), canvas,
      h('div', { class: 'legend' }, series.map((s) => h('span', {}, h('i', { style: 'background:' + s.color }), s.label)))),
    draw(hist) { drawChart(canvas, hist.t, series.map((s) => ({ color: s.color, values: hist[s.key] })), s0(series)); },
  };
}
function s0(series) { return series[0].opts || {}; }

// ---------- Dashboard ----------
function tile(label, id) {
  return h('div', { class: 'tile', id: 'tile-' + id }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, '–'), h('div', { class: 'sub' }, '\u00a0'));
}
function setTile(id, value, sub, kind) {
  const t = document.getElementById('tile-' + id); if (!t) return;
  t.className = 'tile ' + (kind || '');
  $('.value', t).textContent = value; $('.sub', t).textContent = sub || '\u00a0';
}

function viewDashboard(main) {
  main.append(h('h1', {}, 'Dashboard'));
  main.append(h('div', { class: 'grid tiles' },
    tile('Cloud uplink', 'uplink'), tile('Backlog', 'backlog'), tile('Oldest unsent', 'oldest'),
    tile('Ingest', 'ingest'), tile('Published', 'publish'), tile('Running', 'uptime')));
  const rates = chartPanel('Records per second', [
    { key: 'ingest', label: 'from devices', color: '#0b6bcb' },
    { key: 'publish', label: 'to the cloud', color: '#1e9c4a' }]);
  const backlog = chartPanel('Backlog', [{ key: 'backlog_rows', label: 'rows waiting for the cloud', color: '#c77700' }]);
  const cpu = chartPanel('CPU', [{ key: 'cpu', label: 'percent of all cores', color: '#7a4cc2', opts: { min: 10, max: 100, fmt: (v) => Math.round(v) + '%' } }]);
  main.append(h('div', { class: 'grid cols3' }, rates.el, backlog.el, cpu.el));
  const alarms = h('div'), protocols = h('div'), system = h('div'), readers = h('div');
  main.append(h('div', { class: 'grid cols2', style: 'margin-top:14px' },
    h('section', { class: 'panel' }, h('h2', {}, 'Active alarms'), alarms),
    h('section', { class: 'panel' }, h('h2', {}, 'System'), system)));
  main.append(h('div', { class: 'grid cols2', style: 'margin-top:14px' },
    h('section', { class: 'panel' }, h('h2', {}, 'Devices and bad frames'), protocols),
    h('section', { class: 'panel' }, h('h2', {}, 'Readers'), readers)));
  const redraw = () => { if (S.history) { rates.draw(S.history); backlog.draw(S.history); cpu.draw(S.history); } };
  api('GET', '/api/history').then(({ data }) => { S.history = data; redraw(); }).catch((e) => main.prepend(errorBox(e)));
  window.addEventListener('resize', redraw);
  return {
    destroy() { window.removeEventListener('resize', redraw); },
    update(o) {
      const st = o.status, m = o.metrics;
      setTile('uplink', st.uplink.connected ? 'Connected' : 'Disconnected', 'reconnects: ' + fmtNum(m.uplink.reconnects_total), st.uplink.connected ? 'ok' : 'bad');
      setTile('backlog', fmtNum(st.uplink.backlog_rows) + ' rows', fmtBytes(st.uplink.backlog_bytes), st.uplink.backlog_rows > 10000 ? 'warn' : 'ok');
      setTile('oldest', st.uplink.oldest_unsent_age_s ? fmtAge(st.uplink.oldest_unsent_age_s) : 'none', 'evicted so far: ' + fmtNum(m.store.evicted_total), st.uplink.oldest_unsent_age_s > 300 ? 'warn' : 'ok');
      const s = o.sample || {};
      setTile('ingest', (s.ingest || 0) + ' /s', 'committed: ' + fmtNum(m.store.committed_total));
      setTile('publish', (s.publish || 0) + ' /s', 'PUBACK p99 ' + m.uplink.puback_latency_ms_p99 + ' ms');
      setTile('uptime', fmtAge(st.uptime_s), 'version ' + st.version);
      redraw();
      clear(alarms);
      const readerAlarms = Object.entries(m.readers || {}).filter(([, r]) => r.alarms_active > 0);
      if (!o.alarms.length && !readerAlarms.length) alarms.append(h('div', { class: 'empty' }, 'No active alarms.'));
      else {
        alarms.append(h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Alarm'), h('th', {}, 'About'), h('th', {}, 'Raised'), h('th', {}, 'Detail'))),
          h('tbody', {}, o.alarms.map((a) => h('tr', {}, h('td', {}, badge(a.alarm, 'bad')), h('td', {}, a.subject || 'edge'), h('td', { class: 'nowrap' }, fmtTime(a.raised_at)),
            h('td', { class: 'mono' }, JSON.stringify(a.detail)))),
          readerAlarms.map(([id, r]) => h('tr', {}, h('td', {}, badge('reader alarm', 'warn')), h('td', {}, h('a', { href: '#/readers/' + encodeURIComponent(id) }, id)), h('td', {}, '–'), h('td', {}, r.alarms_active + ' active on the reader'))))));
      }
      const sys = m.system || {};
      clear(system).append(h('dl', { class: 'kv' },
        h('dt', {}, 'CPU'), h('dd', {}, sys.cpu_percent === undefined ? '–' : sys.cpu_percent.toFixed(1) + ' %'),
        h('dt', {}, 'Memory used'), h('dd', {}, fmtBytes(sys.mem_used_bytes)),
        h('dt', {}, 'Disk free (state)'), h('dd', {}, fmtBytes(sys.disk_free_bytes)),
        h('dt', {}, 'Temperature'), h('dd', {}, sys.temperature_c === null || sys.temperature_c === undefined ? 'not reported by this board' : sys.temperature_c.toFixed(1) + ' \u00b0C'),
        h('dt', {}, 'Web connections'), h('dd', {}, fmtNum(m.web.connections))));
      const row = (name, label, on) => {
        const p = m[name];
        return h('tr', {}, h('td', {}, label), h('td', {}, on ? badge('on', 'ok') : badge('off')), h('td', { class: 'num' }, fmtNum(p.connections)),
          h('td', { class: 'num' }, fmtNum(p.frames_in)), h('td', { class: 'num' }, fmtNum(p.frames_out)),
          h('td', { class: 'num' }, p.frames_bad ? badge(fmtNum(p.frames_bad), 'warn') : '0'), h('td', { class: 'num' }, fmtBytes(p.bytes_in)));
      };
      clear(protocols).append(h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Protocol'), h('th', {}, 'Enabled'), h('th', { class: 'num' }, 'Connected'), h('th', { class: 'num' }, 'Frames in'),
        h('th', { class: 'num' }, 'Frames out'), h('th', { class: 'num' }, 'Bad frames'), h('th', { class: 'num' }, 'Bytes in'))),
        h('tbody', {}, row('gbt32960', 'GB/T 32960 vehicles', o.enabled.gbt32960), row('jt808', 'JT/T 808 terminals', o.enabled.jt808), row('gbt37987', 'GB/T 37987 readers', o.enabled.readers))));
      clear(readers);
      if (!st.readers.length) readers.append(h('div', { class: 'empty' }, o.enabled.readers ? 'No reader has connected yet.' : 'No readers are configured.'));
      else readers.append(h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Reader'), h('th', {}, 'Link'), h('th', {}, 'Last seen'), h('th', { class: 'num' }, 'Tag reports'))),
        h('tbody', {}, st.readers.map((r) => h('tr', { class: 'clickable', onclick: () => { location.hash = '#/readers/' + encodeURIComponent(r.id); } },
          h('td', {}, h('a', { href: '#/readers/' + encodeURIComponent(r.id) }, r.id)), h('td', {}, linkBadge(r.link)), h('td', {}, since(r.last_seen)),
          h('td', { class: 'num' }, fmtNum((m.readers[r.id] || {}).tag_reports_total)))))));
    },
  };
}

// ---------- Readers ----------
function viewReaders(main, args) {
  if (args[0]) return viewReader(main, args[0]);
  main.append(h('h1', {}, 'Readers'));
  const box = h('div', { class: 'panel' }, h('div', { class: 'empty' }, 'Loading\u2026'));
  main.append(box);
  const load = async () => {
    try {
      const { data } = await api('GET', '/api/readers');
      clear(box);
      if (!data.enabled) { box.append(h('div', { class: 'notice info' }, 'No readers are configured on this edge.', h('span', { class: 'hint' }, 'Add a readers: section to the configuration.'))); return; }
      if (!data.readers.length) { box.append(h('div', { class: 'empty' }, 'No readers yet.')); return; }
      box.append(h('table', {}, h('thead', {}, h('tr', {}, ['Reader', 'Link', 'Connection', 'Dialect', 'Device SN', 'Last seen', 'Tag reports', 'Alarms'].map((t, i) => h('th', { class: i >= 6 ? 'num' : null }, t)))),
        h('tbody', {}, data.readers.map((r) => h('tr', { class: 'clickable', onclick: () => { location.hash = '#/readers/' + encodeURIComponent(r.id); } },
          h('td', {}, h('a', { href: '#/readers/' + encodeURIComponent(r.id) }, r.id)), h('td', {}, linkBadge(r.link), r.reason && r.link !== 'up' ? h('div', { class: 'sub' }, r.reason) : null),
          h('td', {}, r.transport, r.address ? ' ' + r.address : ''), h('td', {}, r.dialect), h('td', { class: 'mono' }, r.device_sn || '–'), h('td', {}, since(r.last_seen)),
          h('td', { class: 'num' }, fmtNum(r.tag_reports_total)), h('td', { class: 'num' }, r.alarms_active ? badge(r.alarms_active, 'warn') : '0'))))));
    } catch (e) { clear(box).append(errorBox(e)); }
  };
  load();
  S.timers.push(setInterval(load, 3000));
  return {};
}

function viewReader(main, id) {
  const enc = encodeURIComponent(id);
  main.append(h('p', {}, h('a', { href: '#/readers' }, '\u2190 All readers')));
  main.append(h('h1', {}, 'Reader ', id));
  const info = h('div'), rules = h('div'), tags = h('div'), alarms = h('div'), jobs = h('div');
  const readOnly = !isAdmin();
  const send = (label, command) => runCommand(jobs, label, 'POST', '/api/readers/' + enc + '/command', command).then((j) => { load(); return j; });

  // Add-rule form.
  const specId = h('input', { id: 'rule-id', type: 'number', min: 1, max: 4294967295, value: 10 });
  const antennas = h('input', { id: 'rule-antennas', value: '1,2' });
  const trigger = h('select', { id: 'rule-start' }, h('option', { value: '1' }, 'at once'), h('option', { value: '0' }, 'on start command'), h('option', { value: '2' }, 'periodic'));
  const startNow = h('input', { id: 'rule-start-now', type: 'checkbox', checked: true });
  const formErr = h('div');
  const addForm = h('form', {
    onsubmit: async (ev) => {
      ev.preventDefault(); clear(formErr);
      const n = Number(specId.value);
      if (!Number.isInteger(n) || n < 1) { formErr.append(errorBox(new ApiError(400, 'The rule id must be a whole number of 1 or more.', 'enter an id that is not used by another rule'))); specId.focus(); return; }
      try {
        const { data } = await api('GET', '/api/rule-template?spec_id=' + n + '&antennas=' + encodeURIComponent(antennas.value) + '&start=' + trigger.value);
        const added = await send('add select rule ' + n, { action: 'add_rule', select_spec: data.select_spec });
        if (added.ok && startNow.checked) await send('start rule ' + n, { action: 'start_rule', spec_id: n });
      } catch (e) { formErr.append(errorBox(e)); }
    },
  },
    h('div', { class: 'form-row' },
      h('div', {}, h('label', { for: 'rule-id' }, 'Rule id'), specId),
      h('div', {}, h('label', { for: 'rule-antennas' }, 'Antennas (e.g. 1,2)'), antennas),
      h('div', {}, h('label', { for: 'rule-start' }, 'Runs'), trigger),
      h('div', { class: 'inline' }, h('label', {}, startNow, 'start it now'), h('button', { type: 'submit', class: 'primary', id: 'rule-add' }, 'Add rule'))),
    formErr);

  // Maintenance.
  const fwFile = h('select', { id: 'fw-file' });
  const fwUpload = h('input', { id: 'fw-upload', type: 'file' });
  const logKind = h('select', { id: 'log-kind' }, h('option', { value: 'device' }, 'device log'), h('option', { value: 'tag' }, 'tag-operation log'));
  const loadFirmware = async () => {
    try {
      const { data } = await api('GET', '/api/readers/firmware');
      clear(fwFile).append(data.files.length ? data.files.map((f) => h('option', { value: f.name }, f.name + ' (' + fmtBytes(f.bytes) + ')')) : h('option', { value: '' }, 'no file uploaded yet'));
    } catch (e) { /* shown when used */ }
  };
  const uploadFirmware = () => {
    const file = fwUpload.files[0];
    if (!file) { toast('bad', 'Pick a firmware file first.', 'Use the file field next to the button.'); return; }
    const row = h('div', { class: 'job' }, h('div', { class: 'head' }, badge('uploading', 'warn'), h('strong', {}, file.name), h('span', { class: 't' }, '0 %')), h('div', { class: 'progress fixed' }, h('span', { style: 'width:0%' })));
    jobs.prepend(row);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/readers/firmware?name=' + encodeURIComponent(file.name));
    xhr.setRequestHeader('X-CSRF-Token', S.session.csrf_token);
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) { const p = Math.round(100 * ev.loaded / ev.total); $('.t', row).textContent = p + ' %'; $('.progress span', row).style.width = p + '%'; } };
    xhr.onload = () => {
      $('.progress', row).remove();
      let d = {}; try { d = JSON.parse(xhr.responseText); } catch (e) { d = {}; }
      if (xhr.status === 200) { $('.badge', row).replaceWith(badge('uploaded', 'ok')); loadFirmware().then(() => { fwFile.value = d.name; }); }
      else { $('.badge', row).replaceWith(badge('failed', 'bad')); row.append(errorBox(new ApiError(xhr.status, d.error || 'upload failed', d.hint))); }
    };
    xhr.onerror = () => { row.append(errorBox(new ApiError(0, 'the upload broke off', 'check the connection and upload again'))); };
    xhr.send(file);
  };
  const maint = h('div', {},
    h('h3', {}, 'Link and clock'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', onclick: () => send('time sync', { action: 'time_sync' }) }, 'Set reader clock to edge time'),
      h('button', { type: 'button', onclick: () => send('re-apply rules', { action: 'reconcile' }) }, 'Re-apply rules'),
      h('button', { type: 'button', onclick: () => send('alarm sync', { action: 'alarm_sync' }) }, 'Sync alarms'),
      h('button', { type: 'button', onclick: () => send('capabilities', { action: 'get_capabilities' }) }, 'Read capabilities'),
      h('button', { type: 'button', onclick: () => send('diagnostics', { action: 'diagnostics' }) }, 'Run diagnostics (antenna VSWR)')),
    h('h3', {}, 'Firmware'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', onclick: () => send('firmware versions', { action: 'firmware_query' }) }, 'Read firmware versions')),
    h('label', { for: 'fw-upload' }, 'Upload an image to the edge (up to 32 MiB)'),
    h('div', { class: 'inline' }, fwUpload, h('button', { type: 'button', onclick: uploadFirmware }, 'Upload')),
    h('label', { for: 'fw-file' }, 'Image on the edge'),
    h('div', { class: 'inline' }, fwFile,
        h('button', { type: 'button', onclick: () => { if (!fwFile.value) { toast('bad', 'Upload an image first.', 'Pick the file and press Upload.'); return; } send('firmware download ' + fwFile.value, { action: 'firmware_download', file: fwFile.value }); } }, 'Send to reader'),
        h('button', { type: 'button', onclick: async () => { if (await confirmDialog('Activate the new firmware?', 'The reader switches to the downloaded firmware and restarts; tag reads stop until it is back.', 'Activate')) send('firmware activate', { action: 'firmware_activate' }); } }, 'Activate')),
    h('h3', {}, 'Logs on the reader'),
    h('div', { class: 'inline' }, logKind,
      h('button', { type: 'button', onclick: () => send('log count', { action: 'log_count', log: logKind.value }) }, 'Count entries'),
      h('button', { type: 'button', onclick: () => send('log pull', { action: 'log_pull', log: logKind.value }) }, 'Pull to the cloud'),
      h('button', { type: 'button', class: 'danger', onclick: async () => { if (await confirmDialog('Clear the reader\u2019s log?', 'Entries not pulled yet are lost.', 'Clear log')) send('log clear', { action: 'log_clear', log: logKind.value }); } }, 'Clear')),
    h('h3', {}, 'Restart'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'danger', id: 'reader-reset', onclick: async () => { if (await confirmDialog('Reset reader ' + id + '?', 'The reader restarts. Tag reads stop for its restart time; the edge reconnects and re-applies its rules by itself.', 'Reset reader')) send('reset', { action: 'reset' }); } }, 'Reset reader\u2026')));

  main.append(h('div', { class: 'grid cols2' },
    h('section', { class: 'panel' }, h('h2', {}, 'Link'), info),
    h('section', { class: 'panel' }, h('h2', {}, 'Alarms on the reader'), alarms)));
  main.append(h('section', { class: 'panel', style: 'margin-top:14px' }, h('h2', {}, 'Select rules (inventory)', h('span', { class: 'right' }, 'kept by the edge and re-applied after every reconnect')), rules,
    readOnly ? null : h('div', {}, h('h3', {}, 'Add a select rule'), addForm)));
  main.append(h('div', { class: 'grid cols2', style: 'margin-top:14px' },
    h('section', { class: 'panel' }, h('h2', {}, 'Latest tag reads', h('span', { class: 'right' }, 'live')), tags),
    h('section', { class: 'panel' }, h('h2', {}, 'Actions'), readOnly ? h('div', { class: 'notice info' }, 'You are logged in as a viewer: actions need an admin account.') : maint, jobs)));

  const stateBadge = (s) => badge(s || '–', s === 'active' ? 'ok' : s === 'enabled' ? 'warn' : '');
  const load = async () => {
    let data;
    try { data = (await api('GET', '/api/readers/' + enc)).data; } catch (e) { clear(info).append(errorBox(e)); return; }
    const r = data.reader;
    clear(info).append(h('dl', { class: 'kv' },
      h('dt', {}, 'Link'), h('dd', {}, linkBadge(r.link), ' ', r.reason || ''),
      h('dt', {}, 'Since'), h('dd', {}, fmtTime(r.since)),
      h('dt', {}, 'Last keepalive'), h('dd', {}, since(r.last_seen)),
      h('dt', {}, 'Connection'), h('dd', {}, r.transport, ' ', r.address || ''),
      h('dt', {}, 'Dialect'), h('dd', {}, r.dialect),
      h('dt', {}, 'Device SN'), h('dd', { class: 'mono' }, r.device_sn || '–'),
      h('dt', {}, 'Tag reports'), h('dd', {}, fmtNum(r.tag_reports_total)),
      h('dt', {}, 'Capabilities'), h('dd', {}, r.capabilities ? h('details', {}, h('summary', {}, 'as read at connect'), h('pre', {}, JSON.stringify(r.capabilities, null, 2))) : '–')));
    clear(alarms).append(data.alarms.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Id'), h('th', {}, 'Code'), h('th', {}, 'Level'), h('th', {}, 'Raised'), h('th', {}, 'Info'))),
      h('tbody', {}, data.alarms.map((a) => h('tr', {}, h('td', {}, a.alarm_id), h('td', {}, a.alarm_code), h('td', {}, a.level), h('td', { class: 'nowrap' }, fmtTime(a.raised_at)), h('td', { class: 'mono' }, JSON.stringify(a.info)))))) : h('div', { class: 'empty' }, 'No active alarms.'));
    const ruleButtons = (rule) => readOnly ? null : h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'small', onclick: () => send('start rule ' + rule.spec_id, { action: 'start_rule', spec_id: rule.spec_id }) }, 'Start'),
      h('button', { type: 'button', class: 'small', onclick: () => send('stop rule ' + rule.spec_id, { action: 'stop_rule', spec_id: rule.spec_id }) }, 'Stop'),
      h('button', { type: 'button', class: 'small', onclick: () => send('enable rule ' + rule.spec_id, { action: 'enable_rule', spec_id: rule.spec_id }) }, 'Enable'),
      h('button', { type: 'button', class: 'small', onclick: () => send('disable rule ' + rule.spec_id, { action: 'disable_rule', spec_id: rule.spec_id }) }, 'Disable'),
      h('button', { type: 'button', class: 'small danger', onclick: async () => { if (await confirmDialog('Delete rule ' + rule.spec_id + '?', 'The reader stops this inventory and the edge forgets the rule.', 'Delete')) send('delete rule ' + rule.spec_id, { action: 'delete_rule', spec_id: rule.spec_id }); } }, 'Delete'));
    clear(rules).append(data.select_rules.length ? h('table', { id: 'rules' }, h('thead', {}, h('tr', {}, h('th', {}, 'Rule'), h('th', {}, 'Runs'), h('th', {}, 'Antennas'), h('th', {}, 'Wanted'), h('th', {}, 'On the reader'), h('th', {}, ''))),
      h('tbody', {}, data.select_rules.map((rule) => h('tr', { 'data-rule': rule.spec_id }, h('td', {}, rule.spec_id), h('td', {}, rule.start_trigger), h('td', {}, rule.antennas.join(', ') || '–'),
        h('td', {}, stateBadge(rule.desired)), h('td', {}, r.link === 'up' ? stateBadge(rule.on_reader || 'not held') : badge('reader offline')), h('td', {}, ruleButtons(rule)))))) :
      h('div', { class: 'empty' }, 'No select rules: the reader does not inventory. Add one below.'));
    if (data.access_rules.length) rules.append(h('h3', {}, 'Access rules (tag memory)'), h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Rule'), h('th', {}, 'For select rule'), h('th', {}, 'Enabled'))),
      h('tbody', {}, data.access_rules.map((a) => h('tr', {}, h('td', {}, a.spec_id), h('td', {}, a.select_spec_id), h('td', {}, a.enabled ? badge('yes', 'ok') : badge('no')))))));
    clear(tags).append(data.tags.length ? h('table', { id: 'tags' }, h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'TID'), h('th', {}, 'Plate'), h('th', { class: 'num' }, 'Antenna'), h('th', { class: 'num' }, 'RSSI'), h('th', { class: 'num' }, 'Rule'))),
      h('tbody', {}, data.tags.slice(0, 15).map((t) => h('tr', {}, h('td', { class: 'nowrap' }, fmtTime(t.time)), h('td', { class: 'mono' }, t.tid || '–'), h('td', {}, t.plate || '–'), h('td', { class: 'num' }, t.antenna ?? '–'), h('td', { class: 'num' }, t.rssi ?? '–'), h('td', { class: 'num' }, t.select_spec_id ?? '–'))))) :
      h('div', { class: 'empty' }, r.link === 'up' ? 'No tag read since the page\u2019s server started. Is a select rule active?' : 'The reader is not connected.'));
  };
  load();
  if (!readOnly) loadFirmware();
  S.timers.push(setInterval(load, 2000));
  return {};
}

// ---------- Vehicles ----------
const JT808_PRESETS = [
  { label: 'Query location (0x8201)', make: () => ({ header: { msg_id: 0x8201 } }) },
  { label: 'Query all parameters (0x8104)', make: () => ({ header: { msg_id: 0x8104 } }) },
  { label: 'Query attributes (0x8107)', make: () => ({ header: { msg_id: 0x8107 } }) },
  { label: 'Text message (0x8300)', make: () => ({ header: { msg_id: 0x8300 }, body: { flag: 8, text: 'Message from the roadside' } }) },
  { label: 'Terminal control (0x8105)', make: () => ({ header: { msg_id: 0x8105 }, body: { command: 4, param: '' } }) },
];
const GBT32960_PRESETS = [
  { label: 'Query parameters 1\u20137', make: () => ({ Action: 'Query', Total: 7, Ids: [1, 2, 3, 4, 5, 6, 7] }) },
  { label: 'Control: alarm (level 1)', make: () => ({ Action: 'Control', Command: 6, Param: { Level: 1, Message: 'roadside check' } }) },
];

function viewVehicles(main) {
  main.append(h('h1', {}, 'Vehicles'));
  const panels = { gbt32960: h('div'), jt808: h('div') };
  const cmdBox = h('div');
  main.append(h('section', { class: 'panel' }, h('h2', {}, 'GB/T 32960 vehicles (EV monitoring)'), panels.gbt32960));
  main.append(h('section', { class: 'panel', style: 'margin-top:14px' }, h('h2', {}, 'JT/T 808 terminals'), panels.jt808));
  main.append(h('section', { class: 'panel', style: 'margin-top:14px', id: 'vehicle-command' }, h('h2', {}, 'Send a command'), cmdBox));
  const showCommand = (protocol, id) => {
    const presets = protocol === 'jt808' ? JT808_PRESETS : GBT32960_PRESETS;
    const preset = h('select', { id: 'cmd-preset' }, presets.map((p, i) => h('option', { value: i }, p.label)));
    const text = h('textarea', { id: 'cmd-json', spellcheck: 'false' });
    const fill = () => { text.value = JSON.stringify(presets[Number(preset.value)].make(), null, 2); };
    preset.addEventListener('change', fill); fill();
    const jobs = h('div'); const err = h('div');
    clear(cmdBox).append(
      h('p', {}, 'To ', h('strong', {}, id), ' (', protocol === 'jt808' ? 'JT/T 808' : 'GB/T 32960', '). The answer appears below and on the cloud\u2019s response topic.'),
      h('div', { class: 'form-row' }, h('div', { class: 'wide' }, h('label', { for: 'cmd-preset' }, 'Command'), preset)),
      h('label', { for: 'cmd-json' }, 'As sent (EMQX JSON; edit if needed)'), text, err,
      h('div', { class: 'actions', style: 'margin-top:8px' }, h('button', {
        type: 'button', class: 'primary', id: 'cmd-send', onclick: () => {
          clear(err);
          let doc;
          try { doc = JSON.parse(text.value); } catch (e) { err.append(errorBox(new ApiError(400, 'This is not valid JSON: ' + e.message, 'correct the text, or pick the command again to reset it'))); return; }
          runCommand(jobs, presets[Number(preset.value)].label + ' \u2192 ' + id, 'POST', '/api/vehicles/' + protocol + '/' + encodeURIComponent(id) + '/command', doc);
        },
      }, 'Send')), jobs);
    $('#vehicle-command').scrollIntoView({ block: 'nearest' });
    preset.focus();
  };
  if (!isAdmin()) clear(cmdBox).append(h('div', { class: 'notice info' }, 'You are logged in as a viewer: sending commands needs an admin account.'));
  else cmdBox.append(h('div', { class: 'empty' }, 'Pick a connected vehicle above (Command\u2026).'));
  const table = (protocol, block) => {
    if (!block.enabled) return h('div', { class: 'notice info' }, 'This gateway is not enabled on this edge.', h('span', { class: 'hint' }, 'Add a ' + protocol + ': section to the configuration to accept these vehicles.'));
    if (!block.vehicles.length) return h('div', { class: 'empty' }, 'No vehicle has connected since the appliance started.');
    return h('div', {}, h('p', {}, fmtNum(block.online), ' connected now.'), h('table', {}, h('thead', {}, h('tr', {}, ['Id', 'State', 'Last record', 'Received', 'Latitude', 'Longitude', 'Speed', protocol === 'gbt32960' ? 'SOC' : 'Position time', 'Records', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, block.vehicles.slice(0, 200).map((v) => {
        const d = v.data || {};
        return h('tr', {}, h('td', { class: 'mono' }, v.id), h('td', {}, v.online ? badge('online', 'ok') : badge('offline')), h('td', {}, d.last_kind || '–'), h('td', {}, since(d.last_time)),
          h('td', {}, fmtDeg(d.latitude)), h('td', {}, fmtDeg(d.longitude)), h('td', {}, d.speed_kmh === null || d.speed_kmh === undefined ? '–' : d.speed_kmh.toFixed(1) + ' km/h'),
          h('td', {}, protocol === 'gbt32960' ? (d.soc === null || d.soc === undefined ? '–' : d.soc + ' %') : fmtBcdTime(d.position_time)), h('td', { class: 'num' }, fmtNum(d.records)),
          h('td', {}, isAdmin() && v.online ? h('button', { type: 'button', class: 'small', onclick: () => showCommand(protocol, v.id) }, 'Command\u2026') : null));
      }))), block.vehicles.length > 200 ? h('p', { class: 'empty' }, 'Showing 200 of ' + fmtNum(block.vehicles.length) + '.') : null);
  };
  const load = async () => {
    try {
      const { data } = await api('GET', '/api/vehicles');
      for (const p of ['gbt32960', 'jt808']) clear(panels[p]).append(table(p, data[p]));
    } catch (e) { clear(panels.gbt32960).append(errorBox(e)); }
  };
  load();
  S.timers.push(setInterval(load, 3000));
  jt808ProvisioningPanel(main);
  return {};
}

// ---------- Vehicles: JT/T 808 provisioning (jt808.provision / jt808.deprovision) ----------
// Which terminals may register under `jt808.auth: registry`. Writes go through the same edge
// commands the cloud sends (POST /api/jt808/provision|deprovision); the list is GET /api/jt808/terminals.
const JT808_PLATE_COLORS = { 0: 'no plate (VIN)', 1: 'blue', 2: 'yellow', 3: 'black', 4: 'white', 5: 'green', 9: 'other' };

function jt808ProvisioningPanel(main) {
  const list = h('div'), jobs = h('div'), formErr = h('div');
  const section = h('section', { class: 'panel', style: 'margin-top:14px', id: 'jt808-provisioning' }, h('h2', {}, 'JT/T 808 provisioning'), list);
  main.append(section);
  const f = {
    phone: h('input', { id: 'prov-phone', placeholder: 'e.g. 13800000001', inputmode: 'numeric', required: true }),
    plate: h('input', { id: 'prov-plate', placeholder: 'e.g. \u6caaA12345 (optional)' }),
    plate_color: h('select', { id: 'prov-color' }, h('option', { value: '' }, '\u2013 any'), Object.entries(JT808_PLATE_COLORS).map(([k, v]) => h('option', { value: k }, k + ' ' + v))),
  };
  const load = async () => {
    try {
      const { data } = await api('GET', '/api/jt808/terminals');
      clear(list).append(h('p', {}, data.auth === 'registry'
        ? 'Only the terminals listed here may register (jt808.auth: registry). Removing one revokes its code and closes its connection.'
        : 'This edge admits any terminal (jt808.auth: open): the list is kept, and enforced once auth is set to registry.'));
      if (!data.terminals.length) { list.append(h('div', { class: 'empty' }, 'No terminal is provisioned.')); return; }
      const online = new Set(data.online);
      list.append(h('table', { id: 'jt808-provisioned' }, h('thead', {}, h('tr', {}, ['Phone', 'Plate', 'Colour', 'Registered', 'Connected', 'Last authenticated', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, data.terminals.map((t) => h('tr', {}, h('td', { class: 'mono' }, t.phone), h('td', {}, t.plate || 'any'), h('td', {}, t.plate_color === null || t.plate_color === undefined ? 'any' : JT808_PLATE_COLORS[t.plate_color]),
          h('td', {}, t.registered ? badge('registered', 'ok') : badge('not yet')), h('td', {}, online.has(t.phone) ? badge('online', 'ok') : badge('offline')),
          h('td', {}, t.last_auth_ms ? since(new Date(t.last_auth_ms).toISOString()) : '\u2013'),
          h('td', {}, isAdmin() ? h('button', { type: 'button', class: 'small danger', onclick: async () => {
            if (await confirmDialog('Remove terminal ' + t.phone + '?', 'It can no longer register or authenticate, and its connection is closed now.', 'Remove')) {
              await runCommand(jobs, 'remove ' + t.phone, 'POST', '/api/jt808/deprovision', { phones: [t.phone] });
              load();
            }
          } }, 'Remove') : null))))));
    } catch (e) { clear(list).append(errorBox(e)); }
  };
  if (isAdmin()) {
    const form = h('form', {
      id: 'prov-form', onsubmit: async (ev) => {
        ev.preventDefault(); clear(formErr);
        const phone = f.phone.value.trim();
        if (!/^[0-9]{1,20}$/.test(phone)) { formErr.append(errorBox(new ApiError(400, 'The phone must be 1 to 20 digits', 'enter the terminal\u2019s SIM number as digits only (a 2019 terminal: all 20 digits)'))); f.phone.focus(); return; }
        const terminal = { phone };
        if (f.plate.value.trim()) terminal.plate = f.plate.value.trim();
        if (f.plate_color.value) terminal.plate_color = Number(f.plate_color.value);
        const job = await runCommand(jobs, 'provision ' + phone, 'POST', '/api/jt808/provision', { terminals: [terminal] });
        if (job.ok) { f.phone.value = ''; f.plate.value = ''; f.plate_color.value = ''; }
        else formErr.append(errorBox(new ApiError(400, job.error || 'not provisioned', 'correct the field named and add it again')));
        load();
      },
    },
      h('div', { class: 'form-row' },
        h('div', {}, h('label', { for: 'prov-phone' }, 'Phone (SIM number)'), f.phone),
        h('div', {}, h('label', { for: 'prov-plate' }, 'Plate'), f.plate),
        h('div', {}, h('label', { for: 'prov-color' }, 'Plate colour'), f.plate_color),
        h('div', {}, h('button', { type: 'submit', class: 'primary', id: 'prov-add' }, 'Provision'))),
      formErr);
    section.append(h('h3', {}, 'Add a terminal'), form, jobs);
  }
  load();
}

// ---------- Registry (plates, VINs, phones, tags) ----------
const PLATE_COLORS = { 1: 'blue', 2: 'yellow', 3: 'black', 4: 'white', 5: 'green', 9: 'other' };

function viewRegistry(main) {
  main.append(h('h1', {}, 'Identity registry'));
  main.append(h('p', {}, 'Which plate, VIN, JT/T 808 phone and tag belong to one vehicle. Filled automatically from registrations, logins and tag reads, and by hand here or by the cloud\u2019s registry commands. Hand-entered rows are never evicted.'));
  const search = h('input', { id: 'reg-search', placeholder: 'plate, VIN, phone or TID' });
  const kind = h('select', { id: 'reg-kind' }, h('option', { value: '' }, 'all rows'), h('option', { value: 'true' }, 'entered by hand'), h('option', { value: 'false' }, 'learnt automatically'));
  const table = h('div'), pager = h('div', { class: 'actions' }), jobs = h('div');
  let offset = 0; const limit = 50;
  const f = {
    plate: h('input', { id: 'reg-plate', placeholder: 'e.g. \u4eacA12345', required: true }),
    plate_color: h('select', { id: 'reg-color' }, h('option', { value: '' }, '\u2013'), Object.entries(PLATE_COLORS).map(([k, v]) => h('option', { value: k }, k + ' ' + v))),
    vin: h('input', { id: 'reg-vin', maxlength: 17 }),
    phone: h('input', { id: 'reg-phone' }),
    tid: h('input', { id: 'reg-tid', placeholder: 'hex' }),
  };
  const formErr = h('div');
  const edit = (v) => {
    f.plate.value = v.plate || ''; f.plate_color.value = v.plate_color || ''; f.vin.value = v.vin || ''; f.phone.value = v.phone || ''; f.tid.value = v.tid || '';
    f.plate.focus();
  };
  const form = h('form', {
    onsubmit: async (ev) => {
      ev.preventDefault(); clear(formErr);
      if (!f.plate.value.trim()) { formErr.append(errorBox(new ApiError(400, 'A plate is required', 'enter the plate as printed'))); f.plate.focus(); return; }
      const vehicle = { plate: f.plate.value.trim() };
      if (f.plate_color.value) vehicle.plate_color = Number(f.plate_color.value);
      for (const k of ['vin', 'phone', 'tid']) if (f[k].value.trim()) vehicle[k] = f[k].value.trim();
      const job = await runCommand(jobs, 'save ' + vehicle.plate, 'POST', '/api/edge/command', { action: 'registry.upsert', vehicles: [vehicle] });
      if (job.ok && job.answer && job.answer.errors && job.answer.errors.length) {
        formErr.append(errorBox(new ApiError(400, job.answer.errors.map((e) => e.error).join('; '), 'correct the field named and save again')));
      }
      load();
    },
  },
    h('div', { class: 'form-row' },
      h('div', {}, h('label', { for: 'reg-plate' }, 'Plate'), f.plate),
      h('div', {}, h('label', { for: 'reg-color' }, 'Plate colour'), f.plate_color),
      h('div', {}, h('label', { for: 'reg-vin' }, 'VIN'), f.vin),
      h('div', {}, h('label', { for: 'reg-phone' }, 'JT/T 808 phone'), f.phone),
      h('div', {}, h('label', { for: 'reg-tid' }, 'Tag TID'), f.tid),
      h('div', {}, h('button', { type: 'submit', class: 'primary', id: 'reg-save' }, 'Add or update'))),
    formErr);
  const file = h('input', { id: 'reg-file', type: 'file', accept: '.csv,text/csv' });
  const importCsv = async () => {
    const chosen = file.files[0];
    if (!chosen) { toast('bad', 'Pick a CSV file first.', 'Its first line names the columns: plate,plate_color,vin,phone,tid'); return; }
    const row = h('div', { class: 'job' }, h('div', { class: 'head' }, badge('importing', 'warn'), h('strong', {}, chosen.name)), h('div', { class: 'progress' }, h('span')));
    jobs.prepend(row);
    try {
      const { data } = await api('POST', '/api/registry/import', chosen);
      $('.progress', row).remove();
      $('.badge', row).replaceWith(badge('imported', data.errors_total ? 'warn' : 'ok'));
      row.append(h('div', {}, data.rows + ' lines: ' + data.created + ' new, ' + data.updated + ' updated, ' + data.errors_total + ' refused' + (data.truncated ? ' (the registry is full: the rest was not read)' : '') + '.'));
      if (data.errors.length) row.append(h('pre', {}, data.errors.map((e) => 'line ' + e.index + ': ' + e.error).join('\n')));
      load();
    } catch (e) { $('.progress', row).remove(); $('.badge', row).replaceWith(badge('failed', 'bad')); row.append(errorBox(e)); }
  };
  main.append(h('section', { class: 'panel' }, h('div', { class: 'filters' },
    h('div', { style: 'flex:1' }, h('label', { for: 'reg-search' }, 'Search'), search),
    h('div', {}, h('label', { for: 'reg-kind' }, 'Rows'), kind),
    h('div', {}, h('a', { class: 'button', href: '/api/registry/export', download: true }, 'Export CSV'))), table, pager));
  if (isAdmin()) {
    main.append(h('div', { class: 'grid cols2' },
      h('section', { class: 'panel' }, h('h2', {}, 'Add or change a vehicle'), form),
      h('section', { class: 'panel' }, h('h2', {}, 'Import a CSV file'), h('p', {}, 'Columns: plate, plate_color, vin, phone, tid (first line). Existing plates are updated.'),
        h('div', { class: 'inline' }, file, h('button', { type: 'button', id: 'reg-import', onclick: importCsv }, 'Import')))));
    main.append(jobs);
  }
  const load = async () => {
    try {
      const q = 'query=' + encodeURIComponent(search.value) + '&manual=' + kind.value + '&limit=' + limit + '&offset=' + offset;
      const { data } = await api('GET', '/api/registry?' + q);
      clear(table).append(h('p', {}, fmtNum(data.total), data.total === 1 ? ' vehicle matches' : ' vehicles match', ' (the registry holds at most ', fmtNum(data.max_entries), ').'));
      if (!data.vehicles.length) table.append(h('div', { class: 'empty' }, search.value ? 'Nothing matches: try part of the plate or VIN.' : 'The registry is empty.'));
      else table.append(h('table', { id: 'registry' }, h('thead', {}, h('tr', {}, ['Plate', 'Colour', 'VIN', 'Phone', 'TID', 'Source', 'Last seen', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, data.vehicles.map((v) => h('tr', {}, h('td', {}, v.plate || '\u2013'), h('td', {}, PLATE_COLORS[v.plate_color] || '\u2013'), h('td', { class: 'mono' }, v.vin || '\u2013'),
          h('td', { class: 'mono' }, v.phone || '\u2013'), h('td', { class: 'mono' }, v.tid || '\u2013'), h('td', {}, v.manual ? badge('by hand', 'ok') : badge('learnt')), h('td', {}, since(v.last_seen)),
          h('td', {}, isAdmin() && v.plate ? h('div', { class: 'actions' },
            h('button', { type: 'button', class: 'small', onclick: () => edit(v) }, 'Edit'),
            h('button', { type: 'button', class: 'small danger', onclick: async () => { if (await confirmDialog('Delete ' + v.plate + '?', 'The registry forgets this vehicle; passages no longer name it.', 'Delete')) { await runCommand(jobs, 'delete ' + v.plate, 'POST', '/api/edge/command', { action: 'registry.delete', plates: [v.plate] }); load(); } } }, 'Delete')) : null))))));
      clear(pager);
      if (data.total > limit) pager.append(
        h('button', { type: 'button', disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - limit); load(); } }, '\u2190 Previous'),
        h('span', {}, (offset + 1) + '\u2013' + Math.min(offset + limit, data.total) + ' of ' + fmtNum(data.total)),
        h('button', { type: 'button', disabled: offset + limit >= data.total, onclick: () => { offset += limit; load(); } }, 'Next \u2192'));
    } catch (e) { clear(table).append(errorBox(e)); }
  };
  let debounce;
  search.addEventListener('input', () => { clearTimeout(debounce); offset = 0; debounce = setTimeout(load, 300); });
  kind.addEventListener('change', () => { offset = 0; load(); });
  load();
  return {};
}

// A long answer in a table cell: the first 160 characters, the rest on demand.
function shortJson(v) {
  const text = JSON.stringify(v);
  if (text === undefined) return '\u2013';
  if (text.length <= 160) return text;
  return h('details', {}, h('summary', {}, text.slice(0, 160) + '\u2026'), h('pre', {}, JSON.stringify(v, null, 2)));
}

// ---------- Passages (fusion: tag reads joined with vehicle telemetry; GET /api/passages) ----------
const ANOMALY_LABELS = { cloned_tag: 'cloned tag', missing_tag: 'missing tag', plate_mismatch: 'plate mismatch' };

function viewPassages(main) {
  main.append(h('h1', {}, 'Passages'));
  main.append(h('p', {}, 'Vehicles read at this site: each tag pass joined with the vehicle\u2019s own GB/T 32960 or JT/T 808 position, and vehicles whose telemetry crossed the site with no tag read. Anomalies are also raised as edge alarms.'));
  const search = h('input', { id: 'pass-search', placeholder: 'plate, VIN, phone, TID or reader' });
  const anomaly = h('select', { id: 'pass-anomaly' }, h('option', { value: '' }, 'all passages'), h('option', { value: 'any' }, 'with an anomaly'),
    Object.entries(ANOMALY_LABELS).map(([k, v]) => h('option', { value: k }, v)));
  const kind = h('select', { id: 'pass-match' }, h('option', { value: '' }, 'any match'), h('option', { value: 'tid' }, 'by TID'), h('option', { value: 'plate' }, 'by tag plate'),
    h('option', { value: 'none' }, 'unknown tag'), h('option', { value: 'telemetry_only' }, 'telemetry only (no tag)'));
  const counters = h('div', { class: 'grid cols2', style: 'margin-top:14px' }), table = h('div');
  main.append(h('section', { class: 'panel' }, h('h2', {}, 'Recent passages', h('span', { class: 'right' }, 'live')), h('div', { class: 'filters' },
    h('div', { style: 'flex:1' }, h('label', { for: 'pass-search' }, 'Search'), search),
    h('div', {}, h('label', { for: 'pass-anomaly' }, 'Anomaly'), anomaly),
    h('div', {}, h('label', { for: 'pass-match' }, 'Match'), kind)), table));
  main.append(counters);
  const cell = (v, cls) => h('td', cls ? { class: cls } : {}, v === undefined || v === null || v === '' ? '\u2013' : String(v));
  const load = async () => {
    try {
      const q = 'query=' + encodeURIComponent(search.value.trim()) + '&anomaly=' + anomaly.value + '&match=' + kind.value + '&limit=200';
      const { data } = await api('GET', '/api/passages?' + q);
      const m = data.metrics || {}, p = m.passages_total || {}, a = m.anomalies_total || {};
      clear(counters).append(
        h('section', { class: 'panel' }, h('h2', {}, 'Passages since start'), h('table', { id: 'passage-counts' }, h('tbody', {},
          [['by TID', p.tid], ['by tag plate', p.plate], ['unknown tag', p.none], ['telemetry only', p.telemetry_only]].map(([k, v]) => h('tr', {}, h('th', {}, k), cell(fmtNum(v || 0))))))),
        h('section', { class: 'panel' }, h('h2', {}, 'Anomalies and state'), h('table', { id: 'anomaly-counts' }, h('tbody', {},
          [['cloned tag', a.cloned_tag], ['missing tag', a.missing_tag], ['plate mismatch', a.plate_mismatch], ['registry entries', m.registry_entries],
            ['vehicles in the telemetry index', m.telemetry_index_vehicles], ['passes open', m.open_passes]].map(([k, v]) => h('tr', {}, h('th', {}, k), cell(fmtNum(v || 0))))))));
      clear(table).append(h('p', {}, fmtNum(data.total), data.total === 1 ? ' passage matches' : ' passages match', ' (the last ones since the appliance started).'));
      if (!data.passages.length) { table.append(h('div', { class: 'empty' }, search.value || anomaly.value || kind.value ? 'Nothing matches the filter.' : 'No passage yet: vehicles appear here as they pass the gantry.')); return; }
      table.append(h('table', { id: 'passages' }, h('thead', {}, h('tr', {}, ['Time', 'Plate', 'Match', 'Tag', 'Reader', 'Telemetry', 'Anomalies'].map((t) => h('th', {}, t)))),
        h('tbody', {}, data.passages.map((x) => {
          const t = x.telemetry;
          const tel = t ? t.source + ', ' + Math.round(t.distance_m) + ' m, ' + (t.time_gap_ms / 1000).toFixed(1) + ' s' + (t.speed_kmh !== undefined ? ', ' + Math.round(t.speed_kmh) + ' km/h' : '') : '';
          const anomalies = (x.anomalies || []).length ? h('td', {}, x.anomalies.map((k) => badge(ANOMALY_LABELS[k] || k, 'bad'))) : h('td', {}, badge('none', 'ok'));
          return h('tr', { 'data-passage': x.passage_id, class: (x.anomalies || []).length ? 'anomaly' : '' },
            cell(fmtTime(x.time)), cell((x.vehicle && x.vehicle.plate) || (x.tag && x.tag.plate)), cell(x.match),
            cell(x.tag && x.tag.tid, 'mono'), cell(x.reader && (x.reader.id + (x.reader.antenna !== undefined ? ' / ' + x.reader.antenna : ''))), cell(tel), anomalies);
        }))));
    } catch (e) { clear(table).append(errorBox(e)); }
  };
  let debounce;
  search.addEventListener('input', () => { clearTimeout(debounce); debounce = setTimeout(load, 300); });
  anomaly.addEventListener('change', load);
  kind.addEventListener('change', load);
  load();
  S.timers.push(setInterval(load, 2000));
  return {};
}

// ---------- Activity (actions started from this page) ----------
function viewActivity(main) {
  main.append(h('h1', {}, 'Activity'));
  main.append(h('p', {}, 'Actions started from this page since the appliance started (newest first). Each one is also a command on the cloud\u2019s command topics, with its result on the response topic.'));
  const box = h('section', { class: 'panel' });
  main.append(box);
  const load = async () => {
    try {
      const { data } = await api('GET', '/api/jobs');
      clear(box).append(data.jobs.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Started', 'By', 'Action', 'State', 'Result'].map((t) => h('th', {}, t)))),
        h('tbody', {}, data.jobs.map((j) => h('tr', {}, h('td', { class: 'nowrap' }, fmtTime(j.started_at)), h('td', {}, j.user), h('td', {}, j.label),
          h('td', {}, j.state === 'running' ? badge('running ' + j.elapsed_s + ' s', 'warn') : badge(j.ok ? 'done' : (j.result || 'failed'), j.ok ? 'ok' : 'bad')),
          h('td', { class: 'mono' }, j.ok ? shortJson(j.answer) : sentence(j.error || '') + (j.hint ? ' ' + sentence(j.hint) : '')))))) : h('div', { class: 'empty' }, 'Nothing has been done from this page yet.'));
    } catch (e) { clear(box).append(errorBox(e)); }
  };
  load();
  S.timers.push(setInterval(load, 3000));
  return {};
}

// ---------- Logs ----------
function viewLogs(main) {
  main.append(h('h1', {}, 'Logs'));
  const level = h('select', { id: 'log-level' }, ['info', 'warn', 'error', 'debug'].map((l) => h('option', { value: l }, l === 'info' ? 'info and worse' : l === 'debug' ? 'everything kept' : l + (l === 'warn' ? ' and errors' : ' only'))));
  const modules = h('select', { id: 'log-module' }, h('option', { value: '' }, 'all modules'));
  const text = h('input', { id: 'log-text', placeholder: 'e.g. north, 013900000000' });
  const follow = h('input', { id: 'log-follow', type: 'checkbox', checked: true });
  const out = h('div', { class: 'log', tabindex: '0', 'aria-label': 'Log lines' });
  const info = h('span', { class: 'empty' });
  main.append(h('div', { class: 'filters' },
    h('div', {}, h('label', { for: 'log-level' }, 'Level'), level),
    h('div', {}, h('label', { for: 'log-module' }, 'Module'), modules),
    h('div', { style: 'flex:1' }, h('label', { for: 'log-text' }, 'Contains'), text),
    h('div', { class: 'inline' }, h('label', {}, follow, 'follow new lines')), info));
  main.append(out);
  let last = 0, count = 0;
  const add = (lines) => {
    const atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 30;
    for (const l of lines) {
      last = Math.max(last, l.seq);
      out.append(h('div', { class: l.level }, h('span', { class: 'tm' }, l.time.replace('T', ' ').replace('Z', '') + ' '), h('span', { class: 'lv' }, l.level.toUpperCase()), h('span', { class: 'tg' }, l.target + ' '), l.message));
      count++;
    }
    while (out.childElementCount > 2000) { out.firstChild.remove(); }
    info.textContent = count + ' lines shown (the appliance keeps its newest 2,000 in memory)';
    if (follow.checked && atBottom) out.scrollTop = out.scrollHeight;
  };
  const query = () => 'level=' + level.value + '&module=' + encodeURIComponent(modules.value) + '&q=' + encodeURIComponent(text.value);
  const reload = async () => {
    clear(out); last = 0; count = 0;
    try {
      const { data } = await api('GET', '/api/logs?' + query());
      const cur = modules.value;
      clear(modules).append(h('option', { value: '' }, 'all modules'), data.modules.map((m) => h('option', { value: m }, m)));
      modules.value = cur;
      add(data.lines);
      if (!data.lines.length) out.append(h('div', { class: 'tm' }, 'No line matches. Widen the filter (level, module, text).'));
      out.scrollTop = out.scrollHeight;
      openEvents('status,logs', query() + '&after=' + last);
    } catch (e) { main.prepend(errorBox(e)); }
  };
  let debounce;
  for (const el of [level, modules]) el.addEventListener('change', reload);
  text.addEventListener('input', () => { clearTimeout(debounce); debounce = setTimeout(reload, 400); });
  // The live stream starts once the lines up to now are shown (no line twice).
  const view = { topics: 'status', query: '', logs: add };
  reload();
  return view;
}

// ---------- Update (OTA of roadedge itself) ----------
function uploadFile(file, name, row) {
  // XHR, not fetch: only XHR reports upload progress.
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/ota/upload?name=' + encodeURIComponent(name));
    xhr.setRequestHeader('X-CSRF-Token', S.session.csrf_token);
    xhr.upload.onprogress = (ev) => {
      if (ev.lengthComputable) { const p = Math.round(100 * ev.loaded / ev.total); $('.t', row).textContent = name + ': ' + p + ' %'; $('.progress span', row).style.width = p + '%'; }
    };
    xhr.onload = () => {
      let d = {}; try { d = JSON.parse(xhr.responseText); } catch (e) { d = {}; }
      if (xhr.status === 200) resolve(d); else reject(new ApiError(xhr.status, d.error || 'upload failed', d.hint));
    };
    xhr.onerror = () => reject(new ApiError(0, 'the upload broke off', 'check the connection and upload again'));
    xhr.send(file);
  });
}
const PHASES = { idle: 'idle', downloading: 'downloading', staging: 'staging', verifying: 'checking signature', installing: 'installing', restarting: 'restarting', rebooting: 'rebooting', confirming: 'confirming health', rolling_back: 'rolling back' };
function viewUpdate(main) {
  main.append(h('h1', {}, 'Update'));
  main.append(h('p', {}, 'Install a new version of roadedge. An update is the roadedge binary (or a RAUC bundle) and its signature file (.sig, made with the release key). The appliance checks the signature before it changes anything, restarts into the new version and keeps it only when it reaches the cloud within the confirmation time; otherwise it goes back to the current version by itself.'));
  const info = h('dl', { class: 'kv', id: 'ota-info' });
  const progress = h('div', { id: 'ota-progress' });
  const last = h('div', { id: 'ota-last' });
  const fileIn = h('input', { id: 'ota-file', type: 'file' });
  const sigIn = h('input', { id: 'ota-sig', type: 'file', accept: '.sig' });
  const jobs = h('div', { id: 'ota-jobs' });
  const install = async () => {
    const file = fileIn.files[0], sig = sigIn.files[0];
    if (!file) { toast('bad', 'Pick the update file first.', 'Use the "Update file" field.'); return; }
    if (!sig) { toast('bad', 'Pick the signature file (.sig) too.', 'It comes with the update; without it the update is refused.'); return; }
    const name = file.name.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '');
    const row = h('div', { class: 'job', role: 'status' }, h('div', { class: 'head' }, badge('uploading', 'warn'), h('strong', {}, 'Upload ' + name), h('span', { class: 't' }, '0 %')), h('div', { class: 'progress fixed' }, h('span', { style: 'width:0%' })));
    jobs.prepend(row);
    try {
      await uploadFile(file, name, row);
      await uploadFile(sig, name + '.sig', row);
      $('.progress', row).remove();
      $('.badge', row).replaceWith(badge('uploaded', 'ok'));
    } catch (e) {
      $('.progress', row).remove();
      $('.badge', row).replaceWith(badge('failed', 'bad'));
      row.append(errorBox(e));
      return;
    }
    const job = await runCommand(jobs, 'Install ' + name, 'POST', '/api/ota/install', { name });
    refresh();
    if (job && job.ok) toast('ok', 'Update installed.', 'The new version confirmed its health.');
  };
  main.append(h('div', { class: 'grid cols2' },
    h('section', { class: 'panel' }, h('h2', {}, 'This appliance'), info, h('h3', {}, 'Now'), progress, h('h3', {}, 'Last result'), last),
    h('section', { class: 'panel' }, h('h2', {}, 'Install an update'),
      h('label', { for: 'ota-file' }, 'Update file'), fileIn,
      h('label', { for: 'ota-sig' }, 'Signature file (.sig)'), sigIn,
      h('div', { class: 'actions' }, h('button', { type: 'button', id: 'ota-install', onclick: install, disabled: !isAdmin() }, 'Upload and install')),
      isAdmin() ? null : h('p', { class: 'hint' }, 'Log in with an admin account to install updates.'),
      jobs)));
  const refresh = async () => {
    try {
      const { data } = await api('GET', '/api/ota');
      clear(info).append(
        h('dt', {}, 'Current version'), h('dd', { id: 'ota-current' }, data.current_version),
        h('dt', {}, 'Previous version'), h('dd', {}, data.previous_version || '–'),
        h('dt', {}, 'Installed by'), h('dd', {}, data.installer === 'auto' ? 'RAUC when present, else binary swap' : data.installer),
        h('dt', {}, 'Confirmation time'), h('dd', {}, data.confirm_within_s ? fmtAge(data.confirm_within_s) : '–'),
        h('dt', {}, 'Largest update'), h('dd', {}, fmtBytes(data.max_bytes)),
        h('dt', {}, 'Staged update'), h('dd', {}, data.staged ? fmtBytes(data.staged.bytes) : 'none'));
      const p = data.progress || {};
      const busy = p.phase && p.phase !== 'idle';
      clear(progress).append(busy
        ? h('div', { class: 'job' }, h('div', { class: 'head' }, badge(PHASES[p.phase] || p.phase, 'warn'), h('strong', {}, p.message || ''), h('span', { class: 't' }, p.percent !== null && p.percent !== undefined ? p.percent + ' %' : (p.bytes ? fmtBytes(p.bytes) : ''))),
          h('div', { class: 'progress fixed' }, h('span', { style: 'width:' + (p.percent || 0) + '%' })))
        : h('div', { class: 'empty' }, 'No update is running.'));
      const r = data.last_result;
      clear(last).append(!r ? h('div', { class: 'empty' }, 'No update was tried yet.')
        : r.result.ok ? h('div', { class: 'notice ok' }, 'Installed ' + r.result.answer.installed + ' (was ' + r.result.answer.previous + ') at ' + fmtTime(r.at) + '.')
          : h('div', { class: 'notice bad' }, sentence(r.result.error), h('span', { class: 'hint' }, 'What to do: the running version was kept; fix what the message names (signature, version, file) and install again.'), h('span', { class: 'tm' }, fmtTime(r.at))));
      if (!data.configured) clear(progress).append(h('div', { class: 'notice bad' }, 'Updates are not configured on this appliance.', h('span', { class: 'hint' }, 'What to do: add ota.public_key_file to the configuration.')));
    } catch (e) { if (e.status === 0) clear(progress).append(h('div', { class: 'notice info' }, 'The appliance does not answer: it may be restarting into the new version. Log in again when it is back.')); }
  };
  refresh();
  S.timers.push(setInterval(refresh, 1000));
  return {};
}

// ---------- Configuration (the YAML file: validate, diff, apply with auto-revert) ----------
// Reads call the configuration service (GET /api/config, POST /api/config/validate|diff); writes
// are the edge commands the cloud sends (config.set, config.confirm, log_level, restart) through
// POST /api/config/apply|confirm, /api/log_level, /api/restart. An applied file is reverted by
// the appliance itself unless confirmed within web.confirm_within: the countdown shows it.
function viewConfig(main) {
  main.append(h('h1', {}, 'Configuration'));
  main.append(h('p', {}, 'The appliance\u2019s configuration file. Validate shows every error at its line; Show changes compares with the file in force. Apply restarts the appliance\u2019s services with the new file; keep it with Confirm before the countdown ends, otherwise the previous file comes back by itself.'));
  if (!isAdmin()) {
    main.append(h('div', { class: 'notice info' }, 'Only admins can see the configuration: the file holds password hashes.', h('span', { class: 'hint' }, 'What to do: log in with an admin account.')));
    return {};
  }
  const status = h('div', { id: 'cfg-status', 'aria-live': 'polite' });
  const gutter = h('div', { class: 'gutter', id: 'cfg-lines', 'aria-hidden': 'true' });
  // Marked lines are painted behind the (transparent) textarea, scrolled with it.
  const backdrop = h('div', { class: 'backdrop', 'aria-hidden': 'true' });
  const text = h('textarea', { id: 'cfg-text', spellcheck: 'false', autocomplete: 'off', wrap: 'off', 'aria-label': 'Configuration (YAML)', 'aria-describedby': 'cfg-errors' });
  const errors = h('div', { id: 'cfg-errors' });
  const diffOut = h('div', { id: 'cfg-diff' });
  const jobs = h('div', { id: 'cfg-jobs' });
  let loaded = null; // the file's text as last loaded from the appliance
  let marks = new Map(); // line -> messages
  const dirty = () => loaded !== null && text.value !== loaded;
  const renderGutter = () => {
    const n = text.value.split('\n').length;
    clear(gutter);
    for (let i = 1; i <= n; i++) {
      const m = marks.get(i);
      gutter.append(h('div', { class: m ? 'ln err' : 'ln', title: m ? m.join('\n') : null, 'data-line': i }, m ? '\u25CF ' + i : String(i)));
    }
    clear(backdrop);
    for (const [line, m] of marks) backdrop.append(h('div', { class: 'mark', 'data-line': line, style: 'top:' + (6 + (line - 1) * 18) + 'px' }, h('span', {}, m.join('; '))));
    syncScroll();
  };
  const syncScroll = () => { gutter.scrollTop = text.scrollTop; backdrop.scrollTop = text.scrollTop; };
  const goToLine = (line) => {
    const lines = text.value.split('\n');
    const start = lines.slice(0, line - 1).reduce((a, l) => a + l.length + 1, 0);
    text.focus();
    text.setSelectionRange(start, start + (lines[line - 1] || '').length);
    const lh = parseFloat(getComputedStyle(text).lineHeight) || 18;
    text.scrollTop = Math.max(0, (line - 4) * lh);
  };
  const showErrors = (list) => {
    marks = new Map();
    for (const e of list) if (e.line) marks.set(e.line, (marks.get(e.line) || []).concat((e.path ? e.path + ': ' : '') + e.message));
    renderGutter();
    clear(errors);
    if (!list.length) { errors.append(h('div', { class: 'notice ok', id: 'cfg-valid' }, 'The configuration is valid.')); return; }
    const first = list.find((e) => e.line);
    if (first) { const lh = 18; text.scrollTop = Math.max(0, (first.line - 4) * lh); syncScroll(); }
    errors.append(h('div', { class: 'notice bad', role: 'alert' }, list.length + (list.length === 1 ? ' error' : ' errors') + ' \u2013 nothing is applied until they are fixed.',
      h('ul', { class: 'cfg-errlist' }, list.map((e) => h('li', {},
        e.line ? h('button', { type: 'button', class: 'link', 'data-line': e.line, onclick: () => goToLine(e.line) }, 'Line ' + e.line) : h('span', {}, 'Document'),
        ' ', h('code', {}, e.path || '(whole file)'), ': ', e.message)))));
  };
  const validate = async () => {
    try {
      const { data } = await api('POST', '/api/config/validate', { yaml: text.value });
      showErrors(data.errors || []);
      return data.valid;
    } catch (e) { clear(errors).append(errorBox(e)); return false; }
  };
  const showDiff = async () => {
    try {
      const { data } = await api('POST', '/api/config/diff', { yaml: text.value });
      clear(diffOut);
      if (!data.changed) { diffOut.append(h('div', { class: 'empty' }, 'No changes against the file in force.')); return data; }
      diffOut.append(h('p', { class: 'hint' }, '+' + data.added + ' / \u2212' + data.removed + ' lines'),
        h('pre', { class: 'diff' }, data.unified.split('\n').map((l) => h('span', { class: /^(@@|\+\+\+ |--- )/.test(l) ? 'hunk' : l.startsWith('+') ? 'add' : l.startsWith('-') ? 'del' : '' }, l + '\n'))));
      return data;
    } catch (e) { clear(diffOut).append(errorBox(e)); return null; }
  };
  const apply = async () => {
    if (!(await validate())) { toast('bad', 'The configuration has errors.', 'Fix the marked lines, then apply.'); return; }
    const d = await showDiff();
    if (d && !d.changed) { toast('info', 'Nothing to apply.', 'The text is the file in force.'); return; }
    if (!(await confirmDialog('Apply this configuration?', 'The appliance\u2019s services restart with the new file. Confirm it before the countdown ends, or the previous file comes back by itself.', 'Apply'))) return;
    const job = await runCommand(jobs, 'Apply configuration', 'POST', '/api/config/apply', { yaml: text.value });
    if (job && job.ok) { loaded = text.value; toast('ok', 'Applied. Confirm it before the countdown ends.'); }
    setTimeout(refresh, 800);
  };
  const confirmApply = async () => {
    const job = await runCommand(jobs, 'Confirm configuration', 'POST', '/api/config/confirm', {});
    if (job && job.ok) toast('ok', 'Configuration confirmed: it stays.');
    refresh();
  };
  const level = h('input', { id: 'cfg-level', type: 'text', value: '', placeholder: 'info', list: 'cfg-levels', 'aria-label': 'Log level' });
  const setLevel = async () => {
    await runCommand(jobs, 'Log level ' + level.value, 'POST', '/api/log_level', { level: level.value || 'info' });
    refresh();
  };
  const restart = async () => {
    if (!(await confirmDialog('Restart the services?', 'Every connection is closed and opened again with the configuration file; data already accepted is kept.', 'Restart'))) return;
    await runCommand(jobs, 'Restart', 'POST', '/api/restart', {});
  };
  let shown = '';
  const refresh = async () => {
    let data;
    try { data = (await api('GET', '/api/config')).data; } catch (e) {
      if (e.status === 0) clear(status).append(h('div', { class: 'notice info', id: 'cfg-restarting' }, 'The appliance is restarting its services\u2026'));
      else clear(status).append(errorBox(e));
      return;
    }
    if (loaded === null || (!dirty() && data.yaml !== loaded)) { text.value = data.yaml; loaded = data.yaml; renderGutter(); }
    if (!level.value) level.value = data.log_level || '';
    const p = data.pending, l = data.last;
    // Only the countdown's text changes every second: the box (and the focus on its button)
    // is rebuilt only when the state changes.
    const key = JSON.stringify([p && p.request_id, p && p.uplink_back, l && l.at]);
    const clock = $('#cfg-countdown', status);
    if (p && clock) clock.textContent = fmtClock(p.seconds_left);
    if (key === shown) return;
    shown = key;
    clear(status);
    if (p) {
      status.append(h('div', { class: 'notice warn countdown-box', id: 'cfg-pending' },
        h('div', {}, 'Applied configuration waiting for confirmation: ', h('strong', { class: 'countdown', id: 'cfg-countdown' }, fmtClock(p.seconds_left)), ' left, then it reverts by itself.'),
        p.uplink_required ? h('div', { class: 'hint' }, p.uplink_back ? 'The uplink is back with the new file.' : 'Waiting for the uplink to come back with the new file\u2026') : null,
        h('div', { class: 'actions' }, h('button', { type: 'button', id: 'cfg-confirm', class: 'primary', onclick: confirmApply }, 'Confirm (keep it)'))));
    } else if (l) {
      status.append(l.state === 'reverted'
        ? h('div', { class: 'notice bad', id: 'cfg-reverted' }, 'The last applied configuration was reverted ' + since(l.at) + ': ' + sentence(l.reason), h('span', { class: 'hint' }, 'What to do: the previous file is in force again (shown below); correct the change and apply it again.'))
        : h('div', { class: 'notice ok', id: 'cfg-confirmed' }, 'The last applied configuration was confirmed ' + since(l.at) + '.'));
    }
  };
  text.addEventListener('input', () => { if (marks.size) { marks = new Map(); clear(errors); } renderGutter(); });
  text.addEventListener('scroll', syncScroll);
  text.addEventListener('keydown', (ev) => {
    // Tab inserts two spaces (YAML indentation) instead of leaving the editor.
    if (ev.key === 'Tab' && !ev.shiftKey) { ev.preventDefault(); text.setRangeText('  ', text.selectionStart, text.selectionEnd, 'end'); renderGutter(); }
  });
  main.append(status,
    h('section', { class: 'panel' },
      h('div', { class: 'editor' }, gutter, h('div', { class: 'area' }, backdrop, text)),
      h('div', { class: 'actions' },
        h('button', { type: 'button', id: 'cfg-validate', onclick: validate }, 'Validate'),
        h('button', { type: 'button', id: 'cfg-show-diff', onclick: showDiff }, 'Show changes'),
        h('button', { type: 'button', id: 'cfg-apply', class: 'primary', onclick: apply }, 'Apply'),
        h('button', { type: 'button', id: 'cfg-revert-text', onclick: () => { text.value = loaded || ''; showErrors([]); clear(errors); clear(diffOut); } }, 'Discard edits')),
      errors, diffOut),
    h('div', { class: 'grid cols2' },
      h('section', { class: 'panel' }, h('h2', {}, 'Log level (until the next restart)'),
        h('datalist', { id: 'cfg-levels' }, ['error', 'warn', 'info', 'debug', 'trace'].map((v) => h('option', { value: v }))),
        h('div', { class: 'actions' }, level, h('button', { type: 'button', id: 'cfg-set-level', onclick: setLevel }, 'Set'))),
      h('section', { class: 'panel' }, h('h2', {}, 'Services'),
        h('p', {}, 'Restart every service of the appliance with the configuration file (refused while an update or an applied configuration is pending).'),
        h('div', { class: 'actions' }, h('button', { type: 'button', id: 'cfg-restart', class: 'danger', onclick: restart }, 'Restart services')))),
    jobs);
  renderGutter();
  refresh();
  S.timers.push(setInterval(refresh, 1000));
  return {};
}
function fmtClock(s) { s = Math.max(0, Math.round(s || 0)); return Math.floor(s / 60) + ':' + pad2(s % 60); }

const VIEWS = { dashboard: viewDashboard, readers: viewReaders, vehicles: viewVehicles, registry: viewRegistry, passages: viewPassages, update: viewUpdate, config: viewConfig, activity: viewActivity, logs: viewLogs };

async function start() {
  layout();
  try { S.actions = (await api('GET', '/api/edge/actions')).data.actions; } catch (e) { S.actions = []; }
  route();
  $('#main').focus();
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', async () => {
  try {
    const { data } = await api('GET', '/api/session', undefined, { login: true });
    S.session = data;
    await start();
  } catch (e) {
    if (e.status === 401) showLogin();
    else { const app = clear($('#app')); app.append(h('main', { id: 'main' }, errorBox(e))); setTimeout(() => location.reload(), 5000); }
  }
});
