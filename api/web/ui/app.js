// mailark web portal: a small single-page app over the REST API (/api/v1, described at
// /api/v1/openapi.json). No framework and no build step. Everything from the server is put in the
// page as text (textContent), never as markup; HTML mail is shown only in a sandboxed frame that the
// server fills with sanitised HTML under its own Content-Security-Policy.
'use strict';

const state = { session: null, folders: [], csrf: '' };
const app = document.getElementById('app');

// ---- helpers ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (method !== 'GET') opts.headers['X-CSRF-Token'] = state.csrf;
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401 && path !== '/api/v1/login') {
    state.session = null;
    location.hash = '#/login';
    throw new Error('please log in again');
  }
  if (!res.ok) throw new Error((data && data.error) || res.status + ' ' + res.statusText);
  return data;
}

function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return d.toLocaleDateString();
}

function bytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1048576).toFixed(1) + ' MiB';
}

// "Ana Lima <ana@example.com>" -> "Ana Lima"; a bare address stays.
function senderName(from) {
  if (!from) return '(no sender)';
  const m = from.match(/^\s*"?([^"<]*?)"?\s*<[^>]*>\s*$/);
  return m && m[1] ? m[1] : from;
}

function addressText(list) {
  return (list || []).map(a => (a.name ? a.name + ' <' + a.address + '>' : a.address)).join(', ');
}

function render(...nodes) {
  app.replaceChildren(...nodes);
}

function failure(e) {
  return h('p', { class: 'error', role: 'alert' }, String(e.message || e));
}

// ---- frame: top bar, continuity banner, folders ----

function topbar() {
  const q = h('input', { type: 'search', name: 'q', placeholder: 'Search your mail', 'aria-label': 'Search', value: currentQuery() });
  const isAdmin = state.session && state.session.role === 'admin';
  return h('div', { class: 'topbar' },
    h('a', { class: 'brand', href: '#/' }, 'mailark'),
    h('form', { id: 'search', onsubmit: e => { e.preventDefault(); location.hash = '#/search?q=' + encodeURIComponent(q.value); } },
      q, h('button', { type: 'submit' }, 'Search')),
    h('a', { href: '#/compose', id: 'compose-link' }, 'Write'),
    isAdmin ? h('a', { href: '#/admin', id: 'admin-link' }, 'Admin') : null,
    h('span', { class: 'spacer' }),
    h('span', {}, state.session ? state.session.user : ''),
    h('button', { class: 'link', id: 'logout', onclick: logout }, 'Log out'));
}

function banner() {
  const c = state.session && state.session.continuity;
  if (!c || c === 'normal') return null;
  return h('div', { class: 'banner ' + c, role: 'status' },
    c === 'active' ? 'Continuity event: the primary mail server is out of service. Your mail keeps arriving here.'
                   : 'The primary mail server is back; held mail is being delivered to it.');
}

function sidebar(currentId) {
  return h('nav', { class: 'sidebar', 'aria-label': 'Folders' },
    state.folders.map(f => h('a', { href: '#/folder/' + f.id, class: f.id === currentId ? 'current' : '', 'data-folder': f.name },
      h('span', {}, f.name), f.unseen ? h('span', { class: 'count' }, f.unseen) : '')));
}

async function frame(currentFolder, ...content) {
  render(topbar(), banner() || '', h('div', { class: 'layout' }, sidebar(currentFolder), h('main', { class: 'main' }, ...content)));
}

async function loadFolders() {
  const data = await api('GET', '/api/v1/folders');
  const order = ['INBOX', 'Drafts', 'Sent', 'Junk', 'Trash'];
  state.folders = data.folders.sort((a, b) => {
    const x = order.indexOf(a.name), y = order.indexOf(b.name);
    if (x >= 0 || y >= 0) return (x < 0 ? 99 : x) - (y < 0 ? 99 : y);
    return a.name.localeCompare(b.name);
  });
}

function currentQuery() {
  const m = location.hash.match(/^#\/search\?(.*)$/);
  if (!m) return '';
  return new URLSearchParams(m[1]).get('q') || '';
}

// ---- views ----

// Shown once: several paths reach it together (the start-up session probe, a 401 from any call,
// the hash change to #/login), and a second form would replace the one the user is typing into.
function loginView(message) {
  const shown = document.getElementById('login');
  if (shown) {
    if (message) shown.querySelector('.error').textContent = message;
    return;
  }
  const user = h('input', { type: 'email', name: 'user', id: 'user', autocomplete: 'username', required: true });
  const pass = h('input', { type: 'password', name: 'password', id: 'password', autocomplete: 'current-password', required: true });
  const out = h('p', { class: 'error', role: 'alert' }, message || '');
  const form = h('form', { class: 'stack card login', id: 'login', onsubmit: async e => {
    e.preventDefault();
    out.textContent = '';
    try {
      const s = await api('POST', '/api/v1/login', { user: user.value, password: pass.value });
      state.session = s;
      state.csrf = s.csrf;
      go('#/');
    } catch (err) {
      out.textContent = err.message;
    }
  } },
    h('h1', {}, 'mailark'),
    h('label', { for: 'user' }, 'Address'), user,
    h('label', { for: 'password' }, 'Password'), pass,
    h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Log in')), out);
  render(form);
  user.focus();
}

async function logout() {
  try { await api('POST', '/api/v1/logout'); } catch (e) { /* gone already */ }
  state.session = null;
  state.csrf = '';
  go('#/login');
}

// Navigate to a hash and render it once: setting a different hash fires hashchange, which routes;
// setting the same one fires nothing, so route here.
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function messageRows(messages) {
  if (!messages.length) return h('p', { class: 'muted', id: 'messages' }, 'No messages.');
  return h('ul', { class: 'list', id: 'messages' }, messages.map(m =>
    h('li', {}, h('a', { class: 'row' + (m.flags.includes('seen') ? '' : ' unseen'), href: '#/message/' + m.folder + '/' + m.uid },
      h('span', { class: 'from', title: m.from }, senderName(m.from)),
      h('span', { class: 'subject' }, (m.flags.includes('flagged') ? '★ ' : '') + (m.attachment ? '📎 ' : '') + (m.subject || '(no subject)')),
      h('span', { class: 'date' }, when(m.date))))));
}

function pager(total, offset, limit, go) {
  return h('div', { class: 'pager' },
    h('button', { disabled: offset === 0, onclick: () => go(Math.max(0, offset - limit)) }, 'Newer'),
    h('span', { class: 'muted' }, total ? (offset + 1) + '–' + Math.min(total, offset + limit) + ' of ' + total : ''),
    h('button', { disabled: offset + limit >= total, onclick: () => go(offset + limit) }, 'Older'));
}

async function folderView(id, offset) {
  const limit = 50;
  const data = await api('GET', '/api/v1/folders/' + id + '/messages?offset=' + offset + '&limit=' + limit);
  await frame(id, h('h2', {}, data.name), messageRows(data.messages),
    pager(data.total, offset, limit, o => { location.hash = '#/folder/' + id + '/' + o; }));
  // User Timing: when a folder's list is on screen (bench/web measures the first inbox render).
  if (window.performance && performance.mark) performance.mark('mailark:folder-rendered');
}

async function searchView(params) {
  const q = params.get('q') || '';
  const offset = Number(params.get('offset') || 0);
  const limit = 50;
  const field = (name, label, type) => h('label', {}, label, h('input', { type: type || 'text', name, value: params.get(name) || '' }));
  const folderSel = h('select', { name: 'folder' }, h('option', { value: '' }, 'All folders'),
    state.folders.map(f => h('option', { value: f.id, selected: String(f.id) === params.get('folder') }, f.name)));
  const attach = h('input', { type: 'checkbox', name: 'attachment', checked: params.get('attachment') === '1' });
  const form = h('form', { class: 'card filters', id: 'filters', onsubmit: e => {
    e.preventDefault();
    const p = new URLSearchParams();
    const fd = new FormData(form);
    for (const [k, v] of fd.entries()) if (v) p.set(k, k === 'attachment' ? '1' : v);
    location.hash = '#/search?' + p.toString();
  } },
    field('q', 'Words'), field('from', 'From'), field('to', 'To'), field('after', 'After', 'date'), field('before', 'Before', 'date'),
    h('label', {}, 'Folder', folderSel), h('label', {}, 'Attachment', attach), h('button', { type: 'submit' }, 'Search'));
  // The filters become the CLI's query syntax (docs/SEARCH.md).
  const terms = [q];
  const quote = s => '"' + s.replace(/"/g, '') + '"';
  if (params.get('from')) terms.push('from:' + quote(params.get('from')));
  if (params.get('to')) terms.push('to:' + quote(params.get('to')));
  if (params.get('after') || params.get('before')) terms.push('date:' + (params.get('after') || '') + '..' + (params.get('before') || ''));
  if (params.get('attachment') === '1') terms.push('has:attachment');
  const query = terms.filter(Boolean).join(' ');
  let results;
  try {
    const folder = params.get('folder') ? '&folder=' + encodeURIComponent(params.get('folder')) : '';
    const data = await api('GET', '/api/v1/search?q=' + encodeURIComponent(query) + folder + '&offset=' + offset + '&limit=' + limit);
    results = [h('p', { class: 'muted', id: 'result-count' }, (data.total_exact === false ? 'about ' : '') + data.total + ' message' + (data.total === 1 ? '' : 's')), messageRows(data.messages),
      pager(data.total, offset, limit, o => { params.set('offset', o); location.hash = '#/search?' + params.toString(); })];
  } catch (e) {
    results = [failure(e)];
  }
  await frame(null, form, ...results);
}

async function messageView(folder, uid, images) {
  const m = await api('GET', '/api/v1/messages/' + folder + '/' + uid);
  const base = '/api/v1/messages/' + folder + '/' + uid;
  const flagged = m.flags.includes('flagged');
  const toolbar = h('div', { class: 'toolbar' },
    h('a', { href: '#/compose?reply=' + folder + '/' + uid }, h('button', { tabindex: -1 }, 'Reply')),
    h('a', { href: '#/compose?replyall=' + folder + '/' + uid }, h('button', { tabindex: -1 }, 'Reply all')),
    h('a', { href: '#/compose?forward=' + folder + '/' + uid }, h('button', { tabindex: -1 }, 'Forward')),
    h('button', { id: 'flag', onclick: async () => { await api('POST', base + '/flags', flagged ? { remove: ['flagged'] } : { add: ['flagged'] }); route(); } }, flagged ? 'Unflag' : 'Flag'),
    h('button', { id: 'unread', onclick: async () => { await api('POST', base + '/flags', { remove: ['seen'] }); history.back(); } }, 'Mark unread'),
    h('button', { id: 'delete', class: 'danger', onclick: async () => { await api('DELETE', base); location.hash = '#/folder/' + folder; } }, 'Delete'));
  let body;
  if (m.has_html) {
    // sandbox without allow-scripts and without allow-same-origin: nothing runs, and the frame
    // cannot reach this page or the session. The server adds its own CSP on top.
    body = [h('iframe', { class: 'body', id: 'body-frame', title: 'Message', sandbox: 'allow-popups allow-popups-to-escape-sandbox',
      referrerpolicy: 'no-referrer', src: base + '/html' + (images ? '?images=1' : '') })];
    if (m.remote_images && !images)
      body.unshift(h('p', { class: 'banner', id: 'images-blocked' }, m.remote_images + ' remote image' + (m.remote_images === 1 ? ' was' : 's were') + ' not loaded. ',
        h('button', { id: 'show-images', onclick: () => messageView(folder, uid, true) }, 'Show images')));
  } else {
    body = [h('pre', { class: 'body', id: 'body-text' }, m.text)];
  }
  const atts = m.attachments.filter(a => !a.inline);
  const current = state.folders.find(f => f.id === Number(folder));
  await frame(Number(folder),
    h('article', { class: 'card', id: 'message' },
      h('h2', { id: 'subject' }, m.subject || '(no subject)'),
      h('dl', { class: 'headers' },
        h('dt', {}, 'From'), h('dd', { id: 'from' }, addressText(m.from)),
        h('dt', {}, 'To'), h('dd', {}, addressText(m.to)),
        m.cc.length ? [h('dt', {}, 'Cc'), h('dd', {}, addressText(m.cc))] : null,
        h('dt', {}, 'Date'), h('dd', {}, m.date ? new Date(m.date).toLocaleString() : '')),
      toolbar, ...body,
      atts.length ? h('div', { class: 'attachments', id: 'attachments' }, h('h3', {}, 'Attachments'),
        atts.map(a => h('a', { href: base + '/parts/' + a.section, download: a.filename || 'attachment' },
          (a.filename || a.content_type) + ' (' + bytes(a.size) + ')'))) : null,
      h('details', { id: 'all-headers' }, h('summary', {}, 'All header fields'),
        h('dl', { class: 'headers' }, (m.headers || []).map(([n, v]) => [h('dt', {}, n), h('dd', {}, v)]))),
      h('p', { class: 'muted' }, h('a', { href: base + '/raw', download: 'message.eml' }, 'Download original'),
        current ? ' · in ' + current.name : '')));
}

async function composeView(params) {
  const to = h('input', { type: 'text', name: 'to', id: 'to' });
  const cc = h('input', { type: 'text', name: 'cc', id: 'cc' });
  const bcc = h('input', { type: 'text', name: 'bcc', id: 'bcc' });
  const subject = h('input', { type: 'text', name: 'subject', id: 'compose-subject' });
  const text = h('textarea', { name: 'text', id: 'text' });
  const files = h('input', { type: 'file', name: 'files', id: 'files', multiple: true });
  const from = h('select', { name: 'from', id: 'from-address' }, state.session.addresses.map(a => h('option', { value: a }, a)));
  const out = h('p', { role: 'status', id: 'compose-status' });
  let reference = null;
  const ref = params.get('reply') || params.get('replyall') || params.get('forward');
  if (ref) {
    const [f, u] = ref.split('/').map(Number);
    const m = await api('GET', '/api/v1/messages/' + f + '/' + u + '?peek=1');
    const quoted = m.text.split('\n').map(l => '> ' + l).join('\n');
    if (params.get('forward')) {
      subject.value = /^fwd?:/i.test(m.subject) ? m.subject : 'Fwd: ' + m.subject;
      reference = { forward_message: { folder: f, uid: u } };
    } else {
      subject.value = /^re:/i.test(m.subject) ? m.subject : 'Re: ' + m.subject;
      const replyTo = m.reply_to.length ? m.reply_to : m.from;
      to.value = addressText(replyTo);
      if (params.get('replyall')) {
        const mine = new Set(state.session.addresses);
        cc.value = addressText(m.to.concat(m.cc).filter(a => !mine.has(a.address.toLowerCase())));
      }
      text.value = '\n\nOn ' + (m.date ? new Date(m.date).toLocaleString() : '') + ', ' + addressText(m.from) + ' wrote:\n' + quoted;
      reference = { reply_to_message: { folder: f, uid: u } };
    }
  }
  const split = s => s.split(/[,;]\s*/).map(x => x.trim()).filter(Boolean);
  const readFile = file => new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve({ filename: file.name, content_type: file.type || 'application/octet-stream', data: String(r.result).split(',')[1] || '' });
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
  const form = h('form', { class: 'stack card', id: 'compose', onsubmit: async e => {
    e.preventDefault();
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    out.className = '';
    out.textContent = 'Sending…';
    try {
      const attachments = await Promise.all(Array.from(files.files).map(readFile));
      const body = Object.assign({ from: from.value, to: split(to.value), cc: split(cc.value), bcc: split(bcc.value),
        subject: subject.value, text: text.value, attachments }, reference || {});
      const r = await api('POST', '/api/v1/send', body);
      out.textContent = 'Sent to ' + r.recipients.join(', ') + '.';
      form.reset();
    } catch (err) {
      out.className = 'error';
      out.textContent = err.message;
    } finally {
      button.disabled = false;
    }
  } },
    h('h2', {}, 'New message'),
    h('label', { for: 'from-address' }, 'From'), from,
    h('label', { for: 'to' }, 'To'), to,
    h('label', { for: 'cc' }, 'Cc'), cc,
    h('label', { for: 'bcc' }, 'Bcc'), bcc,
    h('label', { for: 'compose-subject' }, 'Subject'), subject,
    h('label', { for: 'text' }, 'Message'), text,
    h('label', { for: 'files' }, 'Attachments'), files,
    h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Send')), out);
  await frame(null, form);
  (to.value ? text : to).focus();
}

// ---- admin ----

function chart(windows) {
  // Monitor windows, oldest left: bars of delivered (green) and failed outcomes (red), and the
  // failure counter as a line.
  const w = 600, hgt = 160, pad = 20;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 ' + w + ' ' + hgt);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('id', 'monitor-chart');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'Monitor windows');
  const list = windows.slice().reverse();
  const max = Math.max(1, ...list.map(x => x.delivered + x.refused + x.deferred + x.unreachable + x.probes_lost));
  const maxCounter = Math.max(1, ...list.map(x => x.counter));
  const step = (w - 2 * pad) / Math.max(list.length, 30);  // at least 30 slots: a few windows stay narrow
  const add = (tag, attrs) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    svg.append(el);
    return el;
  };
  let points = '';
  list.forEach((x, i) => {
    const good = x.delivered, bad = x.refused + x.deferred + x.unreachable + x.probes_lost;
    const hg = (hgt - 2 * pad) * good / max, hb = (hgt - 2 * pad) * bad / max;
    const left = pad + i * step;
    add('rect', { x: left, y: hgt - pad - hg, width: Math.max(1, step * 0.8), height: hg, fill: '#3c9a5f' });
    add('rect', { x: left, y: hgt - pad - hg - hb, width: Math.max(1, step * 0.8), height: hb, fill: x.failed ? '#b00020' : '#e0a030' });
    points += (left + step * 0.4) + ',' + (hgt - pad - (hgt - 2 * pad) * x.counter / maxCounter) + ' ';
  });
  if (points) add('polyline', { points, fill: 'none', stroke: '#1f4e79', 'stroke-width': 2 });
  add('line', { x1: pad, y1: hgt - pad, x2: w - pad, y2: hgt - pad, stroke: '#999' });
  const label = h('p', { class: 'muted', id: 'chart-legend' }, list.length
    ? list.length + ' monitor windows, oldest left · bars: deliveries to the primary (green), failures (red in a failed window) · line: failure counter'
    : 'No monitor windows yet.');
  return h('figure', { class: 'chart' }, svg, label);
}

async function adminView() {
  const [cont, stats, queue, quarantine, users] = await Promise.all([
    api('GET', '/api/v1/admin/continuity'), api('GET', '/api/v1/admin/stats'), api('GET', '/api/v1/admin/queue'),
    api('GET', '/api/v1/admin/quarantine'), api('GET', '/api/v1/admin/users')]);
  state.session.continuity = cont.state;
  const reason = h('input', { type: 'text', id: 'panic-reason', placeholder: 'Reason (optional)' });
  const status = h('p', { role: 'status', id: 'admin-status' });
  const act = async (what) => {
    if (what === 'start' && !confirm('Start a continuity event? Inbound mail will be held here instead of going to the primary server.')) return;
    try {
      await api('POST', '/api/v1/admin/continuity/' + what, { reason: reason.value });
      route();
    } catch (e) {
      status.textContent = e.message;
    }
  };
  const ev = cont.event;
  const figure = (label, value) => h('div', {}, h('b', {}, value), label);
  await frame(null,
    h('section', { class: 'card', id: 'continuity' },
      h('h2', {}, 'Continuity ', h('span', { class: 'state ' + cont.state, id: 'continuity-state' }, cont.state)),
      ev ? h('p', {}, 'Event ' + ev.id + ' started ' + new Date(ev.started_at * 1000).toLocaleString() + ' by ' + ev.started_by +
        (ev.reason ? ' (' + ev.reason + ')' : '') + '; held ' + ev.held_messages + ' messages.') : null,
      h('p', { class: 'muted' }, 'Failure counter ' + cont.monitor.counter + (cont.monitor.alerting ? ' · alerting' : '')),
      chart(cont.windows || []),
      h('div', { class: 'toolbar' }, reason,
        cont.state === 'normal'
          ? h('button', { class: 'danger', id: 'panic', onclick: () => act('start') }, 'Start continuity event (panic button)')
          : h('button', { class: 'primary', id: 'stop-event', onclick: () => act('stop') }, 'Stop the event: the primary works again')),
      status),
    h('section', { class: 'card', id: 'history' }, h('h2', {}, 'Continuity events'),
      (cont.events || []).length ? h('table', {}, h('tr', {}, h('th', {}, 'Event'), h('th', {}, 'Started'), h('th', {}, 'By'),
        h('th', {}, 'Reason'), h('th', {}, 'Stopped'), h('th', {}, 'Held'), h('th', {}, 'Drained')),
        cont.events.map(e => h('tr', {}, h('td', {}, e.id), h('td', {}, new Date(e.started_at * 1000).toLocaleString()),
          h('td', {}, e.started_by), h('td', {}, e.reason), h('td', {}, e.stopped_at ? new Date(e.stopped_at * 1000).toLocaleString() + ' by ' + e.stopped_by : ''),
          h('td', {}, e.held_messages), h('td', {}, e.drained_recipients))))
        : h('p', { class: 'muted' }, 'No continuity event yet.')),
    h('section', { class: 'card', id: 'stats' }, h('h2', {}, 'Archive'),
      h('div', { class: 'figures' }, figure('messages', stats.messages), figure('infected', stats.infected),
        figure('unscannable', stats.unscannable), figure('quarantined', stats.quarantine_held),
        figure('queued', queue.total), figure('not yet searchable', Math.max(0, stats.archive_head - stats.index_watermark)),
        figure('stored', bytes(stats.archive_bytes)))),
    h('section', { class: 'card', id: 'queue' }, h('h2', {}, 'Queue (' + queue.total + ')'),
      queue.entries.length ? h('table', {}, h('tr', {}, h('th', {}, 'Id'), h('th', {}, 'Route'), h('th', {}, 'From'), h('th', {}, 'Recipients')),
        queue.entries.slice(0, 100).map(e => h('tr', {}, h('td', {}, e.id), h('td', {}, e.route + (e.held ? ' (held)' : '')), h('td', {}, e.mail_from || ''),
          h('td', {}, e.recipients.map(r => r.address + ' ' + r.state + (r.last_response ? ' – ' + r.last_response : '')).join('; ')))))
        : h('p', { class: 'muted' }, 'Nothing queued.')),
    h('section', { class: 'card', id: 'quarantine' }, h('h2', {}, 'Quarantine (' + quarantine.total + ')'),
      quarantine.entries.length ? h('table', {}, h('tr', {}, h('th', {}, 'Id'), h('th', {}, 'Reason'), h('th', {}, 'From'), h('th', {}, 'To'), h('th', {}, '')),
        quarantine.entries.map(q => h('tr', {}, h('td', {}, q.id), h('td', {}, q.reason), h('td', {}, q.mail_from || ''), h('td', {}, q.recipients.join(', ')),
          h('td', {}, h('button', { class: 'release', 'data-id': q.id, onclick: async () => {
            const force = q.verdict === 'infected' && confirm('This message is infected. Release it anyway?');
            if (q.verdict === 'infected' && !force) return;
            try { await api('POST', '/api/v1/admin/quarantine/' + q.id + '/release', { force }); route(); } catch (e) { status.textContent = e.message; }
          } }, 'Release')))))
        : h('p', { class: 'muted' }, 'Nothing held.')),
    h('section', { class: 'card', id: 'users' }, h('h2', {}, 'Users (' + users.users.length + ')'),
      h('table', {}, h('tr', {}, h('th', {}, 'Address'), h('th', {}, 'Role'), h('th', {}, 'Password'), h('th', {}, '')),
        users.users.map(u => h('tr', {}, h('td', {}, u.name + (u.aliases.length ? ' (' + u.aliases.join(', ') + ')' : '')), h('td', {}, u.role),
          h('td', {}, u.password), h('td', {}, u.disabled ? 'disabled' : ''))))));
}

// ---- routing ----

async function route() {
  const hash = location.hash || '#/';
  try {
    if (!state.session) {
      try {
        const s = await api('GET', '/api/v1/session');
        state.session = s;
        state.csrf = s.csrf || '';
      } catch (e) {
        return loginView();
      }
    }
    if (hash.startsWith('#/login')) {
      location.hash = '#/';
      return;
    }
    await loadFolders();
    let m;
    if ((m = hash.match(/^#\/folder\/(\d+)(?:\/(\d+))?$/))) return await folderView(Number(m[1]), Number(m[2] || 0));
    if ((m = hash.match(/^#\/message\/(\d+)\/(\d+)$/))) return await messageView(m[1], m[2], false);
    if ((m = hash.match(/^#\/search\?(.*)$/))) return await searchView(new URLSearchParams(m[1]));
    if ((m = hash.match(/^#\/compose(?:\?(.*))?$/))) return await composeView(new URLSearchParams(m[1] || ''));
    if (hash === '#/admin') return await adminView();
    const inbox = state.folders.find(f => f.name === 'INBOX');
    return await folderView(inbox ? inbox.id : state.folders[0].id, 0);
  } catch (e) {
    if (!state.session) return loginView();
    await frame(null, failure(e));
  }
}

window.addEventListener('hashchange', route);
route();

// Every 30 seconds, while the page is visible and shows a message list: new mail, and the
// continuity banner (an event started or stopped by an admin elsewhere).
setInterval(async () => {
  if (!state.session || document.hidden) return;
  const hash = location.hash || '#/';
  if (!(hash === '#/' || /^#\/folder\/\d+$/.test(hash))) return;
  if (document.activeElement && document.activeElement.tagName === 'INPUT') return;  // someone is typing
  try {
    const s = await api('GET', '/api/v1/session');
    state.session.continuity = s.continuity;
    await route();
  } catch (e) { /* shown on the next navigation */ }
}, 30000);
